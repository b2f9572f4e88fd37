"""Memory-efficient local attention in plain PyTorch (any device, any floating dtype).

Instead of gathering all ``K*K`` windows at once it loops over the window taps and gathers one shifted
``(N, D, Ho, Wo)`` slice at a time, so the largest temporaries are the ``(N, K*K, Ho, Wo)`` logits and
one ``(N, D, Ho, W)`` row-gathered map.  This is the CUDA path when Triton is unavailable and the CPU path
when the C++ extension cannot be built.  Backward is written by hand (softmax Jacobian + ``index_add_``
scatter into the source pixels) so autograd never stores per-tap tensors either.
"""
from __future__ import annotations

import torch

__all__ = ['forward', 'backward']


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
            stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass.

    Args:
        q, k, v: (N, D, H, W).
        rows: (Ho, K) source row of each tap; cols: (Wo, K) source column of each tap.
        stride: query subsampling.

    Returns:
        out (N, D, Ho, Wo) and the softmax probabilities (N, K*K, Ho, Wo) saved for backward.
    """
    n, _, _, _ = q.shape
    (ho, kk), wo = rows.shape, cols.shape[0]
    q_s = q[:, :, ::stride, ::stride]                              # (N, D, Ho, Wo)
    logits = q.new_empty(n, kk * kk, ho, wo)
    for a in range(kk):
        k_rows = k.index_select(2, rows[:, a])                     # (N, D, Ho, W)
        for b in range(kk):
            logits[:, a * kk + b] = (q_s * k_rows.index_select(3, cols[:, b])).sum(1)
    probs = logits.softmax(dim=1)
    out = torch.zeros_like(q_s)
    for a in range(kk):
        v_rows = v.index_select(2, rows[:, a])
        for b in range(kk):
            out.addcmul_(probs[:, a * kk + b].unsqueeze(1), v_rows.index_select(3, cols[:, b]))
    return out, probs


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, probs: torch.Tensor,
             rows: torch.Tensor, cols: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``forward``'s output with respect to q, k, v.

    Args:
        grad_out: (N, D, Ho, Wo).
        q, k, v: (N, D, H, W) as given to ``forward``.
        probs: (N, K*K, Ho, Wo) from ``forward``.
        rows, cols, stride: as given to ``forward``.

    Returns:
        dq, dk, dv, each (N, D, H, W).
    """
    kk = rows.shape[1]
    q_s = q[:, :, ::stride, ::stride]
    # dP[t] = <dO, v_t>; softmax backward: dL = P * (dP - sum_t P * dP)
    grad_probs = torch.empty_like(probs)
    for a in range(kk):
        v_rows = v.index_select(2, rows[:, a])
        for b in range(kk):
            grad_probs[:, a * kk + b] = (grad_out * v_rows.index_select(3, cols[:, b])).sum(1)
    grad_logits = probs * (grad_probs - (probs * grad_probs).sum(1, keepdim=True))
    del grad_probs

    grad_q_s = torch.zeros_like(q_s)
    grad_k = torch.zeros_like(k)
    grad_v = torch.zeros_like(v)
    n, d, _, w = q.shape
    for a in range(kk):
        k_rows = k.index_select(2, rows[:, a])                     # (N, D, Ho, W)
        # scatter the taps of one window row along W first, then once along H
        grad_k_rows = q.new_zeros(n, d, rows.shape[0], w)
        grad_v_rows = q.new_zeros(n, d, rows.shape[0], w)
        for b in range(kk):
            t = a * kk + b
            dl_t = grad_logits[:, t].unsqueeze(1)                 # (N, 1, Ho, Wo)
            grad_q_s.addcmul_(dl_t, k_rows.index_select(3, cols[:, b]))
            grad_k_rows.index_add_(3, cols[:, b], dl_t * q_s)
            grad_v_rows.index_add_(3, cols[:, b], probs[:, t].unsqueeze(1) * grad_out)
        grad_k.index_add_(2, rows[:, a], grad_k_rows)
        grad_v.index_add_(2, rows[:, a], grad_v_rows)

    if stride == 1:
        grad_q = grad_q_s
    else:
        grad_q = torch.zeros_like(q)
        grad_q[:, :, ::stride, ::stride] = grad_q_s
    return grad_q, grad_k, grad_v
