"""The demos: both generated datasets of every task, and (slow) that each demo recipe learns both of them.

A recipe that only works on the data it was written for is not a recipe, so every task has a second,
differently generated set (``--variant 2``: 10 classes, other shapes, colours, textures and sizes) and the slow
tests train the unchanged demo config on each variant through ``tools/demo.py``, which fails below the target.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classification import demo_data as cls_data
from detection import demo_data as det_data
from segmentation import demo_data as seg_data

ROOT = Path(__file__).resolve().parents[1]

# task -> (metric in metrics.json, target on both variants)
TARGETS = {'classification': ('top1', 90.0), 'detection': ('bbox_mAP', 0.3), 'segmentation': ('mIoU', 50.0)}


def test_classification_variant_2_is_ten_other_classes(tmp_path):
    a = cls_data.make(tmp_path / 'a', seed=2, variant=2, per_class={'train': 2, 'val': 1})
    b = cls_data.make(tmp_path / 'b', seed=2, variant=2, per_class={'train': 2, 'val': 1})
    files = sorted(p.relative_to(a) for p in a.rglob('*.png'))
    assert sorted(p.name for p in (a / 'train').iterdir()) == sorted(cls_data.CLASSES_2)
    assert len(cls_data.CLASSES_2) == 10 and not set(cls_data.CLASSES_2) & set(cls_data.CLASSES)
    assert len(files) == 3 * 10 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert Image.open(a / files[0]).size == (cls_data.SIZE_2, cls_data.SIZE_2)
    with pytest.raises(ValueError, match='unknown variant 3'):
        cls_data.make(tmp_path / 'c', variant=3)


def test_detection_variant_2_has_ten_classes_and_about_1400_objects(tmp_path):
    data = det_data.make(tmp_path, seed=0, variant=2)
    coco = json.loads((data / 'annotations' / 'instances_train2017.json').read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    used = {names[a['category_id']] for a in coco['annotations']}
    assert used == set(det_data.DEMO_CLASSES_2) and not used & set(det_data.DEMO_CLASSES)
    assert 1200 <= len(coco['annotations']) <= 1600
    for a in coco['annotations'][:50]:  # boxes are their polygons' extents (to the 2 decimals written)
        xs, ys = a['segmentation'][0][0::2], a['segmentation'][0][1::2]
        x, y, w, h = a['bbox']
        assert np.allclose([x, y, x + w, y + h], [min(xs), min(ys), max(xs), max(ys)], atol=0.02)


def test_segmentation_variant_2_labels_are_its_ten_ade_classes(tmp_path):
    data = seg_data.make(tmp_path, seed=0, variant=2, n_train=6, n_val=2)
    labels = set()
    for png in (data / 'annotations' / 'training').glob('*.png'):
        image = data / 'images' / 'training' / png.with_suffix('.jpg').name
        label = np.asarray(Image.open(png))
        assert label.shape == np.asarray(Image.open(image)).shape[:2]
        labels |= set(np.unique(label).tolist())
    assert labels <= set(seg_data.ADE_CLASSES_2.values()) and len(labels) >= 8


@pytest.mark.mm
def test_variant_2_names_are_the_toolboxes_class_names():
    """The COCO / ADE20K names the generators use are the ones mmdet / mmseg index (ADE20K: index k -> k - 1)."""
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import ADE20KDataset
    assert set(det_data.DEMO_CLASSES_2) <= set(CocoDataset.METAINFO['classes'])
    ade = ADE20KDataset.METAINFO['classes']
    assert {name: ade[idx - 1].strip() for name, idx in seg_data.ADE_CLASSES_2.items()} == {
        name: name for name in seg_data.ADE_CLASSES_2}


def _demo(task: str, variant: int, out: Path) -> float:
    run = subprocess.run([sys.executable, 'tools/demo.py', '--task', task, '--variant', str(variant),
                          '--out', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return json.loads((out / 'work' / 'metrics.json').read_text())[TARGETS[task][0]]


@pytest.mark.slow
@pytest.mark.parametrize('variant', [1, 2])
def test_classification_demo_learns(variant, tmp_path):
    assert _demo('classification', variant, tmp_path) >= TARGETS['classification'][1]


@pytest.mark.slow
@pytest.mark.mm
@pytest.mark.parametrize('variant', [1, 2])
def test_detection_demo_learns(variant, tmp_path):
    assert _demo('detection', variant, tmp_path) >= TARGETS['detection'][1]


@pytest.mark.slow
@pytest.mark.mm
@pytest.mark.parametrize('variant', [1, 2])
def test_segmentation_demo_learns(variant, tmp_path):
    assert _demo('segmentation', variant, tmp_path) >= TARGETS['segmentation'][1]
