"""Fast local attention as PyTorch custom ops, so autograd, ``torch.compile`` and ``torch.export`` treat it
as one opaque node with a known output shape.

Two ops, both computing in float32/float64: float16/bfloat16 inputs are upcast inside the op (the Triton
kernels upcast in registers) and the results cast back, because a half-precision softmax over 49 taps loses
too much:

- ``acmix::local_attention_fwd(qkv, key_bias, heads, K, dilation, stride, scale, backend) -> (out, lse)``
- ``acmix::local_attention_bwd(grad_out, qkv, key_bias, lse, heads, K, dilation, stride, scale, backend) -> grad_qkv``

qkv is q | k | v as one (B, 3 * G * D, H, W) map (G = ``heads``), any strides, viewed inside the ops as
(B, 3, G, D, H, W), so that autograd hands back one plain gradient for it: three separate inputs sliced from
one tensor would each get a zero-filled full-size gradient to add up, and a view node between the op and
Stage I would hand autograd a gradient it cannot add the convolution path's gradient into in place.  ``out``
is (B, G * D, Ho, Wo); the attention uses the queries ``scale * q`` and the keys ``k - key_bias`` (``key_bias``
(D, H, W) or None).  ``lse`` (B, G, Ho, Wo), float64 for float64 inputs and float32 otherwise, is the log-sum-exp
of each output pixel's ``K*K`` logits, saved for backward, which recomputes the logits and the softmax ``exp(logit - lse)`` from q and k
(flash-attention style): one number per pixel and head instead of the ``K*K`` probabilities.  Every backend
reads and writes the same ``lse``, so forward and backward may even run on different backends.

``backend`` picks the implementation inside the op, so graphs stay device agnostic: ``'auto'`` = C++ on CPU
(pure PyTorch, with one warning, if the build fails), Triton on CUDA (pure PyTorch, with one warning, if
Triton is missing or its first launch fails), pure PyTorch elsewhere; ``'cpp'``, ``'triton'``, ``'torch'``
force one and fail loudly instead (tests, benchmarks; ``'triton'`` on CPU needs ``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

from . import cpu_ext, torch_loop
from .indexing import out_size, padded_index, window_index, window_sources

__all__ = ['BACKENDS', 'local_attention_fast', 'multihead_local_attention_fast', 'resolve_backend']

BACKENDS = ('auto', 'cpp', 'triton', 'torch')
_COMPUTE_DTYPES = (torch.float32, torch.float64)


@functools.cache
def _triton_module():
    """The Triton kernels, or None when Triton is not importable."""
    try:
        from . import triton_kernel
    except ImportError:
        return None
    return triton_kernel


# 'auto' trusts Triton once a launch has worked; until then a failure (no usable compiler or driver) is
# reported once and the PyTorch loop takes over for the rest of the process
_triton_health = {'verified': False, 'failed': False}


def _call_triton(name: str, fallback_ok: bool, *args):
    """``triton_kernel.<name>(*args)``, or None (after one warning) if its first launch fails and fallback_ok."""
    kernel = getattr(_triton_module(), name)
    if _triton_health['verified'] or not fallback_ok:
        return kernel(*args)
    try:
        result = kernel(*args)
    except Exception as exc:  # compile/launch problems must not break the model: the loop gives the same result
        warnings.warn(f'acmix: the Triton local-attention kernel failed, falling back to the pure-PyTorch path '
                      f'(slower, same results): {exc!r}', RuntimeWarning, stacklevel=3)
        _triton_health['failed'] = True
        return None
    _triton_health['verified'] = True
    return result


def resolve_backend(backend: str, device: torch.device) -> str:
    """Concrete backend ('cpp' | 'triton' | 'torch') for ``backend`` on ``device``; loud if impossible."""
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if backend == 'auto':
        if device.type == 'cpu':
            return 'cpp' if cpu_ext.load() is not None else 'torch'
        if device.type == 'cuda' and _triton_module() is not None and not _triton_health['failed']:
            return 'triton'
        return 'torch'
    if backend == 'cpp' and (device.type != 'cpu' or cpu_ext.load() is None):
        raise RuntimeError(f'backend cpp needs a CPU tensor and a working C++ build (device {device})')
    if backend == 'triton' and (_triton_module() is None or
                                (device.type != 'cuda' and os.environ.get('TRITON_INTERPRET') != '1')):
        raise RuntimeError(f'backend triton needs an importable triton and a CUDA tensor (device {device}), '
                           f'or TRITON_INTERPRET=1 for CPU tensors')
    return backend


def _upcast(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t if t.dtype in _COMPUTE_DTYPES else t.float() for t in tensors]


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _COMPUTE_DTYPES else torch.float32


def _padded_indices(q: torch.Tensor, kernel_size: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source row and column of every position of the reflection-padded (H + 2p, W + 2p) map (C++ kernel)."""
    h, w = q.shape[-2:]
    return padded_index(h, kernel_size, dilation, q.device), padded_index(w, kernel_size, dilation, q.device)


