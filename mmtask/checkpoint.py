"""``torch.load`` policy for mmengine checkpoints under torch >= 2.6, as a context manager.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load`` without the
argument.  The checkpoints mmengine writes are not plain tensors: ``message_hub`` holds ``HistoryBuffer`` objects
with numpy arrays, ``meta`` holds numpy scalars.  Rather than switching the safety check off,
:func:`mmengine_checkpoints` keeps ``weights_only=True`` and, only while it is active:

* allows exactly the non-tensor types mmengine writes: ``HistoryBuffer``, numpy arrays, scalars and dtypes
  (``torch.serialization.safe_globals``);
* stops ``HistoryBuffer`` from pickling its statistics *functions* (mmengine's ``__getstate__`` stores
  ``HistoryBuffer.min`` etc., which unpickle through ``getattr`` and cannot be allowed safely).  They are class
  level and re-registered on import, and mmengine's ``__setstate__`` accepts a state without them, so the
  checkpoints our runs write load with ``weights_only=True`` here and in stock mmengine alike.

Nothing changes at import, and everything is restored on exit.  A checkpoint holding anything else (e.g. one
written by stock mmengine, with those functions) fails with torch's message naming the global; to load such a
file you trust, set ``ACMIX_TRUST_CHECKPOINTS=1``: then ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set inside the
context (full unpickling).

Backbone (classification) checkpoints are always read with ``weights_only=True`` and no allow-list
(``models._checkpoint.read_checkpoint``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

__all__ = ['mmengine_checkpoints', 'safe_globals']

_FORCE_FULL_LOAD = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


def safe_globals() -> list:
    """The non-tensor types in mmengine's checkpoints: ``HistoryBuffer`` and numpy's arrays, scalars and dtypes."""
    from mmengine.logging import HistoryBuffer
    from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2 pickles arrays through these
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]  # pickled by reference
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]


def _history_buffer_state(self) -> dict:
    """``HistoryBuffer`` state without the statistics functions (data only: max_length and two arrays)."""
    return {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}


@contextmanager
def mmengine_checkpoints() -> Iterator[None]:
    """Within the block, mmengine writes checkpoints that ``torch.load(weights_only=True)`` reads, and reads them.

    Honours ``ACMIX_TRUST_CHECKPOINTS=1`` (full unpickling inside the block, for trusted files only).
    """
    from mmengine.logging import HistoryBuffer
    own_getstate = HistoryBuffer.__dict__.get('__getstate__')
    env_before = os.environ.get(_FORCE_FULL_LOAD)
    HistoryBuffer.__getstate__ = _history_buffer_state
    if os.environ.get('ACMIX_TRUST_CHECKPOINTS') == '1':
        os.environ[_FORCE_FULL_LOAD] = '1'
    try:
        with torch.serialization.safe_globals(safe_globals()):
            yield
    finally:
        if own_getstate is None:
            del HistoryBuffer.__getstate__
        else:
            HistoryBuffer.__getstate__ = own_getstate
        if env_before is None:
            os.environ.pop(_FORCE_FULL_LOAD, None)
        else:
            os.environ[_FORCE_FULL_LOAD] = env_before
