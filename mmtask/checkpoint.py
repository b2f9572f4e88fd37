"""``torch.load`` policy for mmengine checkpoints under torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load`` without the
argument.  The checkpoints mmengine writes are not plain tensors: ``message_hub`` holds ``HistoryBuffer`` objects
with numpy arrays, ``meta`` holds numpy scalars.  Rather than switching the safety check off
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), :func:`allow_mmengine_checkpoints` keeps ``weights_only=True`` and

* allows exactly the non-tensor types mmengine writes: ``HistoryBuffer``, numpy arrays, scalars and dtypes;
* stops ``HistoryBuffer`` from pickling its statistics *functions* (mmengine's ``__getstate__`` stores
  ``HistoryBuffer.min`` etc., which unpickle through ``getattr`` and cannot be allowed safely).  They are class
  level and re-registered on import, and mmengine's ``__setstate__`` accepts a state without them, so the
  checkpoints our runs write load with ``weights_only=True`` here and in stock mmengine alike.

A checkpoint holding anything else (e.g. one written by stock mmengine, with those functions) fails with torch's
message naming the global; to load such a file you trust, set ``ACMIX_TRUST_CHECKPOINTS=1``, which makes
:func:`allow_mmengine_checkpoints` set ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for this process.

Backbone (classification) checkpoints are always read with ``weights_only=True`` and no allow-list
(:mod:`models.mm_backbone`).
"""
from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ['allow_mmengine_checkpoints', 'SAFE_GLOBALS']


def _numpy_globals() -> list:
    out = [np.ndarray, np.dtype]
    try:  # numpy >= 2: arrays pickle through numpy._core.multiarray._reconstruct
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    out += [_reconstruct, scalar]
    # dtype classes (np.dtypes.Float64DType, ...) that numpy >= 1.25 pickles by reference
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return out


def _mmengine_globals() -> list:
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer]


SAFE_GLOBALS: list = []


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read checkpoints written by mmengine's CheckpointHook.

    Idempotent.  Honours ``ACMIX_TRUST_CHECKPOINTS=1`` (full unpickling, for trusted files only).
    """
    if os.environ.get('ACMIX_TRUST_CHECKPOINTS') == '1':
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    if not SAFE_GLOBALS:
        SAFE_GLOBALS.extend(_numpy_globals() + _mmengine_globals())
        torch.serialization.add_safe_globals(SAFE_GLOBALS)
        from mmengine.logging import HistoryBuffer
        HistoryBuffer.__getstate__ = _history_buffer_state


def _history_buffer_state(self) -> dict:
    """``HistoryBuffer`` state without the statistics functions (data only: max_length and two arrays)."""
    return {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
