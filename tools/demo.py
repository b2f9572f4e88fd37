"""End-to-end demo on generated data: make the dataset, train, test, report.

    python tools/demo.py                       # classification (the default task)
    python tools/demo.py --task detection      # Mask R-CNN, COCO format, bbox mAP (0-1)
    python tools/demo.py --task segmentation   # Semantic FPN, ADE20K format, mIoU (%)
    python tools/demo.py --variant 2           # the task's second, differently generated dataset
    python tools/demo.py --out /tmp/acmix_demo --min-metric 90

Classification: configs/classification/demo.yaml (ACmix-ResNet-26 from scratch on procedurally drawn shapes)
trains on a CPU in a few minutes.  Detection / segmentation: the demo configs under configs/detection/ and
configs/segmentation/ (miniature Swin-ACmix backbones on drawn COCO / ADE20K-format sets, the real 80 / 150
label spaces); they need the OpenMMLab stack, which is installed the first time (tools/_openmmlab.py).  Every
recipe has a bounded number of optimizer steps, so its run time does not grow with the data.  Prints the metric
and the TensorBoard log folder; exits non-zero if the metric is below --min-metric (default: the task's
threshold in TASKS; --min-top1 is an alias).  Each step is the ordinary command line, so the demo shows exactly
what a user runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _openmmlab import ensure as ensure_openmmlab

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# task -> (config, metric key in metrics.json, label, default --min-metric)
TASKS = {
    'classification': ('configs/classification/demo.yaml', 'top1', 'top-1 accuracy (%)', 90.0),
    'detection': ('configs/detection/demo_mask-rcnn_acmix-swin-mini_fpn_1xb4-500it_coco.py', 'bbox_mAP',
                  'bbox mAP (0-1)', 0.3),
    'segmentation': ('configs/segmentation/demo_fpn_acmix-swin-mini_1xb8-400it_ade20k-128x128.py', 'mIoU',
                     'mIoU (%)', 30.0),
}


def _opts(task: str, seed: int, data: Path) -> list[str]:
    """Overrides in each task's --opts syntax (yacs KEY VALUE / mmengine key=value): the seed, and for
    classification the number of classes, which is the data's (detection / segmentation use the COCO / ADE20K
    label spaces of every variant)."""
    if task == 'classification':
        n_classes = sum(1 for d in (data / 'train').iterdir() if d.is_dir())
        return ['SEED', str(seed), 'MODEL.NUM_CLASSES', str(n_classes)]
    return [f'randomness.seed={seed}']


def _run(cmd: list[str]) -> None:
    print('$', ' '.join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode:
        raise SystemExit(f'demo step failed: {" ".join(cmd)}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task', choices=sorted(TASKS), default='classification')
    parser.add_argument('--out', type=Path, help='folder for data/ and work/ (default: a new temp folder)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--variant', type=int, choices=(1, 2), default=1,
                        help='which generated dataset (tools/make_demo_data.py --variant)')
    parser.add_argument('--min-metric', '--min-top1', dest='min_metric', type=float, default=None,
                        help="fail below this metric value (default: the task's threshold)")
    args = parser.parse_args()

    config, key, label, default_min = TASKS[args.task]
    min_metric = default_min if args.min_metric is None else args.min_metric
    if args.task != 'classification':
        ensure_openmmlab(f'tools/demo.py --task {args.task}')
    out = (args.out or Path(tempfile.mkdtemp(prefix=f'acmix_demo_{args.task}_'))).resolve()
    data, work = out / 'data', out / 'work'
    start = time.time()
    # The C++ kernels build once per machine, on first use, one after the other; building the task's now, in the
    # background and in parallel, overlaps that wait with making the data (training waits for a running build).
    # The classification demo (ResNet-ACmix) needs no layout kernel, which would only compete for the cores.
    kernels = "('local-attention', 'shift-conv')" if args.task == 'classification' else ''  # '': all of them
    builder = subprocess.Popen([PY, '-c', f'from acmix.kernels import build_cpu_kernels; build_cpu_kernels({kernels})'],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _run([PY, 'tools/make_demo_data.py', args.task, str(data), '--seed', str(args.seed),
          '--variant', str(args.variant)])
    opts = _opts(args.task, args.seed, data)
    _run([PY, 'tools/train.py', config, '--data-path', str(data), '--work-dir', str(work), '--opts', *opts])
    checkpoint = (work / 'last_checkpoint').read_text().strip()
    _run([PY, 'tools/test.py', config, checkpoint, '--data-path', str(data), '--work-dir', str(work),
          '--opts', *opts])
    builder.wait()
    value = json.loads((work / 'metrics.json').read_text())[key]
    minutes = (time.time() - start) / 60
    print(f'\n{args.task} demo: {label} {value:.2f} in {minutes:.1f} min'
          f'\n  checkpoint:  {checkpoint}\n  metrics:     {work / "metrics.json"}'
          f'\n  TensorBoard: tensorboard --logdir {work / "tb"}')
    if value < min_metric:
        raise SystemExit(f'{label} {value:.2f} is below --min-metric {min_metric}')


if __name__ == '__main__':
    main()
