"""ResNet-ACmix and Swin-ACmix against the authors' networks: exact parameter counts, key layout, outputs.

Fixtures (``tests/fixtures/authors_models``) come from ``tools/make_authors_model_fixtures.py``, which runs the
authors' own code; their weights are regenerated here from a seed (``synth_state_dict``), saved in the authors'
checkpoint formats and loaded through timm's standard ``pretrained_cfg_overlay=dict(file=...)`` mechanism.
"""
import json
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from timm.models.resnet import Bottleneck, ResNet
from timm.models.swin_transformer import SwinTransformer

import models  # noqa: F401
from acmix import ACmix, ACmixWindowAttention
from acmix.conv_path import ShiftGroupConv
from models import resnet as resnet_family, swin as swin_family
from models.complexity import count_macs
from models.paper import AUTHORS_CODE
from tools.make_authors_model_fixtures import authors_format, synth_state_dict

torch.set_num_threads(1)
FIXTURES = Path(__file__).parent / 'fixtures' / 'authors_models'

PARAMS = {name: params for name, (params, _) in AUTHORS_CODE.items()}  # the authors' code (models/paper.py)
FILTERS = {'resnet': resnet_family.checkpoint_filter_fn, 'swin': swin_family.checkpoint_filter_fn}


def _load_authors_ckpt(tmp_path, name, sd, fmt, **kwargs):
    path = tmp_path / f'{name}_{fmt}.pth'
    torch.save(authors_format(sd, fmt), path)
    overlay = dict(file=str(path), num_classes=kwargs.get('num_classes', 1000))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_count_exact(name):
    assert sum(p.numel() for p in timm.create_model(name).parameters()) == PARAMS[name]


@pytest.mark.parametrize('name', ['acmix_resnet26', 'acmix_resnet38', 'acmix_resnet50',
                                  'acmix_swin_tiny_patch4_window7_224', 'acmix_swin_small_patch4_window7_224'])
def test_authors_key_layout(name):
    """The authors' full state dict (keys + shapes), in their format, passes our strict filter unchanged in size."""
    shapes = json.loads((FIXTURES / f'keys_{name}.json').read_text())
    family = 'resnet' if 'resnet' in name else 'swin'
    model = timm.create_model(name)
    theirs = {k: torch.empty(s) for k, s in shapes.items()}
    out = FILTERS[family](authors_format(theirs, family), model)  # raises KeyError on any mismatch
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in out.items()} == ours
    if family == 'resnet':  # identical layout, key for key
        assert set(shapes) == set(ours)
    else:  # original Swin layout: downsample moves one stage later, head -> head.fc, recomputed buffers dropped
        dropped = {k for k in shapes if 'relative_position_index' in k or 'attn_mask' in k}
        assert len(shapes) - len(dropped) == len(ours)
        assert not [k for k in ours if 'relative_position_index' in k]


@pytest.mark.parametrize('case,absent', [('swin_tiny_config', ()), ('resnet_1111_64px', ()),
                                         ('resnet_1111_64px', ('num_batches_tracked',))])
def test_matches_authors_outputs(case, absent, tmp_path):
    """``absent``: buffers left out of the authors' file; torch's ``load_state_dict(strict=True)`` accepts a file
    without ``num_batches_tracked``, so our filters must too (and still reproduce the output)."""
    fx = torch.load(FIXTURES / f'{case}.pt', weights_only=True)
    full = synth_state_dict(fx['shapes'], fx['seed'], fx['kept'])
    sd = {k: v for k, v in full.items() if not k.endswith(absent)}
    assert (len(sd) < len(full)) == bool(absent)
    model = _load_authors_ckpt(tmp_path, fx['our_model'], sd, fx['format'], **fx['our_kwargs'])
    with torch.no_grad():
        y = model(fx['input'])
    ref = fx['output']
    assert y.shape == ref.shape
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 1e-4


