"""Whole-model speed and memory of every ACmix model next to its baseline, plus a per-part profile of one block.

    python tools/benchmark_models.py                              # every pair, batch 4 at 224, best of 3
    python tools/benchmark_models.py --models 'acmix_resnet*' --threads 1 --iters 5
    python tools/benchmark_models.py --parts-only                 # only the per-part profile of one block per family
    python tools/benchmark_models.py --models acmix_resnet26 --blocks --no-parts   # + each block against the baseline's
    python tools/benchmark_models.py --models acmix_resnet26 --img 32 --batch 1 --iters 1   # smoke run
    python tools/benchmark_models.py --device cuda --amp bf16 --batch 64 --iters 20           # GPU, bf16 autocast

Pairs: every ``acmix_*`` model matching ``--models`` and its baseline (``models.paper``: ``BASELINES`` /
``baseline_of``).  For each pair it reports

- inference throughput (``torch.inference_mode``, eval mode) and training throughput (train mode, forward,
  cross-entropy, backward, SGD-with-momentum step), images/s for each side and the ratio ACmix / baseline.  The
  two models are timed alternately (A, B, A, B, ...) for ``--iters`` rounds after one untimed warm-up step each.
  Images/s is each side's best round.  The ratio is the median over rounds of the two sides' ratio within the
  round (printed with its range): on a shared machine slow phases last longer than a step, so two steps timed
  one after the other see the same phase, where the two best rounds may come from different ones.
- peak training memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the second training step minus the
  allocation before the model was built (parameters, gradients, optimizer state, activations, workspace).  On
  CPU each model runs in a fresh subprocess (``MALLOC_MMAP_THRESHOLD_=65536``, so glibc returns
  freed tensors to the system at once and the resident set follows the live tensors).  After one warm-up training
  step the peak resident set (VmHWM) is reset through ``/proc/self/clear_refs``; the reported number is the peak
  during the next training step minus the resident set measured after ``import torch`` and the model package,
  i.e. parameters, gradients, optimizer state, activations and workspace together.
- ``saved``: the bytes autograd keeps from forward to backward in one training forward (distinct storages, via
  ``torch.autograd.graph.saved_tensors_hooks``): the activation memory, exact and free of allocator noise.

``--blocks`` times each block (ResNet bottleneck, Swin / PVT block: the outermost module holding one ACmix mixer)
of both models of a pair inside whole-model inference forwards (forward hooks, the models interleaved, medians), so
that a gap in the whole-model ratio can be placed in the blocks that cause it.

The per-part profile times the pieces of one ACmix block of each family separately, at the sizes they have inside
the model at ``--img`` (forward, and forward + backward with a random output gradient; best of ``--iters``):
Stage I projections, the attention path, the convolution path (``fc`` + shift/``dep_conv``), the mix, and the
layout changes between them.  See ``block_parts``.

``--flush-denormal`` flushes subnormal floats to zero for the whole run (``torch.set_flush_denormal``, both
models): the ratio then leaves out the CPU's microcode cost of subnormal arithmetic, which timm's Swin pays on
its masked softmax and ACmix's window attention avoids (``acmix.window.zero_weight_mask``).

``--device cuda`` runs everything on the GPU (the Triton local-attention kernel, cuDNN's grouped ``dep_conv``),
synchronising before each clock read; ``--amp bf16|fp16`` wraps every forward in ``torch.autocast`` (fp16
training steps go through a ``GradScaler``).

The header states batch, image size, threads, torch version, CPU model (and GPU), cores and the load average
before and after the run.  Numbers from a shared machine are only comparable within one run: compare the ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import statistics
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from timm.models.swin_transformer import window_reverse  # noqa: E402

import models  # noqa: E402,F401  (registers the acmix_* models and their baselines)
from models.paper import BASELINES, baseline_of  # noqa: E402
from tools.benchmark_acmix import read_status_kb, saved_storages  # noqa: E402

MiB = 2 ** 20


# ----------------------------------------------------------------------------------------------------------------
# Steps and timing
# ----------------------------------------------------------------------------------------------------------------
# --no-shift-kernel: dep_conv runs as the plain grouped conv (the code before the C++ kernel), for before/after runs
_shift_kernel = True
# --no-fold-fc: the conv path never folds fc into the kernel (ShiftGroupConv.fold_fc = False), for before/after runs
_fold_fc = True
# --flush-denormal: subnormal floats flushed to zero for the run (torch.set_flush_denormal), both models
_flush_denormal = False
# --device / --amp: where the models run and the autocast dtype of their forwards (None: full precision)
_device = torch.device('cpu')
_amp: Optional[torch.dtype] = None
AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def autocast() -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``--amp`` on ``--device``, or a no-op."""
    if _amp is None:
        return contextlib.nullcontext()
    return torch.autocast(_device.type, dtype=_amp)


