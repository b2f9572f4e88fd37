"""Write small, deterministic demo datasets in the real on-disk formats.

    python tools/make_demo_data.py classification <out_dir> [--seed 0]   # ImageFolder (ImageNet layout)
    python tools/make_demo_data.py detection <out_dir> [--seed 0]        # COCO json + images
    python tools/make_demo_data.py segmentation <out_dir> [--seed 0]     # ADEChallengeData2016

``--variant 2`` writes each task's second, differently generated set (10 classes, other shapes, colours,
textures and sizes; see the generators' docstrings), used to check that the demo recipes are not tuned to
variant 1.
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = ('classification', 'detection', 'segmentation')

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('task', choices=TASKS)
    parser.add_argument('out_dir', type=Path)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--variant', type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    importlib.import_module(f'{args.task}.demo_data').make(args.out_dir, seed=args.seed, variant=args.variant)
