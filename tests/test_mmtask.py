"""mmtask, the mmengine glue of detection and segmentation: the options every task shares and the torch.load policy."""
import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.mm

ROOT = Path(__file__).resolve().parents[1]


def test_checkpoint_policy_is_scoped_to_the_block(tmp_path, monkeypatch):
    """Inside mmengine_checkpoints() a HistoryBuffer round-trips through torch.load(weights_only=True); outside,
    mmengine, torch's allow-list and the environment are as they were (nothing changes at import)."""
    from mmengine.logging import HistoryBuffer

    from mmtask import mmengine_checkpoints  # imports torch modules that register their own safe globals
    before = (HistoryBuffer.__dict__.get('__getstate__'), set(map(str, torch.serialization.get_safe_globals())))
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    monkeypatch.setenv('ACMIX_TRUST_CHECKPOINTS', '1')
    buffer = HistoryBuffer()
    buffer.update(2.0)
    with mmengine_checkpoints():
        assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'
        torch.save({'hub': buffer}, tmp_path / 'ckpt.pth')
        monkeypatch.delenv('ACMIX_TRUST_CHECKPOINTS')
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert (HistoryBuffer.__dict__.get('__getstate__'), set(map(str, torch.serialization.get_safe_globals()))) == before
    with mmengine_checkpoints():
        loaded = torch.load(tmp_path / 'ckpt.pth', weights_only=True)['hub']
    assert loaded.current() == 2.0
    with pytest.raises(Exception, match='weights_only'):  # outside the block: torch's default policy
        torch.load(tmp_path / 'ckpt.pth', weights_only=True)


def test_common_options_reach_the_mmengine_config(tmp_path):
    """The flags of every task, and --opts as mmengine items or yacs-style pairs (mixed), applied last."""
    from mmtask import build_config
    from tools._dispatch import parse
    (config,) = (ROOT / 'configs/segmentation').glob('fpn_acmix-r50_*.py')
    task_cli, args = parse('train', [str(config), '--data-path', str(tmp_path), '--amp', '--opts',
                                     'train_cfg.max_iters=7', 'model.backbone.out_indices', '[0,1]',
                                     'data_root=elsewhere', '--resume'])
    assert task_cli.__name__ == 'segmentation.cli' and args.amp and args.resume == 'auto'
    cfg = build_config(args)
    assert cfg.train_cfg.max_iters == 7 and cfg.model.backbone.out_indices == [0, 1]
    assert cfg.data_root == 'elsewhere'  # --opts wins over --data-path
    assert cfg.train_dataloader.dataset.data_root == str(tmp_path)
    assert cfg.work_dir == str(Path('work_dirs') / config.stem) and cfg.launcher == 'none'
