"""Memory-efficient local attention in plain PyTorch (any device, any floating dtype).

Keys and values are reflection-padded once (``padded_index``); in the padded map tap ``(a, b)`` of every
output pixel is one strided slice, a view.  The loop over the ``K*K`` taps therefore never gathers, and the
largest temporaries are the padded maps (about ``(1 + (K-1)/H)^2`` times the input) and the
``(N, K*K, Ho, Wo)`` logits, instead of the reference's ``(N, D, K*K, Ho, Wo)`` windows.  Forward keeps only the
log-sum-exp of each pixel's logits; backward recomputes the logits and the softmax from it.  This is the CUDA
path when Triton is unavailable and the CPU path when the C++ extension cannot be built.  Backward is
written by hand (softmax Jacobian, tap gradients accumulated in the padded map, then folded back onto the
source pixels with ``index_add_``), so autograd stores no per-tap tensors either.
"""
from __future__ import annotations

import torch

from .indexing import out_size, padded_index

__all__ = ['forward', 'backward']


def _pad(x: torch.Tensor, kernel_size: int, dilation: int) -> torch.Tensor:
    """(N, D, H, W) -> (N, D, H + 2p, W + 2p) reflection-padded, p = dilation * (K-1)//2, any H, W >= 1."""
    h, w = x.shape[-2:]
    rows = padded_index(h, kernel_size, dilation, x.device)
    cols = padded_index(w, kernel_size, dilation, x.device)
    return x.index_select(2, rows).index_select(3, cols)


def _taps(kernel_size: int, dilation: int, stride: int, ho: int, wo: int):
    """Yield (tap index, row slice, col slice) selecting tap (a, b) of every output pixel in a padded map."""
    for a in range(kernel_size):
        rs = slice(a * dilation, a * dilation + (ho - 1) * stride + 1, stride)
        for b in range(kernel_size):
            yield a * kernel_size + b, rs, slice(b * dilation, b * dilation + (wo - 1) * stride + 1, stride)


def _logits(q: torch.Tensor, k: torch.Tensor, kernel_size: int, dilation: int, stride: int) -> torch.Tensor:
    """(N, D, H, W) queries and keys -> (N, K*K, Ho, Wo) logits of every strided query pixel and window tap."""
    n, _, h, w = q.shape
    ho, wo = out_size(h, stride), out_size(w, stride)
    q_s = q[:, :, ::stride, ::stride]                                # (N, D, Ho, Wo)
    k_pad = _pad(k, kernel_size, dilation)                           # (N, D, Hp, Wp)
    logits = q.new_empty(n, kernel_size * kernel_size, ho, wo)
    for t, rs, cs in _taps(kernel_size, dilation, stride, ho, wo):
        logits[:, t] = (q_s * k_pad[:, :, rs, cs]).sum(1)
    return logits


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, dilation: int,
            stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass.

    Args:
        q, k, v: (N, D, H, W).
        kernel_size, dilation, stride: window geometry.

    Returns:
        out (N, D, Ho, Wo) and the log-sum-exp of the logits (N, Ho, Wo) saved for backward.
    """
    logits = _logits(q, k, kernel_size, dilation, stride)
    lse = logits.logsumexp(dim=1)
    probs = (logits - lse.unsqueeze(1)).exp_()
    del logits
    ho, wo = lse.shape[-2:]
    v_pad = _pad(v, kernel_size, dilation)
    out = q.new_zeros(q.shape[0], q.shape[1], ho, wo)
    for t, rs, cs in _taps(kernel_size, dilation, stride, ho, wo):
        out.addcmul_(probs[:, t].unsqueeze(1), v_pad[:, :, rs, cs])
    return out, lse


def _fold(grad_pad: torch.Tensor, h: int, w: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """Adjoint of ``_pad``: (N, D, Hp, Wp) -> (N, D, H, W), summing every padded copy onto its source pixel."""
    n, d, hp, wp = grad_pad.shape
    rows = padded_index(h, kernel_size, dilation, grad_pad.device)
    cols = padded_index(w, kernel_size, dilation, grad_pad.device)
    grad_rows = grad_pad.new_zeros(n, d, h, wp).index_add_(2, rows, grad_pad)
    return grad_pad.new_zeros(n, d, h, w).index_add_(3, cols, grad_rows)


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor,
             kernel_size: int, dilation: int, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``forward``'s output with respect to q, k, v.

    Args:
        grad_out: (N, D, Ho, Wo).
        q, k, v: (N, D, H, W) as given to ``forward``.
        lse: (N, Ho, Wo) from ``forward``.
        kernel_size, dilation, stride: window geometry.

    Returns:
        dq, dk, dv, each (N, D, H, W).
    """
    h, w = q.shape[-2:]
    ho, wo = grad_out.shape[-2:]
    q_s = q[:, :, ::stride, ::stride]
    probs = (_logits(q, k, kernel_size, dilation, stride) - lse.unsqueeze(1)).exp_()  # (N, K*K, Ho, Wo)

    # dP_t = <dO, v_t>;  softmax backward: dL_t = P_t * (dP_t - sum_s P_s dP_s)
    v_pad = _pad(v, kernel_size, dilation)
    grad_probs = torch.empty_like(probs)
    for t, rs, cs in _taps(kernel_size, dilation, stride, ho, wo):
        grad_probs[:, t] = (grad_out * v_pad[:, :, rs, cs]).sum(1)
    del v_pad
    grad_logits = probs * (grad_probs - (probs * grad_probs).sum(1, keepdim=True))
    del grad_probs

    k_pad = _pad(k, kernel_size, dilation)
    grad_q_s = torch.zeros_like(q_s)
    grad_k_pad = torch.zeros_like(k_pad)
    grad_v_pad = torch.zeros_like(k_pad)
    for t, rs, cs in _taps(kernel_size, dilation, stride, ho, wo):
        dl_t = grad_logits[:, t].unsqueeze(1)                        # (N, 1, Ho, Wo)
        grad_q_s.addcmul_(dl_t, k_pad[:, :, rs, cs])
        grad_k_pad[:, :, rs, cs].addcmul_(dl_t, q_s)
        grad_v_pad[:, :, rs, cs].addcmul_(probs[:, t].unsqueeze(1), grad_out)
    del k_pad

    if stride == 1:
        grad_q = grad_q_s
    else:
        grad_q = torch.zeros_like(q)
        grad_q[:, :, ::stride, ::stride] = grad_q_s
    return (grad_q, _fold(grad_k_pad, h, w, kernel_size, dilation),
            _fold(grad_v_pad, h, w, kernel_size, dilation))
