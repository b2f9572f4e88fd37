"""Reproduce the paper's ImageNet table (params, FLOPs, top-1) and a speed table, ACmix next to its baseline.

    python tools/paper_tables.py                                   # every pair: counts at 224 + CPU/GPU speed
    python tools/paper_tables.py --models acmix_resnet26 --skip-speed
    python tools/paper_tables.py --results work_dirs/imagenet      # top-1 from <results>/<model>/metrics.json
    python tools/paper_tables.py --skip-counts --device cuda --batch 64

(a) ImageNet table: params and MACs ("FLOPs" in the paper) measured at ``--img-size`` with
    ``models.complexity`` next to the paper's README numbers and, where they exist, the counts measured from the
    authors' code (``/shared/paper-facts.md``).  Top-1 is read from ``<results>/<model>/metrics.json`` (written
    by ``tools/test.py``; the folder may also be named after the config, e.g. ``acmix_swin_tiny``).
(b) Speed table: inference and training throughput (images/s) of each ACmix model and its baseline, measured in
    the same run on the same device.  The two models are timed alternately rep by rep, so a change of machine
    load hits both; each number is the median over ``--reps`` after ``--warmup`` untimed iterations.  Training =
    forward + cross-entropy + backward + SGD step.

Markdown goes to stdout and ``<out>/tables.md``; CSVs to ``<out>/imagenet.csv`` and ``<out>/speed.csv``.
A pair whose models are not registered (a family not built yet) is reported and skipped, never silently dropped.

The paper's params/FLOPs/top-1, the authors'-code counts and the baseline of each model come from
``models/paper.py`` (``PAPER`` joins them per model, ``PAIRS`` lists ACmix model and baseline in the paper's order).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402


# The paper's numbers, the authors'-code counts and the pairs live with the models (models/paper.py).
from models.paper import PAIRS, PAPER, PaperEntry  # noqa: E402
from tools.benchmark_models import inference_step, training_step  # noqa: E402
from tools.collect_ablations import write_csv  # noqa: E402


def short_name(model: str) -> str:
    """The config-style name of a model: ``acmix_swin_tiny_patch4_window7_224`` -> ``acmix_swin_tiny``."""
    return model.replace('_patch4_window7_224', '')


def select_pairs(tokens: Optional[Sequence[str]]) -> List[tuple[str, str, str]]:
    """The pairs in which either model's full or short name starts with one of ``tokens`` (all if none).

    Raises:
        SystemExit: a token selects nothing (names the token and the known models).
    """
    if not tokens:
        return list(PAIRS)
    chosen = []
    for token in tokens:
        hits = [p for p in PAIRS if any(n.startswith(token) or short_name(n).startswith(token) for n in p[1:])]
        if not hits:
            known = ', '.join(n for p in PAIRS for n in p[1:])
            raise SystemExit(f'--models {token!r} matches no model of the paper table; known: {known}')
        chosen += [p for p in hits if p not in chosen]
    return [p for p in PAIRS if p in chosen]  # paper order


# --------------------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------------------
def create(name: str, img_size: int, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with ``img_size`` passed when it differs from the model's default (Swin, PVT).

    Goes through ``classification.build.build_model`` so that models are built exactly as training builds them.
    """
    from classification.build import build_model
    from classification.config import load_config
    cfg = load_config(opts=['MODEL.NAME', name, 'DATA.IMG_SIZE', img_size])
    return build_model(cfg, **kwargs)


def is_registered(name: str) -> bool:
    import timm
    import models  # noqa: F401  (registers the acmix_* / conv_* / san* / pvt_v1_* entrypoints)
    return timm.is_model(name)


