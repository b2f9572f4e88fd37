"""Params and GMACs at 224x224 of every ``acmix_*`` model and its baseline, next to the paper's numbers.

    python tools/model_table.py                       # markdown table, all acmix_* models + baselines
    python tools/model_table.py --models 'acmix_resnet*' --csv table.csv

Counting: ``models.complexity`` (multiply-accumulates of convs, linears, matmuls and attention, as the paper counts
"FLOPs"; see its docstring).  "paper" = the authors' README (ACmix rows only); "authors' code" = the same count
measured on the authors' released code (where it exists: ResNet and Swin).
"""
import argparse
import csv
import fnmatch
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402,F401  (registers the entrypoints)
from models.complexity import count_macs, count_params  # noqa: E402

# ACmix rows of the authors' README: (params M, GFLOPs) at 224.
PAPER: Dict[str, Tuple[float, float]] = {
    'acmix_resnet26': (10.6, 2.3), 'acmix_resnet38': (14.6, 2.9), 'acmix_resnet50': (18.6, 3.6),
    'acmix_san10': (12.1, 1.9), 'acmix_san15': (16.6, 2.7), 'acmix_san19': (21.2, 3.4),
    'acmix_pvt_tiny': (13.0, 2.0), 'acmix_pvt_small': (25.0, 3.9),
    'acmix_swin_tiny_patch4_window7_224': (30.0, 4.6), 'acmix_swin_small_patch4_window7_224': (51.0, 9.0),
}
# Measured on the authors' code (params, GMACs at 224).  Swin: their model.flops(), which also counts LayerNorms and
# pooling (C*H*W each, 3.8M MACs for Swin-T): the only difference from ours.
AUTHORS_CODE: Dict[str, Tuple[int, float]] = {
    'acmix_resnet26': (10_487_816, 2.22), 'acmix_resnet38': (14_410_896, 2.86), 'acmix_resnet50': (18_333_976, 3.50),
    'conv_resnet26': (13_696_552, 2.34), 'conv_resnet38': (19_626_792, 3.22), 'resnet50': (25_557_032, 4.09),
    'acmix_swin_tiny_patch4_window7_224': (28_649_908, 4.649),
    'acmix_swin_small_patch4_window7_224': (50_345_080, 8.999),
    'swin_tiny_patch4_window7_224': (28_288_354, 4.494), 'swin_small_patch4_window7_224': (49_606_258, 8.747),
}


# The baseline each ACmix model is compared with (a conv / attention twin of the same depth and width).
BASELINES: Dict[str, str] = {
    'acmix_resnet26': 'conv_resnet26', 'acmix_resnet38': 'conv_resnet38', 'acmix_resnet50': 'resnet50',
    'acmix_san10': 'san10', 'acmix_san15': 'san15', 'acmix_san19': 'san19',
    'acmix_pvt_tiny': 'pvt_v1_tiny', 'acmix_pvt_small': 'pvt_v1_small',
    'acmix_swin_tiny_patch4_window7_224': 'swin_tiny_patch4_window7_224',
    'acmix_swin_small_patch4_window7_224': 'swin_small_patch4_window7_224',
}


def baseline_of(name: str) -> Optional[str]:
    """The registered baseline of an ``acmix_*`` model (``BASELINES``, else ``conv_<rest>`` / ``<rest>``)."""
    registered = set(timm.list_models())
    rest = name[len('acmix_'):]
    return next((c for c in (BASELINES.get(name), f'conv_{rest}', rest) if c in registered), None)


def measure(name: str, img: int) -> Dict[str, object]:
    model = timm.create_model(name)
    return dict(params=count_params(model), gmacs=count_macs(model, (3, img, img)) / 1e9)


def rows(patterns: List[str], img: int) -> List[Dict[str, object]]:
    out = []
    names = sorted(n for n in timm.list_models('acmix_*') if any(fnmatch.fnmatch(n, p) for p in patterns))
    for name in names:
        for role, n in (('acmix', name), ('baseline', baseline_of(name))):
            if n is None:
                continue
            m = measure(n, img)
            paper = PAPER.get(n)
            ours_code = AUTHORS_CODE.get(n)
            out.append(dict(
                model=n, role=role, params_M=m['params'] / 1e6, gmacs=m['gmacs'],
                paper_params_M=paper[0] if paper else None, paper_gflops=paper[1] if paper else None,
                authors_params=ours_code[0] if ours_code else None, authors_gmacs=ours_code[1] if ours_code else None,
                params=m['params']))
    return out


def _fmt(v, spec: str) -> str:
    return '–' if v is None else format(v, spec)


def to_markdown(table: List[Dict[str, object]], img: int) -> str:
    lines = [f'| model | role | params | GMACs @{img} | paper params (M) | paper GFLOPs | authors\' code params | '
             f'authors\' code GMACs |', '|---|---|---:|---:|---:|---:|---:|---:|']
    for r in table:
        lines.append(
            f"| `{r['model']}` | {r['role']} | {r['params']:,} | {r['gmacs']:.3f} | "
            f"{_fmt(r['paper_params_M'], '.1f')} | {_fmt(r['paper_gflops'], '.1f')} | "
            f"{_fmt(r['authors_params'], ',')} | {_fmt(r['authors_gmacs'], '.3f')} |")
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['acmix_*'], help='fnmatch patterns over acmix_* names')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--csv', type=Path, help='also write the table as CSV here')
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    table = rows(args.models, args.img_size)
    if not table:
        raise SystemExit(f'no registered acmix_* model matches {args.models}')
    print(to_markdown(table, args.img_size))
    if args.csv:
        with open(args.csv, 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)


if __name__ == '__main__':
    main()
