"""A small, learnable classification dataset in ImageNet layout, drawn procedurally (deterministic per seed).

Six classes, one per shape (circle, square, triangle, cross, ring, diamond), each drawn in its own hue band
(hue jittered, saturation and brightness random) on a random grey background, at a random size and
position, with pixel noise.  Shape and colour both carry the class, so a small network learns it in a few
epochs on a CPU.
``<out>/train/<class>/*.png`` (60 per class) and ``<out>/val/<class>/*.png`` (20 per class), 48x48 px.
"""
from __future__ import annotations

import colorsys
import random
from pathlib import Path

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


def make(out_dir: str | Path, seed: int = 0, *, per_class: dict[str, int] | None = None,
         classes: tuple[str, ...] = CLASSES, size: int = SIZE) -> Path:
    """Write the dataset under ``out_dir`` (replacing files of the same names) and return ``out_dir``.

    ``per_class`` ({split: images per class}), ``classes`` and ``size`` shrink it for tests.
    """
    out = Path(out_dir)
    per_class = PER_CLASS if per_class is None else per_class
    rng = random.Random(seed)
    for split, n in per_class.items():
        for shape in classes:
            folder = out / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw(shape, rng, size).save(folder / f'{shape}_{i:04d}.png')
    total = sum(per_class.values()) * len(classes)
    print(f'wrote {total} images ({len(classes)} classes: {", ".join(classes)}) to {out}')
    return out