def read_top1(results: Optional[Path], model: str) -> Optional[float]:
    """Top-1 from ``<results>/<model or short name>/metrics.json``; None when there is no such file.

    Raises:
        SystemExit: the file exists but has no ``top1``.
    """
    if results is None:
        return None
    for d in dict.fromkeys((model, short_name(model))):
        f = results / d / 'metrics.json'
        if f.is_file():
            data = json.loads(f.read_text())
            if 'top1' not in data:
                raise SystemExit(f'{f}: no "top1" key (keys: {sorted(data)})')
            return float(data['top1'])
    return None


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_alternating(steps: Sequence[Callable[[], None]], device: torch.device, warmup: int, reps: int
                     ) -> List[float]:
    """Median seconds per call of each step; steps are timed in turn within every rep."""
    for step in steps:
        for _ in range(warmup):
            step()
    _sync(device)
    times: List[List[float]] = [[] for _ in steps]
    for _ in range(reps):
        for i, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def measure_speed(acmix_name: str, base_name: str, device: torch.device, batch: int, img_size: int,
                  warmup: int, reps: int) -> Dict[str, Any]:
    """Inference and training throughput (img/s) of an ACmix model and its baseline, timed alternately."""
    torch.manual_seed(0)
    nets = [create(n, img_size).to(device) for n in (acmix_name, base_name)]
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    row: Dict[str, Any] = {}
    # training first: index tensors that a module caches on its first call must not be born in inference mode
    for mode, make in (('train', training_step), ('infer', inference_step)):
        secs = time_alternating([make(m, x) for m in nets], device, warmup, reps)
        row[f'{mode}_acmix'] = batch / secs[0]
        row[f'{mode}_base'] = batch / secs[1]
        row[f'{mode}_ratio'] = secs[1] / secs[0]  # ACmix throughput / baseline throughput
    return row


def device_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} (torch {torch.__version__})'
    load = ''
    if hasattr(os, 'getloadavg'):
        load = f', load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores'
    return (f'CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads{load} '
            f'(torch {torch.__version__})')


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = '.2f') -> str:
    if v is None or v == '':
        return '–'
    return format(v, spec) if isinstance(v, float) else str(v)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)


