"""Collect the ablation runs into the paper's two ablation tables (markdown + CSV).

    python tools/collect_ablations.py work_dirs/ablations                 # tables from <dir>/<config stem>/metrics.json
    python tools/collect_ablations.py work_dirs/ablations --out work_dirs/ablations/tables
    python tools/collect_ablations.py --write-configs                     # (re)write configs/classification/ablations/

The two ablations of the paper, each run on ACmix-Swin-T and ACmix-ResNet-26:

* **path combination** ``F_out = alpha * F_att + beta * F_conv``: learnable alpha, beta (default) / fixed
  alpha = beta = 1 / attention path only / convolution path only (``mix=``);
* **shift implementation** of the convolution path: tensor shifts / group conv with fixed shift kernels /
  learnable kernels initialised as shifts / learnable full group conv (default) (``shift=``).

``ABLATIONS`` below is the one specification: every config in ``configs/classification/ablations/`` is generated
from it (``--write-configs``; a test checks that the files match) and inherits the model's main config, setting
only ``MODEL.MIXER_ARGS``.  The default variant (learnable alpha, beta with the group conv) is one run,
``<model>_mix_learnable``, that fills the default row of both tables.

Train and evaluate each config with its stem as the work dir (see docs/REPRODUCING.md)::

    python tools/train.py configs/classification/ablations/acmix_swin_tiny_mix_fixed.yaml \
        --data-path $IMAGENET --work-dir work_dirs/ablations/acmix_swin_tiny_mix_fixed
    python tools/test.py  configs/classification/ablations/acmix_swin_tiny_mix_fixed.yaml \
        work_dirs/ablations/acmix_swin_tiny_mix_fixed/best.pth --data-path $IMAGENET \
        --work-dir work_dirs/ablations/acmix_swin_tiny_mix_fixed

A run folder holding the ``config.yaml`` that training writes is checked against the specification (model name
and mixer args), so a misfiled run is an error rather than a wrong table cell.

Paper numbers: the seed text names both tables but gives their numbers only as images, so the only cells filled
are those equal to an entry of the paper's main ImageNet table (``models/paper.py: PAPER``): the default
variant is the published ACmix model, and ``attn_only`` of Swin-T is exactly the Swin-T baseline.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

CONFIG_DIR = ROOT / 'configs' / 'classification' / 'ablations'


@dataclass(frozen=True)
class Ablation:
    """One ablation run.

    Attributes:
        table: ``'mix'`` (path combination) or ``'shift'`` (shift implementation).
        model: timm name of the ACmix model.
        short: short model name used in config / run names.
        variant: the ``mix=`` or ``shift=`` value this row is about.
        mixer_args: ``MODEL.MIXER_ARGS`` of the run.
        label: the row's description as in the paper.
        paper_from: key of ``PAPER`` whose top-1 equals this row's paper number, if one does.
    """
    table: str
    model: str
    short: str
    variant: str
    mixer_args: Dict[str, str] = field(hash=False)
    label: str
    paper_from: Optional[str] = None

    @property
    def run(self) -> str:
        """Config stem = run folder name.  The default variant of both tables is the ``mix_learnable`` run."""
        if self.table == 'shift' and self.variant == 'group_conv':
            return f'{self.short}_mix_learnable'
        return f'{self.short}_{self.table}_{self.variant}'

    @property
    def base_config(self) -> str:
        return f'{self.model}.yaml'


MIX_ROWS = [  # (mix, label)
    ('learnable', 'learnable alpha, beta (default)'),
    ('fixed', 'fixed alpha = beta = 1'),
    ('attn_only', 'attention only (alpha = 1, beta = 0)'),
    ('conv_only', 'convolution only (alpha = 0, beta = 1)'),
]
SHIFT_ROWS = [  # (shift, label), in the paper's order (a) -> (c)
    ('tensor', '(a) tensor shifts'),
    ('fixed_kernel', '(b) group conv, fixed shift kernels'),
    ('shift_init', '(c) learnable kernels, shift-initialised'),
    ('group_conv', '(c) + multiple groups: learnable group conv (default)'),
]
MODELS = [  # (timm name, short name, paper keys: default ACmix model, exact attention-only baseline or None)
    ('acmix_swin_tiny_patch4_window7_224', 'acmix_swin_tiny',
     'acmix_swin_tiny_patch4_window7_224', 'swin_tiny_patch4_window7_224'),
    # The paper's ResNet-26 baseline is a convolutional ResNet, not the attention-only network: no paper number.
    ('acmix_resnet26', 'acmix_resnet26', 'acmix_resnet26', None),
]


def _build_ablations() -> List[Ablation]:
    rows = []
    for model, short, default_key, attn_key in MODELS:
        default = dict(mix='learnable', shift='group_conv')  # one run, the default row of both tables
        for mix, label in MIX_ROWS:
            paper = default_key if mix == 'learnable' else attn_key if mix == 'attn_only' else None
            rows.append(Ablation('mix', model, short, mix, default if mix == 'learnable' else dict(mix=mix),
                                 label, paper))
        for shift, label in SHIFT_ROWS:
            rows.append(Ablation('shift', model, short, shift, default if shift == 'group_conv' else dict(shift=shift),
                                 label, default_key if shift == 'group_conv' else None))
    return rows


ABLATIONS: List[Ablation] = _build_ablations()
TABLE_TITLES = {'mix': 'Path combination: F_out = alpha * F_att + beta * F_conv',
                'shift': 'Shift implementation of the convolution path'}


def configs() -> Dict[str, str]:
    """``{config file name: YAML text}`` of every ablation run (one file per distinct run)."""
    out = {}
    for a in ABLATIONS:
        if f'{a.run}.yaml' in out:
            continue  # the shift table's default row reuses the mix table's default run
        args = '\n'.join(f'    {k}: {v}' for k, v in a.mixer_args.items())
        out[f'{a.run}.yaml'] = (
            f'# Ablation ({TABLE_TITLES[a.table].split(":")[0].lower()}): {a.label}.\n'
            f'# Generated by tools/collect_ablations.py --write-configs; edit ABLATIONS there, not this file.\n'
            f'_BASE_: ../{a.base_config}\n'
            f'MODEL:\n'
            f'  MIXER_ARGS:\n{args}\n')
    return out


def write_configs(directory: Path = CONFIG_DIR) -> List[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in configs().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def _paper_top1(key: Optional[str]) -> Optional[float]:
    if key is None:
        return None
    from models.paper import PAPER  # the one copy of the paper's numbers
    return PAPER[key].top1


def _check_run_config(run_dir: Path, a: Ablation) -> None:
    """Raise SystemExit if ``run_dir/config.yaml`` (written by training) is not this ablation's config."""
    f = run_dir / 'config.yaml'
    if not f.is_file():
        return
    cfg = yaml.safe_load(f.read_text()) or {}
    model = cfg.get('MODEL', {})
    got_name, got_args = model.get('NAME'), dict(model.get('MIXER_ARGS') or {})
    want = {k: v for k, v in a.mixer_args.items()}
    if got_name != a.model or {k: got_args.get(k) for k in want} != want:
        raise SystemExit(f'{f}: run {run_dir.name!r} was trained as MODEL.NAME={got_name!r} '
                         f'MIXER_ARGS={got_args}, but ablation {a.run!r} expects {a.model!r} {want}')


