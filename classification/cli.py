"""Command lines of ImageNet-style classification (called by tools/train.py and tools/test.py).

    python tools/train.py <config.yaml> --data-path <root> --work-dir <dir> [--resume [ckpt]] [--opts K V ...]
    python tools/test.py  <config.yaml> <checkpoint> --data-path <root> [--work-dir <dir>] [--opts K V ...]
    torchrun --nproc_per_node N tools/train.py ...      # DDP: LOCAL_RANK / RANK / WORLD_SIZE from the env

Work dir contents: ``config.yaml`` (resolved config), ``epoch_XXX.pth`` checkpoints (every epoch, atomic),
``best.pth``, ``last_checkpoint`` (path of the newest checkpoint), ``log.txt``, ``tb/`` (TensorBoard:
train/loss, train/lr, val/top1, val/top5, acmix/<layer>/rate1|rate2) and, from test.py, ``metrics.json``.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import timm
import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from yacs.config import CfgNode

from . import checkpoint as ckpt_lib
from .config import ConfigError, config_from_string, load_config
from .data import DataError, build_dataset, build_loader
from .engine import NonFiniteLossError, evaluate, train_one_epoch

_MODELS_IMPORT_ERROR: str | None = None
try:  # registers the acmix_* / conv_* / san* / pvt_v1_* entrypoints with timm
    import models  # noqa: F401
except ImportError as _e:  # keep timm's own models usable; the name check below reports why ours are missing
    _MODELS_IMPORT_ERROR = f'{type(_e).__name__}: {_e}'


class ModelNameError(ValueError):
    """MODEL.NAME is not a registered timm model."""


# Errors that end a run with a one-line message instead of a traceback (exit status 2; NaN loss: 3).
USER_ERRORS = (ConfigError, DataError, ckpt_lib.CheckpointError, ModelNameError)


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
def check_model_name(name: str) -> None:
    """Raise ModelNameError with close matches if ``name`` is not registered with timm."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    msg = f'unknown model {name!r} (MODEL.NAME)'
    if close:
        msg += f'; did you mean: {", ".join(close)}?'
    if _MODELS_IMPORT_ERROR:
        msg += f' Note: `import models` failed, so the ACmix models are not registered: {_MODELS_IMPORT_ERROR}'
    raise ModelNameError(msg)


def build_model(cfg: CfgNode, pretrained_file: str | None = None, **overrides: Any) -> nn.Module:
    """``timm.create_model`` from the config.

    ``img_size`` is passed when DATA.IMG_SIZE differs from the model's default and the model accepts it
    (Swin, PVT); convolutional models take any size without it.  ``pretrained_file`` (or MODEL.PRETRAINED_FILE)
    is loaded by timm through the model's own checkpoint filter (so the authors' ``{'model': ...}`` Swin-ACmix
    files load directly), strictly, keeping the classifier when its class count matches.
    """
    name = cfg.MODEL.NAME
    check_model_name(name)
    kwargs: dict[str, Any] = dict(num_classes=cfg.MODEL.NUM_CLASSES)
    if cfg.MODEL.DROP_PATH > 0:
        kwargs['drop_path_rate'] = cfg.MODEL.DROP_PATH
    if cfg.MODEL.DROP_RATE > 0:
        kwargs['drop_rate'] = cfg.MODEL.DROP_RATE
    if cfg.MODEL.MIXER_ARGS:
        kwargs['mixer_args'] = {k: v for k, v in cfg.MODEL.MIXER_ARGS.items()}
    file = pretrained_file or cfg.MODEL.PRETRAINED_FILE
    if file:
        if not Path(file).is_file():
            raise ckpt_lib.CheckpointError(f'checkpoint not found: {file}')
        overlay = dict(file=str(file))
        if pretrained_file:  # evaluation: the checkpoint must carry this exact classifier
            overlay['num_classes'] = cfg.MODEL.NUM_CLASSES
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    elif cfg.MODEL.PRETRAINED:
        kwargs['pretrained'] = True
    kwargs.update(overrides)
    default_size = timm.models.get_pretrained_cfg_value(name, 'input_size')
    if default_size is not None and default_size[-1] != cfg.DATA.IMG_SIZE and 'img_size' not in kwargs:
        try:
            return _create(name, file, img_size=cfg.DATA.IMG_SIZE, **kwargs)
        except TypeError as e:
            if 'img_size' not in str(e):
                raise
    return _create(name, file, **kwargs)


