"""mmseg's ``IoUMetric`` that also keeps the per-class IoU it prints, so ``tools/test.py`` can write it to json.

Registered in mmseg's ``METRICS`` as ``PerClassIoUMetric``.  ``segmentation.cli.test`` swaps it in for a config's
``IoUMetric`` (same arguments, same returned numbers); configs themselves stay stock mmseg.
"""
from __future__ import annotations

import math

from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

__all__ = ['PerClassIoUMetric']


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """``IoUMetric``; after each evaluation ``per_class_iou`` maps class name -> IoU in percent (``None``: the
    class is neither in the labels nor in the predictions)."""

    per_class_iou: dict[str, float | None]

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics(results)
        columns = tuple(zip(*results))  # (intersect, union, pred_area, label_area) per image
        per_class = self.total_area_to_metrics(sum(columns[0]), sum(columns[1]), sum(columns[2]),
                                               sum(columns[3]), ['mIoU'], nan_to_num=None, beta=self.beta)
        names = self.dataset_meta['classes']
        self.per_class_iou = {}
        for name, iou in zip(names, per_class['IoU'].tolist()):
            self.per_class_iou[name.strip()] = None if math.isnan(iou) else round(100 * iou, 2)
        return metrics