def create(name: str, img: int) -> nn.Module:
    """``timm.create_model(name)``, with ``img_size`` for the families whose geometry depends on it."""
    from acmix.conv_path import ShiftGroupConv
    kwargs = {'img_size': img} if ('swin' in name or 'pvt' in name) and img != 224 else {}
    model = timm.create_model(name, **kwargs)
    for m in model.modules():
        if isinstance(m, ShiftGroupConv):
            m.use_kernel, m.fold_fc = _shift_kernel, _fold_fc
    return model.to(_device)


def training_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward (under ``--amp``'s autocast), cross-entropy, backward and an SGD (momentum 0.9) step, in train mode;
    fp16 goes through a ``GradScaler``."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    target = torch.randint(0, 1000, (x.shape[0],), device=x.device)
    loss_fn = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(x.device.type, enabled=_amp == torch.float16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def inference_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            model(x)
    return step


# 'wall': time.perf_counter.  'cpu': CPU seconds of this process (time.process_time); with one torch thread
# this is the wall time the step would take on an idle core, so it is the steadier clock on a shared machine.
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
_clock = CLOCKS['wall']


def now() -> float:
    """``_clock()`` once the GPU has finished the work queued so far (CUDA runs asynchronously)."""
    if _device.type == 'cuda':
        torch.cuda.synchronize(_device)
    return _clock()


def alternating_times(steps: Sequence[Callable[[], None]], iters: int) -> List[List[float]]:
    """Seconds of each call of each step (``[step][round]``), the steps run in turn (A, B, A, B, ...) after one
    warm-up each."""
    for step in steps:
        step()
    times: List[List[float]] = [[] for _ in steps]
    for _ in range(iters):
        for i, step in enumerate(steps):
            t0 = now()
            step()
            times[i].append(now() - t0)
    return times


def best_alternating(steps: Sequence[Callable[[], None]], iters: int) -> List[float]:
    """Best seconds per call of each step, the steps run in turn (A, B, A, B, ...) after one warm-up each."""
    return [min(t) for t in alternating_times(steps, iters)]


def paired_ratios(acmix_secs: Sequence[float], base_secs: Sequence[float]) -> List[float]:
    """Throughput ratio ACmix / baseline of each round (baseline seconds / ACmix seconds, the two timed one after
    the other), sorted."""
    return sorted(b / a for a, b in zip(acmix_secs, base_secs))


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct storages autograd saves during one training-mode forward."""
    model.train()
    with autocast():
        storages, _ = saved_storages(lambda: model(x))
    return sum(storages.values())


# ----------------------------------------------------------------------------------------------------------------
# Peak training memory, one fresh process per model
# ----------------------------------------------------------------------------------------------------------------
def peak_training_bytes_here(name: str, img: int, batch: int) -> int:
    """In this fresh process: peak resident set during a training step minus the resident set before the model."""
    from acmix.kernels import cpu_ext
    cpu_ext.load()  # the C++ kernel's code is not model memory
    base_kb = read_status_kb('VmRSS')
    torch.manual_seed(0)
    model = create(name, img)
    x = torch.randn(batch, 3, img, img)
    step = training_step(model, x)
    step()
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # VmHWM := VmRSS
    step()
    return (read_status_kb('VmHWM') - base_kb) * 1024


def peak_training_bytes_cuda(name: str, img: int, batch: int) -> int:
    """In this process, on the GPU: peak allocation during the second training step minus the allocation before
    the model was built."""
    torch.cuda.synchronize(_device)
    base = torch.cuda.memory_allocated(_device)
    torch.manual_seed(0)
    model = create(name, img)
    step = training_step(model, torch.randn(batch, 3, img, img, device=_device))
    step()
    torch.cuda.synchronize(_device)
    torch.cuda.reset_peak_memory_stats(_device)
    step()
    torch.cuda.synchronize(_device)
    return torch.cuda.max_memory_allocated(_device) - base


def peak_training_bytes(name: str, img: int, batch: int, threads: int) -> int:
    if _device.type == 'cuda':
        return peak_training_bytes_cuda(name, img, batch)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), '--threads', str(threads), '--img', str(img),
           '--batch', str(batch), '--_peak-child', name]
    cmd += ([] if _shift_kernel else ['--no-shift-kernel']) + ([] if _fold_fc else ['--no-fold-fc'])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f'memory subprocess for {name} failed:\n{out.stderr[-3000:]}')
    return int(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------------------------
def select_pairs(patterns: Sequence[str]) -> List[Tuple[str, str]]:
    """(ACmix model, baseline) for every registered ``acmix_*`` name matching one of ``patterns``."""
    names = [n for n in BASELINES if any(fnmatch.fnmatch(n, p) or n.startswith(p) for p in patterns)]
    names += sorted(n for n in timm.list_models('acmix_*')
                    if n not in names and any(fnmatch.fnmatch(n, p) for p in patterns))
    pairs = []
    for name in names:
        base = baseline_of(name)
        if base is None or not timm.is_model(name):
            raise SystemExit(f'{name}: not registered or without a registered baseline')
        pairs.append((name, base))
    if not pairs:
        raise SystemExit(f'--models {list(patterns)} selects no registered acmix_* model')
    return pairs


def measure_pair(acmix_name: str, base_name: str, img: int, batch: int, iters: int, threads: int,
                 memory: bool) -> Dict[str, float]:
    torch.manual_seed(0)
    nets = [create(n, img) for n in (acmix_name, base_name)]
    x = torch.randn(batch, 3, img, img, device=_device)
    row: Dict[str, float] = {}
    # training first: index tensors cached on a first call must not be created under inference mode
    for mode, make in (('train', training_step), ('infer', inference_step)):
        secs = alternating_times([make(m, x) for m in nets], iters)
        row[f'{mode}_acmix'], row[f'{mode}_base'] = batch / min(secs[0]), batch / min(secs[1])
        ratios = paired_ratios(*secs)
        row[f'{mode}_ratio'] = statistics.median(ratios)
        row[f'{mode}_ratio_min'], row[f'{mode}_ratio_max'] = ratios[0], ratios[-1]
    for side, m in zip(('acmix', 'base'), nets):
        row[f'saved_{side}'] = saved_bytes(m, x) / MiB
    del nets
    if memory:
        for side, n in (('acmix', acmix_name), ('base', base_name)):
            row[f'mem_{side}'] = peak_training_bytes(n, img, batch, threads) / MiB
    return row


# ----------------------------------------------------------------------------------------------------------------
# Per-part profile of one block
# ----------------------------------------------------------------------------------------------------------------
Part = Tuple[str, Callable[..., torch.Tensor], List[torch.Tensor]]


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_()


def _acmix_parts(m: nn.Module, x: torch.Tensor) -> List[Part]:
    """``acmix.ACmix`` (ResNet local / SAN patchwise): parts of ``ACmix.forward``."""
    with torch.no_grad():
        qkv = m._stage1(x)
        att = m._attention_path(qkv)
        conv = m._conv_path(qkv)
    qkv, att, conv = map(_leaf, (qkv, att, conv))
    return [
        ('stage I (q, k, v as one projection)', m._stage1, [_leaf(x)]),
        ('attention path', m._attention_path, [qkv]),
        ('conv path (fc + dep_conv, or fc folded in)', m._conv_path, [qkv]),
        # the mix adds into the conv path's fresh output in place: timed on a copy of it, so the row includes one copy
        ('mix (in place; timed with a copy of the conv output)', lambda a, c: m._mix(a, c.clone()), [att, conv]),
    ]


def _window_parts(m: nn.Module, x: torch.Tensor, shift: Tuple[int, int], mask: Optional[torch.Tensor]) -> List[Part]:
    """``acmix.ACmixWindowAttention`` (Swin): the parts of its forward (on the map zero-padded to window multiples)."""
    wh, ww = m.window_size
    x = nn.functional.pad(x, (0, 0, 0, -x.shape[2] % ww, 0, -x.shape[1] % wh))
    b, h, w, c = x.shape
    with torch.no_grad():
        xr = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if any(shift) else x
        qkv = m._stage1(xr)
        att = m._window_attention(qkv, h, w, shift, mask)
        conv = m._conv_path(qkv, b, h, w, wh, ww, h, w, wh, ww)
    att, conv = _leaf(att), _leaf(conv)
    roll = (lambda t: torch.roll(t, shifts=(-shift[0], -shift[1]), dims=(1, 2))) if any(shift) else (lambda t: t * 1)
    return [
        ('stage I (window partition, qkv Linear)', m._stage1, [_leaf(xr)]),
        ('attention path (softmax attention)', lambda t: m._window_attention(t, h, w, shift, mask), [_leaf(qkv)]),
        ('conv path (windows to planar maps, fc + dep_conv or fc folded in, planes to window tokens)',
         lambda t: m._conv_path(t, b, h, w, wh, ww, h, w, wh, ww), [_leaf(qkv)]),
        ('proj + mix (one GEMM, the conv path its accumulator)', m._project_mix, [att, conv]),
        ('layout: window reverse', lambda t: window_reverse(t.view(-1, wh, ww, c), (wh, ww), h, w), [att]),
        ('layout: roll in (and the same again out)', roll, [_leaf(x)]),
    ]


def _sr_parts(m: nn.Module, x: torch.Tensor, h: int, w: int) -> List[Part]:
    """``acmix.ACmixSRAttention`` (PVT): the parts of its forward."""
    with torch.no_grad():
        q, kv, h_r, w_r = m._stage1(x, h, w)
        att = m._attention_path(q, kv)
        conv = m._conv_path(q, kv, h, w, h_r, w_r)
    return [
        ('stage I (q, sr + norm, kv)', lambda t: torch.cat([o.flatten() for o in m._stage1(t, h, w)[:2]]), [_leaf(x)]),
        ('attention path (SDPA)', m._attention_path, [_leaf(q), _leaf(kv)]),
        ('conv path (layout, k|v upsampling, fc + dep_conv or fc folded in)',
         lambda a, b: m._conv_path(a, b, h, w, h_r, w_r), [_leaf(q), _leaf(kv)]),
        ('proj + mix (one GEMM, the conv path its accumulator)', m._project_mix, [_leaf(att), _leaf(conv)]),
    ]


def block_parts(name: str, img: int, batch: int) -> Tuple[str, List[Part], Callable[[], torch.Tensor], torch.Tensor]:
    """The first ACmix block of stage 1 of ``name``, its parts, and a closure running the whole mixer on its input."""
    from acmix import ACmix, ACmixSRAttention, ACmixWindowAttention
    torch.manual_seed(0)
    model = create(name, img).train()
    captured: Dict[str, object] = {}

    def hook(mod, args, kwargs):
        if 'mod' not in captured:
            captured.update(mod=mod, args=args, kwargs=kwargs)

    handles = [mod.register_forward_pre_hook(hook, with_kwargs=True) for mod in model.modules()
               if isinstance(mod, (ACmix, ACmixWindowAttention, ACmixSRAttention))]
    with torch.no_grad(), autocast():
        model(torch.randn(batch, 3, img, img, device=_device))
    for h in handles:
        h.remove()
    if 'mod' not in captured:
        raise SystemExit(f'{name}: no ACmix / ACmixWindowAttention / ACmixSRAttention module to profile')
    mod, args, kwargs = captured['mod'], captured['args'], captured['kwargs']
    x = args[0].detach()
    if isinstance(mod, ACmixWindowAttention):
        shift = tuple(kwargs.get('shift_size', args[1] if len(args) > 1 else (0, 0)))
        mask = kwargs.get('attn_mask', args[2] if len(args) > 2 else None)
        with autocast():  # the parts' inputs as the model makes them
            parts = _window_parts(mod, x, shift, mask)
        whole_in = _leaf(x)
        return (f'{type(mod).__name__} dim {mod.dim}, heads {mod.num_heads}, map {tuple(x.shape[1:3])}', parts,
                lambda: mod(whole_in, shift_size=shift, attn_mask=mask), whole_in)
    if isinstance(mod, ACmixSRAttention):
        h, w = [kwargs.get(k, a) for k, a in zip(('H', 'W'), args[1:3])]
        whole_in = _leaf(x)
        with autocast():
            parts = _sr_parts(mod, x, h, w)
        return (f'{type(mod).__name__} dim {mod.dim}, heads {mod.num_heads}, sr {mod.sr_ratio}, map {(h, w)}',
                parts, lambda: mod(whole_in, h, w), whole_in)
    with autocast():
        parts = _acmix_parts(mod, x)
    whole_in = _leaf(x)
    return (f'ACmix({mod.attn_mode}) {mod.in_planes}->{mod.out_planes}, heads {mod.head}, map {tuple(x.shape[2:])}',
            parts, lambda: mod(whole_in), whole_in)


def time_part(fn: Callable[..., torch.Tensor], inputs: List[torch.Tensor], iters: int) -> Tuple[float, float]:
    """Best forward and forward+backward milliseconds of ``fn(*inputs)`` (under ``--amp``'s autocast)."""
    with autocast():
        grad = torch.randn_like(fn(*inputs))

    def fwd() -> None:
        with torch.no_grad(), autocast():
            fn(*inputs)

    def fwd_bwd() -> None:
        for t in inputs:
            t.grad = None
        with autocast():
            out = fn(*inputs)
        out.backward(grad)

    f, fb = best_alternating([fwd, fwd_bwd], iters)
    return f * 1e3, fb * 1e3


def profile_block(name: str, img: int, batch: int, iters: int) -> str:
    title, parts, whole, whole_in = block_parts(name, img, batch)
    rows = []
    for part, fn, inputs in parts:
        rows.append((part, *time_part(fn, inputs, iters)))
    total = time_part(lambda t: whole(), [whole_in], iters)
    rest = (total[0] - sum(r[1] for r in rows), total[1] - sum(r[2] for r in rows))
    lines = [f'**{name}**: {title}, batch {batch}', '',
             '| part | fwd ms | fwd+bwd ms | share of fwd+bwd |', '|---|---|---|---|']
    for part, f, fb in rows + [('rest (whole mixer - parts above; negative = parts overlap)', *rest),
                               ('whole mixer', *total)]:
        lines.append(f'| {part} | {f:.2f} | {fb:.2f} | {fb / total[1]:.0%} |')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Per-block comparison of a pair
# ----------------------------------------------------------------------------------------------------------------
def mixer_blocks(model: nn.Module) -> List[str]:
    """Names of the blocks of an ACmix model: for each ACmix mixer, the outermost module holding it and no other
    mixer (a ResNet bottleneck, a Swin or PVT block).  Baselines share the class and hence the names."""
    from acmix import ACmix, ACmixSRAttention, ACmixWindowAttention
    mixers = [n for n, m in model.named_modules() if isinstance(m, (ACmix, ACmixWindowAttention, ACmixSRAttention))]
    blocks = []
    for name in mixers:
        parts = name.split('.')
        for depth in range(1, len(parts) + 1):
            prefix = '.'.join(parts[:depth])
            if sum(m == prefix or m.startswith(prefix + '.') for m in mixers) == 1:
                blocks.append(prefix)
                break
    return blocks


def compare_blocks(acmix_name: str, base_name: str, img: int, batch: int, iters: int) -> str:
    """Inference forward time of each block (``mixer_blocks``) of the ACmix model and of the same-named module of
    its baseline, timed by forward hooks inside whole-model forwards, the two models interleaved; medians."""
    torch.manual_seed(0)
    nets = [create(n, img).eval() for n in (acmix_name, base_name)]
    base_modules = dict(nets[1].named_modules())
    blocks = [b for b in mixer_blocks(nets[0]) if b in base_modules]
    secs: List[Dict[str, List[float]]] = [{b: [] for b in blocks} for _ in nets]
    for net, record in zip(nets, secs):
        modules = dict(net.named_modules())
        for b in blocks:
            def pre(mod: nn.Module, args: object) -> None:
                mod._bench_t0 = now()

            def post(mod: nn.Module, args: object, out: object, times: List[float] = record[b]) -> None:
                times.append(now() - mod._bench_t0)
            modules[b].register_forward_pre_hook(pre)
            modules[b].register_forward_hook(post)
    x = torch.randn(batch, 3, img, img, device=_device)
    totals = alternating_times([inference_step(m, x) for m in nets], iters)
    lines = [f'**{acmix_name}** / **{base_name}**: inference forward per block, median of {iters} rounds, ms', '',
             '| block | ACmix | baseline | difference |', '|---|---|---|---|']
    for b in blocks:
        a, o = (statistics.median(record[b][1:]) * 1e3 for record in secs)  # [0]: the warm-up call
        lines.append(f'| {b} | {a:.1f} | {o:.1f} | {a - o:+.1f} |')
    a, o = (statistics.median(t) * 1e3 for t in totals)
    lines.append(f'| whole model | {a:.1f} | {o:.1f} | {a - o:+.1f} |')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------
def machine_line(threads: int, batch: int, img: int, clock: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    load = ' / '.join(f'{v:.2f}' for v in os.getloadavg())
    gpu = ''
    if _device.type == 'cuda':
        gpu = (f'on {torch.cuda.get_device_name(_device)} (CUDA {torch.version.cuda}, cuDNN '
               f'{torch.backends.cudnn.version()}), autocast {_amp or "off"}, ')
    return (f'batch {batch} at {img}x{img}, {gpu}{threads} torch thread(s), {clock} clock, dep_conv C++ kernel '
            f'{"on" if _shift_kernel else "off"} (fc folding {"on" if _fold_fc else "off"}; CPU only), '
            f'subnormals {"flushed to zero" if _flush_denormal else "kept (IEEE)"}, '
            f'torch {torch.__version__}, timm {timm.__version__}, {cpu}, '
            f'{os.cpu_count()} cores, load average (1/5/15 min) {load}')


def pair_table(rows: List[Dict[str, object]], memory: bool) -> str:
    header = ['ACmix / baseline', 'infer img/s (ACmix / base)', 'infer ratio', 'train img/s (ACmix / base)',
              'train ratio', 'saved act. MiB (ACmix / base)', 'ratio']
    if memory:
        header += ['peak train MiB (ACmix / base)', 'ratio']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        cells = [f"`{r['acmix']}` / `{r['base']}`"]
        for mode in ('infer', 'train'):
            cells += [f"{r[f'{mode}_acmix']:.2f} / {r[f'{mode}_base']:.2f}",
                      f"{r[f'{mode}_ratio']:.2f} ({r[f'{mode}_ratio_min']:.2f}-{r[f'{mode}_ratio_max']:.2f})"]
        cells += [f"{r['saved_acmix']:.0f} / {r['saved_base']:.0f}", f"{r['saved_acmix'] / r['saved_base']:.2f}"]
        if memory:
            cells += [f"{r['mem_acmix']:.0f} / {r['mem_base']:.0f}", f"{r['mem_acmix'] / r['mem_base']:.2f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=list(BASELINES), metavar='PATTERN',
                   help='acmix_* names, prefixes or fnmatch patterns (default: every pair of BASELINES)')
    p.add_argument('--img', type=int, default=224)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--iters', type=int, default=3, help='timed rounds per side and mode')
    p.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch.set_num_threads')
    p.add_argument('--clock', choices=tuple(CLOCKS), default='wall',
                   help="'wall' (default) or 'cpu': process CPU time, steadier on a loaded machine; use with "
                        "--threads 1, where it equals the wall time on an idle core")
    p.add_argument('--no-shift-kernel', action='store_true',
                   help="run dep_conv as the plain grouped conv (ShiftGroupConv.use_kernel = False): the 'before'")
    p.add_argument('--no-fold-fc', action='store_true',
                   help="never fold fc into the kernel (ShiftGroupConv.fold_fc = False): the 'before' of folding")
    p.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda' ('cuda:N')")
    p.add_argument('--amp', choices=tuple(AMP_DTYPES), default='none',
                   help='autocast dtype of every forward (default none: full precision)')
    p.add_argument('--flush-denormal', action='store_true',
                   help='torch.set_flush_denormal(True) for the run, both sides: subnormal floats become 0, so '
                        "neither model pays the CPU's microcode cost for them (timm's Swin does, on its mask's "
                        "exp(-100) softmax weights, which ACmix's window attention makes exact zeros): the ratio "
                        'of the work without that cost')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    p.add_argument('--no-parts', action='store_true', help='skip the per-part profile')
    p.add_argument('--parts-only', action='store_true', help='only the per-part profile')
    p.add_argument('--blocks', action='store_true',
                   help='also time every block of each pair (inference forward, ACmix vs baseline, per block)')
    p.add_argument('--_peak-child', dest='peak_child', help=argparse.SUPPRESS)  # internal: memory subprocess
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    global _clock, _shift_kernel, _fold_fc, _flush_denormal, _device, _amp
    _clock = CLOCKS[args.clock]
    _device, _amp = torch.device(args.device), AMP_DTYPES[args.amp]
    if _device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit(f'--device {args.device}: torch sees no CUDA device')
        if args.clock != 'wall':
            raise SystemExit('--clock cpu measures this process only, not the GPU: use --clock wall with --device cuda')
        _device = torch.device('cuda', torch.cuda.current_device() if _device.index is None else _device.index)
        torch.backends.cudnn.benchmark = True  # as timm's train.py: cuDNN picks the fastest algorithm per shape
    if args.flush_denormal and not torch.set_flush_denormal(True):
        raise SystemExit('--flush-denormal: this CPU has no flush-to-zero mode (torch.set_flush_denormal)')
    _flush_denormal = args.flush_denormal
    _shift_kernel = not args.no_shift_kernel
    _fold_fc = not args.no_fold_fc
    if args.peak_child:
        print(peak_training_bytes_here(args.peak_child, args.img, args.batch))
        return
    pairs = select_pairs(args.models)
    print(f'Machine at start: {machine_line(args.threads, args.batch, args.img, args.clock)}', flush=True)
    if not args.parts_only:
        rows = []
        for acmix_name, base_name in pairs:
            t0 = time.perf_counter()
            row: Dict[str, object] = dict(acmix=acmix_name, base=base_name)
            row.update(measure_pair(acmix_name, base_name, args.img, args.batch, args.iters, args.threads,
                                    not args.no_memory))
            rows.append(row)
            print(f'  {acmix_name} / {base_name}: {time.perf_counter() - t0:.0f}s, '
                  f'{json.dumps({k: round(v, 2) for k, v in row.items() if isinstance(v, float)})}',
                  file=sys.stderr, flush=True)
        print(f'\n{args.iters} rounds, models interleaved; img/s: the best round of each side; throughput ratio: '
              f'ACmix / baseline, the median (and range) over rounds of the two sides timed one after the other '
              f'(higher is better for ACmix); memory ratio: ACmix / baseline (lower is better).\n')
        print(pair_table(rows, not args.no_memory), flush=True)
    if args.blocks:
        print('\nPer-block comparison (inference):\n')
        for acmix_name, base_name in pairs:
            print(compare_blocks(acmix_name, base_name, args.img, args.batch, args.iters) + '\n', flush=True)
    if not args.no_parts:
        families: Dict[str, str] = {}
        for acmix_name, _ in pairs:
            families.setdefault(acmix_name.split('_')[1].rstrip('0123456789'), acmix_name)
        print('\nPer-part profile, one block per family (first ACmix block, training mode):\n')
        for name in families.values():
            print(profile_block(name, args.img, args.batch, args.iters) + '\n', flush=True)
    print(f'Machine at end: {machine_line(args.threads, args.batch, args.img, args.clock)}')


if __name__ == '__main__':
    main()
