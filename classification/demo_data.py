"""Small, learnable classification datasets in ImageNet layout, drawn procedurally (deterministic per seed).

Variant 1 (the demo's): six classes, one per shape (circle, square, triangle, cross, ring, diamond), each drawn
in its own hue band (hue jittered, saturation and brightness random) on a random grey background, at a random
size and position, with pixel noise.  Shape and colour both carry the class.
``<out>/train/<class>/*.png`` (60 per class) and ``<out>/val/<class>/*.png`` (20 per class), 48x48 px.

Variant 2 (a differently generated set, to check that a recipe is not tuned to variant 1): ten other shapes
(:data:`CLASSES_2`), rotated by up to 25 degrees, on striped, checked or gradient backgrounds, in colours that
only loosely follow the class (a hue band per class, other than variant 1's; a fifth of the objects in any colour),
140 training and 40 validation images per class (1,400 training objects), 40x40 px.
"""
from __future__ import annotations

import colorsys
import math
import random
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle', 'cross', 'ring', 'diamond')
SIZE = 48
PER_CLASS = {'train': 60, 'val': 20}


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))


def _class_colour(rng: random.Random, index: int, n: int) -> tuple[int, int, int]:
    """A saturated colour in class ``index``'s hue band (n bands around the colour wheel)."""
    hue = (index / n + rng.uniform(-0.3, 0.3) / n) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def draw(shape: str, rng: random.Random, size: int = SIZE) -> Image.Image:
    """One RGB image of ``shape`` in its hue band on a grey background, random size/position, pixel noise."""
    grey = rng.randrange(20, 140)
    bg = (grey, grey, grey)
    fg = _class_colour(rng, CLASSES.index(shape), len(CLASSES))
    img = Image.new('RGB', (size, size), bg)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.4) * size                       # half-extent of the shape
    cx, cy = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(2, int(r * 0.45))                               # stroke width (cross, ring)
    if shape == 'circle':
        d.ellipse(box, fill=fg)
    elif shape == 'square':
        d.rectangle(box, fill=fg)
    elif shape == 'triangle':
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == 'cross':
        d.rectangle((cx - w / 2, cy - r, cx + w / 2, cy + r), fill=fg)
        d.rectangle((cx - r, cy - w / 2, cx + r, cy + w / 2), fill=fg)
    elif shape == 'ring':
        d.ellipse(box, outline=fg, width=w)
    elif shape == 'diamond':
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fg)
    else:
        raise ValueError(f'unknown shape {shape!r}; known: {CLASSES}')
    # sparse salt-and-pepper noise so no two images are pixel-identical in structure
    px = img.load()
    for _ in range(size * size // 25):
        px[rng.randrange(size), rng.randrange(size)] = _colour(rng)
    return img


CLASSES_2 = ('star', 'arrow', 'crescent', 'hourglass', 'corner', 'tee', 'frame', 'bar', 'dots', 'half_disc')
SIZE_2 = 40
PER_CLASS_2 = {'train': 140, 'val': 40}
RANDOM_COLOUR_2 = 0.2           # share of objects in a random colour instead of their class's hue band


def _luma(c: tuple[int, int, int]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _background_2(rng: random.Random, size: int) -> tuple[Image.Image, float]:
    """A textured background (stripes in one of two directions, checks, or a gradient between two colours up to
    60 levels apart per channel) and its mean luma."""
    a = _colour(rng)
    b = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in a)
    img = Image.new('RGB', (size, size), a)
    d = ImageDraw.Draw(img)
    kind, period = rng.randrange(4), rng.randrange(4, 11)
    for i in range(-size, 2 * size, period):
        if kind == 0:
            d.rectangle((i, 0, i + period // 2 - 1, size), fill=b)                         # vertical stripes
        elif kind == 1:
            d.polygon([(i, 0), (i + period // 2, 0), (i + period // 2 + size, size), (i + size, size)], fill=b)
        elif kind == 2:
            for j in range(0, size, period):                                              # checks
                if (i // period + j // period) % 2:
                    d.rectangle((i, j, i + period - 1, j + period - 1), fill=b)
        else:
            t = min(max(i / size, 0.0), 1.0)                                              # gradient a -> b
            d.rectangle((i, 0, i + period, size), fill=tuple(int(x + (y - x) * t) for x, y in zip(a, b)))
    return img, (_luma(a) + _luma(b)) / 2


def _outline_2(shape: str, r: float) -> list[list[tuple[float, float]]]:
    """Polygons (points around 0, 0, unrotated, half-extent ``r``) whose union is ``shape``."""
    w = 0.55 * r                                                                          # stroke width
    if shape == 'star':
        return [[(r * (1 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5),
                  -r * (1 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]]
    if shape == 'arrow':
        return [[(-r, -w / 2), (0, -w / 2), (0, -r * 0.8), (r, 0), (0, r * 0.8), (0, w / 2), (-r, w / 2)]]
    if shape == 'crescent':
        outer = [(r * math.cos(t), r * math.sin(t)) for t in (math.pi / 2 + k * math.pi / 16 for k in range(17))]
        back = (3 * math.pi / 2 - k * math.pi / 16 for k in range(17))
        inner = [(0.45 * r * math.cos(t), r * math.sin(t)) for t in back]
        return [outer + inner]
    if shape == 'hourglass':
        return [[(-r, -r), (r, -r), (0, 0)], [(-r, r), (r, r), (0, 0)]]
    if shape == 'corner':
        return [[(-r, -r), (-r + w, -r), (-r + w, r - w), (r, r - w), (r, r), (-r, r)]]
    if shape == 'tee':
        return [[(-r, -r), (r, -r), (r, -r + w)] + [(w / 2, -r + w), (w / 2, r), (-w / 2, r), (-w / 2, -r + w),
                                                       (-r, -r + w)]]
    if shape == 'frame':
        return [[(-r, -r), (r, -r), (r, -r + w), (-r, -r + w)], [(-r, r - w), (r, r - w), (r, r), (-r, r)],
                [(-r, -r), (-r + w, -r), (-r + w, r), (-r, r)], [(r - w, -r), (r, -r), (r, r), (r - w, r)]]
    if shape == 'bar':
        return [[(-r, -w / 2), (r, -w / 2), (r, w / 2), (-r, w / 2)]]
    if shape == 'dots':
        d = 0.3 * r
        return [[(cx + d * math.cos(2 * math.pi * k / 12), d * math.sin(2 * math.pi * k / 12)) for k in range(12)]
                for cx in (-0.7 * r, 0.0, 0.7 * r)]
    if shape == 'half_disc':
        return [[(r * math.cos(t), 0.5 * r - r * math.sin(t)) for t in (k * math.pi / 16 for k in range(17))]]
    raise ValueError(f'unknown shape {shape!r}; known: {CLASSES_2}')


def _class_colour_2(rng: random.Random, index: int) -> tuple[int, int, int]:
    """A colour loosely tied to the class: hue anywhere in its band (bands offset from variant 1's), random
    saturation and brightness."""
    n = len(CLASSES_2)
    hue = ((index + 0.5) / n + rng.uniform(-0.5, 0.5) / n) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_2(shape: str, rng: random.Random, size: int = SIZE_2) -> Image.Image:
    """One RGB image of a variant-2 ``shape``: a colour loosely tied to the class (or, for a fifth of the
    objects, any colour) that contrasts with the textured background, rotation within +-25 degrees, random
    size and position."""
    img, bg_luma = _background_2(rng, size)
    index = CLASSES_2.index(shape)
    pick = (lambda: _colour(rng)) if rng.random() < RANDOM_COLOUR_2 else (lambda: _class_colour_2(rng, index))
    fg = pick()
    for _ in range(50):
        if abs(_luma(fg) - bg_luma) >= 60:
            break
        fg = pick()
    r = rng.uniform(0.25, 0.42) * size
    cx, cy = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
    angle = math.radians(rng.uniform(-25, 25))
    cos, sin = math.cos(angle), math.sin(angle)
    d = ImageDraw.Draw(img)
    for poly in _outline_2(shape, r):
        d.polygon([(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in poly], fill=fg)
    return img


# variant -> (classes, images per class per split, image size, drawing function)
VARIANTS: dict[int, tuple[tuple[str, ...], dict[str, int], int, Callable[[str, random.Random, int], Image.Image]]] = {
    1: (CLASSES, PER_CLASS, SIZE, draw),
    2: (CLASSES_2, PER_CLASS_2, SIZE_2, draw_2),
}


def make(out_dir: str | Path, seed: int = 0, *, variant: int = 1, per_class: dict[str, int] | None = None,
         classes: tuple[str, ...] | None = None, size: int | None = None) -> Path:
    """Write dataset ``variant`` (1 or 2) under ``out_dir`` (replacing files of the same names); return ``out_dir``.

    ``per_class`` ({split: images per class}), ``classes`` and ``size`` shrink it for tests.
    """
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant}; known: {sorted(VARIANTS)}')
    default_classes, default_per_class, default_size, draw_fn = VARIANTS[variant]
    classes = default_classes if classes is None else classes
    per_class = default_per_class if per_class is None else per_class
    size = default_size if size is None else size
    out = Path(out_dir)
    rng = random.Random(seed)
    for split, n in per_class.items():
        for shape in classes:
            folder = out / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_fn(shape, rng, size).save(folder / f'{shape}_{i:04d}.png')
    total = sum(per_class.values()) * len(classes)
    print(f'wrote {total} images (variant {variant}, {len(classes)} classes: {", ".join(classes)}) to {out}')
    return out