def _create(name: str, file: str | None, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, KeyError) as e:  # timm's strict load / the model's checkpoint filter
        if file:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ckpt_lib.CheckpointError(f'{file} does not fit model {name}: {msg}') from e
        raise


def build_criterion(cfg: CfgNode, mixup_active: bool) -> nn.Module:
    if mixup_active:
        return SoftTargetCrossEntropy()  # label smoothing is applied by Mixup
    if cfg.AUG.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.AUG.LABEL_SMOOTHING)
    return nn.CrossEntropyLoss()


def build_mixup(cfg: CfgNode) -> Mixup | None:
    aug = cfg.AUG
    if aug.MIXUP <= 0 and aug.CUTMIX <= 0:
        return None
    return Mixup(mixup_alpha=aug.MIXUP, cutmix_alpha=aug.CUTMIX, prob=aug.MIXUP_PROB,
                 switch_prob=aug.MIXUP_SWITCH_PROB, mode=aug.MIXUP_MODE, label_smoothing=aug.LABEL_SMOOTHING,
                 num_classes=cfg.MODEL.NUM_CLASSES)


def scaled_lrs(cfg: CfgNode, world_size: int) -> tuple[float, float, float]:
    """(base, warmup, min) learning rates scaled by total batch / 512 (see classification/config.py)."""
    scale = cfg.DATA.BATCH_SIZE * world_size * cfg.TRAIN.ACCUM_STEPS / 512.0
    return cfg.TRAIN.BASE_LR * scale, cfg.TRAIN.WARMUP_LR * scale, cfg.TRAIN.MIN_LR * scale


def build_optimizer(cfg: CfgNode, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """timm optimizer; no weight decay on 1-D params and on ``model.no_weight_decay()`` names."""
    opt = cfg.TRAIN.OPTIMIZER
    kwargs: dict[str, Any] = {}
    name = opt.NAME.lower()
    if 'adam' in name or 'lamb' in name:
        kwargs.update(eps=opt.EPS, betas=tuple(opt.BETAS))
    return create_optimizer_v2(model, opt=opt.NAME, lr=lr, weight_decay=cfg.TRAIN.WEIGHT_DECAY,
                               momentum=opt.MOMENTUM, filter_bias_and_bn=True, **kwargs)


def build_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, updates_per_epoch: int,
                    warmup_lr: float, min_lr: float):
    s = cfg.TRAIN.SCHEDULER
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=s.NAME, num_epochs=cfg.TRAIN.EPOCHS, warmup_epochs=cfg.TRAIN.WARMUP_EPOCHS,
        warmup_lr=warmup_lr, min_lr=min_lr, decay_epochs=s.DECAY_EPOCHS, decay_milestones=list(s.DECAY_MILESTONES),
        decay_rate=s.DECAY_RATE, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    return scheduler


def acmix_rates(model: nn.Module) -> dict[str, tuple[float, float]]:
    """{module name: (rate1, rate2)} for every module with ``rate1``/``rate2`` (ACmix alpha/beta)."""
    out = {}
    for name, m in model.named_modules():
        r1, r2 = getattr(m, 'rate1', None), getattr(m, 'rate2', None)
        if isinstance(r1, torch.Tensor) and isinstance(r2, torch.Tensor):
            out[name] = (float(r1.detach().float().mean()), float(r2.detach().float().mean()))
    return out


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def amp_settings(cfg: CfgNode, device: torch.device, log: Callable[[str], None]) -> tuple[bool, torch.dtype, bool]:
    """(autocast on, dtype, use GradScaler)."""
    if not cfg.AMP.ENABLE:
        return False, torch.float32, False
    dtype = torch.float16 if cfg.AMP.DTYPE == 'float16' else torch.bfloat16
    if device.type != 'cuda' and dtype == torch.float16:
        log('AMP: float16 autocast is for CUDA; using bfloat16 on CPU')
        dtype = torch.bfloat16
    return True, dtype, dtype == torch.float16


