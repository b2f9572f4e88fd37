"""Swin's detection/segmentation backbone (``window_rule='detection'``, ``ACmixBackbone(out_norm=True)``).

Reference: SwinTransformer/Swin-Transformer-Object-Detection ``mmdet/models/backbones/swin_transformer.py`` and its
port in mmdet 3.x (``mmdet.models.backbones.SwinTransformer``).  The window-step tests compare against that code's
order of operations written out here with timm's ``WindowAttention``; the ``mm`` tests compare the whole backbone
with mmdet's ``SwinTransformer`` on Microsoft's official checkpoint layout.
"""
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import WindowAttention, get_relative_position_index, window_partition, window_reverse

import models  # noqa: F401  (registers the acmix_* entrypoints)
from acmix import ACmixWindowAttention
from acmix.window import shifted_window_mask

SWIN = 'acmix_swin_tiny_patch4_window7_224'
SMALL = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))   # reduced Swin-T shape for fast tests
DETECTION = dict(window_rule='detection')


def _randomise(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add noise to every floating tensor, so biases, norms and position tables are not at their trivial init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen) * std)
    return module


def _detection_code_window_step(attn: WindowAttention, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """The window step of the Swin detection code's block: pad, roll, mask for the padded map, windows, unroll, crop."""
    b, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, -w % window, 0, -h % window))
    hp, wp = x.shape[1:3]
    mask = None
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
        img = torch.zeros(1, hp, wp, 1)
        cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for n, (rows, cols) in enumerate((r, c) for r in cuts for c in cuts):
            img[:, rows, cols] = n
        ids = window_partition(img, (window, window)).reshape(-1, window * window)
        mask = (ids[:, None, :] != ids[:, :, None]).float() * -100.
    out = attn(window_partition(x, (window, window)).reshape(-1, window * window, c), mask=mask)
    out = window_reverse(out.reshape(-1, window, window, c), (window, window), hp, wp)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return out[:, :h, :w]


@pytest.mark.parametrize('size', [(9, 12), (14, 14), (5, 4)])
@pytest.mark.parametrize('shift', [0, 3])
def test_pad_first_window_step_is_the_detection_code(size, shift):
    ref_attn = _randomise(WindowAttention(16, num_heads=2, window_size=7)).eval()
    ours = ACmixWindowAttention(16, 2, 7, mix='attn_only', pad_first=True).eval()
    ours.load_state_dict(ref_attn.state_dict())
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        ref = _detection_code_window_step(ref_attn, x, 7, shift)
        torch.testing.assert_close(ours(x, (shift, shift)), ref, rtol=1e-5, atol=1e-5)
        ours.pad_first = False   # timm's roll-then-pad: different seams exactly when a shifted map is padded
        same = torch.allclose(ours(x, (shift, shift)), ref, rtol=1e-5, atol=1e-5)
    assert same == (not shift or size == (14, 14))


@pytest.mark.parametrize('size', [(9, 12), (14, 14)])
def test_pad_first_acmix_conv_path_sees_the_rolled_padded_map(size):
    """pad_first: both paths run on the padded map rolled over its padded size (the docstring's border rule)."""
    m = _randomise(ACmixWindowAttention(16, 2, 7, pad_first=True)).eval()
    x = torch.randn(2, *size, 16)
    h, w = size
    with torch.no_grad():
        got = m(x, (3, 3))
        m.pad_first = False
        rolled = torch.roll(F.pad(x, (0, 0, 0, -w % 7, 0, -h % 7)), (-3, -3), (1, 2))
        mask = shifted_window_mask(rolled.shape[1], rolled.shape[2], (7, 7), (3, 3))
        ref = torch.roll(m(rolled, (0, 0), mask), (3, 3), (1, 2))[:, :h, :w]
        torch.testing.assert_close(got, ref)
        if size == (14, 14):   # window multiples: the same computation in either order (the authors' at 224)
            torch.testing.assert_close(m(x, (3, 3)), got)


