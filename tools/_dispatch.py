"""The one command line of tools/train.py and tools/test.py: the config file decides the task.

* ``*.yaml`` / ``*.yml``: ImageNet classification (yacs), :mod:`classification.cli`.
* ``*.py``: an mmengine config; ``default_scope='mmdet'`` selects :mod:`detection.cli`,
  ``default_scope='mmseg'`` selects :mod:`segmentation.cli`.  The OpenMMLab stack is installed on first use
  (:mod:`_openmmlab`).

Every task takes the same options with the same meaning::

    train.py CONFIG [--data-path ROOT] [--work-dir DIR] [--resume [CKPT]] [--amp] [--launcher {none,pytorch,...}]
                    [--skip-data-check] [--opts KEY VALUE | key=value ...]
    test.py  CONFIG CHECKPOINT [--data-path ROOT] [--work-dir DIR] [--launcher ...] [--skip-data-check]
                    [--opts ...] [task options, e.g. segmentation's --slide / --tta]

``--opts`` is read to the end of the line (values may start with '-') or up to the next ``--option``, and takes
yacs-style ``KEY VALUE`` pairs and mmengine-style ``key=value`` items alike, mixed: a token with ``=`` is one
item, any other token is a key whose value is the next token.  The launcher defaults to ``pytorch`` under
torchrun (``WORLD_SIZE`` > 1), else ``none``.  Exit status: 0 success, 2 a user error (bad config, data, checkpoint
or option; one line on stderr), 3 training stopped on a NaN/inf loss (classification), 1 anything else.

Each task module provides ``train(args)`` and ``test(args)`` (returning an exit status or None), ``USER_ERRORS``,
and optionally ``add_arguments(parser, action)`` for its own options.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # entry point: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

_MM_SCOPES = {'mmdet': 'detection', 'mmseg': 'segmentation'}


class UsageError(ValueError):
    """The command line itself is wrong (config file, options)."""


def task_of(config: str) -> str:
    """Return 'classification', 'detection' or 'segmentation' for a config path."""
    path = Path(config)
    if not path.is_file():
        raise UsageError(f'config file not found: {config}')
    if path.suffix in ('.yaml', '.yml'):
        return 'classification'
    if path.suffix == '.py':
        from tools._openmmlab import ensure
        ensure(f'{Path(sys.argv[0]).name} {config}')   # first detection/segmentation run: installs the stack
        from mmengine.config import Config
        scope = Config.fromfile(str(path)).get('default_scope')
        if scope not in _MM_SCOPES:
            raise UsageError(f'{config}: default_scope must be one of {sorted(_MM_SCOPES)}, got {scope!r}')
        return _MM_SCOPES[scope]
    raise UsageError(f'{config}: unknown config type {path.suffix!r} (expected .yaml for classification, '
                     f'.py for detection/segmentation)')


def split_opts(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(argv without ``--opts ...``, the override pairs); see the module docstring for the syntax."""
    if '--opts' not in argv:
        return argv, []
    i = argv.index('--opts')
    rest, pairs, j = argv[:i], [], i + 1
    while j < len(argv):
        token = argv[j]
        if token.startswith('--') and '=' not in token:  # the next option of the command line
            break
        if '=' in token:
            key, value = token.split('=', 1)
            j += 1
        elif j + 1 < len(argv):
            key, value = token, argv[j + 1]
            j += 2
        else:
            raise UsageError(f'--opts: key {token!r} has no value (give KEY VALUE pairs or key=value items)')
        pairs.append((key, value))
    return rest + argv[j:], pairs


def build_parser(action: str, task: str, cli) -> argparse.ArgumentParser:
    """The options of ``tools/<action>.py`` for a task (common ones, then the task's own)."""
    parser = argparse.ArgumentParser(prog=f'tools/{action}.py', description=f'{action.title()} ({task}).')
    parser.add_argument('config', help='configs/classification/*.yaml, configs/detection/*.py or '
                                       'configs/segmentation/*.py')
    if action == 'test':
        parser.add_argument('checkpoint', help='checkpoint to evaluate')
    parser.add_argument('--data-path', help='dataset root (replaces the data root of every dataset in the config)')
    parser.add_argument('--work-dir', help='output folder (train: default work_dirs/<config name>; test: '
                                           "default the checkpoint's folder); metrics.json goes here")
    if action == 'train':
        parser.add_argument('--resume', nargs='?', const='auto', default=None,
                            help='resume from this checkpoint, or with no value from <work-dir>/last_checkpoint')
        parser.add_argument('--amp', action='store_true', help='mixed precision')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default=None,
                        help="'pytorch' under torchrun (the default when WORLD_SIZE > 1), else 'none'")
    parser.add_argument('--skip-data-check', action='store_true',
                        help='skip the dataset checks made before training/testing')
    parser.add_argument('--opts', nargs='*', default=[], metavar='KEY VALUE | key=value',
                        help='config overrides, applied last')
    if hasattr(cli, 'add_arguments'):
        cli.add_arguments(parser, action)
    return parser


def parse(action: str, argv: list[str]) -> tuple[ModuleType, argparse.Namespace]:
    """(the config's task module ``<task>.cli``, its parsed arguments) for ``tools/<action>.py argv``."""
    if not argv or argv[0].startswith('-'):
        raise UsageError(f'usage: python tools/{action}.py <config> [options]   (config: .yaml classification, '
                         f'.py detection/segmentation); add -h after the config for the options')
    task = task_of(argv[0])
    cli = importlib.import_module(f'{task}.cli')
    own, opts = split_opts(list(argv))
    args = build_parser(action, task, cli).parse_args(own)
    args.opts = opts
    if args.launcher is None:
        args.launcher = 'pytorch' if int(os.environ.get('WORLD_SIZE', '1')) > 1 else 'none'
    return cli, args


def init_process_group() -> None:
    """``--launcher pytorch``: join torchrun's process group (NCCL on CUDA, gloo on the CPU), for every task.

    mmengine's Runner finds the group initialised and uses it (its own set-up assumes CUDA).
    """
    import torch
    import torch.distributed as dist
    missing = [k for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise UsageError(f'--launcher pytorch: {", ".join(missing)} not set; start with torchrun '
                         f'--nproc_per_node N tools/<train|test>.py ...')
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']))
    dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo')


def run(action: str, argv: list[str]) -> int:
    """Run ``<task>.cli.<action>(args)`` for the config's task; return the exit status."""
    cli, args = parse(action, argv)
    if args.launcher == 'pytorch':
        init_process_group()
    try:
        return getattr(cli, action)(args) or 0
    except cli.USER_ERRORS as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        return 2
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main(action: str, argv: list[str] | None = None) -> None:
    """Entry of tools/train.py and tools/test.py: exit with :func:`run`'s status."""
    try:
        code = run(action, sys.argv[1:] if argv is None else list(argv))
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        code = 2
    if code:
        raise SystemExit(code)
