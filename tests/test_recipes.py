"""Every config's resolved training recipe against the values of the original code it reproduces.

``ORIGINALS`` holds what each original repository trains, read from the file named in its ``source``.  ``CONFIGS``
maps every config under ``configs/`` to its original and to the deviations its header documents, each with our
value and the reason.  The tests resolve each config the way training does (yacs loader and the classification
builders; mmengine's ``Config.fromfile``) and fail when a value differs from the original without a listed
deviation, and when a listed deviation no longer holds (so the list stays true).

Every config is written for 8 processes (GPUs); totals below are per optimizer step over all of them.
"""
import ast
import math
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_ROOT = ROOT / 'configs'
GPUS = 8
MAX_INHERITANCE_LEVELS = 3  # the config itself, its bases, their bases


# ----------------------------------------------------------------------------------------------- the originals
def _no_decay_none(name: str, param: torch.Tensor) -> bool:
    """torch.optim.SGD(model.parameters(), weight_decay=...): every parameter is decayed."""
    return False


def _no_decay_deit_pvt(name: str, param: torch.Tensor) -> bool:
    """timm 0.3 add_weight_decay with PVT's no_weight_decay() = {'cls_token'}: 1-D, biases and the class token."""
    return param.ndim <= 1 or name.endswith('.bias') or name.split('.')[-1] == 'cls_token'


def _no_decay_swin(name: str, param: torch.Tensor) -> bool:
    """Swin's set_weight_decay: 1-D, biases, absolute_pos_embed and names containing relative_position_bias_table."""
    return (param.ndim <= 1 or name.endswith('.bias') or name.split('.')[-1] == 'absolute_pos_embed'
            or 'relative_position_bias_table' in name)


_RESNET = dict(
    source=('LeapLabTHU/ACmix', 'ResNet/main.py'),  # + ResNet/README.md: --batch-size 128 in one DataParallel process
    optimizer='SGD', momentum=0.9, nesterov=False, lr=0.1, total_batch=128, weight_decay=1e-4,
    no_decay=_no_decay_none, warmup_epochs=5, warmup_start_lr=0.1 / 4, warmup_prefix=True, min_lr=0.0, epochs=90,
    scheduler='cosine', lr_update='iteration', clip_grad=None, label_smoothing=0.1, smoothing_spread='others',
    mixup=0.0, cutmix=0.0, reprob=0.0, auto_augment='', color_jitter=None, repeated_aug=False, ema=False,
    interpolation='bilinear', img_size=224, crop_pct=0.875, drop_path=0.0, amp='float32', zero_init_last=False)
_ACMIX_INIT = {'acmix_init': 'kaiming'}  # the authors' global Kaiming init also covers dep_conv (ACmix models only)
_SAN = dict(  # hszhao/SAN config/imagenet/imagenet_san{10,15,19}_patchwise.yaml (the same training keys), tool/train.py
    optimizer='SGD', momentum=0.9, nesterov=False, lr=0.1, total_batch=256, weight_decay=1e-4,
    no_decay=_no_decay_none, warmup_epochs=0, min_lr=0.0, epochs=100, scheduler='cosine', lr_update='epoch',
    clip_grad=None, label_smoothing=0.1, smoothing_spread='others', mixup=0.0, cutmix=0.0, reprob=0.0,
    auto_augment='', color_jitter=None, repeated_aug=False, ema=False, interpolation='bilinear', img_size=224,
    crop_pct=0.875, drop_path=0.0, amp='float32')
_PVT = dict(
    source=('whai362/PVT', 'classification/main.py'),  # + configs/pvt/pvt_{tiny,small}.py, README: 8 GPUs x 128
    optimizer='AdamW', betas=(0.9, 0.999), eps=1e-8, lr=5e-4 * 1024 / 512, total_batch=1024, weight_decay=0.05,
    no_decay=_no_decay_deit_pvt, warmup_epochs=5, warmup_start_lr=1e-6, warmup_prefix=False, min_lr=1e-5,
    epochs=300, scheduler='cosine', lr_update='epoch', clip_grad=None, label_smoothing=0.1, mixup=0.8, cutmix=1.0,
    reprob=0.25, auto_augment='rand-m9-mstd0.5-inc1', color_jitter=0.4, repeated_aug=True, ema=False,
    interpolation='bicubic', img_size=224, crop_pct=0.875, drop_path=0.1, amp='float16')
