"""Detection: the backbone adapter, every config, the demo data, the train/test tools and their error messages."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.mm

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / 'configs' / 'detection').glob('*.py'))
DEMO = next(p for p in CONFIGS if p.name.startswith('demo_'))
# one config per algorithm is built in the default run, every config under -m slow
CHEAP = {'retinanet_acmix-r50_fpn_8xb2-1x_coco.py', 'mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-1x_coco.py',
         'cascade-mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-3x_coco.py', DEMO.name}


def _cfg(path):
    from mmengine.config import Config
    return Config.fromfile(str(path))


def _backbone_kwargs(cfg):
    bb = dict(cfg.model.backbone)
    for k in ('type', 'init_cfg', 'pretrained', 'frozen_stages', 'norm_eval', 'out_norm', 'pad_to'):
        bb.pop(k, None)
    return bb


def _registered(model_name):
    import timm
    import models  # noqa: F401
    return model_name in timm.list_models()


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_channels_match_backbone(path):
    """The neck's in_channels of every config equal what its backbone returns (meta-device model, no weights)."""
    from models.mm_backbone import stage_channels
    cfg = _cfg(path)
    assert cfg.default_scope == 'mmdet'
    assert 'models.mm_backbone' in cfg.custom_imports['imports']
    bb = _backbone_kwargs(cfg)
    name = bb.pop('model_name')
    if not _registered(name):
        pytest.skip(f'{name} is not registered yet')
    out_indices = bb.pop('out_indices')
    assert stage_channels(name, out_indices, **bb) == list(cfg.model.neck.in_channels)


