"""Command-line glue shared by ``detection.cli`` and ``segmentation.cli``: config -> mmengine ``Runner``.

Train::

    python tools/train.py CONFIG [--data-path ROOT] [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--launcher {none,pytorch,slurm,mpi}] [--opts key=value ...]

Test::

    python tools/test.py CONFIG CHECKPOINT [--data-path ROOT] [--work-dir DIR] [--opts key=value ...]

What this module decides, in one place:

* Override order: the config file, then ``--data-path`` (every dataset's ``data_root``, plus whatever the task
  derives from it, e.g. the COCO evaluator's annotation file), then ``--opts`` (mmengine's ``key=value`` syntax,
  ``model.backbone.drop_path_rate=0.1``, lists as ``a=[1,2]``), so an explicit ``--opts`` always wins.
* Work dir: ``--work-dir``, else the config's ``work_dir``, else ``work_dirs/<config name>``.
* Resume: ``--resume`` continues from ``<work-dir>/last_checkpoint``; ``--resume CKPT`` from that file.
* Distributed: ``--launcher pytorch`` (set automatically under ``torchrun``, i.e. when ``WORLD_SIZE`` > 1).
  Configs use plain ``BN``; in a distributed run ``cfg.sync_bn = 'torch'`` makes mmengine convert every
  BatchNorm to ``SyncBatchNorm`` when it wraps the model, and a single process keeps ``BN`` (a ``SyncBN``
  config cannot fail without a process group).
* ``torch.load``: mmengine checkpoints load with ``weights_only=True`` plus the allow-list of
  :mod:`mmtask.checkpoint`.
* After training, ``<work-dir>/last_checkpoint`` names the final checkpoint (mmengine's CheckpointHook writes it;
  we check, and save one if a config disabled that).
* ``test`` prints the metrics and writes ``<work-dir>/metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mmengine.config import Config, ConfigDict, DictAction

from .checkpoint import allow_mmengine_checkpoints

__all__ = ['train_parser', 'test_parser', 'build_config', 'run_train', 'run_test', 'iter_datasets',
           'write_metrics']

ROOT = Path(__file__).resolve().parents[1]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--data-path', default=None,
                        help='dataset root: replaces data_root of every dataset in the config')
    parser.add_argument('--work-dir', default=None, help='where logs, checkpoints and metrics.json go')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default=None,
                        help="job launcher (default: 'pytorch' under torchrun, else 'none')")
    parser.add_argument('--opts', nargs='+', action=DictAction, default={},
                        help='override config entries, key=value (mmengine syntax), applied last')
    parser.add_argument('--skip-data-check', action='store_true',
                        help='skip the dataset checks made before training/testing')


def train_parser(prog: str) -> argparse.ArgumentParser:
    """Arguments of ``tools/train.py`` for an mmengine config."""
    parser = argparse.ArgumentParser(prog=prog, description='Train with an mmengine config.')
    parser.add_argument('config')
    _common(parser)
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from <work-dir>/last_checkpoint, or from the given checkpoint')
    parser.add_argument('--amp', action='store_true', help='mixed precision (AmpOptimWrapper)')
    return parser


def test_parser(prog: str) -> argparse.ArgumentParser:
    """Arguments of ``tools/test.py`` for an mmengine config."""
    parser = argparse.ArgumentParser(prog=prog, description='Evaluate a checkpoint with an mmengine config.')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    _common(parser)
    return parser


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


def _launcher(args: argparse.Namespace) -> str:
    if args.launcher is not None:
        return args.launcher
    return 'pytorch' if int(os.environ.get('WORLD_SIZE', '1')) > 1 else 'none'


def build_config(args: argparse.Namespace, set_data_path: Callable[[Config, str], None] | None = None) -> Config:
    """Load ``args.config`` and apply the overrides in the documented order."""
    cfg = Config.fromfile(args.config)
    if args.data_path is not None:
        if not osp.isdir(args.data_path):
            raise SystemExit(f'--data-path {args.data_path}: no such directory')
        for _, ds in iter_datasets(cfg):
            ds['data_root'] = args.data_path
        cfg['data_root'] = args.data_path
        if set_data_path is not None:
            set_data_path(cfg, args.data_path)
    if args.opts:
        cfg.merge_from_dict(args.opts)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join('work_dirs', Path(args.config).stem)
    cfg.launcher = _launcher(args)
    if cfg.launcher != 'none':
        cfg.setdefault('sync_bn', 'torch')
    return cfg


def _make_runner(cfg: Config):
    # custom_imports in our configs name repository modules (models.mm_backbone): make the root importable
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    allow_mmengine_checkpoints()
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def run_train(args: argparse.Namespace, cfg: Config) -> str:
    """Train; return the path of the final checkpoint (also written to ``<work_dir>/last_checkpoint``)."""
    if getattr(args, 'amp', False):
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume {args.resume}: no such checkpoint')
        cfg.resume, cfg.load_from = True, args.resume
    runner = _make_runner(cfg)
    runner.train()
    last_file = osp.join(cfg.work_dir, 'last_checkpoint')
    if runner.rank == 0:
        ckpt = Path(last_file).read_text().strip() if osp.isfile(last_file) else ''
        if not ckpt or not osp.isfile(ckpt):
            name = f'iter_{runner.iter}.pth' if cfg.train_cfg.get('type', '').startswith('Iter') \
                else f'epoch_{runner.epoch}.pth'
            runner.save_checkpoint(cfg.work_dir, name)
            ckpt = osp.join(cfg.work_dir, name)
            Path(last_file).write_text(ckpt)
        print(f'final checkpoint: {ckpt} (recorded in {last_file})')
        return ckpt
    return ''


def write_metrics(work_dir: str, metrics: dict[str, Any]) -> str:
    """Write ``metrics`` to ``<work_dir>/metrics.json`` atomically; return the path."""
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, 'metrics.json')
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def run_test(args: argparse.Namespace, cfg: Config,
             summarize: Callable[[dict[str, Any], Any], dict[str, Any]]) -> dict[str, Any]:
    """Evaluate ``args.checkpoint``; print and write ``metrics.json`` (``summarize(raw_metrics, runner)``)."""
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    runner = _make_runner(cfg)
    raw = runner.test()
    metrics = summarize(dict(raw), runner)
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

