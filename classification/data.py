"""ImageNet-layout folders -> datasets, transforms (timm) and data loaders.

Layout: ``<root>/<split>/<class name>/<image>``; class indices are the sorted class-folder names of the
training split, and the validation split must have exactly the same class folders.
Loud errors (``DataError``) for a missing root or split, a split without class folders, empty class
folders, differing class sets, and a class count that does not match ``MODEL.NUM_CLASSES``.  Corrupt or
truncated images are found by a one-off decode scan (``DATA.SCAN_IMAGES``) and either skipped with a
warning naming them or reported as an error (``DATA.ON_CORRUPT``).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from timm.data import create_transform
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler
from yacs.config import CfgNode

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
# What PIL raises for unreadable files: unidentified or truncated (OSError), broken headers (SyntaxError,
# ValueError), oversized (DecompressionBombError)
_BAD_IMAGE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _posterize_zero_bits_black(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, except that 0 bits gives a black image (what Pillow < 13 returned) instead of Pillow 13's
    ``ValueError: bits must be between or equal to 1 and 8``."""
    from timm.data.auto_augment import posterize
    return img.point(lambda _: 0) if bits_to_keep < 1 else posterize(img, bits_to_keep, **kwargs)


def _keep_zero_bit_posterize(transform) -> None:
    """Make the posterize ops of this transform's RandAugment/AutoAugment accept 0 bits (in place, this object only).

    timm's 'inc1' posterize keeps ``4 - int(level / 10 * 4)`` bits, i.e. 0 bits at magnitude 10, which 'mstd0.5'
    reaches; with Pillow >= 13 that crashed the Swin/PVT recipe at random.  Only the ops of our own transform are
    changed, never timm's module.
    """
    from timm.data import auto_augment as aa
    for t in getattr(transform, 'transforms', ()):
        ops = getattr(t, 'ops', None) or [op for sub in getattr(t, 'policy', ()) for op in sub]
        for op in ops:
            if isinstance(op, aa.AugmentOp) and op.aug_fn is aa.posterize:
                op.aug_fn = _posterize_zero_bits_black


class DataError(ValueError):
    """The dataset on disk is unusable; the message names the folder or file."""


def find_classes(split_dir: Path) -> list[str]:
    """Sorted class-folder names of a split.  Raises DataError if the folder is missing or has none."""
    if not split_dir.is_dir():
        raise DataError(f'data folder not found: {split_dir} (expected <data-path>/train/<class>/*.jpg and '
                        f'<data-path>/val/<class>/*.jpg)')
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith('.'))
    if not classes:
        raise DataError(f'{split_dir} has no class folders (expected {split_dir}/<class>/<image>)')
    return classes


def list_samples(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) for every image file; DataError naming the class folders that have no images."""
    samples, empty = [], []
    for idx, name in enumerate(classes):
        class_dir = split_dir / name
        files = sorted(str(p) for p in class_dir.rglob('*') if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if not files:
            empty.append(name)
        samples.extend((f, idx) for f in files)
    if empty:
        shown = ', '.join(empty[:10]) + (f' ... ({len(empty)} in all)' if len(empty) > 10 else '')
        raise DataError(f'{split_dir}: class folders without images ({", ".join(IMG_EXTENSIONS)}): {shown}')
    return samples


def _decode_error(path: str) -> str | None:
    """None if the image decodes completely, else the reason."""
    try:
        with Image.open(path) as img:
            img.draft('RGB', (64, 64))  # JPEG: decode at reduced scale, still reads every byte
            img.load()
        return None
    except _BAD_IMAGE as e:
        return f'{type(e).__name__}: {e}'


def scan_images(samples: list[tuple[str, int]], on_corrupt: str, num_threads: int = 4,
                log: Callable[[str], None] = print) -> list[tuple[str, int]]:
    """Decode every image once; drop unreadable ones with a warning ('skip') or raise DataError ('error')."""
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        errors = list(pool.map(_decode_error, [p for p, _ in samples], chunksize=64))
    bad = [(p, err) for (p, _), err in zip(samples, errors) if err is not None]
    if not bad:
        return samples
    listing = '\n'.join(f'  {p}: {err}' for p, err in bad[:20]) + (f'\n  ... ({len(bad)} in all)' if len(bad) > 20 else '')
    if on_corrupt == 'error':
        raise DataError(f'{len(bad)} unreadable image(s) (set DATA.ON_CORRUPT skip to drop them):\n{listing}')
    msg = f'skipping {len(bad)} unreadable image(s) of {len(samples)}:\n{listing}'
    warnings.warn(msg, stacklevel=2)
    log(f'WARNING: {msg}')
    bad_paths = {p for p, _ in bad}
    return [s for s in samples if s[0] not in bad_paths]


class ImageFolderList(Dataset):
    """Images from a list of (path, class index); ``__getitem__`` -> (transformed image, index)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable | None = None):
        self.samples, self.classes, self.transform = samples, classes, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        try:
            with Image.open(path) as f:
                img = f.convert('RGB')
        except _BAD_IMAGE as e:
            raise DataError(f'cannot read image {path}: {type(e).__name__}: {e} '
                            f'(DATA.SCAN_IMAGES True finds such files before training)') from e
        return (self.transform(img) if self.transform else img), target


