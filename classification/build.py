"""Builders of a classification run from its config: model, loss, mixup, optimizer, schedule, mixed precision.

A library module: ``classification.main`` (training / testing), ``tools/paper_tables.py`` and the tests build
models and optimizers here exactly as training does.  Everything is timm's (``create_model``, ``Mixup``,
``create_optimizer_v2``, ``create_scheduler_v2``); this module only maps config keys onto their arguments.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from yacs.config import CfgNode

import models  # noqa: F401  (registers the acmix_* / conv_* / san* / pvt_v1_* entrypoints with timm)
from classification.config import ConfigError
from models._checkpoint import CheckpointError

__all__ = ['ModelNameError', 'check_model_name', 'build_model', 'build_criterion', 'build_mixup', 'scaled_lrs',
           'build_optimizer', 'build_scheduler', 'amp_settings']


class ModelNameError(ValueError):
    """MODEL.NAME is not a registered timm model."""


def check_model_name(name: str) -> None:
    """Raise ModelNameError with close matches if ``name`` is not registered with timm."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f'; did you mean: {", ".join(close)}?' if close else ''
    raise ModelNameError(f'unknown model {name!r} (MODEL.NAME){hint}')


def build_model(cfg: CfgNode, pretrained_file: str | None = None, **overrides: Any) -> nn.Module:
    """``timm.create_model`` from the config.

    ``img_size`` is passed when DATA.IMG_SIZE differs from the model's default and the model accepts it
    (Swin, PVT); convolutional models take any size without it.  ``pretrained_file`` (or MODEL.PRETRAINED_FILE)
    is loaded by timm through the model's own checkpoint filter (so the authors' ``{'model': ...}`` Swin-ACmix
    files load directly), strictly, keeping the classifier when its class count matches.

    Raises:
        ModelNameError: MODEL.NAME is not registered.
        CheckpointError: the file is missing or does not fit the model (names the file and the keys).
    """
    name = cfg.MODEL.NAME
    check_model_name(name)
    kwargs: dict[str, Any] = dict(num_classes=cfg.MODEL.NUM_CLASSES)
    if cfg.MODEL.DROP_PATH > 0:
        kwargs['drop_path_rate'] = cfg.MODEL.DROP_PATH
    if cfg.MODEL.DROP_RATE > 0:
        kwargs['drop_rate'] = cfg.MODEL.DROP_RATE
    if cfg.MODEL.MIXER_ARGS:
        kwargs['mixer_args'] = {k: v for k, v in cfg.MODEL.MIXER_ARGS.items()}
    clash = sorted(set(cfg.MODEL.MODEL_ARGS) & set(kwargs))
    if clash:
        raise ConfigError(f"MODEL.MODEL_ARGS {clash} are set by other MODEL keys; set them there instead")
    kwargs.update(cfg.MODEL.MODEL_ARGS)
    file = pretrained_file or cfg.MODEL.PRETRAINED_FILE
    if file:
        if not Path(file).is_file():
            raise CheckpointError(f'checkpoint not found: {file}')
        overlay = dict(file=str(file))
        if pretrained_file:  # evaluation: the checkpoint must carry this exact classifier
            overlay['num_classes'] = cfg.MODEL.NUM_CLASSES
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    elif cfg.MODEL.PRETRAINED:
        kwargs['pretrained'] = True
    kwargs.update(overrides)
    default_size = timm.models.get_pretrained_cfg_value(name, 'input_size')
    if default_size is not None and default_size[-1] != cfg.DATA.IMG_SIZE and 'img_size' not in kwargs:
        try:
            return _create(name, file, img_size=cfg.DATA.IMG_SIZE, **kwargs)
        except TypeError as e:  # a model without img_size (convolutional: any size works)
            if 'img_size' not in str(e):
                raise
    return _create(name, file, **kwargs)


def _create(name: str, file: str | None, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, KeyError) as e:  # timm's strict load / the family's checkpoint filter
        if not file:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise CheckpointError(f'{file}: {msg}') from e