def collect(results: Path) -> List[Dict[str, Any]]:
    """One row per (table, model, variant): top-1/top-5 from ``<results>/<run>/metrics.json`` (None if absent).

    Raises:
        SystemExit: ``results`` is not a folder, a metrics file lacks ``top1``, or a run's saved config differs.
    """
    if not results.is_dir():
        raise SystemExit(f'results folder not found: {results}')
    rows = []
    for a in ABLATIONS:
        run_dir = results / a.run
        metrics_file = run_dir / 'metrics.json'
        top1 = top5 = None
        if metrics_file.is_file():
            _check_run_config(run_dir, a)
            m = json.loads(metrics_file.read_text())
            if 'top1' not in m:
                raise SystemExit(f'{metrics_file}: no "top1" key (keys: {sorted(m)})')
            top1, top5 = float(m['top1']), m.get('top5')
        rows.append(dict(table=a.table, model=a.model, variant=a.variant, label=a.label, run=a.run,
                         mixer_args=json.dumps(a.mixer_args), top1=top1, top5=top5,
                         paper_top1=_paper_top1(a.paper_from), paper_source=a.paper_from or ''))
    return rows


def unknown_runs(results: Path) -> List[str]:
    known = {a.run for a in ABLATIONS}
    return sorted(p.parent.name for p in results.glob('*/metrics.json') if p.parent.name not in known)


def _fmt(v: Optional[float], spec: str = '.2f') -> str:
    return '–' if v is None else format(v, spec) if isinstance(v, float) else str(v)


def markdown(rows: List[Dict[str, Any]]) -> str:
    """One table per ablation: a row per variant, ours and the paper's top-1 per model side by side."""
    models = [m for m, *_ in MODELS]
    parts = []
    for table, title in TABLE_TITLES.items():
        header = ['variant'] + [h for m in models for h in (f'{m} top-1', 'paper')]
        lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        sub = [r for r in rows if r['table'] == table]
        for variant in dict.fromkeys(r['variant'] for r in sub):
            cells = [next(r['label'] for r in sub if r['variant'] == variant)]
            for m in models:
                r = next(r for r in sub if r['variant'] == variant and r['model'] == m)
                cells += [_fmt(r['top1']), _fmt(r['paper_top1'], '.1f')]
            lines.append('| ' + ' | '.join(cells) + ' |')
        parts.append(f'## {title}\n\n' + '\n'.join(lines))
    return '\n\n'.join(parts) + '\n'


def write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    """``rows`` as CSV, one column per key (first-seen order), written atomically (``tools/paper_tables`` too)."""
    from models._checkpoint import atomic_write_text  # imports torch: only when writing
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    w.writeheader()
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(text.getvalue(), path)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('results', nargs='?', type=Path, help='folder with one <config stem>/metrics.json per run')
    p.add_argument('--out', type=Path, help='where ablations.csv / ablations.md go (default: <results>)')
    p.add_argument('--write-configs', action='store_true', help=f'(re)write the ablation configs in {CONFIG_DIR}')
    args = p.parse_args(argv)
    if args.write_configs:
        for path in write_configs():
            print(f'wrote {path.relative_to(ROOT)}')
        if args.results is None:
            return []
    if args.results is None:
        p.error('give the results folder (or --write-configs)')
    rows = collect(args.results)
    for name in unknown_runs(args.results):
        print(f'note: {args.results / name} is not an ablation run (known: configs/classification/ablations/)',
              file=sys.stderr)
    out = args.out or args.results
    write_csv(out / 'ablations.csv', rows)
    text = markdown(rows)
    (out / 'ablations.md').write_text(text)
    print(text)
    missing = [r['run'] for r in rows if r['top1'] is None]
    if missing:
        print(f'{len(set(missing))} run(s) without metrics.json: {", ".join(dict.fromkeys(missing))}',
              file=sys.stderr)
    return rows


if __name__ == '__main__':
    main()
