"""Local (sliding-window) attention kernels for ACmix's ``attn_mode='local'``.

``local_attention`` is the one entry point.  ``impl='reference'`` gathers the windows explicitly (readable,
``K*K`` times the activation memory); the fast paths never materialise the windows.
"""
from __future__ import annotations

import torch

from .indexing import check_window_args, out_size, window_index
from .reference import check_qkv, local_attention_reference

__all__ = ['local_attention', 'local_attention_reference', 'window_index', 'out_size', 'IMPLS']

IMPLS = ('auto', 'reference')


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                    dilation: int = 1, stride: int = 1, impl: str = 'auto') -> torch.Tensor:
    """Softmax attention of each (strided) query pixel over its reflected ``K x K`` key/value window.

    Output pixel ``(i, j)`` attends ``q[:, :, i*stride, j*stride]`` to keys/values at rows
    ``i*stride + dilation*(a - (K-1)//2)`` and columns ``j*stride + dilation*(b - (K-1)//2)``, ``a, b`` in
    ``[0, K)``; out-of-range indices are mirror-reflected (see ``acmix.kernels.indexing``), so any map size,
    even smaller than the window, is valid.

    Args:
        q: (N, D, H, W) queries (N = batch*heads, D = head_dim), already scaled.
        k: (N, D, H, W) keys, with the positional term already subtracted.
        v: (N, D, H, W) values.
        kernel_size: odd window size K >= 1.
        dilation: spacing of the window taps, >= 1.
        stride: query subsampling, >= 1.
        impl: one of ``IMPLS``.

    Returns:
        (N, D, ceil(H/stride), ceil(W/stride)) in the dtype of ``q``.
    """
    check_window_args(kernel_size, dilation, stride)
    check_qkv(q, k, v)
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
    return local_attention_reference(q, k, v, kernel_size, dilation, stride)
