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

Variant 2 (a differently generated set, to check that a recipe is not tuned to variant 1) draws indoor rooms
with ten other ADE20K classes (:data:`ADE_CLASSES_2`): ceiling, wallpapered wall and planked or tiled floor, and
on them windows, doors, paintings, cabinets, beds, tables and lamps, several of them in the same range of wood
colours, so that shape and context decide; 360 training and 60 validation images of 120-200 x 160-260 px.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['make', 'ADE_CLASSES', 'ADE_CLASSES_2']

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


# Variant 2: ADE20K index (1-based) of each class.
ADE_CLASSES_2 = {'wall': 1, 'floor': 4, 'ceiling': 6, 'bed': 8, 'windowpane': 9, 'cabinet': 11, 'door': 15,
                 'table': 16, 'painting': 23, 'lamp': 37}


def _room(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One indoor scene (H, W, 3) uint8 and its label map (H, W) uint8 (variant 2)."""
    img = Image.new('RGB', (w, h))
    lab = Image.new('L', (w, h), 0)
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)

    def jitter(colour, amount: float = 25.0) -> tuple[int, ...]:
        return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in colour)

    def wood() -> tuple[int, ...]:
        return jitter((int(rng.uniform(90, 170)), int(rng.uniform(55, 110)), int(rng.uniform(20, 70))), 12)

    def paint(shape: str, xy, name: str, fill) -> None:
        getattr(di, shape)(xy, fill=fill)
        getattr(dl, shape)(xy, fill=ADE_CLASSES_2[name])

    ceiling, floor = int(rng.uniform(0.1, 0.22) * h), int(rng.uniform(0.62, 0.78) * h)
    paint('rectangle', [0, 0, w, ceiling], 'ceiling', jitter((232, 230, 222), 10))
    wall = tuple(int(v) for v in rng.uniform(90, 230, 3))
    paint('rectangle', [0, ceiling, w, floor], 'wall', wall)
    period = int(rng.integers(5, 12))
    for x in range(0, w, period) if rng.random() < 0.5 else ():     # wallpaper stripes
        di.rectangle([x, ceiling, x + period // 3, floor], fill=jitter(wall, 10))
    floor_colour = wood() if rng.random() < 0.6 else jitter((150, 150, 150), 30)
    paint('rectangle', [0, floor, w, h], 'floor', floor_colour)
    step = int(rng.integers(4, 9))
    for y in range(floor, h, step):                                    # planks or tile joints
        di.line([0, y, w, y], fill=jitter(floor_colour, 6))
    for _ in range(int(rng.integers(0, 3))):                          # windows: panes and frame
        ww, wh = rng.uniform(0.12, 0.22) * w, rng.uniform(0.2, 0.35) * h
        x0, y0 = rng.uniform(0, w - ww), rng.uniform(ceiling + 2, floor - wh - 2)
        paint('rectangle', [x0, y0, x0 + ww, y0 + wh], 'windowpane', jitter((170, 210, 240), 15))
        frame = jitter((245, 245, 245), 10)
        di.line([x0 + ww / 2, y0, x0 + ww / 2, y0 + wh], fill=frame, width=2)
        di.line([x0, y0 + wh / 2, x0 + ww, y0 + wh / 2], fill=frame, width=2)
    if rng.random() < 0.6:                                             # a door standing on the floor line
        dw, dh = rng.uniform(0.1, 0.16) * w, (floor - ceiling) * rng.uniform(0.7, 0.9)
        x0 = rng.uniform(0, w - dw)
        paint('rectangle', [x0, floor - dh, x0 + dw, floor], 'door', wood())
        di.ellipse([x0 + dw * 0.75, floor - dh / 2, x0 + dw * 0.75 + 3, floor - dh / 2 + 3], fill=(220, 200, 60))
    for _ in range(int(rng.integers(0, 3))):                          # paintings: noisy canvas in a frame
        pw, ph = rng.uniform(0.08, 0.15) * w, rng.uniform(0.1, 0.18) * h
        x0, y0 = rng.uniform(0, w - pw), rng.uniform(ceiling + 2, floor - ph - 2)
        paint('rectangle', [x0, y0, x0 + pw, y0 + ph], 'painting', jitter((60, 50, 40), 20))
        for _ in range(6):
            cx, cy = rng.uniform(x0 + 2, x0 + pw - 2), rng.uniform(y0 + 2, y0 + ph - 2)
            r = rng.uniform(1, min(pw, ph) / 3)
            di.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
    if rng.random() < 0.6:                                             # a cabinet with drawer lines
        cw, ch = rng.uniform(0.12, 0.22) * w, rng.uniform(0.15, 0.3) * h
        x0 = rng.uniform(0, w - cw)
        colour = wood()
        paint('rectangle', [x0, floor - ch, x0 + cw, floor + 2], 'cabinet', colour)
        for k in range(1, 3):
            y = floor - ch + k * ch / 3
            di.line([x0 + 2, y, x0 + cw - 2, y], fill=jitter(colour, 30), width=1)
    if rng.random() < 0.5:                                             # a bed: frame, mattress, pillow
        bw, bh = rng.uniform(0.3, 0.45) * w, rng.uniform(0.1, 0.16) * h
        x0, y1 = rng.uniform(0, w - bw), rng.uniform(floor + 4, h - 2)
        paint('rectangle', [x0, y1 - bh * 2, x0 + bw * 0.08, y1], 'bed', wood())
        paint('rectangle', [x0, y1 - bh, x0 + bw, y1], 'bed', jitter((200, 200, 215), 20))
        pillow = [x0 + bw * 0.1, y1 - bh * 1.4, x0 + bw * 0.3, y1 - bh * 0.8]
        paint('ellipse', pillow, 'bed', jitter((245, 245, 245), 8))
    if rng.random() < 0.6:                                             # a table: top and two legs
        tw, th = rng.uniform(0.18, 0.3) * w, rng.uniform(0.1, 0.18) * h
        x0, y1 = rng.uniform(0, w - tw), rng.uniform(floor + 2, h - 2)
        colour = wood()
        paint('rectangle', [x0, y1 - th, x0 + tw, y1 - th + 6], 'table', colour)
        paint('rectangle', [x0 + 2, y1 - th, x0 + 6, y1], 'table', colour)
        paint('rectangle', [x0 + tw - 6, y1 - th, x0 + tw - 2, y1], 'table', colour)
    if rng.random() < 0.5:                                             # a floor lamp: shade and pole
        lh, sw = rng.uniform(0.3, 0.45) * h, rng.uniform(0.08, 0.12) * w
        x0, y1 = rng.uniform(sw, w - sw), rng.uniform(floor, h - 2)
        shade = jitter((240, 220, 150), 25)
        paint('polygon', [(x0 - sw / 2, y1 - lh + sw), (x0 + sw / 2, y1 - lh + sw), (x0 + sw / 3, y1 - lh),
                          (x0 - sw / 3, y1 - lh)], 'lamp', shade)
        paint('rectangle', [x0 - 2, y1 - lh + sw, x0 + 2, y1], 'lamp', jitter((50, 50, 50), 10))
    image = np.asarray(img).astype(np.float32) + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(lab).copy()


# variant -> (scene function, default training / validation image counts, height range, width range)
VARIANTS = {1: (_scene, 120, 30, (120, 161), (150, 221)), 2: (_room, 360, 60, (120, 201), (160, 261))}


def make(out_dir: str | Path, seed: int = 0, n_train: int | None = None, n_val: int | None = None, *,
         variant: int = 1) -> Path:
    """Write set ``variant`` (1 or 2) under ``out_dir`` (the ``--data-path``); return it.  Same seed, same bytes."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant}; known: {sorted(VARIANTS)}')
    scene, default_train, default_val, heights, widths = VARIANTS[variant]
    n_train = default_train if n_train is None else n_train
    n_val = default_val if n_val is None else n_val
    root = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split, prefix, n in (('training', 'ADE_train', n_train), ('validation', 'ADE_val', n_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            h, w = int(rng.integers(*heights)), int(rng.integers(*widths))
            image, label = scene(rng, h, w)
            Image.fromarray(image).save(root / 'images' / split / f'{prefix}_{k:08d}.jpg', quality=92)
            Image.fromarray(label).save(root / 'annotations' / split / f'{prefix}_{k:08d}.png')
    print(f'segmentation demo data (variant {variant}): {n_train} training / {n_val} validation images, '
          f'ADE20K layout, in {root}')
    return root
