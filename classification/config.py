"""Every classification setting and its default, documented in one place (yacs).

A YAML file overrides only what differs from these defaults.  ``_BASE_: <file>`` (a path relative to the
YAML file, or a list of them) is merged first, recursively, so a recipe lives in one base file and each
model file names the model plus what differs::

    # configs/classification/acmix_swin_tiny.yaml
    _BASE_: _base_swin_recipe.yaml
    MODEL:
      NAME: acmix_swin_tiny_patch4_window7_224
      DROP_PATH: 0.2

Command-line ``--opts KEY VALUE ...`` are merged last.  An unknown key is an error naming the key (and the
file it came from), never silently dropped.

Learning rates (``TRAIN.BASE_LR``, ``TRAIN.WARMUP_LR``, ``TRAIN.MIN_LR``) are given for a *total* batch of
512 images, as in Swin: the optimizer uses ``lr * BATCH_SIZE * world_size * ACCUM_STEPS / 512``.  So the
ResNet recipe "SGD lr 0.1 at batch 256" is written ``BASE_LR: 0.2``.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Iterable, Sequence

import yaml
from yacs.config import CfgNode as CN

_C = CN()

# -----------------------------------------------------------------------------------------------------------
# Model
# -----------------------------------------------------------------------------------------------------------
_C.MODEL = CN()
# timm model name; `import models` (done by this package) registers the acmix_* / conv_* / san* / pvt_v1_*
# entrypoints, baselines such as resnet50 and swin_tiny_patch4_window7_224 are timm's own.
_C.MODEL.NAME = 'acmix_resnet50'
# Must equal the number of class folders in <data>/train (checked, with a clear error).
_C.MODEL.NUM_CLASSES = 1000
# Stochastic depth rate (timm `drop_path_rate`); 0 = not passed to the model.
_C.MODEL.DROP_PATH = 0.0
# Classifier dropout (timm `drop_rate`); 0 = not passed to the model.
_C.MODEL.DROP_RATE = 0.0
# Keyword arguments for the model's ACmix mixer, passed as `mixer_args=` (only when non-empty), e.g. the
# ablations' {mix: attn_only} or {shift: tensor}; see models/ and acmix/ for the accepted names.
_C.MODEL.MIXER_ARGS = CN(new_allowed=True)
# Further keyword arguments of the model's constructor (timm.create_model), e.g. the authors' ResNet initialisation
# {zero_init_last: False, acmix_init: kaiming}; a name the model does not take fails when it is built.
_C.MODEL.MODEL_ARGS = CN(new_allowed=True)
# Initialise from the model's pretrained cfg (timm hub/url) before training.
_C.MODEL.PRETRAINED = False
# Initialise from this checkpoint file instead (any of: our checkpoint, the authors' {'model': ...},
# {'state_dict': ...} with 'module.' prefixes, a bare state dict); loaded through timm with the model's
# checkpoint filter, the classifier is dropped when NUM_CLASSES differs.
_C.MODEL.PRETRAINED_FILE = ''

# -----------------------------------------------------------------------------------------------------------
# Data (ImageNet folder layout: <DATA_PATH>/train/<class>/*, <DATA_PATH>/val/<class>/*)
# -----------------------------------------------------------------------------------------------------------
_C.DATA = CN()
# Dataset root; usually given on the command line with --data-path.
_C.DATA.DATA_PATH = ''
_C.DATA.TRAIN_SPLIT = 'train'
_C.DATA.VAL_SPLIT = 'val'
# Square input size of the network (training crop and test crop).
_C.DATA.IMG_SIZE = 224
# Batch size per process (per GPU).
_C.DATA.BATCH_SIZE = 128
_C.DATA.NUM_WORKERS = 8
_C.DATA.PIN_MEMORY = True
# Resize interpolation: 'bicubic', 'bilinear' or 'random' (training only).
_C.DATA.INTERPOLATION = 'bicubic'
# Normalisation (ImageNet statistics).
_C.DATA.MEAN = [0.485, 0.456, 0.406]
_C.DATA.STD = [0.229, 0.224, 0.225]
# Decode every image once before training (threads = NUM_WORKERS) to find corrupt or truncated files.
# With it off, a bad file is reported by name when the loader reaches it.
_C.DATA.SCAN_IMAGES = True
# What to do with files the scan finds unreadable: 'skip' (drop them, warn with the count and names)
# or 'error' (stop before training, naming them).
_C.DATA.ON_CORRUPT = 'skip'
# Repeated augmentation (DeiT, PVT): timm's RepeatAugSampler shows every image 3 times per epoch, in differently
# augmented copies spread over the processes, and keeps an epoch at the dataset's length (also in one process).
_C.DATA.REPEATED_AUG = False

# -----------------------------------------------------------------------------------------------------------
# Training
# -----------------------------------------------------------------------------------------------------------
_C.TRAIN = CN()
_C.TRAIN.EPOCHS = 300
_C.TRAIN.WARMUP_EPOCHS = 20
# Learning rates for a total batch of 512 (see the module docstring).
_C.TRAIN.BASE_LR = 5e-4
_C.TRAIN.WARMUP_LR = 5e-7
_C.TRAIN.MIN_LR = 5e-6
# Applied to every parameter except 1-D ones (norms, biases, rates) and the model's no_weight_decay() names.
_C.TRAIN.WEIGHT_DECAY = 0.05
# True: weight decay on every parameter, 1-D ones and no_weight_decay() names included (the authors' ResNet and
# SAN scripts pass model.parameters() to SGD).
_C.TRAIN.WEIGHT_DECAY_ALL_PARAMS = False
# Gradient-norm clipping; 0 = off.
_C.TRAIN.CLIP_GRAD = 5.0
# Gradient accumulation: one optimizer step every ACCUM_STEPS batches (>= 1).
_C.TRAIN.ACCUM_STEPS = 1
# 0: an epoch is one pass over the training split.  N > 0: an epoch is N optimizer steps drawn from successive
# shuffled passes, whatever the split's size, so EPOCHS x N is a fixed step budget and the run time does not
# grow with the data (demos, short recipes).
_C.TRAIN.STEPS_PER_EPOCH = 0
# With STEPS_PER_EPOCH 0, N > 0 caps an epoch at N optimizer steps: a split smaller than that is one full pass
# per epoch, a larger one gives N steps (as STEPS_PER_EPOCH N), so the run time is bounded whatever the data size.
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0

_C.TRAIN.OPTIMIZER = CN()
# Any timm optimizer name (timm.optim.create_optimizer_v2): 'adamw', 'lamb', ...; 'sgd' is Nesterov SGD,
# 'momentum' classical (non-Nesterov) momentum SGD as torch.optim.SGD(nesterov=False).
_C.TRAIN.OPTIMIZER.NAME = 'adamw'
_C.TRAIN.OPTIMIZER.EPS = 1e-8
_C.TRAIN.OPTIMIZER.BETAS = [0.9, 0.999]
# SGD momentum (used by sgd/momentum optimizers only).
_C.TRAIN.OPTIMIZER.MOMENTUM = 0.9

_C.TRAIN.SCHEDULER = CN()
# Any timm scheduler name (timm.scheduler.create_scheduler_v2): 'cosine', 'step', 'multistep', 'none', ...
# The learning rate is updated after every optimizer step, not once per epoch.
_C.TRAIN.SCHEDULER.NAME = 'cosine'
# For 'step': epochs between decays; for 'multistep': the milestones.
_C.TRAIN.SCHEDULER.DECAY_EPOCHS = 30
_C.TRAIN.SCHEDULER.DECAY_MILESTONES = [30, 60, 90]
_C.TRAIN.SCHEDULER.DECAY_RATE = 0.1

# -----------------------------------------------------------------------------------------------------------
# Mixed precision: autocast in DTYPE.  On CUDA, 'float16' uses a GradScaler, 'bfloat16' does not need one.
# On CPU only bfloat16 autocast is used ('float16' is turned into 'bfloat16' with a note).
# -----------------------------------------------------------------------------------------------------------
_C.AMP = CN()
_C.AMP.ENABLE = True
_C.AMP.DTYPE = 'float16'

# Exponential moving average of the weights (timm ModelEmaV3), evaluated next to the model every epoch.
_C.EMA = CN()
_C.EMA.ENABLE = False
_C.EMA.DECAY = 0.9998

# -----------------------------------------------------------------------------------------------------------
# Augmentation and loss (timm create_transform, Mixup, SoftTargetCrossEntropy/LabelSmoothingCrossEntropy)
# -----------------------------------------------------------------------------------------------------------
_C.AUG = CN()
# Colour jitter strength (0 = off); timm ignores it when AUTO_AUGMENT is set.
_C.AUG.COLOR_JITTER = 0.4
# timm RandAugment/AutoAugment string, e.g. 'rand-m9-mstd0.5-inc1'; '' = off.
_C.AUG.AUTO_AUGMENT = 'rand-m9-mstd0.5-inc1'
# RandomResizedCrop scale range and horizontal-flip probability.
_C.AUG.SCALE = [0.08, 1.0]
_C.AUG.HFLIP = 0.5
# Random erasing probability / mode / count.
_C.AUG.REPROB = 0.25
_C.AUG.REMODE = 'pixel'
_C.AUG.RECOUNT = 1
# Mixup / CutMix alphas; either > 0 enables timm Mixup and the soft-target loss.
_C.AUG.MIXUP = 0.8
_C.AUG.CUTMIX = 1.0
_C.AUG.MIXUP_PROB = 1.0
_C.AUG.MIXUP_SWITCH_PROB = 0.5
_C.AUG.MIXUP_MODE = 'batch'
# Label smoothing (inside Mixup when it is on, LabelSmoothingCrossEntropy otherwise).
_C.AUG.LABEL_SMOOTHING = 0.1

# -----------------------------------------------------------------------------------------------------------
# Testing: resize to IMG_SIZE / CROP_PCT then centre-crop IMG_SIZE (224 / 0.875 = 256).
# -----------------------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.CROP_PCT = 0.875
# tools/test.py: evaluate the EMA weights of our checkpoint instead of the model's.
_C.TEST.USE_EMA = False

# -----------------------------------------------------------------------------------------------------------
# Misc
# -----------------------------------------------------------------------------------------------------------
# Base seed; epoch e of rank r seeds everything (data order, augmentation, mixup, drop-path) with
# SEED + e (+ 1000 * r), so a resumed run repeats an uninterrupted one exactly.
_C.SEED = 0
# Print a progress line every PRINT_FREQ iterations.
_C.PRINT_FREQ = 10
# A checkpoint is written after every epoch; the previous one is deleted unless its epoch is a multiple of
# SAVE_FREQ (0 = keep only the latest, plus best.pth).
_C.SAVE_FREQ = 10
# Work dir (checkpoints, config.yaml, TensorBoard logs, metrics.json); usually given with --work-dir.
_C.OUTPUT = ''
# torch.set_num_threads on CPU; 0 = torch's default (one per core).  On a shared, busy CPU 1 is often much
# faster than oversubscribed OpenMP threads.
_C.CPU_THREADS = 0
# torch.backends.cudnn.deterministic on CUDA (slower).
_C.DETERMINISTIC = False


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and where it came from."""


