"""Triton kernels of the shift conv ``acmix::shift_conv_fwd`` on CUDA (also runnable on CPU under
``TRITON_INTERPRET=1``): the grouped k x k conv of ``acmix.kernels.shift_conv``,

    out[b, g*N + n, y, x] = sum_{m, a, c} weight[g*N + n, m, a, c] * x[b, g, m, s*y + dy_a, s*x + dx_c]

(zero padding), for x (B, D, M, H, W) with any strides, read in place.  cuDNN runs this grouped conv (M = 3..12
planes and N = 1..24 outputs per group) far below its dense-conv speed, its backward slower still.

One program computes a (BLOCK_P pixels, BLOCK_G groups) tile: the forward sums the M * k^2 shifted input tiles
(each read from L1/L2; pixels are contiguous in memory) into one output channel per n; the input gradient is the
transposed conv in the same form (only taps that land on a strided output pixel count); the weight gradient sums
``dout * x_shifted`` over ``ITERS`` pixel tiles per program and adds each (n, m, tap) partial into a float32
(float64 for float64) accumulator with one vector atomic.  Math runs in float32 (float64 for float64 inputs);
half-precision inputs are read as they are.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .shift_conv import _dense
from .triton_launch import launch_tuned

__all__ = ['forward', 'backward']

_DW_ITERS = 8  # pixel tiles per weight-gradient program


def _compute(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@triton.jit
def _forward_kernel(x_ptr, w_ptr, out_ptr, D, H, W, Ho, Wo, sxb, sxg, sxm, sxh, sxw,
                    M, N, K: tl.constexpr, DIL: tl.constexpr, STRIDE: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr, COMPUTE: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    pmask = pix < Ho * Wo
    gmask = g < D
    yo = pix // Wo
    xo = pix % Wo
    x_base = x_ptr + b * sxb + g[None, :] * sxg
    out_base = out_ptr + b * (D * N) * (Ho * Wo) + pix[:, None]
    for n in range(N):
        acc = tl.zeros((BLOCK_P, BLOCK_G), COMPUTE)
        for m in range(M):
            for t in tl.static_range(K * K):
                yi = yo * STRIDE + ((t // K) * DIL - DIL * (K - 1) // 2)
                xi = xo * STRIDE + ((t % K) * DIL - DIL * (K - 1) // 2)
                inside = pmask & (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W)
                xv = tl.load(x_base + m * sxm + (yi * sxh + xi * sxw)[:, None], mask=inside[:, None] & gmask[None, :],
                             other=0.).to(COMPUTE)
                wv = tl.load(w_ptr + ((g * N + n) * M + m) * (K * K) + t, mask=gmask, other=0.).to(COMPUTE)
                acc += xv * wv[None, :]
        tl.store(out_base + ((g * N + n) * (Ho * Wo))[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=pmask[:, None] & gmask[None, :])


@triton.jit
def _input_grad_kernel(grad_ptr, w_ptr, dx_ptr, D, H, W, Ho, Wo, sdb, sdg, sdm, sdh, sdw,
                       M, N, K: tl.constexpr, DIL: tl.constexpr, STRIDE: tl.constexpr,
                       BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr, COMPUTE: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    pmask = pix < H * W
    gmask = g < D
    yi = pix // W
    xi = pix % W
    grad_base = grad_ptr + b * (D * N) * (Ho * Wo)
    for m in range(M):
        acc = tl.zeros((BLOCK_P, BLOCK_G), COMPUTE)
        for n in range(N):
            ch = g * N + n
            for t in tl.static_range(K * K):
                ty = yi - ((t // K) * DIL - DIL * (K - 1) // 2)
                tx = xi - ((t % K) * DIL - DIL * (K - 1) // 2)
                valid = pmask & (ty >= 0) & (tx >= 0)
                if STRIDE > 1:
                    valid = valid & (ty % STRIDE == 0) & (tx % STRIDE == 0)
                yo = ty // STRIDE
                xo = tx // STRIDE
                valid = valid & (yo < Ho) & (xo < Wo)
                gv = tl.load(grad_base + (ch * (Ho * Wo))[None, :] + (yo * Wo + xo)[:, None],
                             mask=valid[:, None] & gmask[None, :], other=0.).to(COMPUTE)
                wv = tl.load(w_ptr + (ch * M + m) * (K * K) + t, mask=gmask, other=0.).to(COMPUTE)
                acc += gv * wv[None, :]
        tl.store(dx_ptr + b * sdb + g[None, :] * sdg + m * sdm + (yi * sdh + xi * sdw)[:, None],
                 acc.to(dx_ptr.dtype.element_ty), mask=pmask[:, None] & gmask[None, :])


@triton.jit
def _weight_grad_kernel(grad_ptr, x_ptr, dw_ptr, D, H, W, Ho, Wo, sxb, sxg, sxm, sxh, sxw,
                        M, N, K: tl.constexpr, DIL: tl.constexpr, STRIDE: tl.constexpr,
                        ITERS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr, COMPUTE: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = g < D
    first = tl.program_id(0) * (ITERS * BLOCK_P)
    grad_base = grad_ptr + b * (D * N) * (Ho * Wo)
    x_base = x_ptr + b * sxb + g[None, :] * sxg
    for n in range(N):
        ch = g * N + n
        for m in range(M):
            for t in tl.static_range(K * K):
                acc = tl.zeros((BLOCK_P, BLOCK_G), COMPUTE)
                for it in range(ITERS):
                    pix = first + it * BLOCK_P + tl.arange(0, BLOCK_P)
                    pmask = pix < Ho * Wo
                    yi = (pix // Wo) * STRIDE + ((t // K) * DIL - DIL * (K - 1) // 2)
                    xi = (pix % Wo) * STRIDE + ((t % K) * DIL - DIL * (K - 1) // 2)
                    inside = pmask & (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W)
                    gv = tl.load(grad_base + (ch * (Ho * Wo))[None, :] + pix[:, None],
                                 mask=pmask[:, None] & gmask[None, :], other=0.).to(COMPUTE)
                    xv = tl.load(x_base + m * sxm + (yi * sxh + xi * sxw)[:, None],
                                 mask=inside[:, None] & gmask[None, :], other=0.).to(COMPUTE)
                    acc += gv * xv
                tl.atomic_add(dw_ptr + (ch * M + m) * (K * K) + t, tl.sum(acc, axis=0), mask=gmask)


def _tiles(groups: int) -> list[dict]:
    """Candidate (BLOCK_P, BLOCK_G, num_warps) tiles; the first is the default.  Few: each is compiled once per
    kernel and constant set on the first launch."""
    block_g = min(32, triton.next_power_of_2(groups))
    return [dict(BLOCK_P=2048 // block_g, BLOCK_G=block_g, num_warps=4),
            dict(BLOCK_P=4096 // block_g, BLOCK_G=block_g, num_warps=8)]


def _constants(x: torch.Tensor, weight: torch.Tensor, dilation: int, stride: int) -> dict:
    b, d, m, h, w = x.shape
    return dict(M=m, N=weight.shape[0] // d, K=weight.shape[-1], DIL=dilation, STRIDE=stride,
                COMPUTE=_compute(x.dtype))


def forward(x: torch.Tensor, weight: torch.Tensor, dilation: int, stride: int) -> torch.Tensor:
    """x (B, D, M, H, W) any strides, weight (D*N, M, k, k) -> (B, D*N, ceil(H/s), ceil(W/s)) in x's dtype."""
    b, d, m, h, w = x.shape
    ho, wo = -(-h // stride), -(-w // stride)
    weight = weight.contiguous()
    out = x.new_empty(b, weight.shape[0], ho, wo)
    launch_tuned(_forward_kernel, lambda t: (triton.cdiv(ho * wo, t['BLOCK_P']), triton.cdiv(d, t['BLOCK_G']), b),
                 (x, weight, out, d, h, w, ho, wo, *x.stride()), _constants(x, weight, dilation, stride), _tiles(d))
    return out


def backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, dilation: int,
             stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``forward``: dx with x's strides (when x is dense) and dtype, dweight in weight's dtype."""
    b, d, m, h, w = x.shape
    ho, wo = grad.shape[-2:]
    grad, weight = grad.contiguous(), weight.contiguous()
    consts = _constants(x, weight, dilation, stride)
    # x's strides when they are a permutation of a dense layout (a transposed view: its gradient is then a view too)
    dx = (torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device) if _dense(x) else
          torch.empty_like(x, memory_format=torch.contiguous_format))
    launch_tuned(_input_grad_kernel,
                 lambda t: (triton.cdiv(h * w, t['BLOCK_P']), triton.cdiv(d, t['BLOCK_G']), b),
                 (grad, weight, dx, d, h, w, ho, wo, *dx.stride()), consts, _tiles(d))
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw = torch.zeros(weight.shape, dtype=acc_dtype, device=x.device)
    launch_tuned(_weight_grad_kernel,
                 lambda t: (triton.cdiv(ho * wo, t['BLOCK_P'] * _DW_ITERS), triton.cdiv(d, t['BLOCK_G']), b),
                 (grad, x, dw, d, h, w, ho, wo, *x.stride()), dict(consts, ITERS=_DW_ITERS), _tiles(d),
                 reset=dw.zero_)
    return dx, dw.to(weight.dtype)
