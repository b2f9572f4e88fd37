"""Config checks shared by tests/test_detection.py and tests/test_segmentation.py (mmdet and mmseg alike)."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def configs(task: str) -> list[Path]:
    """Every config of ``configs/<task>/`` (not the ``_base_`` parts)."""
    return sorted((ROOT / 'configs' / task).glob('*.py'))


def build_params(paths: list[Path], cheap: set[str]) -> list:
    """pytest params over ``paths``; those not named in ``cheap`` (one config per algorithm) are marked slow."""
    return [pytest.param(p, id=p.stem, marks=() if p.name in cheap else pytest.mark.slow) for p in paths]


def load(path: Path):
    from mmengine.config import Config
    return Config.fromfile(str(path))


def backbone_channels(cfg) -> list[int]:
    """Channels the config's ``ACmixBackbone`` returns (a meta-device model: no weights, no memory)."""
    from models.mm_backbone import ACmixBackbone, stage_channels
    adapter_only = set(inspect.signature(ACmixBackbone).parameters) - {'model_name', 'out_indices', 'model_kwargs'}
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k != 'type' and k not in adapter_only}
    return stage_channels(kwargs.pop('model_name'), kwargs.pop('out_indices'), **kwargs)


def build_model(cfg, scope: str):
    """The whole model of the config, built by mmdet or mmseg (``scope``) with pretrained weights off."""
    from mmengine.registry import init_default_scope

    import models.mm_backbone  # noqa: F401  (registers ACmixBackbone)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    cfg.model.backbone.init_cfg = None
    return importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)
