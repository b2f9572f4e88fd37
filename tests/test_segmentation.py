"""Segmentation: every config, the demo data, the train/test tools (slide / TTA) and their error messages."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _mm_helpers import backbone_channels, build_model, build_params, configs, load
from PIL import Image

pytestmark = pytest.mark.mm

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = configs('segmentation')
DEMO = next(p for p in CONFIGS if p.name.startswith('demo_'))
CHEAP = {'fpn_acmix-r50_8xb4-40k_ade20k-512x512.py', 'upernet_acmix-swin-t_8xb2-160k_ade20k-512x512.py', DEMO.name}


def _head_in_channels(cfg):
    """What the backbone must deliver: FPN's in_channels, or UperNet's decode-head in_channels."""
    return list(cfg.model.neck.in_channels) if cfg.model.get('neck') else list(cfg.model.decode_head.in_channels)


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_channels_match_backbone(path):
    cfg = load(path)
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    chans = backbone_channels(cfg)
    assert chans == _head_in_channels(cfg)
    if cfg.model.get('auxiliary_head'):
        assert cfg.model.auxiliary_head.in_channels == chans[cfg.model.auxiliary_head.in_index]
    # SyncBN only through mmtask in distributed runs: configs use BN
    assert 'SyncBN' not in cfg.pretty_text


@pytest.mark.parametrize('path', build_params(CONFIGS, CHEAP))
def test_config_builds(path):
    cfg = load(path)
    assert build_model(cfg, 'mmseg').backbone.out_channels == _head_in_channels(cfg)


# ----------------------------------------------------------------------------------------------- data + tools
@pytest.fixture(scope='module')
def tiny_ade(tmp_path_factory):
    from segmentation import demo_data
    return demo_data.make(tmp_path_factory.mktemp('ade'), seed=1, n_train=8, n_val=3)


def test_demo_data_deterministic_and_read_by_mmseg(tiny_ade, tmp_path):
    from mmseg.datasets import ADE20KDataset
    from segmentation import demo_data
    other = demo_data.make(tmp_path / 'again', seed=1, n_train=8, n_val=3)
    for f in ('images/training/ADE_train_00000001.jpg', 'annotations/training/ADE_train_00000001.png'):
        assert (tiny_ade / f).read_bytes() == (other / f).read_bytes()
    ds = ADE20KDataset(data_root=str(tiny_ade),
                       data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                       pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True)])
    assert len(ds) == 3
    classes = ds.metainfo['classes']
    sample = ds[0]
    labels = set(np.unique(sample['gt_seg_map']).tolist()) - {255}
    # reduce_zero_label maps ADE index k to k - 1: the names are ADE20K's
    expected = {name for name, (idx, _) in demo_data.ADE_CLASSES.items()}
    assert {classes[i].strip() for i in labels} <= expected
    assert sample['gt_seg_map'].shape == sample['img'].shape[:2]


def _run(tool, *args):
    env = dict(os.environ, PYTHONHASHSEED='0', OMP_NUM_THREADS='2')
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_instant_train_then_test(tiny_ade, tmp_path):
    """tools/train.py then tools/test.py (whole, --slide, --tta) on tiny data: last_checkpoint, metrics.json."""
    work = tmp_path / 'work'
    r = _run('train.py', DEMO, '--data-path', tiny_ade, '--work-dir', work,
             '--opts', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'train_dataloader.batch_size=2',
             'param_scheduler.0.end=2', 'param_scheduler.1.begin=2', 'param_scheduler.1.end=4',
             'default_hooks.checkpoint.interval=4')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = (work / 'last_checkpoint').read_text().strip()
    assert Path(last).is_file() and Path(last).name == 'iter_4.pth'
    for extra in ([], ['--slide', '--crop-size', '64', '64'], ['--tta']):
        out = work / ('test' + '_'.join(extra))
        r = _run('test.py', DEMO, last, '--data-path', tiny_ade, '--work-dir', out, *extra)
        assert r.returncode == 0, (extra, r.stdout[-3000:] + r.stderr[-3000:])
        metrics = json.loads((out / 'metrics.json').read_text())
        assert 0.0 <= metrics['mIoU'] <= 100.0
        per_class = metrics['per_class_iou']
        assert len(per_class) == 150 and 'sky' in per_class
        assert per_class['sky'] is not None  # present in every scene


# ----------------------------------------------------------------------------------------------- bad input
def _check(root, split='validation', **kw):
    from segmentation.data_check import check_seg_split
    args = dict(data_root=str(root), img_dir=f'images/{split}', ann_dir=f'annotations/{split}', img_suffix='.jpg',
                seg_suffix='.png', num_classes=150, reduce_zero_label=True, split=split)
    args.update(kw)
    return check_seg_split(**args)


def test_bad_inputs_name_the_problem(tiny_ade, tmp_path):
    from segmentation.data_check import DatasetError
    assert _check(tiny_ade) == 3
    bad = tmp_path / 'bad'
    shutil.copytree(tiny_ade, bad)
    with pytest.raises(DatasetError, match='annotation folder not found'):
        _check(bad, ann_dir='annotations/nowhere')
    label = bad / 'annotations/validation/ADE_val_00000002.png'
    arr = np.asarray(Image.open(label))
    Image.fromarray(arr[:-3]).save(label)
    with pytest.raises(DatasetError, match=r'ADE_val_00000002.png is \d+x\d+ but its image is'):
        _check(bad)
    arr = arr.copy()
    arr[0, 0] = 151
    Image.fromarray(arr).save(label)
    with pytest.raises(DatasetError, match=r'ADE_val_00000002.png holds values \[151\] outside 0..150'):
        _check(bad)
    label.unlink()
    with pytest.raises(DatasetError, match='1 of 3 images have no label map.*ADE_val_00000002'):
        _check(bad)


def test_cli_reports_missing_data(tmp_path):
    r = _run('train.py', DEMO, '--data-path', tmp_path, '--work-dir', tmp_path / 'w')
    assert r.returncode == 2  # a user error, as in every task
    assert 'error: ' in r.stderr and 'images/training' in r.stderr