@pytest.mark.parametrize('mixer', ['attn', 'acmix'])
def test_detection_rule_shifts_every_odd_block_at_224(mixer):
    model = timm.create_model(SWIN, mixer=mixer, num_classes=0, **SMALL, **DETECTION).eval()
    blocks = [b for stage in model.layers for b in stage.blocks]
    assert all(isinstance(b.attn, ACmixWindowAttention) and b.attn.pad_first for b in blocks)
    assert [tuple(b.window_size) for b in blocks] == [(7, 7)] * 8
    assert [tuple(b.shift_size) for b in blocks] == [(0, 0), (3, 3)] * 4
    x = torch.randn(1, 3, 224, 224)   # last stage 7x7: timm's rule would not shift there
    with torch.no_grad():
        shifted = model.forward_features(x)
        model.layers[3].blocks[1].shift_size = (0, 0)
        assert not torch.allclose(model.forward_features(x), shifted, atol=1e-4)


def test_detection_rule_params_and_errors():
    base = timm.create_model('swin_tiny_patch4_window7_224', **SMALL)
    for mixer in ('attn', 'acmix'):
        det = timm.create_model(SWIN, mixer=mixer, **SMALL, **DETECTION)
        cls = timm.create_model(SWIN, mixer=mixer, **SMALL)
        assert {k: v.shape for k, v in det.state_dict().items()} == {k: v.shape for k, v in cls.state_dict().items()}
    assert {k: v.shape for k, v in timm.create_model(SWIN, mixer='attn', **SMALL, **DETECTION).state_dict().items()} \
        == {k: v.shape for k, v in base.state_dict().items()}
    with pytest.raises(ValueError, match='window_rule'):
        timm.create_model(SWIN, window_rule='dense', **SMALL)
    with pytest.raises(ValueError, match='strict_img_size'):
        timm.create_model(SWIN, strict_img_size=True, **SMALL, **DETECTION)


