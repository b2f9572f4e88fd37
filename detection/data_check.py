"""Checks of a COCO-format dataset made before mmdet reads it, so bad input fails with a message that names the file.

mmdet's ``CocoDataset`` silently drops what it cannot use: categories outside the config's classes, annotations
of unknown images, images without annotations (``filter_empty_gt``).  A typo in a path surfaces as an empty
dataset deep inside a sampler.  :func:`check_coco_split` catches these first.
"""
from __future__ import annotations

import json
import os.path as osp
from collections import Counter
from typing import Sequence

from mmtask import DatasetError

__all__ = ['DatasetError', 'check_coco_split']


def check_coco_split(data_root: str, ann_file: str, img_prefix: str, classes: Sequence[str] | None,
                     split: str, require_annotations: bool) -> dict[str, int]:
    """Validate one split; return counts ``{'images', 'annotations', 'empty_images'}``.

    Args:
        data_root: dataset root (``--data-path``).
        ann_file: annotation json, relative to ``data_root`` unless absolute.
        img_prefix: image folder, relative to ``data_root`` unless absolute.
        classes: category names the config trains/evaluates (``metainfo.classes``); ``None`` skips that check.
        split: 'train' / 'val' / 'test', for messages.
        require_annotations: the split must have at least one annotated image (training).

    Raises:
        DatasetError: missing annotation file or image folder, malformed json, missing image files, annotations
            pointing at unknown images or categories, categories the config does not know, no annotated image.
    """
    ann_path = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
    img_dir = img_prefix if osp.isabs(img_prefix) else osp.join(data_root, img_prefix)
    if not osp.isfile(ann_path):
        raise DatasetError(f'{split}: annotation file not found: {ann_path}')
    if not osp.isdir(img_dir):
        raise DatasetError(f'{split}: image folder not found: {img_dir}')
    try:
        with open(ann_path) as f:
            coco = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f'{split}: {ann_path} is not valid json ({e})') from None
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise DatasetError(f"{split}: {ann_path} has no '{key}' list (not a COCO instances file)")

    images = {img['id']: img['file_name'] for img in coco['images']}
    if not images:
        raise DatasetError(f'{split}: {ann_path} lists no images')
    missing = [name for name in images.values() if not osp.isfile(osp.join(img_dir, name))]
    if missing:
        raise DatasetError(f'{split}: {len(missing)} of {len(images)} images listed in {ann_path} are missing '
                           f'from {img_dir}, e.g. {missing[:5]}')

    cats = {c['id']: c['name'] for c in coco['categories']}
    if classes is not None:
        unknown = sorted(set(cats.values()) - set(classes))
        if unknown:
            raise DatasetError(f'{split}: categories {unknown} of {ann_path} are not among the config\'s '
                               f'{len(classes)} classes (metainfo.classes); mmdet would silently drop them')
    bad_img = Counter(a['image_id'] for a in coco['annotations'] if a['image_id'] not in images)
    if bad_img:
        raise DatasetError(f'{split}: {sum(bad_img.values())} annotations in {ann_path} refer to unknown image '
                           f'ids, e.g. {list(bad_img)[:5]}')
    bad_cat = sorted({a['category_id'] for a in coco['annotations'] if a['category_id'] not in cats})
    if bad_cat:
        raise DatasetError(f'{split}: annotations in {ann_path} use category ids {bad_cat[:10]} that are not '
                           f"in its 'categories'")

    annotated = {a['image_id'] for a in coco['annotations'] if not a.get('iscrowd', 0)}
    empty = [images[i] for i in images if i not in annotated]
    if require_annotations and len(empty) == len(images):
        raise DatasetError(f'{split}: none of the {len(images)} images in {ann_path} has an annotation; '
                           f'nothing to train on')
    if empty:
        print(f'[data check] {split}: {len(empty)} of {len(images)} images have no (non-crowd) annotation'
              + (' and are skipped in training (filter_empty_gt)' if require_annotations else '')
              + f', e.g. {empty[:3]}')
    return {'images': len(images), 'annotations': len(coco['annotations']), 'empty_images': len(empty)}