def get_defaults() -> CN:
    """A fresh copy of the defaults."""
    return _C.clone()


def _all_keys(node: CN, prefix: str = '') -> list[str]:
    keys = []
    for k, v in node.items():
        keys.extend(_all_keys(v, f'{prefix}{k}.') if isinstance(v, CN) else [f'{prefix}{k}'])
    return keys


def _unknown_key_message(err: KeyError, source: str) -> str:
    # yacs: KeyError('Non-existent config key: TRAIN.EPOHCS')
    text = str(err.args[0]) if err.args else str(err)
    key = text.split(':', 1)[-1].strip()
    close = difflib.get_close_matches(key, _all_keys(_C), n=3, cutoff=0.6)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    return f'{source}: unknown config key {key!r}.{hint} (all keys and their meaning: classification/config.py)'


def _merge_file(cfg: CN, path: Path, _seen: tuple[Path, ...] = ()) -> None:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f'config file not found: {path}')
    if path in _seen:
        raise ConfigError(f'{path}: _BASE_ cycle through {[str(p) for p in _seen]}')
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping at the top level, got {type(data).__name__}')
    bases = data.pop('_BASE_', [])
    for base in [bases] if isinstance(bases, str) else bases:
        _merge_file(cfg, path.parent / base, _seen + (path,))
    try:
        cfg.merge_from_other_cfg(CN(data))
    except KeyError as e:
        raise ConfigError(_unknown_key_message(e, str(path))) from None
    except ValueError as e:
        raise ConfigError(f'{path}: {e}') from None


