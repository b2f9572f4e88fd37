"""Checkpoints as plain data, written atomically; loading weights into a model with named mismatches.

A training checkpoint is a dict of tensors and primitive types only (``torch.load(weights_only=True)``)::

    {'model': state_dict, 'optimizer': ..., 'scheduler': ..., 'scaler': ... | None, 'ema': state_dict | None,
     'epoch': completed epochs, 'num_updates': optimizer steps, 'best_top1': float,
     'rng': {'torch': uint8 tensor, 'cuda': [uint8 tensors], 'numpy': {...}, 'python': {...}},
     'model_name': str, 'config': resolved config as a YAML string}

It is written to ``<file>.tmp`` and renamed with ``os.replace``, so a crash or a full disk leaves the
previous checkpoint intact.  ``<work_dir>/last_checkpoint`` (mmengine's convention) is a text file holding
the path of the newest complete checkpoint; it is replaced atomically after the checkpoint itself.
"""
from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from models._checkpoint import unwrap_state_dict

LAST_CHECKPOINT = 'last_checkpoint'


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or does not fit the model; the message says which file/keys."""


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
# Atomic writes
# ----------------------------------------------------------------------------------------------------------
def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` via a temp file + ``os.replace``; on any error the temp file is removed,
    an existing ``path`` is untouched, and a CheckpointError says what happened (disk full named as such)."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        what = 'disk full' if e.errno == errno.ENOSPC else f'{type(e).__name__}: {e}'
        raise CheckpointError(f'could not write checkpoint {path} ({what}); the previous checkpoint is intact') from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f'could not write {path}: {e}') from e


def last_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``<work_dir>/last_checkpoint``, or None if there is none."""
    pointer = Path(work_dir) / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    path = Path(pointer.read_text().strip())
    if not path.is_file():
        raise CheckpointError(f'{pointer} names {path}, which does not exist')
    return path


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` on CPU, with a clear error for missing/unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise CheckpointError(f'cannot read checkpoint {path}: {type(e).__name__}: {e}') from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path}: expected a dict, got {type(ckpt).__name__}')
    return ckpt


def extract_state_dict(ckpt: Mapping[str, Any], use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of any of: our checkpoint ('model' / 'ema'), the authors' Swin ({'model': ...}) or
    ResNet ({'state_dict': ...} with 'module.' prefixes), or a bare state dict."""
    if use_ema:
        if ckpt.get('ema') is None:
            raise CheckpointError('TEST.USE_EMA is set but the checkpoint has no EMA weights (EMA.ENABLE was off)')
        sd = ckpt['ema']
    else:
        sd = ckpt
    try:
        return unwrap_state_dict(sd)
    except TypeError as e:
        raise CheckpointError(str(e)) from e


def load_model_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load; a mismatch raises CheckpointError listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}'
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return ', '.join(items[:8]) + (f' ... ({len(items)} in all)' if len(items) > 8 else '') if items else '-'
        raise CheckpointError(
            f'{source} does not fit model {type(model).__name__}: missing keys: {show(missing)}; '
            f'unexpected keys: {show(unexpected)}; shape mismatches: {show(shapes)}. '
            f'Was it trained with a different MODEL.NAME / MODEL.NUM_CLASSES?')
    model.load_state_dict(state_dict, strict=True)