def _triton_windows(q: torch.Tensor, kernel_size: int, dilation: int, stride: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                             int]:
    """rows (Ho, K), cols (Wo, K) and stride: the window arguments of the Triton kernels."""
    h, w = q.shape[-2:]
    return (window_index(h, kernel_size, dilation, stride, q.device),
            window_index(w, kernel_size, dilation, stride, q.device), stride)


def _as_images(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor | None,
               scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, G, D, H, W) heads -> the plain arguments of the PyTorch and Triton backends: (B*G, D, H, W) queries
    ``scale * q``, keys ``k - key_bias`` and values (the C++ kernel applies scale and bias as it reads)."""
    k = k if key_bias is None else k - key_bias
    return (q * scale).flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)


@torch.library.custom_op('acmix::local_attention_fwd', mutates_args=())
def _fwd_op(qkv: torch.Tensor, key_bias: torch.Tensor | None, heads: int, kernel_size: int, dilation: int,
            stride: int, scale: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = qkv.unflatten(1, (3, heads, -1)).unbind(1)  # (B, G, D, H, W) views
    b, g = q.shape[:2]
    chosen = resolve_backend(backend, q.device)
    out = lse = None
    if chosen == 'triton':
        q4, k4, v4 = _as_images(q, k, v, key_bias, scale)
        result = _call_triton('forward', backend == 'auto', q4, k4, v4,
                              *_triton_windows(q, kernel_size, dilation, stride))
        if result is not None:
            out, lse = result[0].unflatten(0, (b, g)), result[1].unflatten(0, (b, g))
    if out is None:
        qc, kc, vc = _upcast(q, k, v)
        biasc = None if key_bias is None else _upcast(key_bias)[0].contiguous()
        if chosen == 'cpp':
            out, lse = cpu_ext.load().forward(qc, kc, vc, biasc, *_padded_indices(q, kernel_size, dilation),
                                              kernel_size, dilation, stride, scale)
        else:  # 'torch', or 'triton' that failed its first launch
            out, lse = torch_loop.forward(*_as_images(qc, kc, vc, biasc, scale), kernel_size, dilation, stride)
            out, lse = out.unflatten(0, (b, g)), lse.unflatten(0, (b, g))
    return out.flatten(1, 2).to(q.dtype), lse


@_fwd_op.register_fake
def _fwd_fake(qkv, key_bias, heads, kernel_size, dilation, stride, scale, backend):
    b, c, h, w = qkv.shape
    ho, wo = out_size(h, stride), out_size(w, stride)
    return qkv.new_empty(b, c // 3, ho, wo), qkv.new_empty(b, heads, ho, wo, dtype=_stats_dtype(qkv.dtype))


@torch.library.custom_op('acmix::local_attention_bwd', mutates_args=())
def _bwd_op(grad_out: torch.Tensor, qkv: torch.Tensor, key_bias: torch.Tensor | None, lse: torch.Tensor,
            heads: int, kernel_size: int, dilation: int, stride: int, scale: float, backend: str) -> torch.Tensor:
    q, k, v = qkv.unflatten(1, (3, heads, -1)).unbind(1)  # (B, G, D, H, W) views
    grad_out = grad_out.unflatten(1, (heads, -1))          # (B, G, D, Ho, Wo)
    b, g = q.shape[:2]
    chosen = resolve_backend(backend, q.device)
    grads = None
    if chosen == 'triton':
        h, w = q.shape[-2:]
        grads = _call_triton('backward', backend == 'auto', grad_out.flatten(0, 1), *_as_images(q, k, v, key_bias, scale),
                             lse.flatten(0, 1), *_triton_windows(q, kernel_size, dilation, stride),
                             window_sources(h, kernel_size, dilation, stride, q.device),
                             window_sources(w, kernel_size, dilation, stride, q.device))
    if grads is None:
        gc, qc, kc, vc, lc = _upcast(grad_out, q, k, v, lse)
        biasc = None if key_bias is None else _upcast(key_bias)[0].contiguous()
        if chosen == 'cpp':
            return cpu_ext.load().backward(gc, qc, kc, vc, biasc, lc.contiguous(),
                                           *_padded_indices(q, kernel_size, dilation), kernel_size, dilation, stride,
                                           scale)[0].to(qkv.dtype)  # (B, 3*G*D, H, W)
        # 'torch', or 'triton' that failed its first launch
        grads = torch_loop.backward(gc.flatten(0, 1), *_as_images(qc, kc, vc, biasc, scale), lc.flatten(0, 1),
                                    kernel_size, dilation, stride)
    grad_q, grad_k, grad_v = (grad.reshape(b, -1, *grad.shape[-2:]) for grad in grads)  # (B, G*D, H, W) each
    return torch.cat([grad_q * scale, grad_k, grad_v], dim=1).to(qkv.dtype)  # a fresh tensor, not a view


@_bwd_op.register_fake
def _bwd_fake(grad_out, qkv, key_bias, lse, heads, kernel_size, dilation, stride, scale, backend):
    return qkv.new_empty(qkv.shape)


def _setup_context(ctx, inputs, output) -> None:
    qkv, key_bias, heads, kernel_size, dilation, stride, scale, backend = inputs
    ctx.save_for_backward(qkv, key_bias, output[1])
    ctx.window = (heads, kernel_size, dilation, stride, scale, backend)


def _backward(ctx, grad_out, _grad_lse):
    # lse is an internal output (never returned by the public functions), so its gradient is ignored
    qkv, key_bias, lse = ctx.saved_tensors
    grad_qkv = _bwd_op(grad_out, qkv, key_bias, lse, *ctx.window)
    grad_bias = None
    if ctx.needs_input_grad[1]:  # keys are k - key_bias
        grad_k = grad_qkv.unflatten(1, (3, ctx.window[0], -1))[:, 1]  # (B, G, D, H, W)
        # two single-axis sums: one sum over (0, 1) of this strided view (B and G do not merge) ran ~25x slower
        # in torch 2.x's CPU reduction (6.9 vs 0.28 ms at (4, 4, 32, 56, 56))
        grad_bias = -grad_k.sum(0).sum(0)
    return grad_qkv, grad_bias, None, None, None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def local_attention_fast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                         dilation: int = 1, stride: int = 1, backend: str = 'auto') -> torch.Tensor:
    """Local attention without materialising the windows (arguments validated by ``local_attention``).

    Args:
        q, k, v: (N, D, H, W).
        backend: one of ``BACKENDS``.

    Returns:
        (N, D, ceil(H/stride), ceil(W/stride)).
    """
    qkv = torch.cat([q, k, v], dim=1)  # (N, 3D, H, W): one head per image
    return _fwd_op(qkv, None, 1, kernel_size, dilation, stride, 1.0, backend)[0]


def multihead_local_attention_fast(qkv: torch.Tensor, heads: int, kernel_size: int, dilation: int, stride: int,
                                   scale: float, key_bias: torch.Tensor | None, backend: str = 'auto') -> torch.Tensor:
    """``local_attention_fast`` of each head of q | k | v (B, 3 * heads * D, H, W), queries ``scale * q`` and keys
    ``k - key_bias`` ((D, H, W), the same for every image and head): the C++ kernel reads q, k, v where they are
    and applies scale and bias as it reads, so no per-head, scaled or shifted copy is made or saved, and backward
    returns one gradient for the whole q | k | v tensor.

    Returns:
        (B, heads * D, ceil(H/stride), ceil(W/stride)).
    """
    return _fwd_op(qkv, key_bias, heads, kernel_size, dilation, stride, scale, backend)[0]
