"""Local (sliding-window) attention kernels for ACmix's ``attn_mode='local'``.

``local_attention`` (q, k, v of one head per image) and ``multihead_local_attention`` (q | k | v of several heads
in one tensor, with query scale and key bias: ACmix's call) are the entry points.  ``impl='reference'`` gathers the windows explicitly (readable,
``K*K`` times the activation memory); ``impl='fast'`` runs the custom ops of ``acmix.kernels.ops`` (C++ on
CPU, Triton or a tap-by-tap PyTorch loop on CUDA), which never materialise the windows.
"""
from concurrent.futures import ThreadPoolExecutor

import torch

from . import cpu_ext, layout, shift_conv
from .indexing import check_window_args, out_size, window_index
from .ops import BACKENDS, local_attention_fast, multihead_local_attention_fast
from .reference import check_qkv, local_attention_reference

__all__ = ['local_attention', 'local_attention_fast', 'local_attention_reference', 'multihead_local_attention',
           'window_index', 'out_size', 'IMPLS', 'CPU_KERNELS', 'build_cpu_kernels']

# 'auto' and 'fast' are the same: a fast path exists on every device (the PyTorch loop is the last resort).
# 'cpp' | 'triton' | 'torch' force one fast backend (tests, benchmarks).
IMPLS = ('auto', 'fast', 'reference', 'cpp', 'triton', 'torch')


# TorchScript calls it as Python: the backend is chosen in Python and the fast path is a torch.library custom op
@torch.jit.ignore
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
        impl: ``'auto'``/``'fast'`` (windows never materialised), ``'reference'`` (explicit windows), or
            a forced fast backend ``'cpp'``/``'triton'``/``'torch'``.

    Returns:
        (N, D, ceil(H/stride), ceil(W/stride)) in the dtype of ``q``.
    """
    check_window_args(kernel_size, dilation, stride)
    check_qkv(q, k, v)
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
    if impl == 'reference':
        return local_attention_reference(q, k, v, kernel_size, dilation, stride)
    backend = impl if impl in BACKENDS else 'auto'
    return local_attention_fast(q, k, v, kernel_size, dilation, stride, backend)


@torch.jit.ignore
def multihead_local_attention(qkv: torch.Tensor, heads: int, kernel_size: int, dilation: int = 1, stride: int = 1,
                              scale: float = 1.0, key_bias: torch.Tensor | None = None,
                              impl: str = 'auto') -> torch.Tensor:
    """``local_attention`` of every head of q | k | v, with queries ``scale * q`` and keys ``k - key_bias``.

    The fast path reads q, k and v where they are and applies the scale and the bias inside the kernel, so
    autograd keeps no per-head, scaled or shifted copies and gets one gradient for ``qkv``; ``'reference'``
    builds those maps and calls ``local_attention`` per image and head.

    Args:
        qkv: (B, 3 * heads * D, H, W): q, k and v (each heads * D channels) along the channels.
        heads: number of heads.
        scale: query scaling (``D ** -0.5`` for dot-product attention).
        key_bias: (D, H, W) subtracted from the keys of every image and head (ACmix's relative position term), or
            None.
        kernel_size, dilation, stride, impl: as in ``local_attention``.

    Returns:
        (B, heads * D, ceil(H/stride), ceil(W/stride)).
    """
    check_window_args(kernel_size, dilation, stride)
    check_qkv(*qkv.chunk(3, dim=1))
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
    if impl == 'reference':
        b, _, h, w = qkv.shape
        q, k, v = qkv.unflatten(1, (3, heads, -1)).unbind(1)  # (B, heads, D, H, W)
        k = k if key_bias is None else k - key_bias
        out = local_attention_reference(*(t.flatten(0, 1) for t in (q * scale, k, v)), kernel_size, dilation, stride)
        return out.reshape(b, -1, out.shape[-2], out.shape[-1])
    backend = impl if impl in BACKENDS else 'auto'
    return multihead_local_attention_fast(qkv, heads, kernel_size, dilation, stride, scale, key_bias, backend)


CPU_KERNELS = ('local-attention', 'shift-conv', 'layout')


def build_cpu_kernels(names: tuple[str, ...] = CPU_KERNELS) -> dict[str, bool]:
    """Build (or load from torch's extension cache) C++ CPU kernels at once, one compiler each.

    Models build each kernel on first use, one after the other; entry points that know which they will need
    (``tools/demo.py``) call this early, in the background, to cut the first run's wait.

    Args:
        names: some of ``CPU_KERNELS``: ``'local-attention'`` (ResNet/SAN local mode), ``'shift-conv'`` (every
            conv path), ``'layout'`` (Swin's and PVT's token <-> planar copies).

    Returns:
        ``{name: ok}``; a kernel that failed to build warned and is False.
    """
    loaders = {'local-attention': lambda: cpu_ext.load() is not None, 'shift-conv': shift_conv.available,
               'layout': layout.available}
    unknown = set(names) - set(loaders)
    if unknown:
        raise ValueError(f'unknown CPU kernels {sorted(unknown)}; choose from {CPU_KERNELS}')
    with ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(loaders[name]) for name in names}
    return {name: future.result() for name, future in futures.items()}