def build_criterion(cfg: CfgNode, mixup_active: bool) -> nn.Module:
    """Soft-target CE under mixup (which applies the label smoothing), else label-smoothing CE or plain CE."""
    if mixup_active:
        return SoftTargetCrossEntropy()
    if cfg.AUG.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.AUG.LABEL_SMOOTHING)
    return nn.CrossEntropyLoss()


def build_mixup(cfg: CfgNode) -> Mixup | None:
    """timm ``Mixup`` (mixup and/or cutmix with label smoothing), or None when both alphas are 0."""
    aug = cfg.AUG
    if aug.MIXUP <= 0 and aug.CUTMIX <= 0:
        return None
    return Mixup(mixup_alpha=aug.MIXUP, cutmix_alpha=aug.CUTMIX, prob=aug.MIXUP_PROB,
                 switch_prob=aug.MIXUP_SWITCH_PROB, mode=aug.MIXUP_MODE, label_smoothing=aug.LABEL_SMOOTHING,
                 num_classes=cfg.MODEL.NUM_CLASSES)


def scaled_lrs(cfg: CfgNode, world_size: int) -> tuple[float, float, float]:
    """(base, warmup, min) learning rates scaled by total batch / 512 (see classification/config.py)."""
    scale = cfg.DATA.BATCH_SIZE * world_size * cfg.TRAIN.ACCUM_STEPS / 512.0
    return cfg.TRAIN.BASE_LR * scale, cfg.TRAIN.WARMUP_LR * scale, cfg.TRAIN.MIN_LR * scale


def build_optimizer(cfg: CfgNode, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """timm optimizer (``TRAIN.OPTIMIZER.NAME``: 'sgd' is Nesterov SGD, 'momentum' classical momentum SGD).

    Weight decay skips 1-D parameters (norms, biases, ACmix rates) and ``model.no_weight_decay()`` names, unless
    ``TRAIN.WEIGHT_DECAY_ALL_PARAMS`` applies it to every parameter (the authors' ResNet and SAN scripts).
    """
    opt = cfg.TRAIN.OPTIMIZER
    kwargs: dict[str, Any] = {}
    name = opt.NAME.lower()
    if 'adam' in name or 'lamb' in name:
        kwargs.update(eps=opt.EPS, betas=tuple(opt.BETAS))
    params = model.parameters() if cfg.TRAIN.WEIGHT_DECAY_ALL_PARAMS else model  # a model: timm makes the groups
    return create_optimizer_v2(params, opt=opt.NAME, lr=lr, weight_decay=cfg.TRAIN.WEIGHT_DECAY,
                               momentum=opt.MOMENTUM, filter_bias_and_bn=True, **kwargs)


def build_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, updates_per_epoch: int,
                    warmup_lr: float, min_lr: float):
    """timm scheduler stepped per optimizer update (``step_update``), lengths in epochs from the config."""
    s = cfg.TRAIN.SCHEDULER
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=s.NAME, num_epochs=cfg.TRAIN.EPOCHS, warmup_epochs=cfg.TRAIN.WARMUP_EPOCHS,
        warmup_lr=warmup_lr, min_lr=min_lr, decay_epochs=s.DECAY_EPOCHS, decay_milestones=list(s.DECAY_MILESTONES),
        decay_rate=s.DECAY_RATE, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    return scheduler


def amp_settings(cfg: CfgNode, device: torch.device, log: Callable[[str], None]) -> tuple[bool, torch.dtype, bool]:
    """(autocast on, dtype, use GradScaler)."""
    if not cfg.AMP.ENABLE:
        return False, torch.float32, False
    dtype = torch.float16 if cfg.AMP.DTYPE == 'float16' else torch.bfloat16
    if device.type != 'cuda' and dtype == torch.float16:
        log('AMP: float16 autocast is for CUDA; using bfloat16 on CPU')
        dtype = torch.bfloat16
    return True, dtype, dtype == torch.float16
