"""Window geometry shared by every local-attention implementation.

Output pixel ``(i, j)`` of a ``K x K`` window with dilation ``d`` and stride ``s`` reads rows
``i*s + d*(a - (K-1)//2)`` and columns ``j*s + d*(b - (K-1)//2)`` for ``a, b`` in ``[0, K)``.
Indices that fall outside the map are reflected (mirror without repeating the edge, like
``torch.nn.ReflectionPad2d``), generalised so that it is defined for any map size: an index is folded
into ``[0, n)`` with period ``2(n - 1)``, and a map of size 1 always reads index 0.  Where
``ReflectionPad2d`` works (pad < n) the two agree; the generalisation is what makes maps smaller than the
window (e.g. 2x3 with K=7) well defined instead of crashing (defect 4 of the authors' code).
"""
from __future__ import annotations

import functools

import torch

__all__ = ['check_window_args', 'out_size', 'padded_index', 'reflect_index', 'window_index', 'window_sources']


def check_window_args(kernel_size: int, dilation: int, stride: int) -> None:
    """Raise ``ValueError`` naming the bad value unless K is odd and positive and dilation, stride >= 1."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be an odd positive int, got {kernel_size!r}')
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f'dilation must be an int >= 1, got {dilation!r}')
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f'stride must be an int >= 1, got {stride!r}')


def out_size(n: int, stride: int) -> int:
    """Output length ``ceil(n / stride)``: every strided query position that exists is kept (defect 3)."""
    return (n + stride - 1) // stride  # also valid for symbolic sizes under torch.compile/export


def reflect_index(p: int, n: int) -> int:
    """Fold index ``p`` (any int) into ``[0, n)`` by mirror reflection without repeating the edge."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    p %= period  # Python's % is non-negative for a positive modulus
    return period - p if p >= n else p


# The cached index tensors are shared between calls: build them outside inference mode, or a first call under
# torch.inference_mode() would cache inference tensors that a later training step cannot save for backward.
@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _window_index_cpu(n: int, kernel_size: int, dilation: int, stride: int) -> torch.Tensor:
    half = (kernel_size - 1) // 2
    rows = [[reflect_index(i * stride + dilation * (a - half), n) for a in range(kernel_size)]
            for i in range(out_size(n, stride))]
    return torch.tensor(rows, dtype=torch.int64)


@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _window_index_on(n: int, kernel_size: int, dilation: int, stride: int, device: torch.device) -> torch.Tensor:
    # a second cache level so that each device receives its copy once, not once per call
    return _window_index_cpu(n, kernel_size, dilation, stride).to(device)


def window_index(n: int, kernel_size: int, dilation: int, stride: int,
                 device: torch.device | str = 'cpu') -> torch.Tensor:
    """Source index of every window tap along one axis, cached per (size, window, device).

    Args:
        n: length of the input axis (H or W).
        kernel_size, dilation, stride: window geometry (validated by the caller).
        device: where the index tensor should live.

    Returns:
        ``(ceil(n / stride), kernel_size)`` int64 tensor; entry ``[i, a]`` is the reflected source index of
        tap ``a`` of output position ``i``.  Treat it as read-only: it is shared between calls.
    """
    return _window_index_on(n, kernel_size, dilation, stride, torch.device(device))


@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _window_sources_on(n: int, kernel_size: int, dilation: int, stride: int, device: torch.device) -> torch.Tensor:
    rows = _window_index_cpu(n, kernel_size, dilation, stride)                 # (No, K)
    readers: list[list[int]] = [[] for _ in range(n)]
    for i, taps in enumerate(rows.tolist()):
        for src in taps:
            readers[src].append(i)
    width = max(len(r) for r in readers)
    return torch.tensor([r + [-1] * (width - len(r)) for r in readers], dtype=torch.int64, device=device)


def window_sources(n: int, kernel_size: int, dilation: int, stride: int,
                   device: torch.device | str = 'cpu') -> torch.Tensor:
    """The inverse of ``window_index``: which output positions read each input position, cached per (size,
    window, device).

    Returns:
        ``(n, L)`` int64 tensor: row ``p`` lists every output position ``i`` once per tap ``a`` with
        ``window_index(...)[i, a] == p`` (a position read by two taps of one window is listed twice), padded
        with -1 to the longest list ``L``.  Read-only, shared between calls.
    """
    return _window_sources_on(n, kernel_size, dilation, stride, torch.device(device))


@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _padded_index_on(n: int, kernel_size: int, dilation: int, device: torch.device) -> torch.Tensor:
    pad = dilation * ((kernel_size - 1) // 2)
    return torch.tensor([reflect_index(p - pad, n) for p in range(n + 2 * pad)], dtype=torch.int64, device=device)


def padded_index(n: int, kernel_size: int, dilation: int, device: torch.device | str = 'cpu') -> torch.Tensor:
    """Source index of every position of the reflection-padded axis, cached per (size, window, device).

    Padding an axis with ``x.index_select(axis, padded_index(...))`` gives a map in which tap ``a`` of output
    position ``i`` sits at ``i*stride + a*dilation``, so every tap is a strided slice (a view, no gather).

    Returns:
        ``(n + 2*dilation*((kernel_size-1)//2),)`` int64 tensor; read-only, shared between calls.
    """
    return _padded_index_on(n, kernel_size, dilation, torch.device(device))
