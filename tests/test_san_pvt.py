"""SAN patchwise attention, SAN / SAN-ACmix and PVT v1 / PVT-ACmix models.

The generic timm contract (every ``acmix_*`` model plus baselines) lives in ``tests/test_models.py``; this file
checks what is specific to these families: the patchwise operator against SAN's unfold formulation, its
memory-lean path against the reference, measured parameter counts, small and non-square inputs, feature maps
and loading of our own and the original (SAN / PVT v1) checkpoint layouts.
"""
import re

import pytest
import timm
import torch
import torch.nn.functional as F

import models.pvt  # noqa: F401  (registers the entrypoints)
import models.san  # noqa: F401
from acmix.patchwise import PatchwiseAttention, patchwise_aggregate

# measured on this code (PyTorch parameter count at any input size)
PARAMS = {
    'san10': 11_841_124, 'san15': 16_181_310, 'san19': 20_518_470,            # SAN README: 11.8M / 16.2M / 20.5M
    'acmix_san10': 12_381_084, 'acmix_san15': 17_025_130, 'acmix_san19': 21_664_090,
    'pvt_v1_tiny': 13_228_264, 'pvt_v1_small': 24_484_840,                   # PVT README: 13.2M / 24.5M
    'acmix_pvt_tiny': 13_395_104, 'acmix_pvt_small': 24_823_731,
}
# ACmix README (paper Table): ACmix-SAN 12.1M / 16.6M / 21.2M, ACmix-PVT 13M / 25M
README = {'acmix_san10': 12.1e6, 'acmix_san15': 16.6e6, 'acmix_san19': 21.2e6,
          'acmix_pvt_tiny': 13e6, 'acmix_pvt_small': 25e6}


# ---------------------------------------------------------------- patchwise attention

def _san_patchwise(m: PatchwiseAttention, q, k, v):
    """SAN's own formulation (stride 1, one head): ReflectionPad + Unfold of keys and values, c % Wc sharing."""
    b, _, h, w = q.shape
    kk, pad = m.kernel_att ** 2, m.kernel_att // 2
    x1 = q.reshape(b, -1, 1, h * w)
    x2 = F.unfold(F.pad(k, (pad,) * 4, mode='reflect'), m.kernel_att).reshape(b, -1, 1, h * w)
    wgt = m.conv_w(torch.cat([x1, x2], 1)).reshape(b, -1, kk, h * w)
    vu = F.unfold(F.pad(v, (pad,) * 4, mode='reflect'), m.kernel_att).reshape(b, v.shape[1], kk, h * w)
    idx = torch.arange(v.shape[1]) % wgt.shape[1]
    return (vu * wgt[:, idx]).sum(2).reshape(b, -1, h, w)


def test_patchwise_matches_san_formulation():
    torch.manual_seed(0)
    m = PatchwiseAttention(32, 1, 3, qk_planes=4, share_planes=8).double().train()
    q, k = torch.randn(2, 4, 6, 7, dtype=torch.double), torch.randn(2, 4, 6, 7, dtype=torch.double)
    v = torch.randn(2, 32, 6, 7, dtype=torch.double)
    torch.testing.assert_close(m(q, k, v), _san_patchwise(m, q, k, v))
    assert m.weight_planes == 4


