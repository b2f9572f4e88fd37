"""Launching Triton kernels with the fastest of a few tile shapes, picked on the first launch of each signature
(what ``torch.backends.cudnn.benchmark`` does for convolutions)."""
from __future__ import annotations

import os
from typing import Callable

import torch

__all__ = ['launch_tuned', 'chosen_tiles']

# (kernel name, argument shapes and dtypes, constants) -> the fastest candidate tile
_chosen: dict[tuple, dict] = {}


def chosen_tiles() -> dict[tuple, dict]:
    """The tile choices made so far (benchmarks print them)."""
    return dict(_chosen)


def _signature(kernel, args: tuple, meta: dict) -> tuple:
    shapes = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args)
    return getattr(kernel, 'fn', kernel).__name__, shapes, tuple(sorted((k, str(v)) for k, v in meta.items()))


def launch_tuned(kernel, grid: Callable[[dict], tuple[int, ...]], args: tuple, meta: dict, candidates: list[dict],
                 reset: Callable[[], None] | None = None) -> None:
    """``kernel[grid(tile)](*args, **meta, **tile)`` with the fastest ``tile`` of ``candidates``.

    On the first launch of a signature on a GPU every candidate (its ``num_warps`` included) is compiled, run once
    and timed over three runs; the fastest is kept for later launches.  Each run must give the same result:
    ``reset`` (zeroing an accumulated output) is called before every run.  Under ``TRITON_INTERPRET=1`` the first
    candidate runs once, without ``num_warps``.
    """
    interpret = os.environ.get('TRITON_INTERPRET') == '1'

    def run(tile: dict) -> None:
        if reset is not None:
            reset()
        config = {k: v for k, v in tile.items() if not (interpret and k == 'num_warps')}
        kernel[grid(tile)](*args, **meta, **config)

    if interpret or len(candidates) == 1:
        return run(candidates[0])
    key = _signature(kernel, args, meta)
    if key not in _chosen:
        times = []
        for tile in candidates:
            run(tile)  # compile and warm up
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                run(tile)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        _chosen[key] = candidates[times.index(min(times))]
    run(_chosen[key])
