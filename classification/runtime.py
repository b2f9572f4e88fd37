"""Process set-up of a classification run: distributed group, threads, seeds and the rank-0 log."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .config import ConfigError

__all__ = ['init_distributed', 'seed_everything', 'Logger']


def init_distributed(launcher: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process.

    ``launcher='pytorch'``: the process group that ``tools/_dispatch.py`` joined under torchrun (one GPU per
    process on CUDA, gloo on the CPU); ``'none'``: one process.
    """
    if launcher not in ('none', 'pytorch'):
        raise ConfigError(f"--launcher {launcher}: classification runs as one process ('none') or under torchrun "
                          f"('pytorch')")
    distributed = launcher == 'pytorch' and dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if torch.cuda.is_available():
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        device = torch.device('cpu')
    return rank, world_size, device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class Logger:
    """Print on rank 0 and append to ``<work_dir>/log.txt`` (no file when ``work_dir`` is None)."""

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