# ----------------------------------------------------------------------------------------------------------
# Process setup
# ----------------------------------------------------------------------------------------------------------
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group when torchrun set WORLD_SIZE > 1."""
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    else:
        device = torch.device('cpu')
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    return rank, world_size, device


def set_threads(cfg: CfgNode) -> None:
    if cfg.CPU_THREADS > 0:
        torch.set_num_threads(cfg.CPU_THREADS)


class Logger:
    """Print on rank 0 and append to ``<work_dir>/log.txt``."""

    def __init__(self, work_dir: Path | None, rank: int):
        self.file = open(work_dir / 'log.txt', 'a') if (work_dir and rank == 0) else None
        self.rank = rank

    def __call__(self, msg: str) -> None:
        if self.rank != 0:
            return
        print(msg, flush=True)
        if self.file:
            self.file.write(msg + '\n')
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def _split_opts(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``--opts K V ...`` (everything after it) from the rest, so values may start with '-'."""
    argv = list(argv)
    if '--opts' in argv:
        i = argv.index('--opts')
        return argv[:i], argv[i + 1:]
    return argv, []


def _resolve_config(args: argparse.Namespace, opts: list[str]) -> CfgNode:
    extra = []
    if args.data_path:
        extra += ['DATA.DATA_PATH', str(args.data_path)]
    if args.work_dir:
        extra += ['OUTPUT', str(args.work_dir)]
    return load_config(args.config, opts + extra)


def _config_changes(old: CfgNode, new: CfgNode, prefix: str = '') -> list[str]:
    """'KEY: old -> new' for every leaf that differs (paths excluded)."""
    out = []
    for k, v in new.items():
        key, before = f'{prefix}{k}', old.get(k)
        if isinstance(v, CfgNode):
            out += _config_changes(before if isinstance(before, CfgNode) else CfgNode(), v, f'{key}.')
        elif before != v and key not in ('OUTPUT', 'DATA.DATA_PATH'):
            out.append(f'{key}: {before!r} -> {v!r}')
    return out


def _run(main: Callable[[], int | None]) -> None:
    """Run ``main`` turning expected failures into a one-line message and a non-zero exit status."""
    try:
        code = main()
    except USER_ERRORS as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if code:
        raise SystemExit(code)


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------
def train(argv: Sequence[str]) -> None:
    """``tools/train.py``: train from a YAML config (see the module docstring)."""
    parser = argparse.ArgumentParser(prog='tools/train.py', description='Train an image classifier.')
    parser.add_argument('config', help='configs/classification/<model>.yaml')
    parser.add_argument('--data-path', help='dataset root with train/<class>/* and val/<class>/* (DATA.DATA_PATH)')
    parser.add_argument('--work-dir', help='output folder (default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from this checkpoint, or with no value from <work-dir>/last_checkpoint')
    parser.add_argument('--opts', nargs=argparse.REMAINDER, default=[], help='KEY VALUE pairs overriding the config')
    own, opts = _split_opts(argv)
    args = parser.parse_args(own)
    if not args.work_dir:
        args.work_dir = str(Path('work_dirs') / Path(args.config).stem)
    _run(lambda: _train(args, opts))


def _train(args: argparse.Namespace, opts: list[str]) -> int:
    cfg = _resolve_config(args, opts)
    rank, world_size, device = init_distributed()
    set_threads(cfg)
    work_dir = Path(cfg.OUTPUT)
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
    log = Logger(work_dir, rank)
    try:
        return _train_loop(cfg, args, rank, world_size, device, work_dir, log)
    finally:
        log.close()