@pytest.mark.parametrize('size,stride,dilation,kernel,head', [
    ((5, 7), 2, 1, 3, 4),    # odd sizes, stride 2: ceil
    ((1, 1), 1, 1, 7, 2),    # 1x1 map, window far larger than the map
    ((3, 2), 2, 2, 7, 1),    # tiny non-square, stride and dilation
    ((9, 4), 1, 3, 5, 2),
])
def test_patchwise_shapes_grads_and_lean_path(size, stride, dilation, kernel, head):
    torch.manual_seed(0)
    m = PatchwiseAttention(16, head, kernel, stride, dilation).double()
    q, k, v = (torch.randn(2, 16, *size, dtype=torch.double, requires_grad=True) for _ in range(3))
    out = m(q, k, v)
    assert out.shape == (2, 16, -(-size[0] // stride), -(-size[1] // stride))
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [q, k, v, *m.parameters()], allow_unused=False)
    assert all(torch.isfinite(t).all() for t in grads)
    assert grads[2].abs().sum() > 0 and grads[0].abs().sum() > 0
    m.impl = 'reference'
    out_ref = m(q, k, v)
    grads_ref = torch.autograd.grad((out_ref * g).sum(), [q, k, v, *m.parameters()])
    torch.testing.assert_close(out, out_ref)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('size,stride,dilation,kernel,head,qk', [
    ((5, 7), 2, 1, 3, 4, None), ((1, 1), 1, 1, 7, 2, None), ((9, 4), 1, 3, 5, 2, None), ((6, 7), 1, 1, 3, 1, 4)])
def test_patchwise_inference_path_matches(size, stride, dilation, kernel, head, qk):
    """Eval + no_grad builds gamma's first layer tap by tap; it must equal the materialised input."""
    torch.manual_seed(0)
    m = PatchwiseAttention(16, head, kernel, stride, dilation, qk_planes=qk).double()
    with torch.no_grad():
        for bn in (m.conv_w[0], m.conv_w[3]):
            bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.normal_(), bn.bias.normal_()
    m.eval()
    q, k = (torch.randn(2, qk or 16, *size, dtype=torch.double) for _ in range(2))
    v = torch.randn(2, 16, *size, dtype=torch.double)
    with torch.no_grad():
        lean = m(q, k, v)
    torch.testing.assert_close(lean, m(q, k, v))  # grad enabled: materialised gamma input
    m.impl = 'reference'
    with torch.no_grad():
        torch.testing.assert_close(lean, m(q, k, v))


def test_patchwise_aggregate_gradcheck():
    v = torch.randn(2, 2, 3, 5, 4, dtype=torch.double, requires_grad=True)
    w = torch.randn(2, 3, 9, 3, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: patchwise_aggregate(v, w, 3, 2, 2, 'loop'), (v, w))


def test_patchwise_errors_name_the_problem():
    with pytest.raises(ValueError, match='head dim 6'):
        PatchwiseAttention(12, 2, share_planes=4)
    with pytest.raises(ValueError, match='kernel_size'):
        PatchwiseAttention(16, 1, 4)
    m = PatchwiseAttention(16, 2, 3)
    with pytest.raises(ValueError, match='v must be'):
        m(torch.randn(1, 16, 5, 5), torch.randn(1, 16, 5, 5), torch.randn(1, 8, 5, 5))


# ---------------------------------------------------------------- parameter counts

@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_counts(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert n == PARAMS[name]
    if name in README:
        assert abs(n / README[name] - 1) < 0.05, f'{name}: {n:,} vs README {README[name]:,.0f}'


def test_timm_does_not_own_baseline_names():
    for name in ('san10', 'san15', 'san19', 'pvt_v1_tiny', 'pvt_v1_small'):
        assert timm.models.model_entrypoint(name).__module__ in ('models.san', 'models.pvt'), name


# ---------------------------------------------------------------- models at small sizes

@pytest.fixture(scope='module')
def small_models():
    torch.manual_seed(0)
    return {n: timm.create_model(n).eval() for n in ('san10', 'acmix_san10', 'pvt_v1_tiny', 'acmix_pvt_tiny')}


@pytest.mark.parametrize('name,size', [
    ('san10', (32, 32)), ('acmix_san10', (32, 32)), ('acmix_san10', (17, 45)),
    ('pvt_v1_tiny', (32, 48)), ('acmix_pvt_tiny', (33, 47)),
])
def test_forward_small_non_square(small_models, name, size):
    model = small_models[name]
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize('name', ['acmix_san10', 'acmix_pvt_tiny'])
def test_intermediates_match_feature_info(small_models, name):
    model = small_models[name]
    h, w = 64, 96
    with torch.no_grad():
        final, feats = model.forward_intermediates(torch.randn(1, 3, h, w))
    assert [f.shape[1] for f in feats] == [i['num_chs'] for i in model.feature_info]
    assert [tuple(f.shape[2:]) for f in feats] == [(h // i['reduction'], w // i['reduction'])
                                                   for i in model.feature_info]
    assert model.forward_head(final, pre_logits=True).shape == (1, model.num_features)


@pytest.mark.parametrize('name,channels,strides', [
    ('acmix_san10', [256, 1024, 2048], [4, 16, 32]),
    ('acmix_pvt_tiny', [128, 512], [8, 32]),
])
def test_features_only(name, channels, strides):
    out_indices = (1, 3, 4) if 'san' in name else (1, 3)
    model = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
    assert model.feature_info.channels() == channels and model.feature_info.reduction() == strides
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, strides)]


@pytest.mark.parametrize('name', ['acmix_san10', 'acmix_pvt_tiny'])
def test_group_matcher_layer_decay(small_models, name):
    from timm.models import group_parameters
    model = small_models[name]
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
        assert len(groups) >= len(model.feature_info) + 1


def test_pvt_pos_embed_follows_input_size(small_models):
    model = small_models['pvt_v1_tiny']
    assert model.no_weight_decay() == {f'stages.{i}.pos_embed' for i in range(4)}
    assert tuple(model.stages[0].pos_embed.shape) == (1, 56 * 56, 64)
    big = timm.create_model('pvt_v1_tiny', img_size=(64, 96))
    assert tuple(big.stages[0].pos_embed.shape) == (1, 16 * 24, 64)


# ---------------------------------------------------------------- checkpoints

_SMALL_SAN = dict(widths=(16, 32, 32, 32, 32), layers=(1, 1, 1, 1, 1))
_SMALL_PVT = dict(embed_dims=(16, 16, 32, 32), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1))


