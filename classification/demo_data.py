"""A small, learnable classification dataset in ImageNet layout, drawn procedurally (deterministic per seed).

Six classes, one per shape (circle, square, triangle, cross, ring, diamond); colour, background, size,
position and rotation-free jitter are random, so the network must learn shape, not colour.
``<out>/train/<class>/*.png`` (60 per class) and ``<out>/val/<class>/*.png`` (20 per class), 48x48 px.
"""
from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle', 'cross', 'ring', 'diamond')
SIZE = 48
PER_CLASS = {'train': 60, 'val': 20}


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))


def _far_colour(rng: random.Random, other: tuple[int, int, int]) -> tuple[int, int, int]:
    """A random colour clearly different from ``other`` (so the shape is visible)."""
    while True:
        c = _colour(rng)
        if sum(abs(a - b) for a, b in zip(c, other)) > 200:
            return c


def draw(shape: str, rng: random.Random, size: int = SIZE) -> Image.Image:
    """One RGB image of ``shape`` with random colours, size, position and pixel noise."""
    bg = _colour(rng)
    fg = _far_colour(rng, bg)
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


def make(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the dataset under ``out_dir`` (replacing files of the same names) and return ``out_dir``."""
    out = Path(out_dir)
    rng = random.Random(seed)
    for split, n in PER_CLASS.items():
        for shape in CLASSES:
            folder = out / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw(shape, rng).save(folder / f'{shape}_{i:04d}.png')
    total = sum(PER_CLASS.values()) * len(CLASSES)
    print(f'wrote {total} images ({len(CLASSES)} classes: {", ".join(CLASSES)}) to {out}')
    return out