def test_our_checkpoint_formats_and_strictness(tmp_path):
    kw = dict(layers=(1, 1, 1, 1), num_classes=10)
    src = timm.create_model('acmix_resnet26', **kw)
    sd = src.state_dict()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        ref = src.eval()(x)
    for fmt, blob in (('plain', sd), ('model', {'model': sd}),
                      ('ddp', {'state_dict': {f'module.{k}': v for k, v in sd.items()}})):
        path = tmp_path / f'{fmt}.pth'
        torch.save(blob, path)
        m = timm.create_model('acmix_resnet26', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **kw).eval()
        with torch.no_grad():
            torch.testing.assert_close(m(x), ref)
    bad = dict(sd)
    bad.pop('layer2.0.conv2.dep_conv.weight')
    bad['layer2.0.conv2.dep_conv.bias'] = torch.zeros(512)
    torch.save(bad, tmp_path / 'bad.pth')
    # timm goes non-strict when it drops a classifier of another class count: our filter must still refuse
    for ncls in (10, 7):
        with pytest.raises(KeyError, match=r'missing.*dep_conv\.weight.*unexpected.*dep_conv\.bias'):
            timm.create_model('acmix_resnet26', pretrained=True, pretrained_cfg_overlay=dict(
                file=str(tmp_path / 'bad.pth'), num_classes=10), **dict(kw, num_classes=ncls))


def test_acmix_init_modes():
    shift = timm.create_model('acmix_resnet26', layers=(1, 1, 1, 1))
    kaiming = timm.create_model('acmix_resnet26', layers=(1, 1, 1, 1), acmix_init='kaiming')
    for m in [m for m in shift.modules() if isinstance(m, ACmix)]:
        w = m.dep_conv.weight  # (C, k*k, k, k): channel c, input tap i is a one-hot at offset i
        kk = w.shape[1]
        eye = torch.eye(kk).view(1, kk, *w.shape[-2:])
        assert torch.equal(w, eye.expand_as(w))
        assert m.rate1.item() == m.rate2.item() == 0.5
    w = kaiming.layer1[0].conv2.dep_conv.weight
    assert (w != 0).float().mean() > 0.9  # Kaiming everywhere, as the authors' global init did (defect 7)
    with pytest.raises(ValueError, match='acmix_init'):
        timm.create_model('acmix_resnet26', acmix_init='zeros')


def test_conv_baseline_is_timm_resnet():
    ours = timm.create_model('conv_resnet26')
    ref = ResNet(Bottleneck, [1, 2, 4, 1])
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert not [m for m in ours.modules() if isinstance(m, ACmix)]


def test_swin_attn_mixer_is_timm_swin():
    kw = dict(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=5)
    ref = SwinTransformer(**kw).eval()
    ours = swin_family.ACmixSwinTransformer(mixer='attn', **kw).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_swin_224_window_rule():
    """At 224 the last stage (7x7) is one window and never shifts (authors' and timm's rule)."""
    m = timm.create_model('acmix_swin_tiny_patch4_window7_224')
    for i, stage in enumerate(m.layers):
        for j, blk in enumerate(stage.blocks):
            assert isinstance(blk.attn, ACmixWindowAttention)
            assert tuple(blk.window_size) == (7, 7)
            assert tuple(blk.shift_size) == ((3, 3) if j % 2 and i < 3 else (0, 0))


# -- MAC counter against hand-written formulas ------------------------------------------------------------------