def build_transform(cfg: CfgNode, is_training: bool):
    """timm transform: RandomResizedCrop + flip + RandAugment/colour jitter + random erasing for training;
    resize to IMG_SIZE / CROP_PCT + centre crop for evaluation."""
    aug = cfg.AUG
    common = dict(input_size=cfg.DATA.IMG_SIZE, mean=tuple(cfg.DATA.MEAN), std=tuple(cfg.DATA.STD))
    if is_training:
        transform = create_transform(
            **common, is_training=True, scale=tuple(aug.SCALE), hflip=aug.HFLIP,
            color_jitter=aug.COLOR_JITTER if aug.COLOR_JITTER > 0 else None,
            auto_augment=aug.AUTO_AUGMENT or None, interpolation=cfg.DATA.INTERPOLATION,
            re_prob=aug.REPROB, re_mode=aug.REMODE, re_count=aug.RECOUNT)
        _keep_zero_bit_posterize(transform)
        return transform
    interpolation = 'bicubic' if cfg.DATA.INTERPOLATION == 'random' else cfg.DATA.INTERPOLATION
    return create_transform(**common, is_training=False, interpolation=interpolation, crop_pct=cfg.TEST.CROP_PCT)


def build_dataset(cfg: CfgNode, split: str, is_training: bool, log: Callable[[str], None] = print,
                  classes: list[str] | None = None) -> ImageFolderList:
    """Dataset of one split, with the class count checked against MODEL.NUM_CLASSES."""
    if not cfg.DATA.DATA_PATH:
        raise DataError('no data path: pass --data-path <root> (or set DATA.DATA_PATH)')
    root = Path(cfg.DATA.DATA_PATH)
    if not root.is_dir():
        raise DataError(f'data path not found: {root}')
    split_dir = root / split
    found = find_classes(split_dir)
    if classes is not None and found != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DataError(f'{split_dir}: class folders differ from the training split '
                        f'(missing: {missing[:10]}, extra: {extra[:10]})')
    if len(found) != cfg.MODEL.NUM_CLASSES:
        raise DataError(f'{split_dir} has {len(found)} class folders but MODEL.NUM_CLASSES is '
                        f'{cfg.MODEL.NUM_CLASSES}; set MODEL.NUM_CLASSES {len(found)} (e.g. --opts '
                        f'MODEL.NUM_CLASSES {len(found)}) or fix the folder')
    samples = list_samples(split_dir, found)
    if cfg.DATA.SCAN_IMAGES:
        samples = scan_images(samples, cfg.DATA.ON_CORRUPT, cfg.DATA.NUM_WORKERS or 1, log)
    log(f'{split}: {len(samples)} images, {len(found)} classes ({split_dir})')
    return ImageFolderList(samples, found, build_transform(cfg, is_training))


class FixedLengthSampler(DistributedSampler):
    """A DistributedSampler whose epoch is ``num_images`` images over all processes, whatever the dataset's size:
    successive shuffled passes over the dataset (each order a function of the seed and the epoch), the last one
    cut short.  Makes an epoch a fixed number of optimizer steps (``TRAIN.STEPS_PER_EPOCH``)."""

    def __init__(self, dataset: Dataset, num_images: int, *, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.num_samples = num_images // num_replicas
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-self.total_size // n))])
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())


def build_loader(cfg: CfgNode, dataset: Dataset, is_training: bool, world_size: int = 1, rank: int = 0
                 ) -> DataLoader:
    """Training: a DistributedSampler (also for one process) seeded with SEED, a :class:`FixedLengthSampler` with
    TRAIN.STEPS_PER_EPOCH (or MAX_STEPS_PER_EPOCH when the split is larger than that many steps), or timm's
    RepeatAugSampler with DATA.REPEATED_AUG, whose ``set_epoch(e)`` makes the order a function of the epoch; full
    batches only (mixup needs even batches).  Evaluation: in order."""
    if is_training:
        images_per_step = cfg.TRAIN.ACCUM_STEPS * cfg.DATA.BATCH_SIZE * world_size
        steps, cap = cfg.TRAIN.STEPS_PER_EPOCH, cfg.TRAIN.MAX_STEPS_PER_EPOCH
        if steps and cap:
            raise DataError(f'TRAIN.STEPS_PER_EPOCH {steps} and TRAIN.MAX_STEPS_PER_EPOCH {cap}: set one of them')
        if cap and len(dataset) // images_per_step > cap:
            steps = cap  # a split larger than the cap: `cap` steps per epoch
        if steps:
            if cfg.DATA.REPEATED_AUG:
                raise DataError('TRAIN.STEPS_PER_EPOCH / MAX_STEPS_PER_EPOCH and DATA.REPEATED_AUG cannot be '
                                'combined')
            images = steps * images_per_step
            sampler = FixedLengthSampler(dataset, images, num_replicas=world_size, rank=rank, seed=cfg.SEED)
        elif cfg.DATA.REPEATED_AUG:  # seeded by the epoch alone, as in DeiT
            sampler = RepeatAugSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True)
        else:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.SEED)
        if len(sampler) < cfg.DATA.BATCH_SIZE:
            raise DataError(f'training split has {len(dataset)} images, fewer than one batch per process '
                            f'(DATA.BATCH_SIZE {cfg.DATA.BATCH_SIZE} x {world_size} processes)')
    elif world_size > 1:
        # pads the last shard with repeats: a few duplicated images in the multi-process val metrics
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=cfg.DATA.BATCH_SIZE, sampler=sampler, num_workers=cfg.DATA.NUM_WORKERS,
                      pin_memory=cfg.DATA.PIN_MEMORY and torch.cuda.is_available(), drop_last=is_training,
                      persistent_workers=False)