_SWIN = dict(
    source=('LeapLabTHU/ACmix', 'Swin-Transformer/config.py'),  # + configs/*.yaml, README: 8 GPUs x 128
    optimizer='AdamW', betas=(0.9, 0.999), eps=1e-8, lr=5e-4 * 1024 / 512, total_batch=1024, weight_decay=0.05,
    no_decay=_no_decay_swin, warmup_epochs=20, warmup_start_lr=5e-7 * 2, warmup_prefix=False, min_lr=5e-6 * 2,
    epochs=300, scheduler='cosine', lr_update='iteration', clip_grad=5.0, label_smoothing=0.1, mixup=0.8,
    cutmix=1.0, reprob=0.25, auto_augment='rand-m9-mstd0.5-inc1', color_jitter=0.4, repeated_aug=False, ema=False,
    interpolation='bicubic', img_size=224, crop_pct=0.875, amp='float16')

_SWIN_MS_CROP = (('choice', (
    (('resize', tuple((1333, s) for s in range(480, 801, 32)), None),),
    (('resize', ((1333, 400), (1333, 500), (1333, 600)), None), ('crop', (384, 600)),
     ('resize', tuple((1333, s) for s in range(480, 801, 32)), None)),
)),)
_COCO_1333 = (('resize', ((1333, 800),), None),)
_ADE_TRAIN = (('resize', ((2048, 512),), (0.5, 2.0)), ('crop', (512, 512)))
_ADE_TEST = (('resize', ((2048, 512),), None),)
_SWIN_DET_NO_DECAY = frozenset({'absolute_pos_embed', 'relative_position_bias_table', 'norm'})

_MMDET_R50 = dict(
    optimizer='SGD', momentum=0.9, weight_decay=1e-4, no_decay_keys=frozenset(), clip_grad=None, warmup_iters=500,
    warmup_ratio=0.001, epochs=12, milestones=(8, 11), total_batch=16, train_pipeline=_COCO_1333,
    test_pipeline=_COCO_1333, frozen_stages=1, norm_eval=True, amp='float32')
_PVT_DET = dict(
    optimizer='AdamW', weight_decay=1e-4, no_decay_keys=frozenset(), clip_grad=None, warmup_iters=500,
    warmup_ratio=0.001, epochs=12, milestones=(8, 11), total_batch=16, train_pipeline=_COCO_1333,
    test_pipeline=_COCO_1333, drop_path=0.1, frozen_stages=-1, amp='float32')
_SWIN_DET = dict(
    optimizer='AdamW', lr=1e-4, weight_decay=0.05, no_decay_keys=_SWIN_DET_NO_DECAY, clip_grad=None,
    warmup_iters=500, warmup_ratio=0.001, total_batch=16, train_pipeline=_SWIN_MS_CROP, test_pipeline=_COCO_1333,
    frozen_stages=-1, amp='float16')
_SWIN_DET_1X = dict(_SWIN_DET, epochs=12, milestones=(8, 11))
_SWIN_DET_3X = dict(_SWIN_DET, epochs=36, milestones=(27, 33), drop_path=0.2)
_PVT_FPN = dict(
    optimizer='AdamW', lr=2e-4, weight_decay=1e-4, no_decay_keys=frozenset(), clip_grad=None, warmup_iters=None,
    iters=40000, poly_power=0.9, poly_begin=0, total_batch=32, train_pipeline=_ADE_TRAIN,
    test_pipeline=(('align_resize_32', ((2048, 512),), None),), drop_path=0.1, frozen_stages=-1, amp='float32')
_SWIN_DET_REPO = 'SwinTransformer/Swin-Transformer-Object-Detection'
_SWIN_SEG_REPO = 'SwinTransformer/Swin-Transformer-Semantic-Segmentation'

