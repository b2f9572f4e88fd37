"""``tools/train.py`` / ``tools/test.py`` for mmseg configs (``default_scope='mmseg'``).

    python tools/train.py configs/segmentation/CONFIG.py --data-path data/ade/ADEChallengeData2016 --work-dir W
    python tools/test.py  configs/segmentation/CONFIG.py W/iter_160000.pth --data-path ... --work-dir W \
        [--slide [--crop-size 512 512 --stride 341 341]] [--tta]

Options: ``tools/_dispatch.py`` (the same for every task); override order: :mod:`mmtask.runner`.  Test-only
options of this task:

* ``--slide``: sliding-window inference (``model.test_cfg.mode='slide'``); the window defaults to the config's
  ``crop_size`` and the stride to two thirds of it (mmseg's 512 / 341 for ADE20K).
* ``--tta``: multi-scale (0.5-1.75 of the test scale) + flip test-time augmentation with the config's
  ``tta_pipeline`` and mmseg's ``SegTTAModel``; combines with ``--slide``.

``metrics.json`` holds mmseg's numbers in percent (``mIoU``, ``mAcc``, ``aAcc``) and ``per_class_iou``
(class name -> IoU %, ``null`` for classes neither labelled nor predicted).
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from mmengine.config import Config

import mmtask
from mmtask import UsageError, iter_datasets, jsonable

from .data_check import check_seg_split

__all__ = ['USER_ERRORS', 'add_arguments', 'train', 'test', 'check_data']

USER_ERRORS = mmtask.USER_ERRORS

_ADE_CLASSES = 150


def check_data(cfg: Config, splits: Sequence[str], max_label_reads: int = 200) -> None:
    """Run :func:`segmentation.data_check.check_seg_split` on every dataset of the given splits."""
    from mmseg.registry import DATASETS
    seen = set()
    for split, ds in iter_datasets(cfg):
        if split not in splits:
            continue
        prefix = ds.get('data_prefix') or {}
        key = (ds.get('data_root', ''), prefix.get('img_path', ''), prefix.get('seg_map_path', ''))
        if key in seen:
            continue
        seen.add(key)
        cls = DATASETS.get(ds['type'])
        defaults = {}
        if cls is not None:  # suffixes and reduce_zero_label are dataset-class defaults (ADE20K: .jpg/.png/True)
            import inspect
            defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                        if p.default is not inspect.Parameter.empty}
        num_classes = len((cls.METAINFO if cls is not None else {}).get('classes', ())) or _ADE_CLASSES
        check_seg_split(ds.get('data_root', ''), prefix.get('img_path', ''), prefix.get('seg_map_path', ''),
                        ds.get('img_suffix', defaults.get('img_suffix', '.jpg')),
                        ds.get('seg_map_suffix', defaults.get('seg_map_suffix', '.png')),
                        num_classes, ds.get('reduce_zero_label', defaults.get('reduce_zero_label', False)),
                        split, max_label_reads=max_label_reads)


def train(args: argparse.Namespace) -> None:
    """Train a segmenter (``<work-dir>/last_checkpoint`` names the final checkpoint)."""
    mmtask.train(args, check_data)


def _use_per_class_metric(cfg: Config) -> None:
    import segmentation.metrics  # noqa: F401  (registers PerClassIoUMetric)
    ev = cfg.get('test_evaluator')
    for e in ev if isinstance(ev, (list, tuple)) else [ev]:
        if e is not None and e.get('type') == 'IoUMetric':
            e['type'] = 'PerClassIoUMetric'


def _summarize(raw: dict[str, Any], runner: Any) -> dict[str, Any]:
    out = {k.split('/', 1)[-1]: jsonable(v) for k, v in raw.items()}
    for metric in runner.test_loop.evaluator.metrics:
        if hasattr(metric, 'per_class_iou'):
            out['per_class_iou'] = metric.per_class_iou
    return out


def add_arguments(parser: argparse.ArgumentParser, action: str) -> None:
    """The test options of this task: --slide [--crop-size H W] [--stride H W], --tta."""
    if action != 'test':
        return
    parser.add_argument('--slide', action='store_true', help='sliding-window inference')
    parser.add_argument('--crop-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help="sliding window (default: the config's crop_size)")
    parser.add_argument('--stride', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='sliding stride (default: 2/3 of the window)')
    parser.add_argument('--tta', action='store_true', help='multi-scale + flip test-time augmentation')


def _configure_test(cfg: Config, args: argparse.Namespace) -> None:
    """--slide / --tta, and the per-class IoU metric."""
    if args.slide:
        crop = tuple(args.crop_size or cfg.get('crop_size') or (512, 512))
        stride = tuple(args.stride or (crop[0] * 2 // 3, crop[1] * 2 // 3))
        cfg.model.test_cfg = dict(mode='slide', crop_size=crop, stride=stride)
    if args.tta:
        if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
            raise UsageError(f'{args.config}: --tta needs tta_pipeline and tta_model in the config')
        for split, ds in iter_datasets(cfg):
            if split == 'test':
                ds.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    _use_per_class_metric(cfg)


def test(args: argparse.Namespace) -> None:
    """Evaluate a checkpoint; the metrics go to ``<work-dir>/metrics.json``."""
    mmtask.test(args, check_data, _summarize, configure=_configure_test)