def _to_san_layout(sd):
    """Our keys -> SAN's released names (conv_in, bn_in, conv{i}, bn{i}, layer{i}.{j}.sam.*, fc)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stem\.conv\.', 'conv_in.', k)
        k = re.sub(r'^stem\.bn\.', 'bn_in.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.mixer\.attn\.', r'layer\1.\2.sam.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.mixer\.', r'layer\1.\2.sam.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.', r'layer\1.\2.', k)
        k = re.sub(r'^stages\.(\d)\.(conv|bn)\.', r'\2\1.', k)
        k = re.sub(r'^head\.fc\.', 'fc.', k)
        out[k] = v
    return out


def _to_pvt_v1_layout(sd):
    """Our keys -> PVT v1's released names, adding its class token and the token's position entry."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stages\.(\d)\.patch_embed\.', lambda m: f'patch_embed{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.', lambda m: f'block{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d)\.pos_embed$', lambda m: f'pos_embed{int(m.group(1)) + 1}', k)
        out[k] = v
    out['pos_embed4'] = torch.cat([torch.zeros_like(out['pos_embed4'][:, :1]), out['pos_embed4']], 1)
    out['cls_token'] = torch.zeros(1, 1, out['norm.weight'].shape[0])
    return out


@pytest.mark.parametrize('name,small,to_original', [
    ('san10', _SMALL_SAN, _to_san_layout),
    ('acmix_san10', _SMALL_SAN, None),
    ('pvt_v1_tiny', _SMALL_PVT, _to_pvt_v1_layout),
    ('acmix_pvt_tiny', _SMALL_PVT, None),
])
def test_checkpoint_formats(tmp_path, name, small, to_original):
    torch.manual_seed(0)
    src = timm.create_model(name, **small)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    wrapped = [sd, {'model': sd}, {'state_dict': {'module.' + k: v for k, v in sd.items()}}]
    if to_original is not None:
        orig = to_original(sd)
        assert not any(k.startswith('stages.') for k in orig)
        wrapped.append({'state_dict': {'module.' + k: v for k, v in orig.items()}})
    for i, ckpt in enumerate(wrapped):
        path = tmp_path / f'{i}.pth'
        torch.save(ckpt, path)
        dst = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **small)
        for k, v in dst.state_dict().items():
            assert torch.equal(v, sd[k]), f'format {i}: {k}'

    path = tmp_path / 'bad.pth'
    bad = dict(sd)
    missing = next(k for k in sd if k.endswith('weight') and not k.startswith('head'))
    del bad[missing]
    bad['stages.9.extra'] = torch.zeros(1)
    torch.save(bad, path)
    with pytest.raises(KeyError) as err:
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **small)
    assert missing in str(err.value) and 'stages.9.extra' in str(err.value)
