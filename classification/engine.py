"""One training epoch and one evaluation pass (the DeiT/ConvNeXt ``engine.py`` shape, plain loops)."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from timm.utils import accuracy


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/inf; training stops without writing a checkpoint for this epoch."""


def autocast(device: torch.device, enable: bool, dtype: torch.dtype):
    """``torch.autocast`` for the device, or a no-op context when AMP is off."""
    return torch.autocast(device.type, dtype=dtype) if enable else nullcontext()


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def train_one_epoch(model: nn.Module, loader: Iterable, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, epoch: int, num_updates: int, device: torch.device, *,
                    mixup_fn: Callable | None = None, scaler: torch.amp.GradScaler | None = None,
                    amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16, clip_grad: float = 0.0,
                    accum_steps: int = 1, ema=None, print_freq: int = 10, log: Callable[[str], None] = print,
                    epochs: int | None = None) -> tuple[dict[str, float], int]:
    """Train for one pass over ``loader``.

    The learning rate is set per optimizer step (``scheduler.step_update(num_updates)``); with
    ``accum_steps`` > 1 the gradients of that many batches (each loss divided by it) make one step, and a
    trailing incomplete group is dropped so that every epoch has the same number of steps.

    Returns:
        ({'loss': mean loss, 'lr': last lr, 'img_per_s': throughput}, updated ``num_updates``).

    Raises:
        NonFiniteLossError: the loss is NaN or infinite (names epoch and iteration).
    """
    model.train()
    n_iters = len(loader)
    n_iters -= n_iters % accum_steps
    loss_sum, loss_count, seen = 0.0, 0, 0
    start = time.time()
    optimizer.zero_grad(set_to_none=True)
    header = f'Epoch [{epoch + 1}/{epochs}]' if epochs else f'Epoch [{epoch + 1}]'
    for it, (images, targets) in enumerate(loader):
        if it >= n_iters:
            break
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)
        with autocast(device, amp, amp_dtype):
            output = model(images)
            loss = criterion(output, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f'loss is {loss_value} at epoch {epoch + 1}, iteration {it + 1}/{n_iters}')
        loss = loss / accum_steps
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        step_now = (it + 1) % accum_steps == 0
        if step_now:
            if scaler is not None:
                if clip_grad > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                scaler.step(optimizer)
                scaler.update()
            else:
                if clip_grad > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            num_updates += 1
            scheduler.step_update(num_updates=num_updates)
            if ema is not None:
                ema.update(model, step=num_updates)

        loss_sum += loss_value
        loss_count += 1
        seen += images.shape[0]
        if print_freq and ((it + 1) % print_freq == 0 or it + 1 == n_iters):
            elapsed = time.time() - start
            rate = seen / max(elapsed, 1e-9)
            eta = elapsed / (it + 1) * (n_iters - it - 1)
            lr = optimizer.param_groups[0]['lr']
            log(f'{header} [{it + 1:>{len(str(n_iters))}}/{n_iters}]  loss {loss_value:.4f} '
                f'(avg {loss_sum / loss_count:.4f})  lr {lr:.3e}  {rate:.1f} img/s  eta {_fmt_time(eta)}')
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elapsed = time.time() - start
    return ({'loss': loss_sum / max(loss_count, 1), 'lr': optimizer.param_groups[0]['lr'],
             'img_per_s': seen / max(elapsed, 1e-9), 'time_s': elapsed}, num_updates)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, *, amp: bool = False,
             amp_dtype: torch.dtype = torch.bfloat16, num_classes: int | None = None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and cross-entropy over ``loader``; summed over processes under DDP.

    With fewer than 5 classes, top-5 is top-min(5, classes) (i.e. 100).
    """
    model.eval()
    k5 = min(5, num_classes) if num_classes else 5
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss sum, count
    criterion = nn.CrossEntropyLoss(reduction='sum')
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp, amp_dtype):
            output = model(images)
        output = output.float()
        top1, top5 = accuracy(output, targets, topk=(1, k5))
        n = targets.shape[0]
        totals += torch.tensor([top1.item() * n / 100, top5.item() * n / 100,
                                criterion(output, targets).item(), n], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    c1, c5, loss, n = totals.tolist()
    n = max(n, 1)
    return {'top1': 100 * c1 / n, 'top5': 100 * c5 / n, 'loss': loss / n, 'num_images': int(n)}
