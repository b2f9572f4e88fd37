"""Speed and memory of ACmix's local attention: fast custom op vs the unfold-style reference.

For every ResNet-ACmix stage (batch 8: 64ch@56^2, 128ch@28^2, 256ch@14^2, 512ch@7^2; 4 heads, K=7), or with
``--stride 2`` for its strided blocks (the first of layers 2-4: 128ch@56^2, 256ch@28^2, 512ch@14^2 in, half the
size out), it times forward (under ``no_grad``) and forward+backward (median of ``--reps`` after a warm-up) of

- ``kernel``: ``acmix.kernels.local_attention`` alone, on (batch*4, C/4, H, W) q, k, v;
- ``module``: a whole ``acmix.ACmix(C, C)`` (projections, positional term, conv path) on (batch, C, H, W),

with ``impl='fast'`` and ``impl='reference'``, and reports two memory figures per forward+backward:

- ``peak``: the largest memory in use above the state before the call (inputs and parameters excluded).
  CUDA: ``torch.cuda.max_memory_allocated``.  CPU: the growth of the peak resident set size (VmHWM) of a
  fresh subprocess, reset through ``/proc/self/clear_refs`` just before the call (``ru_maxrss`` if that is
  not allowed), so it also counts allocator slack and is only meaningful for the large stages.
- ``saved``: the bytes of distinct storages autograd keeps from forward to backward
  (``torch.autograd.graph.saved_tensors_hooks``) plus the output: the activation memory a training step holds.

Usage::

    python tools/benchmark_acmix.py                 # CPU, and CUDA too when available
    python tools/benchmark_acmix.py --device cuda   # one device only
    python tools/benchmark_acmix.py --quick         # batch 2, two stages, 2 reps: a smoke run
    python tools/benchmark_acmix.py --threads 1     # CPU threads (on a loaded shared machine 1 is steadier)
    python tools/benchmark_acmix.py --stride 2      # the strided blocks
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from acmix import ACmix  # noqa: E402
from acmix.kernels import local_attention  # noqa: E402
from acmix.kernels.ops import resolve_backend  # noqa: E402

STAGES = ((64, 56), (128, 28), (256, 14), (512, 7))  # (channels, feature-map size) of ResNet stages 1-4
STRIDED_STAGES = ((128, 56), (256, 28), (512, 14))   # (channels, input size) of the strided blocks of layers 2-4
HEADS, KERNEL = 4, 7
IMPLS = ('reference', 'fast')


def make_case(scope: str, channels: int, size: int, batch: int, impl: str, device: torch.device,
              stride: int = 1) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor]]:
    """A closure running one forward, and the tensors that must require grad for backward.

    Args:
        scope: ``'kernel'`` (q, k, v of shape (batch*HEADS, channels/HEADS, size, size)) or ``'module'``
            (``ACmix(channels, channels)`` on (batch, channels, size, size)).
    """
    gen = torch.Generator().manual_seed(0)
    if scope == 'kernel':
        qkv = [torch.randn(batch * HEADS, channels // HEADS, size, size, generator=gen).to(device).requires_grad_()
               for _ in range(3)]
        return (lambda: local_attention(*qkv, KERNEL, stride=stride, impl=impl)), qkv
    torch.manual_seed(0)
    module = ACmix(channels, channels, kernel_att=KERNEL, head=HEADS, stride=stride, impl=impl).to(device)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device).requires_grad_()
    return (lambda: module(x)), [x]


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _forward_backward(run: Callable[[], torch.Tensor]) -> None:
    run().sum().backward()


def _forward_only(run: Callable[[], torch.Tensor]) -> None:
    with torch.no_grad():
        run()


def median_seconds(step: Callable[[], None], device: torch.device, reps: int) -> float:
    """Median wall time of ``step`` over ``reps`` runs after one warm-up run."""
    step()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def saved_storages(run: Callable[[], torch.Tensor]) -> tuple[dict[int, int], torch.Tensor]:
    """``run()`` under a saved-tensor hook: {storage data_ptr: bytes} of what autograd saves, and the output."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return storages, out


def saved_bytes(run: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct storages saved for backward during one forward, plus the output's bytes."""
    storages, out = saved_storages(run)
    storages[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return sum(storages.values())


def read_status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``, ...)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(f'/proc/self/status has no {field}')


def cpu_peak_bytes_here(scope: str, channels: int, size: int, batch: int, impl: str, stride: int) -> int:
    """Peak resident-set growth of one forward+backward in this (fresh) process."""
    run, _ = make_case(scope, channels, size, batch, impl, torch.device('cpu'), stride)
    tiny, _ = make_case('kernel', HEADS, 3, 1, impl, torch.device('cpu'))
    _forward_backward(tiny)  # load the C++ extension and start the thread pool before the baseline
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current resident set
        before_kb = read_status_kb('VmRSS')
        _forward_backward(run)
        return (read_status_kb('VmHWM') - before_kb) * 1024
    except OSError:
        before_kb = read_status_kb('VmRSS')
        _forward_backward(run)
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb) * 1024