def _analytic_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Sum of per-module formulas, from the shapes seen by forward hooks (independent of FlopCounterMode)."""
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    # proj runs as its parameters inside the mix's GEMM where both paths cover the map: window_hook counts it
    window_projs = {id(mod.proj) for mod in model.modules() if isinstance(mod, ACmixWindowAttention) and mod.has_attn}

    def linear_hook(m, inp, out):
        if id(m) not in window_projs:
            total[0] += out.numel() * m.in_features

    def fc_macs(m, b, h, w):  # fc runs as F.conv2d on its weight (no module call): M -> k^2 for every channel
        return b * h * w * m.fc.in_channels * m.fc.out_channels * m.dep_conv.groups

    def acmix_hook(m, inp, out):
        # Stage I: conv1 | conv2 | conv3 run as one 1x1 conv on their concatenated weights (no module calls)
        b, c, h, w = inp[0].shape
        total[0] += b * h * w * c * (2 * m.qk_planes + m.out_planes) + fc_macs(m, b, h, w)
        # local attention: logits q.k and the weighted sum, K*K taps each
        total[0] += 2 * out.numel() * m.kernel_att ** 2

    def window_hook(m, inp, out):  # per window: q@k^T and attn@v, N*N*C each, and proj, on the padded map
        b, h, w, c = inp[0].shape
        wh, ww = m.window_size
        hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
        hr, wr = (hp, wp) if m.pad_first else (h, w)  # the map the conv path sees
        attention = 2 * b * hp * wp * (wh * ww) * c + b * hp * wp * c * c
        total[0] += attention * m.has_attn + fc_macs(m, b, hr, wr) * m.has_conv

    hooks = []
    for mod in model.modules():
        if isinstance(mod, ShiftGroupConv):
            mod.use_kernel = False  # the model as defined: fc, then the dep_conv module (whose hook counts it)
        hook = {nn.Conv2d: conv_hook, ShiftGroupConv: conv_hook, nn.Linear: linear_hook, ACmix: acmix_hook,
                ACmixWindowAttention: window_hook}.get(type(mod))
        if hook is not None:
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return total[0]


@pytest.mark.parametrize('name,kwargs,size', [
    ('acmix_resnet26', dict(layers=(1, 1, 1, 1)), (3, 64, 48)),
    ('acmix_swin_tiny_patch4_window7_224',
     dict(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4), (3, 64, 80)),
])
def test_mac_counter_matches_analytic(name, kwargs, size):
    model = timm.create_model(name, **kwargs)
    assert count_macs(model, size) == _analytic_macs(model, torch.zeros(1, *size))


@pytest.mark.slow
@pytest.mark.parametrize('name,gmacs', [(name, gmacs) for name, (_, gmacs) in AUTHORS_CODE.items()])
def test_macs_near_authors_code_count(name, gmacs):
    """Within 0.2% of the authors'-code count: Swin's own flops() also counts LayerNorms and pooling (~4M MACs)."""
    assert count_macs(timm.create_model(name)) / 1e9 == pytest.approx(gmacs, rel=2e-3)


def test_swin_attn_only_mixer_has_the_baseline_layout():
    """``mixer_args=dict(mix='attn_only')`` drops the conv path: the parameters of timm's Swin, key for key."""
    kw = dict(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4)
    ours = timm.create_model('acmix_swin_tiny_patch4_window7_224', mixer_args=dict(mix='attn_only'), **kw)
    ref = timm.create_model('swin_tiny_patch4_window7_224', **kw)
    assert {k: v.shape for k, v in ours.named_parameters()} == {k: v.shape for k, v in ref.named_parameters()}


def test_swin_resize_and_window_change(tmp_path):
    """timm's set_input_size and its relative-position-table resize on load work for the ACmix mixer too."""
    kw = dict(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=5)
    model = timm.create_model('acmix_swin_tiny_patch4_window7_224', **kw).eval()
    torch.save({'model': model.state_dict()}, tmp_path / 'w4.pth')
    model.set_input_size(img_size=(80, 80), window_size=5)
    assert model.layers[0].blocks[1].attn.window_size == (5, 5)
    assert model(torch.randn(1, 3, 80, 80)).shape == (1, 5)
    loaded = timm.create_model('acmix_swin_tiny_patch4_window7_224', pretrained=True, pretrained_cfg_overlay=dict(
        file=str(tmp_path / 'w4.pth'), num_classes=5), **dict(kw, img_size=80, window_size=5))
    assert loaded.layers[0].blocks[0].attn.relative_position_bias_table.shape == (81, 1)