# ------------------------------------------------------------------------------- the backbone against mmdet's Swin
def _official_layout(timm_state_dict: dict, depths, window: int = 7, img_size: int = 224) -> dict:
    """A timm-layout Swin state dict in the layout of Microsoft's release: ``{'model': sd}``, ``head.*``,
    ``layers.i.downsample`` at the end of stage i, ``relative_position_index`` and ``attn_mask`` buffers."""
    sd = {}
    for key, value in timm_state_dict.items():
        key = re.sub(r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m[1]) - 1}.downsample', key)
        sd[key.replace('head.fc.', 'head.')] = value
    for i, depth in enumerate(depths):
        res = img_size // 4 // 2 ** i
        for j in range(depth):
            sd[f'layers.{i}.blocks.{j}.attn.relative_position_index'] = get_relative_position_index(window, window)
            if j % 2 and res > window:
                mask = shifted_window_mask(res, res, (window, window), (window // 2, window // 2))
                sd[f'layers.{i}.blocks.{j}.attn_mask'] = mask
    return {'model': sd}


def _mmdet_swin(arch: dict, checkpoint: str):
    from mmdet.models.backbones import SwinTransformer
    from mmengine.config import ConfigDict
    swin = SwinTransformer(embed_dims=arch['embed_dim'], depths=arch['depths'], num_heads=arch['num_heads'],
                           window_size=7, drop_path_rate=0., convert_weights=True,
                           init_cfg=ConfigDict(type='Pretrained', checkpoint=checkpoint))  # as built from a config
    swin.init_weights()
    swin.eval()   # its train() returns None
    return swin


def _ours(arch: dict, checkpoint: str, **kwargs):
    from models.mm_backbone import ACmixBackbone
    backbone = ACmixBackbone(SWIN, out_norm=True, init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
                             **DETECTION, **arch, **kwargs)
    backbone.init_weights()
    return backbone.eval()


def max_relative_error(arch: dict, tmp_path, size=(224, 288), seed: int = 0) -> float:
    """Our baseline Swin backbone vs mmdet's SwinTransformer on one official-layout checkpoint (max over maps)."""
    official = _randomise(timm.create_model('swin_tiny_patch4_window7_224', **arch), seed=seed)
    path = str(tmp_path / 'swin_official.pth')
    torch.save(_official_layout(official.state_dict(), arch['depths']), path)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = _mmdet_swin(arch, path)(x)
        got = _ours(arch, path, mixer='attn')(x)
    assert [r.shape for r in ref] == [g.shape for g in got]
    return max(((g - r).norm() / r.norm()).item() for g, r in zip(got, ref))


@pytest.mark.mm
def test_official_swin_checkpoint_gives_mmdet_swin_features(tmp_path):
    """Same official-layout weights: our baseline backbone == mmdet's ``SwinTransformer(convert_weights=True)``.

    224x288 makes every stage a non-multiple of 7 along W (72, 36, 18, 9), and the last stage (7x9) shifts.
    The full-size Swin-T check is ``max_relative_error(dict(embed_dim=96, depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24)), tmp_path)``.
    """
    assert max_relative_error(SMALL, tmp_path) < 1e-3


@pytest.mark.mm
def test_authors_swin_acmix_release_layout_loads_with_detection_rule(tmp_path):
    """The authors' release (official layout plus fc/dep_conv/rate1/rate2) loads strictly into the dense backbone."""
    from models.mm_backbone import CheckpointMismatchError
    full = _randomise(timm.create_model(SWIN, **SMALL))
    path = str(tmp_path / 'acmix_swin.pth')
    torch.save(_official_layout(full.state_dict(), SMALL['depths']), path)
    backbone = _ours(SMALL, path)
    got = dict(backbone.body.named_parameters())
    for key, value in full.named_parameters():
        if not key.startswith(('head', 'norm.')):
            assert torch.equal(got[key.replace('layers.', 'layers_', 1)], value), key
    sd = torch.load(path, weights_only=True)
    sd['model'].pop('layers.2.blocks.1.attn.dep_conv.weight')
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError, match='dep_conv'):
        _ours(SMALL, path)


@pytest.mark.mm
def test_out_norm_is_a_channel_layer_norm_frozen_with_its_stage():
    from models.mm_backbone import ACmixBackbone
    plain = ACmixBackbone('resnet18').eval()
    normed = ACmixBackbone('resnet18', out_norm=True, frozen_stages=2).train()
    normed.body.load_state_dict(plain.body.state_dict())
    _randomise(normed.out_norms)
    assert [n.normalized_shape for n in normed.out_norms] == [(c,) for c in plain.out_channels]
    assert [all(not p.requires_grad for p in n.parameters()) for n in normed.out_norms] == [True, True, False, False]
    assert [n.training for n in normed.out_norms] == [False, False, True, True]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for norm, f, g in zip(normed.out_norms, plain(x), normed.eval()(x)):
            ref = F.layer_norm(f.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias)
            torch.testing.assert_close(g, ref.permute(0, 3, 1, 2))


# ----------------------------------------------------------------------------------------------- the adapter
# ACmixBackbone for any timm model: shapes at any size, OpenMMLab stage numbering, freezing, pretrained weights
def _adapter(name: str = 'resnet18', **kw):
    from models.mm_backbone import ACmixBackbone
    return ACmixBackbone(name, **kw)


@pytest.mark.mm
@pytest.mark.parametrize('name,kw', [('resnet18', {}), ('acmix_resnet26', {}),
                                     ('acmix_swin_tiny_patch4_window7_224',
                                      dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))),
                                     ('swin_tiny_patch4_window7_224', dict(strict_img_size=False))])
