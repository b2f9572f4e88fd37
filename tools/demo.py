"""End-to-end demo on generated data: make the dataset, train, test, report.

    python tools/demo.py                       # classification (the default task)
    python tools/demo.py --out /tmp/acmix_demo --min-top1 90

Classification: configs/classification/demo.yaml (a small ACmix-ResNet on 6 procedurally drawn shape
classes) trains on a CPU in a few minutes.  Prints the top-1 accuracy and the TensorBoard log folder; exits
non-zero if top-1 is below --min-top1.  Each step is the ordinary command line, so the demo shows exactly
what a user runs.  Other tasks can be added to TASKS.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# task -> (config, metric key in metrics.json, label)
TASKS = {
    'classification': ('configs/classification/demo.yaml', 'top1', 'top-1 accuracy (%)'),
}


def _run(cmd: list[str]) -> None:
    print('$', ' '.join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode:
        raise SystemExit(f'demo step failed: {" ".join(cmd)}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task', choices=sorted(TASKS), default='classification')
    parser.add_argument('--out', type=Path, help='folder for data/ and work/ (default: a new temp folder)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--min-top1', type=float, default=90.0, help='fail below this metric value')
    args = parser.parse_args()

    config, key, label = TASKS[args.task]
    out = (args.out or Path(tempfile.mkdtemp(prefix=f'acmix_demo_{args.task}_'))).resolve()
    data, work = out / 'data', out / 'work'
    start = time.time()
    _run([PY, 'tools/make_demo_data.py', args.task, str(data), '--seed', str(args.seed)])
    _run([PY, 'tools/train.py', config, '--data-path', str(data), '--work-dir', str(work),
          '--opts', 'SEED', str(args.seed)])
    checkpoint = (work / 'last_checkpoint').read_text().strip()
    _run([PY, 'tools/test.py', config, checkpoint, '--data-path', str(data), '--work-dir', str(work)])
    value = json.loads((work / 'metrics.json').read_text())[key]
    minutes = (time.time() - start) / 60
    print(f'\n{args.task} demo: {label} {value:.2f} in {minutes:.1f} min'
          f'\n  checkpoint:  {checkpoint}\n  metrics:     {work / "metrics.json"}'
          f'\n  TensorBoard: tensorboard --logdir {work / "tb"}')
    if value < args.min_top1:
        raise SystemExit(f'{label} {value:.2f} is below --min-top1 {args.min_top1}')


if __name__ == '__main__':
    main()
