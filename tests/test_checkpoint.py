"""Checkpoint files (``models._checkpoint``): reading, unwrapping, the one strict check and atomic writes.

Every user (timm's pretrained path through the families' filters, the mmdet/mmseg adapter, classification, mmtask,
tools/plot_rates.py) goes through these functions, so their contract is tested once here.
"""
import pickle

import pytest
import timm
import torch
from torch import nn

import models  # noqa: F401  (registers the acmix_* entrypoints)
from models._checkpoint import (CheckpointError, CheckpointMismatchError, atomic_save, atomic_write_text,
                                check_state_dict, read_checkpoint, read_last_checkpoint, unwrap_state_dict,
                                write_last_checkpoint)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_unwrap_every_layout():
    sd = _net().state_dict()
    layouts = [sd, {'model': sd, 'epoch': 3}, {'state_dict': {f'module.{k}': v for k, v in sd.items()}},
               {'model': {f'_orig_mod.module.{k}': v for k, v in sd.items()}}, {'state_dict': {'model': sd}}]
    for layout in layouts:
        out = unwrap_state_dict(layout)
        assert out.keys() == sd.keys() and all(out[k] is sd[k] for k in sd)
    with pytest.raises(CheckpointError, match=r"not tensors: \['epoch'\]"):
        unwrap_state_dict({'0.weight': torch.zeros(1), 'epoch': 3})


def test_mismatch_message_names_every_key_in_one_format():
    net = _net()
    sd = net.state_dict()
    sd.pop('0.weight')
    sd['9.weight'] = torch.zeros(1)
    sd['3.weight'] = torch.zeros(5, 4)
    with pytest.raises(CheckpointMismatchError) as err:
        check_state_dict(sd, net, source='x.pth')
    assert str(err.value) == ('x.pth does not fit Sequential: missing keys (1): 0.weight; unexpected keys (1): '
                              '9.weight; shape mismatches (1): 3.weight: checkpoint (5, 4) vs model (2, 4)')
    assert isinstance(err.value, KeyError) and isinstance(err.value, RuntimeError)  # timm's path and ours
    # a timm model is named as registered; long listings are cut with the count
    model = timm.create_model('resnet10t', num_classes=3)
    with pytest.raises(CheckpointMismatchError, match=r'checkpoint does not fit resnet10t: missing keys \(\d+\): '
                                                      r'.* \.\.\. \(\d+ in all\)$'):
        check_state_dict({}, model)


def test_never_stricter_than_torch(tmp_path):
    """A state dict without num_batches_tracked loads with load_state_dict(strict=True); so it passes the check."""
    net = _net()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
    check_state_dict(sd, net)
    _net().load_state_dict(sd, strict=True)
    bad = dict(net.state_dict(), **{'1.num_batches_tracked': torch.zeros(2)})  # present: the shape still counts
    with pytest.raises(CheckpointMismatchError, match='1.num_batches_tracked'):
        check_state_dict(bad, net)
    # through timm and a family's filter: an authors'-layout ResNet-ACmix file without these buffers
    kw = dict(layers=(1, 1, 1, 1), num_classes=10)
    ref = timm.create_model('acmix_resnet26', **kw).eval()
    file = {'state_dict': {f'module.{k}': v for k, v in ref.state_dict().items() if 'num_batches' not in k}}
    torch.save(file, tmp_path / 'authors.pth')
    model = timm.create_model('acmix_resnet26', pretrained=True, **kw, pretrained_cfg_overlay=dict(
        file=str(tmp_path / 'authors.pth'), num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_ignore_and_optional_keys():
    net = _net()
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith('3.')}
    check_state_dict(sd, net, ignore=('3.',))
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    check_state_dict(sd, shapes, optional=['3.weight', '3.bias'])
    with pytest.raises(CheckpointMismatchError, match=r'shape mismatches \(1\): 3.bias'):
        check_state_dict(dict(sd, **{'3.bias': torch.zeros(7)}), shapes, optional=['3.weight', '3.bias'])


def test_read_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nope.pth'):
        read_checkpoint(tmp_path / 'nope.pth')
    (tmp_path / 'obj.pth').write_bytes(pickle.dumps({'w': _net}, protocol=2))  # a pickled function: not plain data
    with pytest.raises(CheckpointError, match=r'cannot read checkpoint .*obj.pth with torch.load\(weights_only=True\)'):
        read_checkpoint(tmp_path / 'obj.pth')
    (tmp_path / 'cut.pth').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(CheckpointError, match='cut.pth'):
        read_checkpoint(tmp_path / 'cut.pth')
    torch.save({'model': {'a': torch.ones(2)}}, tmp_path / 'ok.pth')
    assert torch.equal(read_checkpoint(tmp_path / 'ok.pth')['model']['a'], torch.ones(2))


def test_atomic_writes_and_last_checkpoint(tmp_path, monkeypatch):
    atomic_save({'a': torch.ones(1)}, tmp_path / 'c.pth')
    write_last_checkpoint(tmp_path, tmp_path / 'c.pth')
    assert read_last_checkpoint(tmp_path) == (tmp_path / 'c.pth').resolve()
    assert read_last_checkpoint(tmp_path / 'empty') is None

    def fail(*args, **kwargs):
        raise OSError(28, 'No space left on device')  # ENOSPC

    monkeypatch.setattr(torch, 'save', fail)
    with pytest.raises(CheckpointError, match=r'could not write .*c.pth \(disk full\); the previous file is intact'):
        atomic_save({'a': torch.zeros(1)}, tmp_path / 'c.pth')
    assert torch.equal(read_checkpoint(tmp_path / 'c.pth')['a'], torch.ones(1))
    assert not list(tmp_path.glob('*.tmp'))
    atomic_write_text(str(tmp_path / 'gone.pth'), tmp_path / 'last_checkpoint')
    with pytest.raises(CheckpointError, match='names .*gone.pth, which does not exist'):
        read_last_checkpoint(tmp_path)


def test_resume_source_is_the_same_for_every_task(tmp_path):
    from models._checkpoint import resume_source
    assert resume_source(None, tmp_path) is None
    with pytest.raises(CheckpointError, match='last_checkpoint not found .*nothing to resume'):
        resume_source('auto', tmp_path)
    with pytest.raises(CheckpointError, match='--resume .*nope.pth: no such checkpoint'):
        resume_source(str(tmp_path / 'nope.pth'), tmp_path)
    atomic_save({}, tmp_path / 'c.pth')
    write_last_checkpoint(tmp_path, tmp_path / 'c.pth')
    assert resume_source('auto', tmp_path) == resume_source(str(tmp_path / 'c.pth'), tmp_path).resolve()
