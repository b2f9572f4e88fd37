"""Detection: every config, the demo data, the train/test tools and their error messages."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _mm_helpers import backbone_channels, build_model, build_params, configs, load

pytestmark = pytest.mark.mm

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = configs('detection')
DEMO = next(p for p in CONFIGS if p.name.startswith('demo_'))
# one config per algorithm is built in the default run, every config under -m slow
CHEAP = {'retinanet_acmix-r50_fpn_8xb2-1x_coco.py', 'mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-1x_coco.py',
         'cascade-mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-3x_coco.py', DEMO.name}


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_channels_match_backbone(path):
    """The neck's in_channels of every config equal what its backbone returns (meta-device model, no weights)."""
    cfg = load(path)
    assert cfg.default_scope == 'mmdet'
    assert 'models.mm_backbone' in cfg.custom_imports['imports']
    assert backbone_channels(cfg) == list(cfg.model.neck.in_channels)


@pytest.mark.parametrize('path', build_params(CONFIGS, CHEAP))
def test_config_builds(path):
    """mmdet builds the whole detector from the config (pretrained weights off: no files needed)."""
    cfg = load(path)
    assert build_model(cfg, 'mmdet').backbone.out_channels == list(cfg.model.neck.in_channels)


# ----------------------------------------------------------------------------------------------- data + tools
@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    from detection import demo_data
    return demo_data.make(tmp_path_factory.mktemp('coco'), seed=1, n_train=8, n_val=4)


def test_demo_data_deterministic_and_read_by_mmdet(tiny_coco, tmp_path):
    from detection import demo_data
    from mmdet.datasets import CocoDataset
    other = demo_data.make(tmp_path / 'again', seed=1, n_train=8, n_val=4)
    for f in ('annotations/instances_train2017.json', 'train2017/000000000001.jpg'):
        assert (tiny_coco / f).read_bytes() == (other / f).read_bytes()
    ds = CocoDataset(data_root=str(tiny_coco), ann_file='annotations/instances_val2017.json',
                     data_prefix=dict(img='val2017/'), test_mode=True, pipeline=[])
    assert len(ds) == 4
    coco = json.loads((tiny_coco / 'annotations/instances_val2017.json').read_text())
    assert len(coco['categories']) == 80
    names = {c['id']: c['name'] for c in coco['categories']}
    classes = CocoDataset.METAINFO['classes']
    # label indices are those of real COCO: the label of each instance names its category
    for info in ds:
        raw = [a for a in coco['annotations'] if a['image_id'] == info['img_id']]
        assert sorted(classes[i['bbox_label']] for i in info['instances']) == sorted(names[a['category_id']] for a in raw)
    assert {names[a['category_id']] for a in coco['annotations']} <= set(demo_data.DEMO_CLASSES)


def _run(tool, *args, env_extra=None):
    env = dict(os.environ, PYTHONHASHSEED='0', OMP_NUM_THREADS='2')
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


# the demo recipe is iteration-based: 2 steps of batch 2, checkpoint after them
INSTANT = ['train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=2',
           'model.test_cfg.rpn.max_per_img=100']


def test_instant_train_then_test(tiny_coco, tmp_path):
    """tools/train.py then tools/test.py on 8 tiny images: last_checkpoint and metrics.json as documented."""
    work = tmp_path / 'work'
    r = _run('train.py', DEMO, '--data-path', tiny_coco, '--work-dir', work, '--opts', *INSTANT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = (work / 'last_checkpoint').read_text().strip()
    assert Path(last).is_file() and Path(last).name == 'iter_2.pth'
    r = _run('test.py', DEMO, last, '--data-path', tiny_coco, '--work-dir', work / 'test')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((work / 'test' / 'metrics.json').read_text())
    for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP'):
        assert 0.0 <= metrics[key] <= 1.0
    # resume: two more steps continue from step 2 (optimizer, scheduler and iteration restored)
    r = _run('train.py', DEMO, '--data-path', tiny_coco, '--work-dir', work, '--resume',
             '--opts', *INSTANT[1:], 'train_cfg.max_iters=4')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'resumed' in (r.stdout + r.stderr).lower()
    assert Path((work / 'last_checkpoint').read_text().strip()).name == 'iter_4.pth'


# ----------------------------------------------------------------------------------------------- bad input
def _check(root, **kw):
    from detection.data_check import check_coco_split
    from mmdet.datasets import CocoDataset
    args = dict(data_root=str(root), ann_file='annotations/instances_train2017.json', img_prefix='train2017/',
                classes=CocoDataset.METAINFO['classes'], split='train', require_annotations=True)
    args.update(kw)
    return check_coco_split(**args)


def test_bad_inputs_name_the_problem(tiny_coco, tmp_path):
    import shutil
    from detection.data_check import DatasetError
    assert _check(tiny_coco)['images'] == 8
    with pytest.raises(DatasetError, match='annotation file not found.*instances_x.json'):
        _check(tiny_coco, ann_file='annotations/instances_x.json')
    with pytest.raises(DatasetError, match='image folder not found'):
        _check(tiny_coco, img_prefix='nowhere/')
    bad = tmp_path / 'bad'
    shutil.copytree(tiny_coco, bad)
    (bad / 'train2017' / '000000000002.jpg').unlink()
    with pytest.raises(DatasetError, match=r'1 of 8 images .* missing.*000000000002.jpg'):
        _check(bad)
    ann = json.loads((tiny_coco / 'annotations/instances_train2017.json').read_text())
    empty = dict(ann, annotations=[])
    (bad / 'annotations' / 'instances_train2017.json').write_text(json.dumps(empty))
    shutil.copy(tiny_coco / 'train2017' / '000000000002.jpg', bad / 'train2017')
    with pytest.raises(DatasetError, match='none of the 8 images .* has an annotation'):
        _check(bad)
    renamed = dict(ann, categories=[dict(c, name='ball' if c['name'] == 'sports ball' else c['name'])
                                    for c in ann['categories']])
    (bad / 'annotations' / 'instances_train2017.json').write_text(json.dumps(renamed))
    with pytest.raises(DatasetError, match=r"categories \['ball'\]"):
        _check(bad)


def test_cli_reports_missing_data(tmp_path):
    r = _run('train.py', DEMO, '--data-path', tmp_path, '--work-dir', tmp_path / 'w')
    assert r.returncode == 2  # a user error, as in every task
    assert 'error: ' in r.stderr and 'instances_train2017.json' in r.stderr
    r = _run('train.py', DEMO, '--data-path', tmp_path / 'missing')
    assert r.returncode == 2 and 'no such directory' in r.stderr