def load_config(config_file: str | os.PathLike | None = None, opts: Sequence[str] = ()) -> CN:
    """Defaults <- YAML file (with its ``_BASE_`` chain) <- ``opts`` (KEY VALUE pairs); returned frozen.

    Raises:
        ConfigError: missing file, unknown key, wrong value type or malformed ``opts``.
    """
    cfg = get_defaults()
    if config_file:
        _merge_file(cfg, Path(config_file))
    if opts:
        if len(opts) % 2:
            raise ConfigError(f'--opts needs KEY VALUE pairs, got an odd number of items: {list(opts)}')
        try:
            cfg.merge_from_list(list(opts))
        except KeyError as e:
            raise ConfigError(_unknown_key_message(e, '--opts')) from None
        except AssertionError as e:  # yacs: 'Non-existent key: X' (merge_from_list asserts)
            if 'Non-existent' in str(e):
                raise ConfigError(_unknown_key_message(e, '--opts')) from None
            raise ConfigError(f'--opts: {e}') from None
        except ValueError as e:
            raise ConfigError(f'--opts: {e}') from None
    check_config(cfg)
    cfg.freeze()
    return cfg


def check_config(cfg: CN) -> None:
    """Value checks that yacs' type checks do not cover."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)
    need(cfg.MODEL.NUM_CLASSES > 0, f'MODEL.NUM_CLASSES must be > 0, got {cfg.MODEL.NUM_CLASSES}')
    need(cfg.DATA.IMG_SIZE > 0, f'DATA.IMG_SIZE must be > 0, got {cfg.DATA.IMG_SIZE}')
    need(cfg.DATA.BATCH_SIZE > 0, f'DATA.BATCH_SIZE must be > 0, got {cfg.DATA.BATCH_SIZE}')
    need(cfg.TRAIN.EPOCHS > 0, f'TRAIN.EPOCHS must be > 0, got {cfg.TRAIN.EPOCHS}')
    need(cfg.TRAIN.ACCUM_STEPS >= 1, f'TRAIN.ACCUM_STEPS must be >= 1, got {cfg.TRAIN.ACCUM_STEPS}')
    need(not ((cfg.AUG.MIXUP > 0 or cfg.AUG.CUTMIX > 0) and cfg.DATA.BATCH_SIZE % 2),
         f'DATA.BATCH_SIZE must be even when mixup/cutmix is on (AUG.MIXUP/AUG.CUTMIX), got {cfg.DATA.BATCH_SIZE}')
    need(0 < cfg.TEST.CROP_PCT <= 1, f'TEST.CROP_PCT must be in (0, 1], got {cfg.TEST.CROP_PCT}')
    need(cfg.AMP.DTYPE in ('float16', 'bfloat16'), f"AMP.DTYPE must be 'float16' or 'bfloat16', got {cfg.AMP.DTYPE!r}")
    need(cfg.DATA.ON_CORRUPT in ('skip', 'error'), f"DATA.ON_CORRUPT must be 'skip' or 'error', got {cfg.DATA.ON_CORRUPT!r}")
    need(cfg.DATA.INTERPOLATION in ('bicubic', 'bilinear', 'random'),
         f"DATA.INTERPOLATION must be 'bicubic', 'bilinear' or 'random', got {cfg.DATA.INTERPOLATION!r}")


def config_from_string(text: str) -> CN:
    """Rebuild a config saved with ``cfg.dump()`` (e.g. inside a checkpoint), merged onto the defaults."""
    cfg = get_defaults()
    try:
        cfg.merge_from_other_cfg(CN(yaml.safe_load(text) or {}))
    except KeyError as e:
        raise ConfigError(_unknown_key_message(e, 'config stored in checkpoint')) from None
    return cfg


def config_keys() -> Iterable[str]:
    """Every dotted key with a default (for docs and tests)."""
    return _all_keys(_C)
