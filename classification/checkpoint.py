"""Training checkpoints of classification: what they hold, saving with retention, resuming, loading for test.

A training checkpoint is a dict of tensors and primitive types only (``torch.load(weights_only=True)``)::

    {'model': state_dict, 'optimizer': ..., 'scheduler': ..., 'scaler': ... | None, 'ema': state_dict | None,
     'epoch': completed epochs, 'num_updates': optimizer steps, 'best_top1': float, 'val': {...},
     'rng': {'torch': uint8 tensor, 'cuda': [uint8 tensors], 'numpy': {...}, 'python': {...}},
     'model_name': str, 'config': resolved config as a YAML string}

Files are read, checked and written atomically by ``models._checkpoint`` (the one place for checkpoint files):
``epoch_XXX.pth`` after every epoch, then ``last_checkpoint`` pointing at it, then ``best.pth``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from models._checkpoint import (CheckpointError, atomic_save, check_state_dict, read_checkpoint,
                                read_last_checkpoint, unwrap_state_dict, write_last_checkpoint)

from .build import build_model
from .config import config_from_string

__all__ = ['CheckpointError', 'rng_state', 'set_rng_state', 'load_checkpoint', 'extract_state_dict',
           'load_model_weights', 'restore_training_state', 'save_epoch', 'load_for_test',
           'read_last_checkpoint']


# ----------------------------------------------------------------------------------------------------------
# RNG state as tensors / primitives
# ----------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'numpy': {'kind': np_state[0], 'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                  'pos': int(np_state[2]), 'has_gauss': int(np_state[3]), 'cached': float(np_state[4])},
        'python': {'version': py_version, 'state': torch.tensor(py_state, dtype=torch.int64), 'gauss': py_gauss},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['cached']))
    p = state['python']
    random.setstate((p['version'], tuple(int(v) for v in p['state'].tolist()), p['gauss']))


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``read_checkpoint`` that must give a dict (ours, a wrapped or a bare state dict)."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path}: expected a dict, got {type(ckpt).__name__}')
    return ckpt


def extract_state_dict(ckpt: Mapping[str, Any], use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of any of: our checkpoint ('model' / 'ema'), the authors' Swin ({'model': ...}) or
    ResNet ({'state_dict': ...} with 'module.' prefixes), or a bare state dict."""
    if use_ema:
        if ckpt.get('ema') is None:
            raise CheckpointError('TEST.USE_EMA is set but the checkpoint has no EMA weights (EMA.ENABLE was off)')
        return unwrap_state_dict(ckpt['ema'])
    return unwrap_state_dict(ckpt)


def load_model_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load; a mismatch raises ``CheckpointMismatchError`` naming the keys (``check_state_dict``)."""
    check_state_dict(state_dict, model, source=source)
    model.load_state_dict(state_dict, strict=True)


def load_for_test(cfg: CfgNode, path: str | os.PathLike) -> nn.Module:
    """A model with the checkpoint's weights: ours (checked against MODEL.NAME / NUM_CLASSES, strict) or a foreign
    file through timm and the family's checkpoint filter."""
    ckpt = load_checkpoint(path)
    if 'config' in ckpt and 'model_name' in ckpt:  # one of ours
        if ckpt['model_name'] != cfg.MODEL.NAME:
            raise CheckpointError(
                f'{path} holds a {ckpt["model_name"]!r} model but the config says MODEL.NAME {cfg.MODEL.NAME!r}')
        saved = config_from_string(ckpt['config'])
        if saved.MODEL.NUM_CLASSES != cfg.MODEL.NUM_CLASSES:
            raise CheckpointError(f'{path} has {saved.MODEL.NUM_CLASSES} classes, the config '
                                  f'{cfg.MODEL.NUM_CLASSES} (MODEL.NUM_CLASSES)')
        model = build_model(cfg)
        load_model_weights(model, extract_state_dict(ckpt, cfg.TEST.USE_EMA), str(path))
        return model
    return build_model(cfg, pretrained_file=str(path))


