"""ImageNet-style classification: ``train(args)`` and ``test(args)``, read top to bottom like DeiT's ``main.py``.

Called by ``tools/train.py`` / ``tools/test.py`` (``tools/_dispatch.py`` parses the command line, the same for
every task)::

    python tools/train.py <config.yaml> --data-path <root> --work-dir <dir> [--resume [ckpt]] [--opts K V | k=v ...]
    python tools/test.py  <config.yaml> <checkpoint> --data-path <root> [--work-dir <dir>] [--opts ...]
    torchrun --nproc_per_node N tools/train.py ...      # DDP: LOCAL_RANK / RANK / WORLD_SIZE from the env

The pieces live next door: builders in ``build``, datasets in ``data``, the epoch loop in ``engine``, checkpoint
contents, retention and resuming in ``checkpoint``, process set-up in ``runtime``.

Work dir contents: ``config.yaml`` (resolved config), ``epoch_XXX.pth`` checkpoints (every epoch, atomic),
``best.pth``, ``last_checkpoint`` (path of the newest checkpoint), ``log.txt``, ``tb/`` (TensorBoard:
train/loss, train/lr, val/top1, val/top5, acmix/<layer>/rate1|rate2) and, from test.py, ``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from timm.utils import ModelEmaV3
from torch import nn
from yacs.config import CfgNode

from models._checkpoint import CheckpointError, atomic_write_text, resume_source

from . import checkpoint as ckpt_lib
from .build import (ModelNameError, amp_settings, build_criterion, build_mixup, build_model, build_optimizer,
                    build_scheduler, scaled_lrs)
from .config import ConfigError, load_config
from .data import DataError, build_dataset, build_loader
from .engine import NonFiniteLossError, evaluate, train_one_epoch
from .runtime import Logger, init_distributed, seed_everything

__all__ = ['USER_ERRORS', 'train', 'test']

# Errors that end a run with a one-line message and exit status 2 (tools/_dispatch.py); a NaN loss exits with 3.
USER_ERRORS = (ConfigError, DataError, CheckpointError, ModelNameError)


def _config(args: argparse.Namespace, work_dir: str) -> CfgNode:
    """Defaults <- YAML <- the common options (--data-path, --work-dir, --amp, --skip-data-check) <- --opts."""
    common = ['OUTPUT', work_dir]
    if args.data_path:
        common += ['DATA.DATA_PATH', str(args.data_path)]
    if getattr(args, 'amp', False):
        common += ['AMP.ENABLE', 'True']
    if args.skip_data_check:
        common += ['DATA.SCAN_IMAGES', 'False']
    return load_config(args.config, common + [item for pair in args.opts for item in pair])


def _setup(cfg: CfgNode, launcher: str, log_to_file: bool) -> tuple[int, int, torch.device, Path, Logger]:
    rank, world_size, device = init_distributed(launcher)
    if cfg.CPU_THREADS > 0:
        torch.set_num_threads(cfg.CPU_THREADS)
    if cfg.DETERMINISTIC and device.type == 'cuda':
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    work_dir = Path(cfg.OUTPUT)
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
    return rank, world_size, device, work_dir, Logger(work_dir if log_to_file else None, rank)


def acmix_rates(model: nn.Module) -> dict[str, tuple[float, float]]:
    """{module name: (rate1, rate2)} for every module with ``rate1``/``rate2`` (ACmix alpha/beta)."""
    out = {}
    for name, m in model.named_modules():
        r1, r2 = getattr(m, 'rate1', None), getattr(m, 'rate2', None)
        if isinstance(r1, torch.Tensor) and isinstance(r2, torch.Tensor):
            out[name] = (float(r1.detach().float().mean()), float(r2.detach().float().mean()))
    return out


def _write_tensorboard(writer, step: int, stats: dict, val: dict, val_ema: dict | None, model: nn.Module) -> None:
    writer.add_scalar('train/loss', stats['loss'], step)
    writer.add_scalar('train/lr', stats['lr'], step)
    writer.add_scalar('train/img_per_s', stats['img_per_s'], step)
    for k in ('top1', 'top5', 'loss'):
        writer.add_scalar(f'val/{k}', val[k], step)
    if val_ema:
        writer.add_scalar('val/ema_top1', val_ema['top1'], step)
    for name, (r1, r2) in acmix_rates(model).items():
        writer.add_scalar(f'acmix/{name}/rate1', r1, step)
        writer.add_scalar(f'acmix/{name}/rate2', r2, step)
    writer.flush()


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> int:
    """``tools/train.py``: train from a YAML config; returns the exit status (0, or 3 after a NaN loss)."""
    cfg = _config(args, args.work_dir or str(Path('work_dirs') / Path(args.config).stem))
    rank, world_size, device, work_dir, log = _setup(cfg, args.launcher, log_to_file=True)
    try:
        return _train(cfg, args.resume, rank, world_size, device, work_dir, log)
    finally:
        log.close()


def _train(cfg: CfgNode, resume: str | None, rank: int, world_size: int, device: torch.device, work_dir: Path,
           log: Logger) -> int:
    seed_everything(cfg.SEED + 1000 * rank)
    resume_path = resume_source(resume, work_dir)  # a bad --resume fails before any work
    resume_ckpt = ckpt_lib.load_checkpoint(resume_path) if resume_path else None

    model = build_model(cfg).to(device)
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
    if resume_ckpt is not None:
        start_epoch, num_updates, best_top1 = ckpt_lib.restore_training_state(
            resume_ckpt, resume_path, cfg, model, optimizer, scheduler, scaler, ema, log)
    scheduler.step_update(num_updates=num_updates)

    train_model = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(work_dir / 'tb'), purge_step=num_updates or None)
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
                kept = ckpt_lib.read_last_checkpoint(work_dir) if rank == 0 else None
                log(f'error: training stopped: {e}. Last good checkpoint: {kept or "none (first epoch)"}; '
                    f'lower TRAIN.BASE_LR, enable TRAIN.CLIP_GRAD or check the data, then --resume.')
                print(f'error: {e}', file=sys.stderr, flush=True)
                return 3
            scheduler.step(epoch + 1)
            eval_args = dict(amp=amp, amp_dtype=amp_dtype, num_classes=cfg.MODEL.NUM_CLASSES)
            val = evaluate(model, val_loader, device, **eval_args)
            val_ema = evaluate(ema.module, val_loader, device, **eval_args) if ema is not None else None
            is_best = val['top1'] > best_top1
            best_top1 = max(best_top1, val['top1'])
            log(f'Epoch [{epoch + 1}/{cfg.TRAIN.EPOCHS}] train loss {stats["loss"]:.4f}  {stats["img_per_s"]:.1f} '
                f'img/s  {stats["time_s"]:.1f}s | val top-1 {val["top1"]:.2f} top-5 {val["top5"]:.2f} loss '
                f'{val["loss"]:.4f}' + (f' | EMA top-1 {val_ema["top1"]:.2f}' if val_ema else '')
                + f' | best {best_top1:.2f}')
            if rank != 0:
                continue
            _write_tensorboard(writer, num_updates, stats, val, val_ema, model)
            ckpt_lib.save_epoch({
                'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'scheduler': scheduler.state_dict(), 'scaler': scaler.state_dict() if scaler else None,
                'ema': ema.module.state_dict() if ema is not None else None,
                'epoch': epoch + 1, 'num_updates': num_updates, 'best_top1': best_top1,
                'val': {k: float(v) for k, v in val.items()},
                'rng': ckpt_lib.rng_state(), 'model_name': cfg.MODEL.NAME, 'config': cfg.dump(),
            }, work_dir, is_best, keep_every=cfg.SAVE_FREQ)
    finally:
        if writer is not None:
            writer.close()
    if rank == 0:
        log(f'done: best val top-1 {best_top1:.2f}; last checkpoint {ckpt_lib.read_last_checkpoint(work_dir)}; '
            f'TensorBoard: {work_dir / "tb"}')
    return 0


# ----------------------------------------------------------------------------------------------------------
# Testing
# ----------------------------------------------------------------------------------------------------------
def test(args: argparse.Namespace) -> int:
    """``tools/test.py``: evaluate a checkpoint (ours, or a foreign state-dict file such as the authors' Swin-ACmix
    ``{'model': ...}``); writes ``<work-dir>/metrics.json`` (top-1 / top-5 in %)."""
    cfg = _config(args, args.work_dir or str(Path(args.checkpoint).resolve().parent))
    rank, world_size, device, work_dir, log = _setup(cfg, args.launcher, log_to_file=False)
    model = ckpt_lib.load_for_test(cfg, args.checkpoint).to(device)
    loader = build_loader(cfg, build_dataset(cfg, cfg.DATA.VAL_SPLIT, False, log), False, world_size, rank)
    amp, amp_dtype, _ = amp_settings(cfg, device, log)
    start = time.time()
    metrics = evaluate(model, loader, device, amp=amp, amp_dtype=amp_dtype, num_classes=cfg.MODEL.NUM_CLASSES)
    metrics.update(model=cfg.MODEL.NAME, checkpoint=str(Path(args.checkpoint).resolve()),
                   img_size=cfg.DATA.IMG_SIZE, time_s=round(time.time() - start, 2))
    if rank == 0:
        log(f'{cfg.MODEL.NAME} on {metrics["num_images"]} images: top-1 {metrics["top1"]:.2f}  '
            f'top-5 {metrics["top5"]:.2f}')
        atomic_write_text(json.dumps(metrics, indent=2) + '\n', work_dir / 'metrics.json')
        log(f'metrics written to {work_dir / "metrics.json"}')
    return 0
