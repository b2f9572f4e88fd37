"""Triton kernels for local attention on CUDA (also runnable on CPU under ``TRITON_INTERPRET=1``).

One program handles ``BLOCK_P`` output pixels of one image ``n`` with all D channels in registers.
Forward runs an online (running-max) softmax over the ``K*K`` taps, gathering one key and one value
vector per tap and pixel straight from the (N, D, H, W) inputs through the cached row/column index maps,
and stores only the probabilities.  Backward recomputes ``dP_t = <dO, v_t>`` per tap, forms the softmax
gradient, keeps ``dq`` in registers (each pixel owns its query) and scatters ``dk``/``dv`` with atomic adds,
because overlapping windows write the same source pixels.  Math runs in float32 (float64 for float64
inputs); half-precision inputs are read as they are, so no upcast copies are made.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ['forward', 'backward']

# pixels per program: the (BLOCK_P, BLOCK_D) accumulator tiles stay at 2048 elements whatever the head dim
_TILE = 2048


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@triton.jit
def _program_tile(q_ptr, D, H, W, Wo, P, stride,
                  BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    """This program's image ``n``, its ``BLOCK_P`` flat output pixels ``pix = i*Wo + j`` with their mask, the
    channel lanes ``ch``, the (BLOCK_P, BLOCK_D) mask, the (1, BLOCK_D) channel offsets ``base`` of image ``n``
    in an (N, D, H, W) tensor, and the (BLOCK_P, BLOCK_D) queries of those pixels in ``COMPUTE``."""
    n = tl.program_id(1).to(tl.int64)
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = pix < P
    i = pix // Wo
    j = pix % Wo
    ch = tl.arange(0, BLOCK_D)
    mask2 = pmask[:, None] & (ch < D)[None, :]
    base = n * D * (H * W) + ch[None, :] * (H * W)
    q = tl.load(q_ptr + base + (i * stride * W + j * stride)[:, None], mask=mask2, other=0.).to(COMPUTE)
    return n, pix, pmask, i, j, ch, mask2, base, q


@triton.jit
def _forward_kernel(q_ptr, k_ptr, v_ptr, rows_ptr, cols_ptr, out_ptr, probs_ptr,
                    D, H, W, Wo, P, stride,
                    K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    n, pix, pmask, i, j, ch, mask2, base, q = _program_tile(q_ptr, D, H, W, Wo, P, stride, BLOCK_P, BLOCK_D, COMPUTE)

    top = tl.full((BLOCK_P,), float('-inf'), COMPUTE)
    total = tl.zeros((BLOCK_P,), COMPUTE)
    acc = tl.zeros((BLOCK_P, BLOCK_D), COMPUTE)
    probs_base = probs_ptr + n * K * K * P + pix
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            src = base + (r * W + c)[:, None]
            logit = tl.sum(q * tl.load(k_ptr + src, mask=mask2, other=0.).to(COMPUTE), axis=1)
            tl.store(probs_base + (a * K + b) * P, logit, mask=pmask)   # raw logits, normalised below
            new_top = tl.maximum(top, logit)
            scale = tl.exp(top - new_top)
            weight = tl.exp(logit - new_top)
            acc = acc * scale[:, None] + weight[:, None] * tl.load(v_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            total = total * scale + weight
            top = new_top
    out_off = n * D * P + ch[None, :] * P + pix[:, None]
    tl.store(out_ptr + out_off, (acc / total[:, None]).to(out_ptr.dtype.element_ty), mask=mask2)
    # the raw logits were stored by whichever threads held them after the reduction; make them visible to
    # the threads that read them back (different layouts need not map a pixel to the same thread)
    tl.debug_barrier()
    for t in range(K * K):
        logit = tl.load(probs_base + t * P, mask=pmask, other=0.)
        tl.store(probs_base + t * P, tl.exp(logit - top) / total, mask=pmask)


@triton.jit
def _backward_kernel(grad_out_ptr, q_ptr, k_ptr, v_ptr, probs_ptr, rows_ptr, cols_ptr,
                     grad_q_ptr, grad_k_ptr, grad_v_ptr,
                     D, H, W, Wo, P, stride,
                     K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    n, pix, pmask, i, j, ch, mask2, base, q = _program_tile(q_ptr, D, H, W, Wo, P, stride, BLOCK_P, BLOCK_D, COMPUTE)
    q_off = base + (i * stride * W + j * stride)[:, None]
    go = tl.load(grad_out_ptr + n * D * P + ch[None, :] * P + pix[:, None], mask=mask2, other=0.).to(COMPUTE)
    probs_base = probs_ptr + n * K * K * P + pix

    # softmax backward needs sum_t P_t dP_t before any dL_t can be formed
    weighted = tl.zeros((BLOCK_P,), COMPUTE)
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            v = tl.load(v_ptr + base + (r * W + c)[:, None], mask=mask2, other=0.).to(COMPUTE)
            p = tl.load(probs_base + (a * K + b) * P, mask=pmask, other=0.)
            weighted += p * tl.sum(go * v, axis=1)

    grad_q = tl.zeros((BLOCK_P, BLOCK_D), COMPUTE)
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            src = base + (r * W + c)[:, None]
            v = tl.load(v_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            p = tl.load(probs_base + (a * K + b) * P, mask=pmask, other=0.)
            dl = p * (tl.sum(go * v, axis=1) - weighted)
            grad_q += dl[:, None] * tl.load(k_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            tl.atomic_add(grad_k_ptr + src, dl[:, None] * q, mask=mask2)
            tl.atomic_add(grad_v_ptr + src, p[:, None] * go, mask=mask2)
    tl.store(grad_q_ptr + q_off, grad_q, mask=mask2)


def _launch_args(q: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    n, d, h, w = q.shape
    ho, wo = rows.shape[0], cols.shape[0]
    block_d = triton.next_power_of_2(d)
    block_p = max(16, min(128, _TILE // block_d))
    grid = (triton.cdiv(ho * wo, block_p), n)
    meta = dict(K=rows.shape[1], BLOCK_P=block_p, BLOCK_D=block_d, COMPUTE=_tl_dtype(q.dtype))
    return grid, (d, h, w, wo, ho * wo), meta


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
            stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v (N, D, H, W); rows (Ho, K), cols (Wo, K) -> out (N, D, Ho, Wo), probs (N, K*K, Ho, Wo) fp32/fp64."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    grid, sizes, meta = _launch_args(q, rows, cols)
    n, d = q.shape[:2]
    ho, wo = rows.shape[0], cols.shape[0]
    out = q.new_empty(n, d, ho, wo)
    probs = q.new_empty(n, meta['K'] ** 2, ho, wo, dtype=_compute_dtype(q.dtype))
    _forward_kernel[grid](q, k, v, rows, cols, out, probs, *sizes, stride, **meta)
    return out, probs


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, probs: torch.Tensor,
             rows: torch.Tensor, cols: torch.Tensor, stride: int) -> list[torch.Tensor]:
    """Gradients dq, dk, dv (N, D, H, W) in the dtype of q; dk/dv accumulate in fp32/fp64 atomics."""
    q, k, v, grad_out, probs = (t.contiguous() for t in (q, k, v, grad_out, probs))
    grid, sizes, meta = _launch_args(q, rows, cols)
    acc_dtype = _compute_dtype(q.dtype)
    grad_q = torch.zeros_like(q, dtype=acc_dtype)
    grad_k = torch.zeros_like(k, dtype=acc_dtype)
    grad_v = torch.zeros_like(v, dtype=acc_dtype)
    _backward_kernel[grid](grad_out, q, k, v, probs, rows, cols, grad_q, grad_k, grad_v, *sizes, stride, **meta)
    return [g.to(q.dtype) for g in (grad_q, grad_k, grad_v)]
