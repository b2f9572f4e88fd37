"""Readable reference for local (SASA-style sliding-window) attention.

It gathers every key/value window explicitly, like ``nn.Unfold`` in the authors' code, so it materialises
``(N, D, K*K, Ho, Wo)`` tensors: ``K*K`` (49 for K=7) times the activation memory of the inputs.  It is
the ground truth the fast paths are tested against, and it is differentiable through plain autograd.
"""
from __future__ import annotations

import torch

from .indexing import window_index

__all__ = ['check_qkv', 'local_attention_reference']


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the shapes unless q, k, v are ``(N, D, H, W)`` of one shape, float dtype, device."""
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'q, k, v must all be (N, D, H, W) of one shape, got q {tuple(q.shape)}, '
                         f'k {tuple(k.shape)}, v {tuple(v.shape)}')
    if not q.is_floating_point() or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f'q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}')
    if k.device != q.device or v.device != q.device:
        raise ValueError(f'q, k, v must share a device, got {q.device}, {k.device}, {v.device}')


def _gather_windows(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(N, D, H, W) -> (N, D, K*K, Ho, Wo): tap ``a*K + b`` of pixel (i, j) is ``x[..., rows[i, a], cols[j, b]]``."""
    n, d = x.shape[:2]
    (ho, kk), wo = rows.shape, cols.shape[0]
    # advanced indexing broadcasts (Ho, K, 1, 1) against (1, 1, Wo, K) -> (N, D, Ho, K, Wo, K)
    win = x[:, :, rows[:, :, None, None], cols[None, None, :, :]]
    return win.permute(0, 1, 3, 5, 2, 4).reshape(n, d, kk * kk, ho, wo)


def local_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              kernel_size: int, dilation: int = 1, stride: int = 1) -> torch.Tensor:
    """Local window attention by explicit window gathering (arguments validated by the caller).

    Args:
        q: (N, D, H, W) queries, already scaled.
        k: (N, D, H, W) keys, positional term already subtracted.
        v: (N, D, H, W) values.

    Returns:
        (N, D, ceil(H/stride), ceil(W/stride)).
    """
    h, w = q.shape[-2:]
    rows = window_index(h, kernel_size, dilation, stride, q.device)  # (Ho, K)
    cols = window_index(w, kernel_size, dilation, stride, q.device)  # (Wo, K)
    q_s = q[:, :, ::stride, ::stride]                                # (N, D, Ho, Wo)
    k_win = _gather_windows(k, rows, cols)                           # (N, D, K*K, Ho, Wo)
    v_win = _gather_windows(v, rows, cols)                           # (N, D, K*K, Ho, Wo)
    logits = (q_s.unsqueeze(2) * k_win).sum(1)                       # (N, K*K, Ho, Wo)
    probs = logits.softmax(dim=1)
    return (probs.unsqueeze(1) * v_win).sum(2)                       # (N, D, Ho, Wo)