@pytest.mark.parametrize('path', [pytest.param(p, marks=() if p.name in CHEAP else pytest.mark.slow) for p in CONFIGS],
                         ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    """mmdet builds the whole detector from the config (pretrained weights off: no files needed)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import init_default_scope
    import models.mm_backbone  # noqa: F401
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdet')
    cfg = _cfg(path)
    if not _registered(cfg.model.backbone.model_name):
        pytest.skip(f'{cfg.model.backbone.model_name} is not registered yet')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.backbone.out_channels == list(cfg.model.neck.in_channels)


# ----------------------------------------------------------------------------------------------- adapter
def _adapter(name='resnet18', **kw):
    from models.mm_backbone import ACmixBackbone
    return ACmixBackbone(name, **kw)


@pytest.mark.parametrize('name,kw', [('resnet18', {}), ('acmix_resnet26', {}),
                                     ('acmix_swin_tiny_patch4_window7_224',
                                      dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))),
                                     ('swin_tiny_patch4_window7_224', dict(strict_img_size=False))])
@pytest.mark.parametrize('size', [(96, 160), (97, 131)])
def test_adapter_shapes_any_size(name, kw, size):
    if not _registered(name):
        pytest.skip(f'{name} not registered')
    b = _adapter(name, **kw).eval()
    with torch.no_grad():
        outs = b(torch.randn(2, 3, *size))
    assert [o.shape[1] for o in outs] == b.out_channels
    assert [tuple(o.shape[2:]) for o in outs] == [(-(-size[0] // s), -(-size[1] // s)) for s in (4, 8, 16, 32)]
    assert b.strides == [4, 8, 16, 32]


def test_adapter_out_indices_subset():
    b = _adapter(out_indices=(1, 3))
    assert b.out_channels == [128, 512] and b.strides == [8, 32]
    assert len(b(torch.randn(1, 3, 64, 64))) == 2
    with pytest.raises(ValueError, match='out_indices'):
        _adapter(out_indices=(4,))


def test_frozen_stages_freeze_grads_and_bn_stats():
    b = _adapter('resnet18', frozen_stages=2)
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert any(n.startswith('body.conv1') for n in frozen)
    assert all(n.startswith(('body.conv1', 'body.bn1', 'body.layer1', 'body.layer2')) for n in frozen)
    assert any(n.startswith('body.layer2') for n in frozen)
    assert not any(n.startswith(('body.layer3', 'body.layer4')) for n in frozen)
    b.train()
    assert not b.body.bn1.training and not b.body.layer2[0].bn1.training
    assert b.body.layer3[0].bn1.training
    before = b.body.layer1[0].bn1.running_mean.clone()
    before3 = b.body.layer3[0].bn1.running_mean.clone()
    b(torch.randn(2, 3, 64, 64)).__len__()
    assert torch.equal(before, b.body.layer1[0].bn1.running_mean)
    assert not torch.equal(before3, b.body.layer3[0].bn1.running_mean)
    # gradients do not reach frozen parameters
    sum(o.sum() for o in b(torch.randn(1, 3, 64, 64))).backward()
    assert b.body.conv1.weight.grad is None and b.body.layer3[0].conv1.weight.grad is not None


def test_frozen_stages_zero_is_stem_only_and_norm_eval():
    b = _adapter('resnet18', frozen_stages=0, norm_eval=True).train()
    frozen = {n.split('.')[1] for n, p in b.named_parameters() if not p.requires_grad}
    assert frozen == {'conv1', 'bn1'}
    assert all(not m.training for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_frozen_stages_swin_layout():
    b = _adapter('swin_tiny_patch4_window7_224', frozen_stages=1, strict_img_size=False).train()
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(('body.patch_embed', 'body.layers_0.')) for n in frozen)
    assert any(n.startswith('body.layers_0.') for n in frozen)
    assert all(p.requires_grad for n, p in b.named_parameters() if n.startswith('body.layers_1.'))
    assert not b.body.patch_embed.training and not b.body.layers_0.training and b.body.layers_1.training


def test_pretrained_roundtrip_and_bad_keys(tmp_path):
    import timm
    from models.mm_backbone import CheckpointMismatchError
    full = timm.create_model('resnet18', num_classes=10)
    torch.save({'model': full.state_dict()}, tmp_path / 'ok.pth')
    b = _adapter(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ok.pth')))
    b.init_weights()
    assert torch.equal(b.body.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
    # DDP prefix and 'state_dict' wrapper are accepted
    torch.save({'state_dict': {'module.' + k: v for k, v in full.state_dict().items()}}, tmp_path / 'ddp.pth')
    _adapter(pretrained=str(tmp_path / 'ddp.pth')).init_weights()

    sd = full.state_dict()
    sd.pop('layer2.0.conv1.weight')
    sd['layer9.weight'] = torch.zeros(1)
    sd['layer1.0.conv1.weight'] = torch.zeros(3, 3, 3, 3)
    torch.save({'model': sd}, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        _adapter(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'bad.pth'))).init_weights()
    msg = str(err.value)
    assert 'layer2.0.conv1.weight' in msg and 'layer9.weight' in msg and 'layer1.0.conv1.weight' in msg
    from models._checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nope.pth'):
        _adapter(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth'))).init_weights()


def test_acmix_swin_checkpoint_through_family_filter(tmp_path):
    """A Swin-ACmix classification state dict (our layout) loads through models.swin's filter."""
    import timm
    if not _registered('acmix_swin_tiny_patch4_window7_224'):
        pytest.skip('acmix swin not registered')
    kw = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
    full = timm.create_model('acmix_swin_tiny_patch4_window7_224', **kw)
    torch.save({'model': full.state_dict()}, tmp_path / 'swin.pth')
    b = _adapter('acmix_swin_tiny_patch4_window7_224', pretrained=str(tmp_path / 'swin.pth'), **kw)
    b.init_weights()
    ref = dict(full.named_parameters())
    got = {k.replace('body.', '', 1): v for k, v in b.named_parameters()}
    key = next(k for k in ref if 'rate1' in k or 'dep_conv' in k)
    assert torch.equal(ref[key], got[key.replace('layers.', 'layers_', 1)])


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


@pytest.mark.slow
def test_demo_reaches_nontrivial_map(tmp_path):
    """The documented demo: full schedule on the default demo set; bbox mAP well above chance."""
    from detection import demo_data
    data = demo_data.make(tmp_path / 'data', seed=0)
    work = tmp_path / 'work'
    r = _run('train.py', DEMO, '--data-path', data, '--work-dir', work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = _run('test.py', DEMO, (work / 'last_checkpoint').read_text().strip(), '--data-path', data,
             '--work-dir', work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((work / 'metrics.json').read_text())
    assert metrics['bbox_mAP'] > 0.3, metrics  # measured 0.589 (seed 0, 8.6 min on a loaded 2-core CPU)
