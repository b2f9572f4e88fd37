"""Fast local attention as PyTorch custom ops, so autograd, ``torch.compile`` and ``torch.export`` treat it
as one opaque node with a known output shape.

Two ops, both computing in float32/float64: float16/bfloat16 inputs are upcast inside the op (the Triton
kernels upcast in registers) and the results cast back, because a half-precision softmax over 49 taps loses
too much:

- ``acmix::local_attention_fwd(q, k, v, K, dilation, stride, backend) -> (out, probs)``
- ``acmix::local_attention_bwd(grad_out, q, k, v, probs, K, dilation, stride, backend) -> (dq, dk, dv)``

``probs`` (N, K*K, Ho, Wo), float64 for float64 inputs and float32 otherwise, are the softmax weights saved
for backward: D times smaller than one window tensor of the reference.  Every backend reads and writes the
same ``probs``, so forward and backward may even run on different backends.

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
from .indexing import out_size, window_index

__all__ = ['BACKENDS', 'local_attention_fast', 'resolve_backend']

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


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, D, H, W) -> contiguous (N, H, W, D): one window tap becomes one contiguous D-vector."""
    return x.permute(0, 2, 3, 1).contiguous()


def _upcast(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t if t.dtype in _COMPUTE_DTYPES else t.float() for t in tensors]


def _probs_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _COMPUTE_DTYPES else torch.float32


@torch.library.custom_op('acmix::local_attention_fwd', mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, dilation: int, stride: int,
            backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = q.shape[-2:]
    rows = window_index(h, kernel_size, dilation, stride, q.device)  # (Ho, K)
    cols = window_index(w, kernel_size, dilation, stride, q.device)  # (Wo, K)
    chosen = resolve_backend(backend, q.device)
    if chosen == 'triton':
        result = _call_triton('forward', backend == 'auto', q, k, v, rows, cols, stride)
        if result is not None:
            return result
    qc, kc, vc = _upcast(q, k, v)
    if chosen == 'cpp':
        out, probs = cpu_ext.load().forward(_channels_last(qc), _channels_last(kc), _channels_last(vc),
                                            rows, cols, stride)
        out = out.permute(0, 3, 1, 2).contiguous()                   # (N, Ho, Wo, D) -> (N, D, Ho, Wo)
    else:  # 'torch', or 'triton' that failed its first launch
        out, probs = torch_loop.forward(qc, kc, vc, kernel_size, dilation, stride)
    return out.to(q.dtype), probs


@_fwd_op.register_fake
def _fwd_fake(q, k, v, kernel_size, dilation, stride, backend):
    n, d, h, w = q.shape
    ho, wo = out_size(h, stride), out_size(w, stride)
    probs = q.new_empty(n, kernel_size * kernel_size, ho, wo, dtype=_probs_dtype(q.dtype))
    return q.new_empty(n, d, ho, wo), probs


@torch.library.custom_op('acmix::local_attention_bwd', mutates_args=())
def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, probs: torch.Tensor,
            kernel_size: int, dilation: int, stride: int,
            backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, w = q.shape[-2:]
    rows = window_index(h, kernel_size, dilation, stride, q.device)
    cols = window_index(w, kernel_size, dilation, stride, q.device)
    chosen = resolve_backend(backend, q.device)
    grads = None
    if chosen == 'triton':
        grads = _call_triton('backward', backend == 'auto', grad_out, q, k, v, probs, rows, cols, stride)
    if grads is None:
        gc, qc, kc, vc, pc = _upcast(grad_out, q, k, v, probs)
        if chosen == 'cpp':
            grads = cpu_ext.load().backward(_channels_last(gc), _channels_last(qc), _channels_last(kc),
                                            _channels_last(vc), pc.contiguous(), rows, cols, stride)
            grads = [g.permute(0, 3, 1, 2).contiguous() for g in grads]  # (N, H, W, D) -> (N, D, H, W)
        else:  # 'torch', or 'triton' that failed its first launch
            grads = torch_loop.backward(gc, qc, kc, vc, pc, kernel_size, dilation, stride)
    return tuple(g.to(q.dtype) for g in grads)


@_bwd_op.register_fake
def _bwd_fake(grad_out, q, k, v, probs, kernel_size, dilation, stride, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, kernel_size, dilation, stride, backend = inputs
    ctx.save_for_backward(q, k, v, output[1])
    ctx.window = (kernel_size, dilation, stride, backend)


def _backward(ctx, grad_out, _grad_probs):
    # probs is an internal output (never returned by local_attention_fast), so its gradient is ignored
    q, k, v, probs = ctx.saved_tensors
    grad_q, grad_k, grad_v = _bwd_op(grad_out.contiguous(), q, k, v, probs, *ctx.window)
    return grad_q, grad_k, grad_v, None, None, None, None


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
    return _fwd_op(q, k, v, kernel_size, dilation, stride, backend)[0]