def imagenet_rows(pairs: Sequence[tuple[str, str, str]], img_size: int, results: Optional[Path],
                  skip_counts: bool, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    from models.complexity import count_macs, count_params
    rows = []
    for family, acmix_name, base_name in pairs:
        for role, name in (('baseline', base_name), ('ACmix', acmix_name)):
            paper = PAPER.get(name, PaperEntry())
            row: Dict[str, Any] = dict(family=family, model=name, role=role)
            if not is_registered(name):
                log(f'skipped {name}: not registered with timm (family not built yet?)')
                row['note'] = 'not registered'
            elif not skip_counts:
                t0 = time.perf_counter()
                model = create(name, img_size)
                row['params_m'] = count_params(model) / 1e6
                row['gmacs'] = count_macs(model, (3, img_size, img_size)) / 1e9
                log(f'{name}: {row["params_m"]:.3f}M params, {row["gmacs"]:.3f} GMACs '
                    f'({time.perf_counter() - t0:.0f}s)')
                del model
            row.update(paper_params_m=paper.params_m, paper_gflops=paper.gflops,
                       code_params_m=paper.code_params / 1e6 if paper.code_params else None,
                       code_gmacs=paper.code_gmacs, top1=read_top1(results, name), paper_top1=paper.top1)
            rows.append(row)
    return rows


def imagenet_markdown(rows: List[Dict[str, Any]], img_size: int) -> str:
    header = ['family', 'model', f'params (M) @{img_size}', 'paper', "authors' code",
              f'GMACs @{img_size}', 'paper FLOPs (G)', "authors' code", 'top-1', 'paper top-1']
    body = [[r['family'], r['model'] + (' (not registered)' if r.get('note') else ''),
             _fmt(r.get('params_m')), _fmt(r['paper_params_m'], '.1f'), _fmt(r['code_params_m'], '.3f'),
             _fmt(r.get('gmacs')), _fmt(r['paper_gflops'], '.1f'), _fmt(r['code_gmacs'], '.3f'),
             _fmt(r['top1']), _fmt(r['paper_top1'], '.1f')] for r in rows]
    return markdown_table(header, body)


def speed_markdown(rows: List[Dict[str, Any]]) -> str:
    header = ['ACmix model', 'baseline', 'infer ACmix (img/s)', 'infer baseline', 'ratio',
              'train ACmix (img/s)', 'train baseline', 'ratio']
    body = [[r['acmix'], r['baseline'], _fmt(r['infer_acmix'], '.1f'), _fmt(r['infer_base'], '.1f'),
             _fmt(r['infer_ratio']), _fmt(r['train_acmix'], '.1f'), _fmt(r['train_base'], '.1f'),
             _fmt(r['train_ratio'])] for r in rows]
    return markdown_table(header, body)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', metavar='NAME',
                   help='pairs to include: any ACmix or baseline name or prefix (default: every pair)')
    p.add_argument('--results', type=Path, help='folder with <model>/metrics.json from tools/test.py')
    p.add_argument('--img-size', type=int, default=224, help='input size for counts and speed (default 224)')
    p.add_argument('--skip-counts', action='store_true', help='no params/MACs (table (a) keeps paper columns)')
    p.add_argument('--skip-speed', action='store_true', help='no speed table')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch', type=int, help='speed batch size (default 4 on CPU, 64 on CUDA)')
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations per model and mode (default 2)')
    p.add_argument('--reps', type=int, default=5, help='timed iterations per model and mode (default 5)')
    p.add_argument('--threads', type=int, help='torch.set_num_threads on CPU')
    p.add_argument('--out', type=Path, default=Path('work_dirs/paper_tables'), help='CSV / markdown folder')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List[Dict[str, Any]]]:
    args = parse_args(argv)
    if args.results is not None and not args.results.is_dir():
        raise SystemExit(f'--results {args.results}: not a folder')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pairs = select_pairs(args.models)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out: Dict[str, List[Dict[str, Any]]] = {}
    md = []
    rows = imagenet_rows(pairs, args.img_size, args.results, args.skip_counts, log)
    write_csv(args.out / 'imagenet.csv', rows)
    out['imagenet'] = rows
    md.append(f'## ImageNet-1K: params, MACs at {args.img_size}x{args.img_size}, top-1\n\n'
              + imagenet_markdown(rows, args.img_size))
    if not args.skip_speed:
        batch = args.batch or (64 if device.type == 'cuda' else 4)
        speed = []
        for family, acmix_name, base_name in pairs:
            if not (is_registered(acmix_name) and is_registered(base_name)):
                log(f'speed: skipped {acmix_name} / {base_name}: not registered')
                continue
            t0 = time.perf_counter()
            row = dict(family=family, acmix=acmix_name, baseline=base_name, device=args.device, batch=batch,
                       img_size=args.img_size)
            row.update(measure_speed(acmix_name, base_name, device, batch, args.img_size, args.warmup, args.reps))
            log(f'speed {acmix_name} vs {base_name} (img/s): infer {row["infer_acmix"]:.2f} vs {row["infer_base"]:.2f}, '
                f'train {row["train_acmix"]:.2f} vs {row["train_base"]:.2f} ({time.perf_counter() - t0:.0f}s)')
            speed.append(row)
            write_csv(args.out / 'speed.csv', speed)  # after every pair: a long run that is cut short keeps its rows
        out['speed'] = speed
        md.append(f'## Throughput, batch {batch} at {args.img_size}x{args.img_size}: {device_description(device)}\n'
                  f'Median of {args.reps} reps after {args.warmup} warm-up; ratio = ACmix / baseline throughput.\n\n'
                  + speed_markdown(speed))
    text = '\n\n'.join(md) + '\n'
    (args.out / 'tables.md').write_text(text)
    print(text)
    return out


if __name__ == '__main__':
    main()