def peak_bytes(scope: str, channels: int, size: int, batch: int, impl: str, device: torch.device,
               stride: int) -> int:
    """Peak memory of one forward+backward above the state before it (see the module docstring)."""
    if device.type == 'cuda':
        run, _ = make_case(scope, channels, size, batch, impl, device, stride)
        _forward_backward(run)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _forward_backward(run)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    cmd = [sys.executable, os.path.abspath(__file__), '--threads', str(torch.get_num_threads()), '--_cpu-peak',
           json.dumps([scope, channels, size, batch, impl, stride])]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def measure(scope: str, channels: int, size: int, batch: int, device: torch.device, reps: int,
            stride: int = 1) -> dict:
    row = {}
    for impl in IMPLS:
        run, _ = make_case(scope, channels, size, batch, impl, device, stride)
        row[impl] = dict(
            fwd=median_seconds(lambda: _forward_only(run), device, reps),
            fwd_bwd=median_seconds(lambda: _forward_backward(run), device, reps),
            saved=saved_bytes(run),
            peak=peak_bytes(scope, channels, size, batch, impl, device, stride),
        )
    return row


def _fmt_row(scope: str, channels: int, size: int, row: dict, stride: int = 1) -> str:
    ref, fast = row['reference'], row['fast']
    cells = [scope, f'{channels}ch@{size}²' + (f' /{stride}' if stride > 1 else '')]
    for key in ('fwd', 'fwd_bwd'):
        cells += [f"{ref[key] * 1e3:.1f}", f"{fast[key] * 1e3:.1f}", f"**{ref[key] / fast[key]:.1f}x**"]
    for key in ('peak', 'saved'):
        cells += [f"{ref[key] / 2**20:.1f}", f"{fast[key] / 2**20:.1f}",
                  f"**{fast[key] / ref[key]:.2f}**" if ref[key] > 0 else 'n/a']
    return '| ' + ' | '.join(cells) + ' |'


HEADER = ('| scope | stage | fwd ref ms | fwd fast ms | fwd speed-up | f+b ref ms | f+b fast ms | f+b speed-up '
          '| peak ref MiB | peak fast MiB | peak fast/ref | saved ref MiB | saved fast MiB | saved fast/ref |\n'
          '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('all', 'cpu', 'cuda'), default='all',
                        help="'all': CPU, plus CUDA when available")
    parser.add_argument('--quick', action='store_true', help='batch 2, stages 3-4, 2 reps (smoke run)')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--scopes', default='kernel,module', help='comma-separated subset of kernel,module')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads for CPU runs (default: torch default)')
    parser.add_argument('--stride', type=int, choices=(1, 2), default=1,
                        help="2: ResNet-ACmix's strided blocks (first of layers 2-4) instead of its stages")
    parser.add_argument('--_cpu-peak', dest='cpu_peak', help=argparse.SUPPRESS)  # internal: subprocess mode
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_peak:
        print(cpu_peak_bytes_here(*json.loads(args.cpu_peak)))
        return

    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda requested but CUDA is not available')
    devices = [d for d in ('cpu', 'cuda') if args.device in (d, 'all') and (d == 'cpu' or torch.cuda.is_available())]
    all_stages = STRIDED_STAGES if args.stride > 1 else STAGES
    stages, batch, reps = (all_stages[-2:], 2, 2) if args.quick else (all_stages, args.batch, args.reps)
    scopes = args.scopes.split(',')
    for name in devices:
        device = torch.device(name)
        where = (torch.cuda.get_device_name(device) if name == 'cuda'
                 else f'CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}')
        print(f'\n### {where}: batch {batch}, {HEADS} heads, K={KERNEL}, stride {args.stride}, median of {reps}, '
              f'fast backend {resolve_backend("auto", device)!r}\n\n{HEADER}', flush=True)
        for scope in scopes:
            for channels, size in stages:
                row = measure(scope, channels, size, batch, device, reps, args.stride)
                print(_fmt_row(scope, channels, size, row, args.stride), flush=True)
        if name == 'cpu':
            print(f'\n(load average after the run: {os.getloadavg()[0]:.1f})')


if __name__ == '__main__':
    main()
