"""A small COCO-format instance set of drawn shapes, deterministic from the seed.

Layout (what mmdet's ``CocoDataset`` reads for COCO 2017, unchanged)::

    <out>/annotations/instances_train2017.json
    <out>/annotations/instances_val2017.json
    <out>/train2017/000000000001.jpg ...
    <out>/val2017/000000100001.jpg ...

The label space is COCO's: the json lists all 80 categories with their real ids and names, so mmdet's label
indices are those of a real COCO run.  Objects are drawn from four of them, each with its own shape and colour:
``sports ball`` (disc), ``stop sign`` (octagon), ``kite`` (diamond) and ``tv`` (rectangle).  Every object has
a box ``[x, y, w, h]``, the polygon it was drawn from as its mask, and the polygon's area.  Some training images
have no object (mmdet's ``filter_empty_gt`` skips them, as with real COCO).

Variant 2 (a differently generated set, to check that a recipe is not tuned to variant 1) draws ten other
categories (:data:`DEMO_CLASSES_2`: triangles, hexagons, pentagons, stars, crosses, half discs, tall and wide
rectangles, elongated diamonds and crescents, several in similar colours), rotated by up to 20 degrees, 12-72 px,
on striped or checked backgrounds: 400 training images with about 1,400 objects, 80 validation images.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['make', 'COCO_CATEGORIES', 'DEMO_CLASSES', 'DEMO_CLASSES_2']

# COCO 2017's 80 category ids in order; names are mmdet's CocoDataset.METAINFO['classes'] (same order).
_COCO_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
             33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
             60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
_COCO_NAMES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
    'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed',
    'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven',
    'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')
assert len(_COCO_IDS) == len(_COCO_NAMES) == 80
COCO_CATEGORIES = [{'id': i, 'name': n} for i, n in zip(_COCO_IDS, _COCO_NAMES)]
_ID = dict(zip(_COCO_NAMES, _COCO_IDS))

# class -> (polygon sides, base RGB colour); sides 0 = disc (drawn as a 32-gon)
DEMO_CLASSES = {
    'sports ball': (0, (235, 120, 30)),
    'stop sign': (8, (200, 20, 30)),
    'kite': (4, (40, 170, 220)),
    'tv': (-1, (40, 40, 50)),    # -1: axis-aligned rectangle
}


# Variant 2: class -> (outline, base RGB colour); outlines are drawn by _outline_2
DEMO_CLASSES_2 = {
    'pizza': ('triangle', (230, 180, 60)),
    'clock': ('hexagon', (235, 235, 235)),
    'cake': ('pentagon', (200, 120, 170)),
    'bird': ('star', (60, 120, 230)),
    'scissors': ('cross', (200, 40, 40)),
    'umbrella': ('half_disc', (40, 40, 160)),
    'book': ('tall_rect', (120, 60, 30)),
    'laptop': ('wide_rect', (150, 150, 160)),
    'tie': ('long_diamond', (170, 30, 90)),
    'banana': ('crescent', (240, 220, 50)),
}


def _outline_2(kind: str, s: float) -> list[tuple[float, float]]:
    """Polygon of a variant-2 ``kind`` around (0, 0), unrotated, about ``s`` pixels across."""
    r = s / 2
    if kind in ('triangle', 'hexagon', 'pentagon'):
        n = {'triangle': 3, 'hexagon': 6, 'pentagon': 5}[kind]
        return [(r * math.sin(2 * math.pi * k / n), -r * math.cos(2 * math.pi * k / n)) for k in range(n)]
    if kind == 'star':
        return [(r * (1 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5),
                 -r * (1 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
    if kind == 'cross':
        a = r / 3
        return [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a),
                (-a, -a)]
    if kind == 'half_disc':
        return [(r * math.cos(t), r / 2 - r * math.sin(t)) for t in (k * math.pi / 16 for k in range(17))]
    if kind in ('tall_rect', 'wide_rect'):
        hw, hh = (0.3 * r, r) if kind == 'tall_rect' else (r, 0.5 * r)
        return [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
    if kind == 'long_diamond':
        return [(0, -r), (0.35 * r, 0), (0, r), (-0.35 * r, 0)]
    if kind == 'crescent':
        outer = [(r * math.cos(t), r * math.sin(t)) for t in (math.pi / 2 + k * math.pi / 16 for k in range(17))]
        back = (3 * math.pi / 2 - k * math.pi / 16 for k in range(17))
        return outer + [(0.4 * r * math.cos(t), r * math.sin(t)) for t in back]
    raise ValueError(f'unknown outline {kind!r}')


def _object_2(rng: np.random.Generator, w: int, h: int) -> tuple[str, list[tuple[float, float]], tuple]:
    """(class, polygon, base colour) of one variant-2 object at a random place, size and rotation."""
    cls = list(DEMO_CLASSES_2)[int(rng.integers(len(DEMO_CLASSES_2)))]
    kind, colour = DEMO_CLASSES_2[cls]
    s = float(rng.uniform(12, 72))
    angle = math.radians(float(rng.uniform(-20, 20)))
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = float(rng.uniform(s / 2 + 1, w - s / 2 - 1)), float(rng.uniform(s / 2 + 1, h - s / 2 - 1))
    return cls, [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in _outline_2(kind, s)], colour


def _background_2(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Stripes or checks in two colours up to 50 levels apart, plus pixel noise: (H, W, 3) uint8."""
    a = rng.uniform(60, 200, 3)
    b = np.clip(a + rng.uniform(-50, 50, 3), 0, 255)
    period = int(rng.integers(6, 17))
    ys, xs = np.mgrid[0:h, 0:w]
    pattern = ((xs // period + ys // period) % 2 if rng.random() < 0.5 else ((xs + ys) // period) % 2)[..., None]
    img = np.where(pattern == 1, b, a) + rng.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(kind: int, cx: float, cy: float, w: float, h: float, rot: float) -> list[tuple[float, float]]:
    if kind == -1:
        return [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
    n = 32 if kind == 0 else kind
    start = rot if kind == 8 else (0.0 if kind == 4 else 0.0)
    return [(cx + w / 2 * math.cos(start + 2 * math.pi * k / n), cy + h / 2 * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)]


def _area(poly: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1])))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth two-colour gradient plus pixel noise, (H, W, 3) uint8."""
    a, b = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    img = a * (1 - t) + b * t + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.broadcast_to(img, (h, w, 3)), 0, 255).astype(np.uint8)


def _iou(a: list[float], b: list[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _object_1(rng: np.random.Generator, w: int, h: int) -> tuple[str, list[tuple[float, float]], tuple]:
    """(class, polygon, base colour) of one variant-1 object at a random place and size."""
    classes = list(DEMO_CLASSES)
    cls = classes[int(rng.integers(len(classes)))]
    kind, colour = DEMO_CLASSES[cls]
    size = float(rng.uniform(22, 64))
    ow = size * (float(rng.uniform(1.2, 1.6)) if kind == -1 else 1.0)
    oh = size * (float(rng.uniform(0.7, 0.9)) if kind == -1 else (1.3 if kind == 4 else 1.0))
    cx, cy = float(rng.uniform(ow / 2 + 1, w - ow / 2 - 1)), float(rng.uniform(oh / 2 + 1, h - oh / 2 - 1))
    return cls, _polygon(kind, cx, cy, ow, oh, float(rng.uniform(0, math.pi / 8))), colour


# variant -> (background, object, image height range, width range, objects per image range)
VARIANTS = {
    1: (_background, _object_1, (112, 161), (144, 209), (1, 5)),
    2: (_background_2, _object_2, (128, 209), (160, 289), (1, 7)),
}


def _split(rng: np.random.Generator, out: Path, name: str, n_images: int, first_id: int,
           empty_prob: float, variant: int) -> None:
    img_dir = out / f'{name}2017'
    img_dir.mkdir(parents=True, exist_ok=True)
    background, new_object, heights, widths, n_objects = VARIANTS[variant]
    images, annotations = [], []
    for k in range(n_images):
        image_id = first_id + k
        h, w = int(rng.integers(*heights)), int(rng.integers(*widths))
        canvas = Image.fromarray(background(rng, h, w))
        draw = ImageDraw.Draw(canvas)
        boxes: list[list[float]] = []
        n_obj = 0 if rng.random() < empty_prob else int(rng.integers(*n_objects))
        for _ in range(n_obj):
            for _attempt in range(20):
                cls, poly, colour = new_object(rng, w, h)
                xs, ys = [p[0] for p in poly], [p[1] for p in poly]
                box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                if all(_iou(box, b) < 0.2 for b in boxes):
                    break
            else:
                continue
            fill = tuple(int(np.clip(c + rng.normal(0, 15 if variant == 1 else 30), 0, 255)) for c in colour)
            draw.polygon(poly, fill=fill)
            boxes.append(box)
            annotations.append({
                'id': len(annotations) + 1 + first_id * 10, 'image_id': image_id, 'category_id': _ID[cls],
                'bbox': [round(v, 2) for v in box], 'area': round(_area(poly), 2), 'iscrowd': 0,
                'segmentation': [[round(v, 2) for p in poly for v in p]],
            })
        file_name = f'{image_id:012d}.jpg'
        canvas.save(img_dir / file_name, quality=92)
        images.append({'id': image_id, 'file_name': file_name, 'height': h, 'width': w})
    ann_dir = out / 'annotations'
    ann_dir.mkdir(parents=True, exist_ok=True)
    coco = {'info': {'description': f'ACmix demo shapes, variant {variant} ({name})', 'version': '1.0'},
            'licenses': [], 'images': images, 'annotations': annotations, 'categories': COCO_CATEGORIES}
    (ann_dir / f'instances_{name}2017.json').write_text(json.dumps(coco))


def make(out_dir: str | Path, seed: int = 0, n_train: int | None = None, n_val: int | None = None, *,
         variant: int = 1) -> Path:
    """Write demo set ``variant`` (1: 160 / 40 images, 2: 400 / 80 by default) under ``out_dir``; return it.
    Same seed, same bytes."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant}; known: {sorted(VARIANTS)}')
    n_train = (160 if variant == 1 else 400) if n_train is None else n_train
    n_val = (40 if variant == 1 else 80) if n_val is None else n_val
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    _split(rng, out, 'train', n_train, first_id=1, empty_prob=0.05, variant=variant)
    _split(rng, out, 'val', n_val, first_id=100001, empty_prob=0.0, variant=variant)
    print(f'detection demo data (variant {variant}): {n_train} train / {n_val} val images, COCO layout, in {out}')
    return out
