"""A small ADE20K-format semantic segmentation set of drawn outdoor scenes, deterministic from the seed.

Layout (what mmseg's ``ADE20KDataset`` reads, unchanged)::

    <out>/images/training/ADE_train_00000001.jpg ...        (<out> plays ADEChallengeData2016: the --data-path)
    <out>/images/validation/ADE_val_00000001.jpg ...
    <out>/annotations/training/ADE_train_00000001.png ...   (uint8 'L' PNG, same size as its image)
    <out>/annotations/validation/ADE_val_00000001.png ...

Label PNGs hold ADE20K indices: 0 = unlabelled, ``k`` = the k-th of ADE20K's 150 classes (mmseg's
``reduce_zero_label`` turns 0 into 255 = ignore and ``k`` into ``k - 1``).  Scenes use seven real ADE20K classes:
sky (3) above a horizon, grass (10) or road (7) below it, buildings (2), trees (5), cars (21) and persons (13),
each with its own colour and texture, plus a few unlabelled (0) patches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['make', 'ADE_CLASSES']

# ADE20K index (1-based, as in the label PNGs) of the classes used, with a base colour.
ADE_CLASSES = {
    'building': (2, (128, 118, 110)),
    'sky': (3, (110, 160, 225)),
    'tree': (5, (40, 110, 40)),
    'road': (7, (70, 70, 75)),
    'grass': (10, (95, 170, 60)),
    'person': (13, (210, 80, 150)),
    'car': (21, (220, 200, 30)),
}


def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 and its label map (H, W) uint8."""
    img = Image.new('RGB', (w, h))
    lab = Image.new('L', (w, h), 0)
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)

    def paint(shape: str, xy, name: str) -> None:
        idx, colour = ADE_CLASSES[name]
        fill = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in colour)
        getattr(di, shape)(xy, fill=fill)
        getattr(dl, shape)(xy, fill=idx)

    horizon = int(rng.uniform(0.35, 0.6) * h)
    paint('rectangle', [0, 0, w, horizon], 'sky')
    paint('rectangle', [0, horizon, w, h], 'grass' if rng.random() < 0.5 else 'road')
    for _ in range(int(rng.integers(1, 4))):          # buildings standing on the horizon
        bw, bh = rng.uniform(0.12, 0.3) * w, rng.uniform(0.2, 0.45) * h
        x0 = rng.uniform(0, w - bw)
        paint('rectangle', [x0, horizon - bh, x0 + bw, horizon + 2], 'building')
    for _ in range(int(rng.integers(0, 3))):          # trees: crowns as ellipses
        r = rng.uniform(0.06, 0.12) * w
        cx, cy = rng.uniform(r, w - r), horizon - rng.uniform(0.3, 1.0) * r
        paint('ellipse', [cx - r, cy - r, cx + r, cy + r], 'tree')
    for _ in range(int(rng.integers(0, 3))):          # cars below the horizon
        cw, ch = rng.uniform(0.12, 0.2) * w, rng.uniform(0.06, 0.1) * h
        x0, y0 = rng.uniform(0, w - cw), rng.uniform(horizon + 2, h - ch)
        paint('rectangle', [x0, y0, x0 + cw, y0 + ch], 'car')
    for _ in range(int(rng.integers(0, 3))):          # persons: tall thin ellipses
        pw, ph = rng.uniform(0.03, 0.05) * w, rng.uniform(0.15, 0.25) * h
        x0, y0 = rng.uniform(0, w - pw), rng.uniform(horizon - ph / 2, h - ph)
        paint('ellipse', [x0, y0, x0 + pw, y0 + ph], 'person')
    image, label = np.asarray(img).astype(np.float32), np.asarray(lab).copy()
    for _ in range(int(rng.integers(0, 3))):          # unlabelled clutter (index 0)
        s = int(rng.uniform(0.04, 0.08) * w)
        y0, x0 = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        image[y0:y0 + s, x0:x0 + s] = rng.uniform(0, 255, 3)
        label[y0:y0 + s, x0:x0 + s] = 0
    image += rng.normal(0, 10, image.shape)           # sensor noise: colour alone is not a lookup table
    return np.clip(image, 0, 255).astype(np.uint8), label


def make(out_dir: str | Path, seed: int = 0, n_train: int = 120, n_val: int = 30) -> Path:
    """Write the set under ``out_dir`` (the ``--data-path``); return it.  Same seed, same bytes."""
    root = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split, prefix, n in (('training', 'ADE_train', n_train), ('validation', 'ADE_val', n_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            h, w = int(rng.integers(120, 161)), int(rng.integers(150, 221))
            image, label = _scene(rng, h, w)
            Image.fromarray(image).save(root / 'images' / split / f'{prefix}_{k:08d}.jpg', quality=92)
            Image.fromarray(label).save(root / 'annotations' / split / f'{prefix}_{k:08d}.png')
    print(f'segmentation demo data: {n_train} training / {n_val} validation images, ADE20K layout, in {root}')
    return root
