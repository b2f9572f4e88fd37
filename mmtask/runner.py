"""mmengine glue shared by :mod:`detection.cli` and :mod:`segmentation.cli`: parsed options -> ``Runner``.

The command line itself (the same for every task) is ``tools/_dispatch.py``; this module decides, in one place:

* Override order: the config file, then ``--data-path`` (every dataset's ``data_root``, plus whatever the task
  derives from it, e.g. the COCO evaluator's annotation file), then ``--opts`` (``key=value`` items or
  ``KEY VALUE`` pairs; values parsed as mmengine's ``DictAction`` does: ``a=[1,2]``, ``x=None``), so an explicit
  ``--opts`` always wins.
* Work dir: ``--work-dir``, else the config's ``work_dir``, else ``work_dirs/<config name>`` (train); ``--work-dir``,
  else the checkpoint's folder (test, as classification).
* Resume: ``--resume`` continues from ``<work-dir>/last_checkpoint``; ``--resume CKPT`` from that file; nothing to
  resume is an error (``models._checkpoint.resume_source``, as in classification).
* Data: every dataset of the splits used is checked before the run (``--skip-data-check`` skips it).
* Distributed: ``--launcher pytorch`` (the default under torchrun).  On CUDA, ``cfg.sync_bn = 'torch'`` makes
  mmengine convert every BatchNorm to ``SyncBatchNorm`` when it wraps the model (configs use plain ``BN``, so a
  single process never needs a process group); on the CPU (gloo), where ``SyncBatchNorm`` does not run, each
  process keeps its own BatchNorm statistics and DDP gets no device ids.
* ``torch.load``: mmengine checkpoints load with ``weights_only=True`` inside :func:`mmtask.checkpoint.mmengine_checkpoints`.
* After training, ``<work-dir>/last_checkpoint`` names the final checkpoint (mmengine's CheckpointHook writes it;
  we check, and save one if a config disabled that).  ``test`` prints the metrics and writes
  ``<work-dir>/metrics.json``.  Both are written atomically (``models._checkpoint``).
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from mmengine.config import Config, ConfigDict, DictAction

from acmix.kernels.cpu_ext import import_cpp_extension
from models._checkpoint import (CheckpointError, atomic_write_text, read_last_checkpoint, resume_source,
                                write_last_checkpoint)

from .checkpoint import mmengine_checkpoints

__all__ = ['UsageError', 'DatasetError', 'USER_ERRORS', 'build_config', 'iter_datasets', 'train', 'test',
           'write_metrics', 'jsonable']


class UsageError(ValueError):
    """An option does not fit (no such --data-path, --resume file, checkpoint ...)."""


class DatasetError(ValueError):
    """The dataset on disk does not match what the config expects (raised by the tasks' ``data_check``)."""


# Errors that end a run with a one-line message and exit status 2 (tools/_dispatch.py).
USER_ERRORS = (UsageError, DatasetError, CheckpointError)

# check_data(cfg, splits): raises DatasetError naming the file; set_data_path(cfg, root): task-specific paths
CheckData = Callable[[Config, Sequence[str]], None]
SetDataPath = Callable[[Config, str], None]


def iter_datasets(cfg: Config) -> Iterator[tuple[str, ConfigDict]]:
    """Yield ``(split, dataset_cfg)`` for train/val/test, looking through wrappers (RepeatDataset, ...)."""
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        stack = [loader.get('dataset')]
        while stack:
            ds = stack.pop()
            if ds is None:
                continue
            if isinstance(ds, (list, tuple)):
                stack.extend(ds)
            elif 'dataset' in ds:
                stack.append(ds['dataset'])
            elif 'datasets' in ds:
                stack.extend(ds['datasets'])
            else:
                yield split, ds


def _opts_dict(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``[(key, value string)]`` -> ``{key: value}`` with mmengine's ``DictAction`` value parsing."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--opts', nargs='*', action=DictAction, default={})
    return parser.parse_args(['--opts', *(f'{k}={v}' for k, v in pairs)] if pairs else []).opts


def build_config(args: argparse.Namespace, work_dir: str | None = None,
                 set_data_path: SetDataPath | None = None) -> Config:
    """Load ``args.config`` and apply the overrides in the documented order."""
    cfg = Config.fromfile(args.config)
    if args.data_path is not None:
        if not osp.isdir(args.data_path):
            raise UsageError(f'--data-path {args.data_path}: no such directory')
        for _, ds in iter_datasets(cfg):
            ds['data_root'] = args.data_path
        cfg['data_root'] = args.data_path
        if set_data_path is not None:
            set_data_path(cfg, args.data_path)
    if args.opts:
        cfg.merge_from_dict(_opts_dict(args.opts))
    cfg.work_dir = args.work_dir or work_dir or cfg.get('work_dir') or osp.join('work_dirs', Path(args.config).stem)
    cfg.launcher = args.launcher
    if cfg.launcher != 'none':
        if torch.cuda.is_available():
            cfg.setdefault('sync_bn', 'torch')
        else:  # gloo: CPU modules take no device ids, SyncBatchNorm needs an accelerator
            cfg.setdefault('model_wrapper_cfg', dict(type='MMDistributedDataParallel', device_ids=None,
                                                     broadcast_buffers=False,
                                                     find_unused_parameters=cfg.get('find_unused_parameters',
                                                                                    False)))
    return cfg


def _runner(cfg: Config):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    import_cpp_extension()  # before the Runner's environment report imports it: without torch's GPU-less warning
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def train(args: argparse.Namespace, check_data: CheckData, set_data_path: SetDataPath | None = None) -> str:
    """Train; return the path of the final checkpoint (also written to ``<work_dir>/last_checkpoint``)."""
    cfg = build_config(args, set_data_path=set_data_path)
    if not args.skip_data_check:
        check_data(cfg, ('train', 'val') if cfg.get('val_cfg') else ('train',))
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    resume = resume_source(args.resume, cfg.work_dir)
    if resume is not None:
        cfg.resume, cfg.load_from = True, str(resume)
    with mmengine_checkpoints():
        runner = _runner(cfg)
        runner.train()
        if runner.rank != 0:
            return ''
        ckpt = read_last_checkpoint(cfg.work_dir)
        if ckpt is None:  # a config without CheckpointHook: save the final state ourselves
            by_iter = cfg.train_cfg.get('type', '').startswith('Iter')
            name = f'iter_{runner.iter}.pth' if by_iter else f'epoch_{runner.epoch}.pth'
            runner.save_checkpoint(cfg.work_dir, name)
            ckpt = Path(cfg.work_dir) / name
            write_last_checkpoint(cfg.work_dir, ckpt)
    print(f'final checkpoint: {ckpt} (recorded in {osp.join(cfg.work_dir, "last_checkpoint")})')
    return str(ckpt)


def write_metrics(work_dir: str, metrics: dict[str, Any]) -> str:
    """Write ``metrics`` to ``<work_dir>/metrics.json`` atomically; return the path."""
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    path = osp.join(work_dir, 'metrics.json')
    atomic_write_text(json.dumps(metrics, indent=2, sort_keys=True), path)
    return path


def test(args: argparse.Namespace, check_data: CheckData, summarize: Callable[[dict[str, Any], Any], dict[str, Any]],
         set_data_path: SetDataPath | None = None,
         configure: Callable[[Config, argparse.Namespace], None] | None = None) -> dict[str, Any]:
    """Evaluate ``args.checkpoint``; print and write ``metrics.json`` (``summarize(raw_metrics, runner)``).

    ``configure(cfg, args)`` applies task options (e.g. segmentation's ``--slide`` / ``--tta``) before the check.
    """
    if not osp.isfile(args.checkpoint):
        raise UsageError(f'checkpoint not found: {args.checkpoint}')
    cfg = build_config(args, str(Path(args.checkpoint).resolve().parent), set_data_path)
    if configure is not None:
        configure(cfg, args)
    if not args.skip_data_check:
        check_data(cfg, ('test',))
    cfg.load_from, cfg.resume = args.checkpoint, False
    with mmengine_checkpoints():
        runner = _runner(cfg)
        metrics = summarize(dict(runner.test()), runner)
    if runner.rank == 0:
        path = write_metrics(cfg.work_dir, metrics)
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2))
        print(f'metrics written to {path}')
    return metrics


def jsonable(value: Any) -> Any:
    """Numbers from numpy/torch as plain Python floats (json can't take them)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
