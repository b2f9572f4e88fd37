"""Triton kernels for local attention on CUDA (also runnable on CPU under ``TRITON_INTERPRET=1``).

One program handles ``BLOCK_P`` output pixels of one image ``n`` with all D channels in registers.
Forward runs an online (running-max) softmax over the ``K*K`` taps, gathering one key and one value
vector per tap and pixel straight from the (N, D, H, W) inputs through the cached row/column index maps,
and stores only the log-sum-exp of each pixel's logits.  Backward recomputes the logits, the probabilities
``exp(logit - lse)`` and ``dP_t = <dO, v_t>`` per tap, forms the softmax gradient, keeps ``dq`` in registers
(each pixel owns its query) and scatters ``dk``/``dv`` with atomic adds, because overlapping windows write
the same source pixels.  Math runs in float32 (float64 for float64
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
def _forward_kernel(q_ptr, k_ptr, v_ptr, rows_ptr, cols_ptr, out_ptr, lse_ptr,
                    D, H, W, Wo, P, stride,
                    K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    n, pix, pmask, i, j, ch, mask2, base, q = _program_tile(q_ptr, D, H, W, Wo, P, stride, BLOCK_P, BLOCK_D, COMPUTE)

    top = tl.full((BLOCK_P,), float('-inf'), COMPUTE)
    total = tl.zeros((BLOCK_P,), COMPUTE)
    acc = tl.zeros((BLOCK_P, BLOCK_D), COMPUTE)
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            src = base + (r * W + c)[:, None]
            logit = tl.sum(q * tl.load(k_ptr + src, mask=mask2, other=0.).to(COMPUTE), axis=1)
            new_top = tl.maximum(top, logit)
            scale = tl.exp(top - new_top)
            weight = tl.exp(logit - new_top)
            acc = acc * scale[:, None] + weight[:, None] * tl.load(v_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            total = total * scale + weight
            top = new_top
    out_off = n * D * P + ch[None, :] * P + pix[:, None]
    tl.store(out_ptr + out_off, (acc / total[:, None]).to(out_ptr.dtype.element_ty), mask=mask2)
    tl.store(lse_ptr + n * P + pix, top + tl.log(total), mask=pmask)


@triton.jit
def _backward_kernel(grad_out_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, rows_ptr, cols_ptr,
                     grad_q_ptr, grad_k_ptr, grad_v_ptr,
                     D, H, W, Wo, P, stride,
                     K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    n, pix, pmask, i, j, ch, mask2, base, q = _program_tile(q_ptr, D, H, W, Wo, P, stride, BLOCK_P, BLOCK_D, COMPUTE)
    q_off = base + (i * stride * W + j * stride)[:, None]
    go = tl.load(grad_out_ptr + n * D * P + ch[None, :] * P + pix[:, None], mask=mask2, other=0.).to(COMPUTE)
    lse = tl.load(lse_ptr + n * P + pix, mask=pmask, other=0.)

    # softmax backward needs sum_t P_t dP_t before any dL_t can be formed
    weighted = tl.zeros((BLOCK_P,), COMPUTE)
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            src = base + (r * W + c)[:, None]
            v = tl.load(v_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            p = tl.exp(tl.sum(q * tl.load(k_ptr + src, mask=mask2, other=0.).to(COMPUTE), axis=1) - lse)
            weighted += p * tl.sum(go * v, axis=1)

    grad_q = tl.zeros((BLOCK_P, BLOCK_D), COMPUTE)
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            src = base + (r * W + c)[:, None]
            v = tl.load(v_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            k = tl.load(k_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            p = tl.exp(tl.sum(q * k, axis=1) - lse)
            dl = p * (tl.sum(go * v, axis=1) - weighted)
            grad_q += dl[:, None] * k
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
    """q, k, v (N, D, H, W); rows (Ho, K), cols (Wo, K) -> out (N, D, Ho, Wo), lse (N, Ho, Wo) fp32/fp64."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    grid, sizes, meta = _launch_args(q, rows, cols)
    n, d = q.shape[:2]
    ho, wo = rows.shape[0], cols.shape[0]
    out = q.new_empty(n, d, ho, wo)
    lse = q.new_empty(n, ho, wo, dtype=_compute_dtype(q.dtype))
    _forward_kernel[grid](q, k, v, rows, cols, out, lse, *sizes, stride, **meta)
    return out, lse


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor,
             rows: torch.Tensor, cols: torch.Tensor, stride: int) -> list[torch.Tensor]:
    """Gradients dq, dk, dv (N, D, H, W) in the dtype of q; dk/dv accumulate in fp32/fp64 atomics."""
    q, k, v, grad_out, lse = (t.contiguous() for t in (q, k, v, grad_out, lse))
    grid, sizes, meta = _launch_args(q, rows, cols)
    acc_dtype = _compute_dtype(q.dtype)
    grad_q = torch.zeros_like(q, dtype=acc_dtype)
    grad_k = torch.zeros_like(k, dtype=acc_dtype)
    grad_v = torch.zeros_like(v, dtype=acc_dtype)
    _backward_kernel[grid](grad_out, q, k, v, lse, rows, cols, grad_q, grad_k, grad_v, *sizes, stride, **meta)
    return [g.to(q.dtype) for g in (grad_q, grad_k, grad_v)]