def _train_loop(cfg: CfgNode, args: argparse.Namespace, rank: int, world_size: int, device: torch.device,
                work_dir: Path, log: Logger) -> int:
    if cfg.DETERMINISTIC and device.type == 'cuda':
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    seed_everything(cfg.SEED + 1000 * rank)

    # resume source first, so a bad --resume fails before any work
    resume_path = None
    if args.resume == 'auto':
        resume_path = ckpt_lib.last_checkpoint(work_dir)
        if resume_path is None:
            raise ckpt_lib.CheckpointError(f'--resume: {work_dir}/{ckpt_lib.LAST_CHECKPOINT} not found '
                                           f'(nothing to resume; pass a checkpoint path or drop --resume)')
    elif args.resume:
        resume_path = Path(args.resume)
    resume = ckpt_lib.load_checkpoint(resume_path) if resume_path else None

    model = build_model(cfg).to(device)
    if resume is not None and resume.get('model_name', cfg.MODEL.NAME) != cfg.MODEL.NAME:
        raise ckpt_lib.CheckpointError(f'{resume_path} was trained with MODEL.NAME {resume["model_name"]!r}, '
                                       f'the config says {cfg.MODEL.NAME!r}')
    log(f'model {cfg.MODEL.NAME}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters')
    if rank == 0:
        (work_dir / 'config.yaml').write_text(cfg.dump())

    train_set = build_dataset(cfg, cfg.DATA.TRAIN_SPLIT, True, log)
    val_set = build_dataset(cfg, cfg.DATA.VAL_SPLIT, False, log, classes=train_set.classes)
    train_loader = build_loader(cfg, train_set, True, world_size, rank)
    val_loader = build_loader(cfg, val_set, False, world_size, rank)

    mixup_fn = build_mixup(cfg)
    criterion = build_criterion(cfg, mixup_fn is not None)
    lr, warmup_lr, min_lr = scaled_lrs(cfg, world_size)
    optimizer = build_optimizer(cfg, model, lr)
    updates_per_epoch = len(train_loader) // cfg.TRAIN.ACCUM_STEPS
    if updates_per_epoch == 0:
        raise DataError(f'TRAIN.ACCUM_STEPS {cfg.TRAIN.ACCUM_STEPS} exceeds the {len(train_loader)} batches per epoch')
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch, warmup_lr, min_lr)
    amp, amp_dtype, use_scaler = amp_settings(cfg, device, log)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    ema = ModelEmaV3(model, decay=cfg.EMA.DECAY, device=device) if cfg.EMA.ENABLE else None
    log(f'optimizer {cfg.TRAIN.OPTIMIZER.NAME} lr {lr:.3e} (BASE_LR {cfg.TRAIN.BASE_LR} x total batch '
        f'{cfg.DATA.BATCH_SIZE * world_size * cfg.TRAIN.ACCUM_STEPS} / 512), {updates_per_epoch} steps/epoch, '
        f'AMP {"off" if not amp else str(amp_dtype).split(".")[-1]}, EMA {"on" if ema else "off"}, '
        f'{world_size} process(es) on {device}')

    start_epoch, num_updates, best_top1 = 0, 0, -1.0
    if resume is not None:
        ckpt_lib.load_model_weights(model, ckpt_lib.extract_state_dict(resume), str(resume_path))
        changed = _config_changes(config_from_string(resume['config']), cfg)
        if changed:
            log(f'note: config differs from the checkpoint\'s: {"; ".join(changed)}')
        # timm schedulers are functions of the step count; their saved state also fixes the schedule's length,
        # so it is restored only when the schedule settings are unchanged (e.g. not when TRAIN.EPOCHS grew)
        new_schedule = any(c.startswith(('TRAIN.', 'DATA.BATCH_SIZE')) and not c.startswith(('TRAIN.OPTIMIZER',
                           'TRAIN.WEIGHT_DECAY', 'TRAIN.CLIP_GRAD')) for c in changed)
        if new_schedule:
            log('note: the learning-rate schedule follows the new config')
        try:
            optimizer.load_state_dict(resume['optimizer'])
            if not new_schedule:
                scheduler.load_state_dict(resume['scheduler'])
            if scaler is not None and resume.get('scaler'):
                scaler.load_state_dict(resume['scaler'])
            if ema is not None:
                if resume.get('ema') is None:
                    raise ckpt_lib.CheckpointError(f'{resume_path} has no EMA weights but EMA.ENABLE is on')
                ema.module.load_state_dict(resume['ema'])
        except (KeyError, ValueError) as e:
            raise ckpt_lib.CheckpointError(f'{resume_path}: cannot restore training state: {e}') from e
        ckpt_lib.set_rng_state(resume['rng'])
        start_epoch, num_updates, best_top1 = resume['epoch'], resume['num_updates'], resume['best_top1']
        log(f'resumed from {resume_path}: {start_epoch} epoch(s) done, {num_updates} steps, best top-1 {best_top1:.2f}')
        if start_epoch >= cfg.TRAIN.EPOCHS:
            log(f'nothing to do: TRAIN.EPOCHS is {cfg.TRAIN.EPOCHS}')
    scheduler.step_update(num_updates=num_updates)

    train_model = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(work_dir / 'tb'), purge_step=num_updates or None)
    last_path = ckpt_lib.last_checkpoint(work_dir) if rank == 0 else None
    try:
        for epoch in range(start_epoch, cfg.TRAIN.EPOCHS):
            # everything random in this epoch (order, augmentation, mixup, drop-path) follows from SEED + epoch
            seed_everything(cfg.SEED + epoch + 1000 * rank)
            train_loader.sampler.set_epoch(epoch)
            try:
                stats, num_updates = train_one_epoch(
                    train_model, train_loader, criterion, optimizer, scheduler, epoch, num_updates, device,
                    mixup_fn=mixup_fn, scaler=scaler, amp=amp, amp_dtype=amp_dtype, clip_grad=cfg.TRAIN.CLIP_GRAD,
                    accum_steps=cfg.TRAIN.ACCUM_STEPS, ema=ema, print_freq=cfg.PRINT_FREQ, log=log,
                    epochs=cfg.TRAIN.EPOCHS)
            except NonFiniteLossError as e:
                kept = ckpt_lib.last_checkpoint(work_dir) if rank == 0 else None
                log(f'error: training stopped: {e}. Last good checkpoint: {kept or "none (first epoch)"}; '
                    f'lower TRAIN.BASE_LR, enable TRAIN.CLIP_GRAD or check the data, then --resume.')
                print(f'error: {e}', file=sys.stderr, flush=True)
                return 3
            scheduler.step(epoch + 1)
            val = evaluate(model, val_loader, device, amp=amp, amp_dtype=amp_dtype, num_classes=cfg.MODEL.NUM_CLASSES)
            val_ema = (evaluate(ema.module, val_loader, device, amp=amp, amp_dtype=amp_dtype,
                                num_classes=cfg.MODEL.NUM_CLASSES) if ema is not None else None)
            is_best = val['top1'] > best_top1
            best_top1 = max(best_top1, val['top1'])
            log(f'Epoch [{epoch + 1}/{cfg.TRAIN.EPOCHS}] train loss {stats["loss"]:.4f}  {stats["img_per_s"]:.1f} img/s  '
                f'{stats["time_s"]:.1f}s | val top-1 {val["top1"]:.2f} top-5 {val["top5"]:.2f} loss {val["loss"]:.4f}'
                + (f' | EMA top-1 {val_ema["top1"]:.2f}' if val_ema else '') + f' | best {best_top1:.2f}')
            if rank != 0:
                continue
            writer.add_scalar('train/loss', stats['loss'], num_updates)
            writer.add_scalar('train/lr', stats['lr'], num_updates)
            writer.add_scalar('train/img_per_s', stats['img_per_s'], num_updates)
            for k in ('top1', 'top5', 'loss'):
                writer.add_scalar(f'val/{k}', val[k], num_updates)
            if val_ema:
                writer.add_scalar('val/ema_top1', val_ema['top1'], num_updates)
            for name, (r1, r2) in acmix_rates(model).items():
                writer.add_scalar(f'acmix/{name}/rate1', r1, num_updates)
                writer.add_scalar(f'acmix/{name}/rate2', r2, num_updates)
            writer.flush()

            state = {
                'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'scheduler': scheduler.state_dict(), 'scaler': scaler.state_dict() if scaler else None,
                'ema': ema.module.state_dict() if ema is not None else None,
                'epoch': epoch + 1, 'num_updates': num_updates, 'best_top1': best_top1,
                'val': {k: float(v) for k, v in val.items()},
                'rng': ckpt_lib.rng_state(), 'model_name': cfg.MODEL.NAME, 'config': cfg.dump(),
            }
            path = work_dir / f'epoch_{epoch + 1:03d}.pth'
            ckpt_lib.atomic_save(state, path)
            ckpt_lib.atomic_write_text(str(path.resolve()), work_dir / ckpt_lib.LAST_CHECKPOINT)
            if is_best:
                ckpt_lib.atomic_save(state, work_dir / 'best.pth')
            # keep the newest, and every SAVE_FREQ-th epoch
            if last_path is not None and last_path != path.resolve() and last_path.parent == work_dir.resolve():
                done = int(last_path.stem.split('_')[-1]) if last_path.stem.startswith('epoch_') else 0
                if not (cfg.SAVE_FREQ and done % cfg.SAVE_FREQ == 0):
                    last_path.unlink(missing_ok=True)
            last_path = path.resolve()
    finally:
        if writer is not None:
            writer.close()
    if rank == 0:
        log(f'done: best val top-1 {best_top1:.2f}; last checkpoint {last_path}; TensorBoard: {work_dir / "tb"}')
    return 0


