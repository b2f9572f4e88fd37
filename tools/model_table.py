"""Params and GMACs at 224x224 of every ``acmix_*`` model and its baseline, next to the paper's numbers.

    python tools/model_table.py                       # markdown table, all acmix_* models + baselines
    python tools/model_table.py --models 'acmix_resnet*' --csv table.csv

Counting: ``models.complexity`` (multiply-accumulates of convs, linears, matmuls and attention, as the paper counts
"FLOPs"; see its docstring).  "paper" = the authors' README (ACmix rows only); "authors' code" = the same count
measured on the authors' released code (where it exists: ResNet and Swin); both from ``models/paper.py``.
"""
import argparse
import csv
import fnmatch
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402,F401  (registers the entrypoints)
from models.complexity import count_macs, count_params  # noqa: E402
from models.paper import AUTHORS_CODE, PAPER_COUNTS, baseline_of  # noqa: E402


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
            paper = PAPER_COUNTS.get(n)
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