@pytest.mark.parametrize('size', [(96, 160), (97, 131)])
def test_adapter_shapes_any_size(name, kw, size):
    b = _adapter(name, **kw).eval()
    with torch.no_grad():
        outs = b(torch.randn(2, 3, *size))
    assert [o.shape[1] for o in outs] == b.out_channels
    assert [tuple(o.shape[2:]) for o in outs] == [(-(-size[0] // s), -(-size[1] // s)) for s in (4, 8, 16, 32)]
    assert b.strides == [4, 8, 16, 32]


@pytest.mark.mm
def test_adapter_out_indices_subset():
    b = _adapter(out_indices=(1, 3))
    assert b.out_channels == [128, 512] and b.strides == [8, 32]
    assert len(b(torch.randn(1, 3, 64, 64))) == 2
    with pytest.raises(ValueError, match='out_indices'):
        _adapter(out_indices=(4,))


@pytest.mark.mm
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


@pytest.mark.mm
def test_frozen_stages_zero_is_stem_only_and_norm_eval():
    b = _adapter('resnet18', frozen_stages=0, norm_eval=True).train()
    frozen = {n.split('.')[1] for n, p in b.named_parameters() if not p.requires_grad}
    assert frozen == {'conv1', 'bn1'}
    assert all(not m.training for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.mm
def test_frozen_stages_swin_layout():
    b = _adapter('swin_tiny_patch4_window7_224', frozen_stages=1, strict_img_size=False).train()
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(('body.patch_embed', 'body.layers_0.')) for n in frozen)
    assert any(n.startswith('body.layers_0.') for n in frozen)
    assert all(p.requires_grad for n, p in b.named_parameters() if n.startswith('body.layers_1.'))
    assert not b.body.patch_embed.training and not b.body.layers_0.training and b.body.layers_1.training


@pytest.mark.mm
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
    # never stricter than torch: no num_batches_tracked buffers, no classifier
    plain = {k: v for k, v in full.state_dict().items() if 'num_batches' not in k and not k.startswith('fc.')}
    torch.save(plain, tmp_path / 'plain.pth')
    _adapter(pretrained=str(tmp_path / 'plain.pth')).init_weights()

    sd = full.state_dict()
    sd.pop('layer2.0.conv1.weight')
    sd['layer9.weight'] = torch.zeros(1)
    sd['layer1.0.conv1.weight'] = torch.zeros(3, 3, 3, 3)
    torch.save({'model': sd}, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        _adapter(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'bad.pth'))).init_weights()
    assert str(err.value) == (
        f"backbone checkpoint {tmp_path / 'bad.pth'} does not fit the model: missing keys (1): layer2.0.conv1.weight; "
        'unexpected keys (1): layer9.weight; shape mismatches (1): layer1.0.conv1.weight: checkpoint (3, 3, 3, 3) vs '
        'model (64, 64, 3, 3)')
    from models._checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nope.pth'):
        _adapter(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth'))).init_weights()


@pytest.mark.mm
def test_acmix_swin_checkpoint_through_family_filter(tmp_path):
    """A Swin-ACmix classification state dict (our layout) loads through models.swin's filter."""
    import timm
    kw = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
    full = timm.create_model('acmix_swin_tiny_patch4_window7_224', **kw)
    torch.save({'model': full.state_dict()}, tmp_path / 'swin.pth')
    b = _adapter('acmix_swin_tiny_patch4_window7_224', pretrained=str(tmp_path / 'swin.pth'), **kw)
    b.init_weights()
    ref = dict(full.named_parameters())
    got = {k.replace('body.', '', 1): v for k, v in b.named_parameters()}
    key = next(k for k in ref if 'rate1' in k or 'dep_conv' in k)
    assert torch.equal(ref[key], got[key.replace('layers.', 'layers_', 1)])


@pytest.mark.mm
@pytest.mark.parametrize('path', ['detection/mask-rcnn_acmix-pvt-t_fpn_8xb2-1x_coco.py',
                                  'segmentation/fpn_acmix-pvt-t_8xb4-40k_ade20k-512x512.py'])
def test_pvt_dense_backbone_drops_the_class_token_of_its_imagenet_checkpoint(path, tmp_path):
    """PVT's detection/segmentation backbone has no class token; its ImageNet checkpoint (with one) still loads."""
    from mmengine.config import Config
    from models.mm_backbone import ACmixBackbone
    cfg = Config.fromfile(f'configs/{path}').model.backbone.to_dict()
    assert cfg.pop('type') == 'ACmixBackbone' and cfg['class_token'] is False
    torch.manual_seed(0)
    imagenet = timm.create_model(cfg['model_name'])
    torch.save({'model': imagenet.state_dict()}, tmp_path / 'in1k.pth')
    cfg['init_cfg'] = dict(type='Pretrained', checkpoint=str(tmp_path / 'in1k.pth'))
    backbone = ACmixBackbone(**cfg)
    backbone.init_weights()
    assert not any('cls_token' in k for k in backbone.state_dict())
    assert torch.equal(backbone.state_dict()[next(k for k in backbone.state_dict() if k.endswith('patch_embed.proj.weight'))],
                       imagenet.state_dict()[next(k for k in imagenet.state_dict() if k.endswith('patch_embed.proj.weight'))])
    assert [o.shape[1] for o in backbone(torch.randn(1, 3, 64, 96))] == [64, 128, 320, 512]