# ----------------------------------------------------------------------------------------------------------
# Testing
# ----------------------------------------------------------------------------------------------------------
def test(argv: Sequence[str]) -> None:
    """``tools/test.py``: evaluate a checkpoint (ours, or the authors' Swin-ACmix ``{'model': ...}`` files)."""
    parser = argparse.ArgumentParser(prog='tools/test.py', description='Evaluate an image classifier.')
    parser.add_argument('config', help='configs/classification/<model>.yaml')
    parser.add_argument('checkpoint', help='our checkpoint (.pth) or a foreign state-dict file')
    parser.add_argument('--data-path', help='dataset root with val/<class>/* (DATA.DATA_PATH)')
    parser.add_argument('--work-dir', help='where metrics.json is written (default: the checkpoint folder)')
    parser.add_argument('--opts', nargs=argparse.REMAINDER, default=[], help='KEY VALUE pairs overriding the config')
    own, opts = _split_opts(argv)
    args = parser.parse_args(own)
    if not args.work_dir:
        args.work_dir = str(Path(args.checkpoint).resolve().parent)
    _run(lambda: _test(args, opts))


def load_for_test(cfg: CfgNode, path: str | os.PathLike) -> nn.Module:
    """A model with the checkpoint's weights: ours (checked against MODEL.NAME, strict, named mismatches)
    or a foreign file through timm and the model's checkpoint filter."""
    ckpt = ckpt_lib.load_checkpoint(path)
    if 'config' in ckpt and 'model_name' in ckpt:  # one of ours
        if ckpt['model_name'] != cfg.MODEL.NAME:
            raise ckpt_lib.CheckpointError(
                f'{path} holds a {ckpt["model_name"]!r} model but the config says MODEL.NAME {cfg.MODEL.NAME!r}')
        saved = config_from_string(ckpt['config'])
        if saved.MODEL.NUM_CLASSES != cfg.MODEL.NUM_CLASSES:
            raise ckpt_lib.CheckpointError(f'{path} has {saved.MODEL.NUM_CLASSES} classes, the config '
                                           f'{cfg.MODEL.NUM_CLASSES} (MODEL.NUM_CLASSES)')
        model = build_model(cfg)
        ckpt_lib.load_model_weights(model, ckpt_lib.extract_state_dict(ckpt, cfg.TEST.USE_EMA), str(path))
        return model
    return build_model(cfg, pretrained_file=str(path))