# ----------------------------------------------------------------------------------------------------------
# Resuming
# ----------------------------------------------------------------------------------------------------------
def _config_changes(old: CfgNode, new: CfgNode, prefix: str = '') -> list[str]:
    """'KEY: old -> new' for every leaf that differs (paths excluded)."""
    out = []
    for k, v in new.items():
        key, before = f'{prefix}{k}', old.get(k)
        if isinstance(v, CfgNode):
            out += _config_changes(before if isinstance(before, CfgNode) else CfgNode(), v, f'{key}.')
        elif before != v and key not in ('OUTPUT', 'DATA.DATA_PATH'):
            out.append(f'{key}: {before!r} -> {v!r}')
    return out


def restore_training_state(ckpt: Mapping[str, Any], source: Path, cfg: CfgNode, model: nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler, scaler, ema,
                           log: Callable[[str], None]) -> tuple[int, int, float]:
    """Load weights, optimizer, schedule, scaler, EMA and RNG state of ``ckpt`` into a freshly built run.

    A config that differs from the checkpoint's is noted; when the schedule's settings changed (e.g. TRAIN.EPOCHS
    grew) the learning-rate schedule follows the new config instead of the saved state.

    Returns:
        (epochs done, optimizer steps done, best top-1 so far).
    """
    if ckpt.get('model_name', cfg.MODEL.NAME) != cfg.MODEL.NAME:
        raise CheckpointError(f'{source} was trained with MODEL.NAME {ckpt["model_name"]!r}, '
                              f'the config says {cfg.MODEL.NAME!r}')
    load_model_weights(model, extract_state_dict(ckpt), str(source))
    changed = _config_changes(config_from_string(ckpt['config']), cfg)
    if changed:
        log(f'note: config differs from the checkpoint\'s: {"; ".join(changed)}')
    # timm schedulers are functions of the step count; their saved state also fixes the schedule's length
    new_schedule = any(c.startswith(('TRAIN.', 'DATA.BATCH_SIZE')) and not c.startswith((
        'TRAIN.OPTIMIZER', 'TRAIN.WEIGHT_DECAY', 'TRAIN.CLIP_GRAD')) for c in changed)
    if new_schedule:
        log('note: the learning-rate schedule follows the new config')
    try:
        optimizer.load_state_dict(ckpt['optimizer'])
        if not new_schedule:
            scheduler.load_state_dict(ckpt['scheduler'])
        if scaler is not None and ckpt.get('scaler'):
            scaler.load_state_dict(ckpt['scaler'])
        if ema is not None:
            if ckpt.get('ema') is None:
                raise CheckpointError(f'{source} has no EMA weights but EMA.ENABLE is on')
            ema.module.load_state_dict(ckpt['ema'])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f'{source}: cannot restore training state: {e}') from e
    set_rng_state(ckpt['rng'])
    epoch, num_updates, best_top1 = ckpt['epoch'], ckpt['num_updates'], ckpt['best_top1']
    log(f'resumed from {source}: {epoch} epoch(s) done, {num_updates} steps, best top-1 {best_top1:.2f}')
    if epoch >= cfg.TRAIN.EPOCHS:
        log(f'nothing to do: TRAIN.EPOCHS is {cfg.TRAIN.EPOCHS}')
    return epoch, num_updates, best_top1


# ----------------------------------------------------------------------------------------------------------
# Saving with retention
# ----------------------------------------------------------------------------------------------------------
def save_epoch(state: Mapping[str, Any], work_dir: Path, is_best: bool, keep_every: int) -> Path:
    """Write ``epoch_XXX.pth`` (``state['epoch']``), point ``last_checkpoint`` at it, update ``best.pth``.

    Retention: the previous checkpoint of this work dir is deleted unless its epoch is a multiple of
    ``keep_every`` (SAVE_FREQ; 0 keeps only the newest).  Every write is atomic, so an interrupted save leaves the
    previous checkpoint and pointer intact.
    """
    previous = read_last_checkpoint(work_dir)
    path = (work_dir / f'epoch_{state["epoch"]:03d}.pth').resolve()
    atomic_save(state, path)
    write_last_checkpoint(work_dir, path)
    if is_best:
        atomic_save(state, work_dir / 'best.pth')
    if previous is not None and previous.resolve() != path and previous.resolve().parent == work_dir.resolve():
        done = int(previous.stem.split('_')[-1]) if previous.stem.startswith('epoch_') else 0
        if not (keep_every and done % keep_every == 0):
            previous.unlink(missing_ok=True)
    return path