ORIGINALS = {
    # ImageNet
    'resnet-acmix': _RESNET,
    **{f'san{d}': dict(_SAN, source=('hszhao/SAN', f'config/imagenet/imagenet_san{d}_patchwise.yaml'))
       for d in (10, 15, 19)},
    'pvt': _PVT,
    'swin-t': dict(_SWIN, drop_path=0.2),
    'swin-s': dict(_SWIN, drop_path=0.3),
    # COCO
    'mmdet-retinanet-r50': dict(_MMDET_R50, lr=0.01, source=(
        'open-mmlab/mmdetection', 'configs/retinanet/retinanet_r50_fpn_1x_coco.py')),
    'mmdet-mask-rcnn-r50': dict(_MMDET_R50, lr=0.02, source=(
        'open-mmlab/mmdetection', 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')),
    **{f'pvt-retinanet-{s}': dict(_PVT_DET, lr=1e-4, source=(
        'whai362/PVT', f'detection/configs/retinanet_pvt_{s}_fpn_1x_coco.py')) for s in 'ts'},
    **{f'pvt-mask-rcnn-{s}': dict(_PVT_DET, lr=2e-4, source=(
        'whai362/PVT', f'detection/configs/mask_rcnn_pvt_{s}_fpn_1x_coco.py')) for s in 'ts'},
    'swin-mask-rcnn-t-1x': dict(_SWIN_DET_1X, drop_path=0.1, source=(
        _SWIN_DET_REPO, 'configs/swin/mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800_adamw_1x_coco.py')),
    **{f'swin-mask-rcnn-{s}-3x': dict(_SWIN_DET_3X, source=(
        _SWIN_DET_REPO, f'configs/swin/mask_rcnn_swin_{size}_patch4_window7_mstrain_480-800_adamw_3x_coco.py'))
       for s, size in (('t', 'tiny'), ('s', 'small'))},
    **{f'swin-cascade-{s}-3x': dict(_SWIN_DET_3X, source=(
        _SWIN_DET_REPO,
        f'configs/swin/cascade_mask_rcnn_swin_{size}_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py'))
       for s, size in (('t', 'tiny'), ('s', 'small'))},
    # ADE20K
    **{f'pvt-fpn-{s}': dict(_PVT_FPN, source=('whai362/PVT', f'segmentation/configs/sem_fpn/PVT/fpn_pvt_{s}_ade20k_40k.py'))
       for s in 'ts'},
    'pvt-fpn-r50': dict(_PVT_FPN, optimizer='SGD', lr=0.02, momentum=0.9, weight_decay=5e-4, norm_eval=False,
                        drop_path=0.0,
                        source=('whai362/PVT', 'segmentation/configs/sem_fpn/fpn_r50_512x512_40k_ade20k.py')),
    **{f'swin-upernet-{s}': dict(
        optimizer='AdamW', lr=6e-5, weight_decay=0.01, no_decay_keys=_SWIN_DET_NO_DECAY, clip_grad=None,
        warmup_iters=1500, warmup_ratio=1e-6, iters=160000, poly_power=1.0, poly_begin=0, total_batch=16,
        train_pipeline=_ADE_TRAIN, test_pipeline=_ADE_TEST, drop_path=0.3, frozen_stages=-1, amp='float32',
        source=(_SWIN_SEG_REPO, f'configs/swin/upernet_swin_{size}_patch4_window7_512x512_160k_ade20k.py'))
       for s, size in (('t', 'tiny'), ('s', 'small'))},
}

# ------------------------------------------------------------------------------------- deviations (ours, reason)
_AMP = ('float16', 'mixed precision for speed and memory; AMP.ENABLE False trains in float32 as the original')
_TIMM_SMOOTHING = ('all', "timm's label smoothing spreads eps over all classes, the original over the others")
RESNET_DEV = dict(
    warmup_prefix=(False, "timm's cosine spans the warm-up too (at most 0.052 x lr lower than the authors')"),
    smoothing_spread=_TIMM_SMOOTHING, amp=_AMP,
)
SAN_DEV = dict(lr_update=('iteration', 'the same cosine, sampled per iteration'),
               smoothing_spread=_TIMM_SMOOTHING, amp=_AMP)
PVT_DEV = dict(lr_update=('iteration', 'the same schedule, sampled per iteration'))
SWIN_DET_DEV = dict(
    no_decay_keys=(_SWIN_DET_NO_DECAY | {'rate1', 'rate2'}, "ours: ACmix's rates undecayed as in ImageNet training"),
    amp=('float32', 'mixed precision is the --amp flag of tools/train.py'))
SWIN_SEG_DEV = dict(
    no_decay_keys=SWIN_DET_DEV['no_decay_keys'],
    poly_begin=(1500, "mmseg 1.x's port: the decay starts after the warm-up"))
PVT_FPN_DEV = dict(test_pipeline=(_ADE_TEST, 'mmseg 1.x has no AlignResize; ACmixBackbone pads to 32 instead'))
DEMO = None  # CPU demos on generated data: not a recipe of the paper or of an original

# config path (relative to configs/) -> (original, its extra values, deviations {field: (our value, reason)})
CONFIGS = {
    **{f'classification/acmix_resnet{d}.yaml': ('resnet-acmix', _ACMIX_INIT, RESNET_DEV) for d in (26, 38, 50)},
    **{f'classification/{m}.yaml': ('resnet-acmix', {}, RESNET_DEV)
       for m in ('conv_resnet26', 'conv_resnet38', 'resnet50')},
    **{f'classification/ablations/acmix_resnet26_{a}.yaml': ('resnet-acmix', _ACMIX_INIT, RESNET_DEV) for a in (
        'mix_attn_only', 'mix_conv_only', 'mix_fixed', 'mix_learnable', 'shift_fixed_kernel', 'shift_shift_init',
        'shift_tensor')},
    **{f'classification/{p}san{d}.yaml': (f'san{d}', {}, SAN_DEV) for p in ('', 'acmix_') for d in (10, 15, 19)},
    **{f'classification/{m}.yaml': ('pvt', {}, PVT_DEV)
       for m in ('pvt_v1_tiny', 'pvt_v1_small', 'acmix_pvt_tiny', 'acmix_pvt_small')},
    **{f'classification/{p}swin_{s}_patch4_window7_224.yaml': (f'swin-{s[0]}', {}, {})
       for p in ('', 'acmix_') for s in ('tiny', 'small')},
    **{f'classification/ablations/acmix_swin_tiny_{a}.yaml': ('swin-t', {}, {}) for a in (
        'mix_attn_only', 'mix_conv_only', 'mix_fixed', 'mix_learnable', 'shift_fixed_kernel', 'shift_shift_init',
        'shift_tensor')},
    'classification/demo.yaml': DEMO,
    # COCO: the ACmix and SAN backbones take the recipe of their baseline twin (the paper trains no such detector)
    **{f'detection/retinanet_{b}_fpn_8xb2-1x_coco.py': ('mmdet-retinanet-r50', {}, {})
       for b in ('r50', 'acmix-r50', 'san10', 'acmix-san10')},
    **{f'detection/mask-rcnn_{b}_fpn_8xb2-1x_coco.py': ('mmdet-mask-rcnn-r50', {}, {})
       for b in ('r50', 'acmix-r50', 'san10', 'acmix-san10')},
    **{f'detection/{a}_{p}pvt-{s}_fpn_8xb2-1x_coco.py': (f'pvt-{a}-{s}', {}, {})
       for a in ('retinanet', 'mask-rcnn') for p in ('', 'acmix-') for s in 'ts'},
    **{f'detection/mask-rcnn_{p}swin-t_fpn_8xb2-ms-crop-1x_coco.py': ('swin-mask-rcnn-t-1x', {}, SWIN_DET_DEV)
       for p in ('', 'acmix-')},
    **{f'detection/mask-rcnn_{p}swin-s_fpn_8xb2-ms-crop-1x_coco.py': ('swin-mask-rcnn-t-1x', {}, dict(
        SWIN_DET_DEV, drop_path=(0.2, "Swin has no Swin-S 1x config: its Swin-S 3x value"))) for p in ('', 'acmix-')},
    **{f'detection/mask-rcnn_{p}swin-{s}_fpn_8xb2-ms-crop-3x_coco.py': (f'swin-mask-rcnn-{s}-3x', {}, SWIN_DET_DEV)
       for p in ('', 'acmix-') for s in 'ts'},
    **{f'detection/cascade-mask-rcnn_{p}swin-{s}_fpn_8xb2-ms-crop-3x_coco.py': (f'swin-cascade-{s}-3x', {},
                                                                                 SWIN_DET_DEV)
       for p in ('', 'acmix-') for s in 'ts'},
    'detection/demo_mask-rcnn_acmix-swin-mini_fpn_1xb4-500it_coco.py': DEMO,
    # ADE20K
    **{f'segmentation/fpn_{p}pvt-{s}_8xb4-40k_ade20k-512x512.py': (f'pvt-fpn-{s}', {}, PVT_FPN_DEV)
       for p in ('', 'acmix-') for s in 'ts'},
    'segmentation/fpn_r50_8xb4-40k_ade20k-512x512.py': ('pvt-fpn-r50', {'backbone': 'resnet50c'}, dict(
        PVT_FPN_DEV, backbone=('resnet50', "timm's torchvision-layout ResNet-50, the layout of ACmix-ResNet-50, "
                                           "instead of mmseg's ResNetV1c (deep stem)"))),
    **{f'segmentation/fpn_{b}_8xb4-40k_ade20k-512x512.py': ('pvt-fpn-r50', {}, PVT_FPN_DEV)
       for b in ('acmix-r50', 'san10', 'acmix-san10')},
    **{f'segmentation/upernet_{p}swin-{s}_8xb2-160k_ade20k-512x512.py': (f'swin-upernet-{s}', {}, SWIN_SEG_DEV)
       for p in ('', 'acmix-') for s in 'ts'},
    'segmentation/demo_fpn_acmix-swin-mini_1xb8-400it_ade20k-128x128.py': DEMO,
}


def _config_files() -> list[str]:
    """Every config under configs/ (base fragments excluded)."""
    files = [p for p in CONFIG_ROOT.rglob('*') if p.suffix in ('.py', '.yaml')]
    return sorted(str(p.relative_to(CONFIG_ROOT)) for p in files
                  if '_base_' not in p.relative_to(CONFIG_ROOT).parts and not p.name.startswith('_base_'))


def _cases(task: str) -> list:
    return [pytest.param(path, id=path) for path, entry in CONFIGS.items()
            if entry is not DEMO and path.startswith(task + '/')]


# --------------------------------------------------------------------------------------------- structure checks
def test_every_config_is_in_the_table():
    files = _config_files()
    assert sorted(set(files) - set(CONFIGS)) == [], 'configs without an entry in CONFIGS (add the original)'
    assert sorted(set(CONFIGS) - set(files)) == [], 'CONFIGS entries without a config file'


def test_deviations_name_original_fields_and_reasons():
    for path, entry in CONFIGS.items():
        if entry is DEMO:
            continue
        key, extra, deviations = entry
        original = dict(ORIGINALS[key], **extra)
        for field, (ours, reason) in deviations.items():
            assert field in original, f'{path}: deviation {field!r} is not a value of {key}'
            assert reason and ours != original[field], f'{path}: deviation {field!r} equals the original'


def _bases(path: Path) -> list[Path]:
    text = path.read_text()
    if path.suffix == '.yaml':
        bases = (yaml.safe_load(text) or {}).get('_BASE_', [])
    else:
        bases = next((ast.literal_eval(node.value) for node in ast.parse(text).body if isinstance(node, ast.Assign)
                      and any(getattr(t, 'id', None) == '_base_' for t in node.targets)), [])
    return [(path.parent / b).resolve() for b in ([bases] if isinstance(bases, str) else bases)]


def _levels(path: Path) -> int:
    return 1 + max((_levels(b) for b in _bases(path)), default=0)


def _chain_text(path: Path) -> str:
    return path.read_text() + ''.join(_chain_text(b) for b in _bases(path))


@pytest.mark.parametrize('path', _config_files())
def test_inheritance_at_most_three_levels(path):
    assert _levels(CONFIG_ROOT / path) <= MAX_INHERITANCE_LEVELS


@pytest.mark.parametrize('path', [p for p, e in CONFIGS.items() if e is not DEMO])
def test_config_names_its_source_file(path):
    """The config or a base it inherits from names the original file (its header, see each file)."""
    repo, source = ORIGINALS[CONFIGS[path][0]]['source']
    text = _chain_text(CONFIG_ROOT / path)
    assert Path(source).name in text.replace('\n# ', ''), f'{path} does not name {repo} {source}'


# ------------------------------------------------------------------------------------------ resolved values
def _compare(path: str, resolved: dict) -> None:
    key, extra, deviations = CONFIGS[path]
    original = dict(ORIGINALS[key], **extra)
    problems = []
    for field, want in original.items():
        if field == 'source':
            continue
        if field not in resolved:
            problems.append(f'{field}: not resolved')
            continue
        got = resolved[field]
        if callable(want):
            want = want.__name__
        if field in deviations:
            want = deviations[field][0]
        ok = math.isclose(got, want, rel_tol=1e-9) if isinstance(want, float) and got is not None else got == want
        if not ok:
            note = ' (listed deviation)' if field in deviations else ''
            problems.append(f'{field}: resolved {got!r}, expected {want!r}{note}')
    assert not problems, f'{path} vs {original["source"]}:\n  ' + '\n  '.join(problems)


@lru_cache(maxsize=None)
def _initialised(name: str):
    """(zero_init_last, acmix_init) of a ResNet-family model as build_model creates it (real weights, CPU)."""
    from classification.config import load_config
    from classification.build import build_model
    from timm.models.resnet import Bottleneck
    from acmix import ACmix
    model = build_model(load_config(CONFIG_ROOT / 'classification' / f'{name}.yaml'))
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    zero_last = all(bool((b.bn3.weight == 0).all()) for b in blocks)
    has_acmix = any(isinstance(m, ACmix) for m in model.modules())
    return zero_last, (model.acmix_init if has_acmix else None)


def _smoothing_spread(cfg) -> str:
    """'all' or 'others': where the criterion puts the smoothing mass (from its gradient at uniform logits)."""
    from classification.build import build_criterion
    classes, eps = 10, cfg.AUG.LABEL_SMOOTHING
    logits = torch.zeros(1, classes, requires_grad=True)
    build_criterion(cfg, mixup_active=False)(logits, torch.tensor([0])).backward()
    off_target = 1 / classes - logits.grad[0, 1].item()  # grad = softmax - target distribution
    return 'all' if math.isclose(off_target, eps / classes, rel_tol=1e-5) else (
        'others' if math.isclose(off_target, eps / (classes - 1), rel_tol=1e-5) else f'{off_target:.4g}')


def _no_decay_rule(undecayed: set, model: torch.nn.Module, rule) -> str:
    """The original's rule name when the optimizer's undecayed parameters are exactly the rule's, else the difference."""
    expected = {n for n, p in model.named_parameters() if rule(n, p)}
    if undecayed == expected:
        return rule.__name__
    return f'undecayed but decayed by the original: {sorted(undecayed - expected)[:4]}, ' \
           f'decayed but undecayed by the original: {sorted(expected - undecayed)[:4]}'


def _resolve_yacs(path: str) -> dict:
    from classification.build import build_model, build_optimizer, build_scheduler, scaled_lrs
    from classification.config import load_config
    cfg = load_config(CONFIG_ROOT / path)
    lr, warmup_lr, min_lr = scaled_lrs(cfg, world_size=GPUS)
    with torch.device('meta'):  # structure only
        model = build_model(cfg)
    optimizer = build_optimizer(cfg, model, lr)
    groups = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for g in groups if g['weight_decay'] == 0 for p in g['params']}
    updates_per_epoch = 10
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch, warmup_lr, min_lr)
    scheduler.step_update(0)
    start_lr = groups[0]['lr']
    scheduler.step_update(cfg.TRAIN.EPOCHS * updates_per_epoch)
    resolved = dict(
        optimizer=type(optimizer).__name__, lr=lr, total_batch=cfg.DATA.BATCH_SIZE * GPUS * cfg.TRAIN.ACCUM_STEPS,
        weight_decay=max(g['weight_decay'] for g in groups),
        no_decay=_no_decay_rule(undecayed, model, ORIGINALS[CONFIGS[path][0]]['no_decay']),
        warmup_epochs=cfg.TRAIN.WARMUP_EPOCHS, warmup_start_lr=start_lr, warmup_prefix=scheduler.warmup_prefix,
        min_lr=groups[0]['lr'], epochs=cfg.TRAIN.EPOCHS, scheduler=cfg.TRAIN.SCHEDULER.NAME,
        lr_update='epoch' if scheduler.t_in_epochs else 'iteration', clip_grad=cfg.TRAIN.CLIP_GRAD or None,
        label_smoothing=cfg.AUG.LABEL_SMOOTHING, mixup=cfg.AUG.MIXUP, cutmix=cfg.AUG.CUTMIX, reprob=cfg.AUG.REPROB,
        auto_augment=cfg.AUG.AUTO_AUGMENT, color_jitter=cfg.AUG.COLOR_JITTER or None,
        repeated_aug=cfg.DATA.REPEATED_AUG, ema=cfg.EMA.ENABLE, interpolation=cfg.DATA.INTERPOLATION,
        img_size=cfg.DATA.IMG_SIZE, crop_pct=cfg.TEST.CROP_PCT, drop_path=cfg.MODEL.DROP_PATH,
        amp=cfg.AMP.DTYPE if cfg.AMP.ENABLE else 'float32')
    g = groups[0]
    resolved.update({'momentum': g['momentum'], 'nesterov': g['nesterov']} if 'momentum' in g else
                    {'betas': tuple(g['betas']), 'eps': g['eps']})
    if not cfg.AUG.MIXUP and not cfg.AUG.CUTMIX:
        resolved['smoothing_spread'] = _smoothing_spread(cfg)
    if 'zero_init_last' in ORIGINALS[CONFIGS[path][0]]:
        zero_last, acmix_init = _initialised(cfg.MODEL.NAME)
        resolved['zero_init_last'] = zero_last
        if acmix_init is not None:
            resolved['acmix_init'] = acmix_init
    return resolved


