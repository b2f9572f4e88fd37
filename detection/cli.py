"""``tools/train.py`` / ``tools/test.py`` for mmdet configs (``default_scope='mmdet'``).

    python tools/train.py configs/detection/CONFIG.py --data-path data/coco --work-dir work_dirs/x
    python tools/test.py  configs/detection/CONFIG.py work_dirs/x/epoch_12.pth --data-path data/coco --work-dir work_dirs/x

Options: ``tools/_dispatch.py`` (the same for every task); override order: :mod:`mmtask.runner`.  Test writes ``<work-dir>/metrics.json`` with mmdet's COCO
numbers as it reports them (0-1): ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s/m/l`` and, for
Mask R-CNN models, the same for ``segm_``.
"""
from __future__ import annotations

import argparse
import os.path as osp
from typing import Any, Sequence

from mmengine.config import Config

import mmtask
from mmtask import iter_datasets, jsonable

from .data_check import check_coco_split

__all__ = ['USER_ERRORS', 'train', 'test', 'check_data']

USER_ERRORS = mmtask.USER_ERRORS

_COCO_TYPES = ('CocoDataset',)


def _set_data_path(cfg: Config, root: str) -> None:
    """CocoMetric reads its own copy of the annotations: point it at the new root's file of its split."""
    for split in ('val', 'test'):
        ds = next((d for s, d in iter_datasets(cfg) if s == split), None)
        evaluators = cfg.get(f'{split}_evaluator')
        if ds is None or evaluators is None:
            continue
        for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
            if ev.get('type') == 'CocoMetric' and ds.get('ann_file'):
                ev['ann_file'] = osp.join(root, ds['ann_file'])


def check_data(cfg: Config, splits: Sequence[str]) -> None:
    """Run :func:`detection.data_check.check_coco_split` on every COCO dataset of the given splits."""
    from mmdet.datasets import CocoDataset
    seen = set()
    for split, ds in iter_datasets(cfg):
        if split not in splits or ds.get('type') not in _COCO_TYPES:
            continue
        key = (ds.get('data_root', ''), ds.get('ann_file', ''))
        if key in seen:
            continue
        seen.add(key)
        classes = (ds.get('metainfo') or {}).get('classes') or CocoDataset.METAINFO['classes']
        filter_cfg = ds.get('filter_cfg') or {}
        check_coco_split(ds.get('data_root', ''), ds['ann_file'], (ds.get('data_prefix') or {}).get('img', ''),
                         classes, split, require_annotations=split == 'train' and filter_cfg.get('filter_empty_gt',
                                                                                                False))


def train(args: argparse.Namespace) -> None:
    """Train a detector (``<work-dir>/last_checkpoint`` names the final checkpoint)."""
    mmtask.train(args, check_data, _set_data_path)


_COCO_SUFFIXES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


def _summarize(raw: dict[str, Any], runner: Any) -> dict[str, Any]:
    """CocoMetric's 'coco/bbox_mAP', ... without the prefix (mmdet's numbers, 0-1).

    When the model detects nothing at all, CocoMetric returns no numbers (only a log warning); the scores are
    then 0 by definition, and ``empty_results: true`` says so.
    """
    out = {k.split('/', 1)[-1]: jsonable(v) for k, v in raw.items()}
    evaluators = runner.cfg.get('test_evaluator')
    for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
        if not ev or ev.get('type') != 'CocoMetric':
            continue
        kinds = ev.get('metric', 'bbox')
        for kind in [kinds] if isinstance(kinds, str) else kinds:
            if f'{kind}_mAP' not in out:
                out.update({f'{kind}_{s}': 0.0 for s in _COCO_SUFFIXES})
                out['empty_results'] = True
    return out


def test(args: argparse.Namespace) -> None:
    """Evaluate a checkpoint; the metrics go to ``<work-dir>/metrics.json``."""
    mmtask.test(args, check_data, _summarize, _set_data_path)
