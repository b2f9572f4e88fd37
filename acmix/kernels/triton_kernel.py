"""Triton kernels for local attention on CUDA (also runnable on CPU under ``TRITON_INTERPRET=1``).

One program handles ``BLOCK_P`` output pixels of one image ``n`` with all D channels in registers.
Forward runs an online (running-max) softmax over the ``K*K`` taps, gathering one key and one value
vector per tap and pixel straight from the (N, D, H, W) inputs through the cached row/column index maps,
and stores only the log-sum-exp of each pixel's logits.  Backward recomputes the logits and the probabilities
``exp(logit - lse)`` from q and k in two gathers without atomics: per output pixel (its query's gradient, and
``delta = <dO, out>`` of the softmax gradient), then per input pixel over the output pixels whose windows read it
(its key's and value's gradients; ``indexing.window_sources`` lists them).  Math runs in float32 (float64 for
float64 inputs); half-precision inputs are read as they are, so no upcast copies are made.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ['forward', 'backward']

# pixels per program: the (BLOCK_D, BLOCK_P) accumulator tiles stay at 2048 elements whatever the head dim
_TILE = 2048


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


# Tiles are (BLOCK_D channels, BLOCK_P pixels), pixels along the last axis: Triton lays the lanes of a warp along
# the last axis when it cannot prove either axis contiguous (window gathers), so a warp reads one channel of 32
# neighbouring pixels (mostly consecutive addresses) and each lane holds all channels of its pixel, so that the
# dot products over the head dim reduce within the lane.


@triton.jit
def _program_tile(q_ptr, D, H, W, Wo, P, stride,
                  BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    """This program's image ``n``, its ``BLOCK_P`` flat output pixels ``pix = i*Wo + j`` with their mask, the
    channel lanes ``ch``, the (BLOCK_D, BLOCK_P) mask, the (BLOCK_D, 1) channel offsets ``base`` of image ``n``
    in an (N, D, H, W) tensor, and the (BLOCK_D, BLOCK_P) queries of those pixels in ``COMPUTE``."""
    n = tl.program_id(1).to(tl.int64)
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = pix < P
    i = pix // Wo
    j = pix % Wo
    ch = tl.arange(0, BLOCK_D)
    mask2 = (ch < D)[:, None] & pmask[None, :]
    base = n * D * (H * W) + ch[:, None] * (H * W)
    q = tl.load(q_ptr + base + (i * stride * W + j * stride)[None, :], mask=mask2, other=0.).to(COMPUTE)
    return n, pix, pmask, i, j, ch, mask2, base, q


@triton.jit
def _forward_kernel(q_ptr, k_ptr, v_ptr, rows_ptr, cols_ptr, out_ptr, lse_ptr,
                    D, H, W, Wo, P, stride,
                    K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    n, pix, pmask, i, j, ch, mask2, base, q = _program_tile(q_ptr, D, H, W, Wo, P, stride, BLOCK_P, BLOCK_D, COMPUTE)

    top = tl.full((BLOCK_P,), float('-inf'), COMPUTE)
    total = tl.zeros((BLOCK_P,), COMPUTE)
    acc = tl.zeros((BLOCK_D, BLOCK_P), COMPUTE)
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            src = base + (r * W + c)[None, :]
            logit = tl.sum(q * tl.load(k_ptr + src, mask=mask2, other=0.).to(COMPUTE), axis=0)
            new_top = tl.maximum(top, logit)
            scale = tl.exp(top - new_top)
            weight = tl.exp(logit - new_top)
            acc = acc * scale[None, :] + weight[None, :] * tl.load(v_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            total = total * scale + weight
            top = new_top
    out_off = n * D * P + ch[:, None] * P + pix[None, :]
    tl.store(out_ptr + out_off, (acc / total[None, :]).to(out_ptr.dtype.element_ty), mask=mask2)
    tl.store(lse_ptr + n * P + pix, top + tl.log(total), mask=pmask)


@triton.jit
def _backward_query_kernel(grad_out_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, rows_ptr, cols_ptr, grad_q_ptr, delta_ptr,
                           D, H, W, Wo, P, stride,
                           K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr):
    """Per output pixel, one pass over its taps: ``delta = sum_t p_t g_t`` (g_t = <dO, v_t>) and
    ``dq = sum_t p_t (g_t - delta) k_t = sum_t p_t g_t k_t - delta * sum_t p_t k_t``; stores dq and delta."""
    n, pix, pmask, i, j, ch, mask2, base, q = _program_tile(q_ptr, D, H, W, Wo, P, stride, BLOCK_P, BLOCK_D, COMPUTE)
    q_off = base + (i * stride * W + j * stride)[None, :]
    go = tl.load(grad_out_ptr + n * D * P + ch[:, None] * P + pix[None, :], mask=mask2, other=0.).to(COMPUTE)
    lse = tl.load(lse_ptr + n * P + pix, mask=pmask, other=0.)
    delta = tl.zeros((BLOCK_P,), COMPUTE)
    weighted_k = tl.zeros((BLOCK_D, BLOCK_P), COMPUTE)  # sum_t p_t g_t k_t
    mean_k = tl.zeros((BLOCK_D, BLOCK_P), COMPUTE)      # sum_t p_t k_t
    for a in range(K):
        r = tl.load(rows_ptr + i * K + a, mask=pmask, other=0)
        for b in range(K):
            c = tl.load(cols_ptr + j * K + b, mask=pmask, other=0)
            src = base + (r * W + c)[None, :]
            k = tl.load(k_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            v = tl.load(v_ptr + src, mask=mask2, other=0.).to(COMPUTE)
            p = tl.exp(tl.sum(q * k, axis=0) - lse)
            pg = p * tl.sum(go * v, axis=0)
            delta += pg
            weighted_k += pg[None, :] * k
            mean_k += p[None, :] * k
    grad_q = weighted_k - delta[None, :] * mean_k
    tl.store(grad_q_ptr + q_off, grad_q.to(grad_q_ptr.dtype.element_ty), mask=mask2)
    tl.store(delta_ptr + n * P + pix, delta, mask=pmask)


@triton.jit
def _backward_key_kernel(grad_out_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, row_readers_ptr, col_readers_ptr,
                         grad_k_ptr, grad_v_ptr, D, H, W, Wo, P, stride,
                         LR, LC, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
                         COMPUTE: tl.constexpr):
    """Per input pixel s, a gather over the output pixels o whose windows read it (``window_sources``: LR rows
    times LC columns, -1 padded): ``dk_s = sum_o dL_os q_o`` and ``dv_s = sum_o p_os dO_o``, with the
    probability ``p_os = exp(<q_o, k_s> - lse_o)`` and ``dL_os = p_os (<dO_o, v_s> - delta_o)`` recomputed.
    Each input pixel owns its gradient: no atomics."""
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = pix < HW
    r = pix // W
    c = pix % W
    ch = tl.arange(0, BLOCK_D)
    cmask = ch < D
    mask2 = cmask[:, None] & pmask[None, :]
    off = n * D * HW + ch[:, None] * HW + pix[None, :]
    k = tl.load(k_ptr + off, mask=mask2, other=0.).to(COMPUTE)
    v = tl.load(v_ptr + off, mask=mask2, other=0.).to(COMPUTE)
    grad_k = tl.zeros((BLOCK_D, BLOCK_P), COMPUTE)
    grad_v = tl.zeros((BLOCK_D, BLOCK_P), COMPUTE)
    for u in range(LR):
        i = tl.load(row_readers_ptr + r * LR + u, mask=pmask, other=-1)
        for w in range(LC):
            j = tl.load(col_readers_ptr + c * LC + w, mask=pmask, other=-1)
            valid = (i >= 0) & (j >= 0)
            vmask = cmask[:, None] & valid[None, :]
            o = i * Wo + j
            q = tl.load(q_ptr + n * D * HW + ch[:, None] * HW + (i * stride * W + j * stride)[None, :], mask=vmask,
                        other=0.).to(COMPUTE)
            go = tl.load(grad_out_ptr + n * D * P + ch[:, None] * P + o[None, :], mask=vmask, other=0.).to(COMPUTE)
            lse = tl.load(lse_ptr + n * P + o, mask=valid, other=0.)
            delta = tl.load(delta_ptr + n * P + o, mask=valid, other=0.)
            p = tl.where(valid, tl.exp(tl.sum(q * k, axis=0) - lse), 0.)
            grad_k += (p * (tl.sum(go * v, axis=0) - delta))[None, :] * q
            grad_v += p[None, :] * go
    tl.store(grad_k_ptr + off, grad_k.to(grad_k_ptr.dtype.element_ty), mask=mask2)
    tl.store(grad_v_ptr + off, grad_v.to(grad_v_ptr.dtype.element_ty), mask=mask2)


def _launch(kernel, pixels: int, images: int, args: tuple, meta: dict) -> None:
    """``kernel`` over ``pixels`` of ``images`` images in (BLOCK_D, BLOCK_P) tiles of about ``_TILE`` elements."""
    block_p = max(32, min(128, _TILE // meta['BLOCK_D']))  # at least one warp's lanes along the pixels
    kernel[(triton.cdiv(pixels, block_p), images)](*args, BLOCK_P=block_p, **meta)


def _geometry(q: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> tuple[tuple[int, ...], dict]:
    """The size arguments (D, H, W, Wo, P) and the constants shared by the kernels."""
    n, d, h, w = q.shape
    ho, wo = rows.shape[0], cols.shape[0]
    meta = dict(BLOCK_D=triton.next_power_of_2(d), COMPUTE=_tl_dtype(q.dtype))
    return (d, h, w, wo, ho * wo), meta


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
            stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v (N, D, H, W); rows (Ho, K), cols (Wo, K) -> out (N, D, Ho, Wo), lse (N, Ho, Wo) fp32/fp64."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    sizes, meta = _geometry(q, rows, cols)
    n, d = q.shape[:2]
    ho, wo = rows.shape[0], cols.shape[0]
    out = q.new_empty(n, d, ho, wo)
    lse = q.new_empty(n, ho, wo, dtype=_compute_dtype(q.dtype))
    _launch(_forward_kernel, ho * wo, n, (q, k, v, rows, cols, out, lse, *sizes, stride), dict(meta, K=rows.shape[1]))
    return out, lse


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor,
             rows: torch.Tensor, cols: torch.Tensor, stride: int, row_readers: torch.Tensor,
             col_readers: torch.Tensor) -> list[torch.Tensor]:
    """Gradients dq, dk, dv (N, D, H, W) in the dtypes of q, k, v: ``row_readers`` (H, LR) and ``col_readers``
    (W, LC) are ``window_sources`` of the window.  Two kernels, no atomics: per output pixel dq (and delta),
    then per input pixel dk and dv."""
    q, k, v, grad_out, lse = (t.contiguous() for t in (q, k, v, grad_out, lse))
    sizes, meta = _geometry(q, rows, cols)
    n, _, h, w = q.shape
    grad_q = torch.empty_like(q) if stride == 1 else torch.zeros_like(q)  # pixels between strided queries: 0
    delta = torch.empty_like(lse)
    _launch(_backward_query_kernel, sizes[-1], n, (grad_out, q, k, v, lse, rows, cols, grad_q, delta, *sizes, stride),
            dict(meta, K=rows.shape[1]))
    grad_k, grad_v = torch.empty_like(k), torch.empty_like(v)
    _launch(_backward_key_kernel, h * w, n, (grad_out, q, k, v, lse, delta, row_readers, col_readers, grad_k, grad_v,
                                             *sizes, stride),
            dict(meta, LR=row_readers.shape[1], LC=col_readers.shape[1]))
    return [grad_q, grad_k, grad_v]
