"""Checks of an image / label-map folder pair made before mmseg reads it.

mmseg pairs images and label maps by file name and fails late (or trains on garbage) when a label is missing,
has another size than its image, or holds indices outside the label space.  :func:`check_seg_split` reports
these with the file names.
"""
from __future__ import annotations

import os
import os.path as osp

import numpy as np
from PIL import Image

from mmtask import DatasetError

__all__ = ['DatasetError', 'check_seg_split']


def check_seg_split(data_root: str, img_dir: str, ann_dir: str, img_suffix: str, seg_suffix: str,
                    num_classes: int, reduce_zero_label: bool, split: str, max_label_reads: int = 200,
                    ignore_index: int = 255) -> int:
    """Validate one split; return its number of images.

    Args:
        data_root: dataset root; ``img_dir`` / ``ann_dir`` are relative to it unless absolute.
        img_suffix, seg_suffix: file endings mmseg pairs by (``.jpg`` / ``.png`` for ADE20K).
        num_classes: size of the label space (150 for ADE20K).
        reduce_zero_label: label files hold ``0`` = unlabelled and ``1..num_classes`` (ADE20K); otherwise
            ``0..num_classes-1``.  ``ignore_index`` is always allowed.
        max_label_reads: label value ranges are checked on the first this many files (sizes on all of them,
            from the PNG headers); ``-1`` checks every file.

    Raises:
        DatasetError: missing folders, images without a label map (or the reverse), size mismatches, label
            values out of range.
    """
    img_path = img_dir if osp.isabs(img_dir) else osp.join(data_root, img_dir)
    ann_path = ann_dir if osp.isabs(ann_dir) else osp.join(data_root, ann_dir)
    for what, path in (('image', img_path), ('annotation', ann_path)):
        if not osp.isdir(path):
            raise DatasetError(f'{split}: {what} folder not found: {path}')
    images = sorted(f[:-len(img_suffix)] for f in os.listdir(img_path) if f.endswith(img_suffix))
    labels = {f[:-len(seg_suffix)] for f in os.listdir(ann_path) if f.endswith(seg_suffix)}
    if not images:
        raise DatasetError(f'{split}: no *{img_suffix} images in {img_path}')
    unlabelled = [n for n in images if n not in labels]
    if unlabelled:
        raise DatasetError(f'{split}: {len(unlabelled)} of {len(images)} images have no label map '
                           f'{ann_path}/<name>{seg_suffix}, e.g. {unlabelled[:5]}')
    top = num_classes if reduce_zero_label else num_classes - 1
    for k, name in enumerate(images):
        with Image.open(osp.join(img_path, name + img_suffix)) as im, \
                Image.open(osp.join(ann_path, name + seg_suffix)) as lab:
            if im.size != lab.size:
                raise DatasetError(f'{split}: label map {name}{seg_suffix} is {lab.size[0]}x{lab.size[1]} but its '
                                   f'image is {im.size[0]}x{im.size[1]} (W x H)')
            if max_label_reads < 0 or k < max_label_reads:
                values = np.unique(np.asarray(lab))
                bad = values[(values > top) & (values != ignore_index)]
                if bad.size:
                    raise DatasetError(f'{split}: label map {name}{seg_suffix} holds values {bad.tolist()[:10]} '
                                       f'outside 0..{top}' + (' (0 = unlabelled)' if reduce_zero_label else '')
                                       + f' (ignore: {ignore_index})')
    return len(images)