@pytest.mark.parametrize('path', _cases('classification'))
def test_classification_recipe_matches_original(path):
    _compare(path, _resolve_yacs(path))


def _describe(pipeline) -> tuple:
    """The resize / crop steps of an mmdet/mmseg pipeline, scales as (long, short)."""
    def scales(s):
        return tuple(tuple(sorted(x, reverse=True)) for x in (s if isinstance(s[0], (list, tuple)) else [s]))
    out = []
    for t in pipeline:
        kind = t['type']
        if kind == 'Resize' and 'scale' in t:
            out.append(('resize', scales(t['scale']), None))
        elif kind == 'RandomChoiceResize':
            out.append(('resize', scales(t['scales']), None))
        elif kind == 'RandomResize':
            out.append(('resize', scales(t['scale']), tuple(t['ratio_range'])))
        elif kind == 'RandomCrop':
            out.append(('crop', tuple(t['crop_size'])))
        elif kind == 'RandomChoice':
            out.append(('choice', tuple(_describe(branch) for branch in t['transforms'])))
    return tuple(out)


def _resolve_mm(path: str) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(str(CONFIG_ROOT / path), import_custom_modules=False)
    opt = cfg.optim_wrapper
    sched = {s['type']: s for s in cfg.param_scheduler}
    warmup = sched.get('LinearLR')
    custom = opt.get('paramwise_cfg', {}).get('custom_keys', {})
    backbone = cfg.model.backbone
    resolved = dict(
        optimizer=opt.optimizer.type, lr=opt.optimizer.lr, weight_decay=opt.optimizer.weight_decay,
        no_decay_keys=frozenset(k for k, v in custom.items() if v.get('decay_mult', 1.0) == 0),
        clip_grad=opt.get('clip_grad'), amp='float16' if opt.type == 'AmpOptimWrapper' else 'float32',
        warmup_iters=warmup['end'] if warmup else None, warmup_ratio=warmup['start_factor'] if warmup else None,
        total_batch=cfg.train_dataloader.batch_size * GPUS,
        train_pipeline=_describe(cfg.train_dataloader.dataset.pipeline),
        test_pipeline=_describe(cfg.test_dataloader.dataset.pipeline),
        drop_path=backbone.get('drop_path_rate', 0.0), frozen_stages=backbone.get('frozen_stages', -1),
        norm_eval=backbone.get('norm_eval', False), backbone=backbone.model_name)
    if 'momentum' in opt.optimizer:
        resolved['momentum'] = opt.optimizer.momentum
    if 'MultiStepLR' in sched:
        resolved.update(epochs=cfg.train_cfg.max_epochs, milestones=tuple(sched['MultiStepLR']['milestones']))
    if 'PolyLR' in sched:
        poly = sched['PolyLR']
        assert poly['eta_min'] == 0 and poly['end'] == cfg.train_cfg.max_iters, path
        resolved.update(iters=cfg.train_cfg.max_iters, poly_power=poly['power'], poly_begin=poly['begin'])
    return resolved


@pytest.mark.mm
@pytest.mark.parametrize('path', _cases('detection') + _cases('segmentation'))
def test_openmmlab_recipe_matches_original(path):
    _compare(path, _resolve_mm(path))
