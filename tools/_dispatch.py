"""Shared entry logic of tools/train.py, tools/test.py: the config file decides the task.

* ``*.yaml`` / ``*.yml``: ImageNet classification (yacs), see :mod:`classification.cli`.
* ``*.py``: an mmengine config; ``default_scope='mmdet'`` selects :mod:`detection.cli`,
  ``default_scope='mmseg'`` selects :mod:`segmentation.cli`.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_MM_SCOPES = {'mmdet': 'detection', 'mmseg': 'segmentation'}


def task_of(config: str) -> str:
    """Return 'classification', 'detection' or 'segmentation' for a config path."""
    path = Path(config)
    if not path.is_file():
        raise SystemExit(f'config file not found: {config}')
    if path.suffix in ('.yaml', '.yml'):
        return 'classification'
    if path.suffix == '.py':
        from mmengine.config import Config
        scope = Config.fromfile(str(path)).get('default_scope')
        if scope not in _MM_SCOPES:
            raise SystemExit(f'{config}: default_scope must be one of {sorted(_MM_SCOPES)}, got {scope!r}')
        return _MM_SCOPES[scope]
    raise SystemExit(f'{config}: unknown config type {path.suffix!r} (expected .yaml for classification, '
                     f'.py for detection/segmentation)')


def main(action: str, argv: list[str] | None = None) -> None:
    """Run ``<task>.cli.<action>(argv)`` for the task the config (first argument) belongs to."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith('-'):
        raise SystemExit(f'usage: python tools/{action}.py <config> [options]   (config: .yaml classification, '
                         f'.py detection/segmentation); add -h after the config for task options')
    cli = importlib.import_module(f'{task_of(argv[0])}.cli')
    getattr(cli, action)(argv)
