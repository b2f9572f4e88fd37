"""One launch for every task: ``torchrun --nproc_per_node N tools/train.py <any config>``.

Each task trains a few steps in 2 CPU processes (gloo) through the ordinary command line; afterwards both processes
must hold the same weights (DDP kept them in step), equal to the checkpoint rank 0 wrote.  Measured on the shared
2-core machine: classification 40 s, detection and segmentation about 45 s each (marked slow).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(out: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0')
    env.pop('WORLD_SIZE', None)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(ROOT / 'tests' / '_launch_worker.py'), str(out), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _same_weights_in_both_processes(out: Path, checkpoint: Path, unwrap) -> None:
    ranks = [torch.load(out / f'rank{r}.pt', weights_only=True) for r in (0, 1)]
    saved = unwrap(torch.load(checkpoint, map_location='cpu', weights_only=False))
    params = [k for k, v in ranks[0].items() if v.is_floating_point() and 'running_' not in k]
    assert params and ranks[0].keys() == ranks[1].keys()
    for k in params:
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0, msg=f'ranks differ at {k}')
        torch.testing.assert_close(ranks[0][k], saved[k], rtol=0, atol=0, msg=f'checkpoint differs at {k}')


def test_classification_two_processes(tmp_path):
    from classification import demo_data
    data = demo_data.make(tmp_path / 'data', seed=0, per_class={'train': 4, 'val': 2},
                          classes=('circle', 'square', 'triangle'), size=16)
    cfg = tmp_path / 'tiny.yaml'
    cfg.write_text(yaml.safe_dump(dict(
        MODEL=dict(NAME='test_resnet', NUM_CLASSES=3, DROP_PATH=0.1), DATA=dict(IMG_SIZE=16, BATCH_SIZE=2,
                                                                               NUM_WORKERS=0),
        TRAIN=dict(EPOCHS=1, WARMUP_EPOCHS=0, BASE_LR=0.05), AMP=dict(ENABLE=False), TEST=dict(CROP_PCT=1.0),
        CPU_THREADS=1)))
    work = tmp_path / 'work'
    r = _torchrun(tmp_path, cfg, '--data-path', data, '--work-dir', work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert '2 process(es) on cpu' in r.stdout and '3 steps/epoch' in r.stdout  # 12 images / 2 processes / 2
    _same_weights_in_both_processes(tmp_path, Path((work / 'last_checkpoint').read_text().strip()),
                                    lambda ckpt: ckpt['model'])


# a few iterations of the task's demo config (both iteration-based), no validation
MM_FEW_STEPS = ('train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=2',
                'train_dataloader.num_workers=0', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None')


@pytest.mark.mm
@pytest.mark.slow  # about 45 s each on 2 loaded cores (classification's run above stays in the default set)
@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_mm_task_two_processes(tmp_path, task):
    import importlib
    data = importlib.import_module(f'{task}.demo_data').make(tmp_path / 'data', seed=1, n_train=8, n_val=2)
    (config,) = (ROOT / 'configs' / task).glob('demo_*.py')
    work = tmp_path / 'work'
    r = _torchrun(tmp_path, config, '--data-path', data, '--work-dir', work, '--opts', *MM_FEW_STEPS)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _same_weights_in_both_processes(tmp_path, Path((work / 'last_checkpoint').read_text().strip()),
                                    lambda ckpt: ckpt['state_dict'])