def _test(args: argparse.Namespace, opts: list[str]) -> int:
    cfg = _resolve_config(args, opts + ['OUTPUT', str(args.work_dir)])
    rank, world_size, device = init_distributed()
    set_threads(cfg)
    work_dir = Path(cfg.OUTPUT)
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
    log = Logger(None, rank)
    model = load_for_test(cfg, args.checkpoint).to(device)
    val_set = build_dataset(cfg, cfg.DATA.VAL_SPLIT, False, log)
    loader = build_loader(cfg, val_set, False, world_size, rank)
    amp, amp_dtype, _ = amp_settings(cfg, device, log)
    start = time.time()
    metrics = evaluate(model, loader, device, amp=amp, amp_dtype=amp_dtype, num_classes=cfg.MODEL.NUM_CLASSES)
    metrics.update(model=cfg.MODEL.NAME, checkpoint=str(Path(args.checkpoint).resolve()),
                   img_size=cfg.DATA.IMG_SIZE, time_s=round(time.time() - start, 2))
    if rank == 0:
        log(f'{cfg.MODEL.NAME} on {metrics["num_images"]} images: top-1 {metrics["top1"]:.2f}  top-5 {metrics["top5"]:.2f}')
        (work_dir / 'metrics.json').write_text(json.dumps(metrics, indent=2) + '\n')
        log(f'metrics written to {work_dir / "metrics.json"}')
    return 0
