"""SAN / SAN-ACmix and PVT v1 / PVT-ACmix models.

The generic timm contract (every ``acmix_*`` model plus baselines) lives in ``tests/test_models.py`` and the
operator's own tests (SAN's patchwise attention, ``ACmixSRAttention``) in ``tests/test_acmix.py``; this file
checks what is specific to these families: measured parameter counts, small and non-square inputs, feature maps
and loading of our own and the original (SAN / PVT v1) checkpoint layouts.  ``tests/fixtures/pvt`` comes from
``tools/make_pvt_fixtures.py``, which runs the original PVT v1 code (whai362/PVT ``classification/pvt.py``).
"""
import json
import re
from pathlib import Path

import pytest
import timm
import torch

import models.pvt  # noqa: F401  (registers the entrypoints)
import models.san  # noqa: F401
from models.complexity import count_macs

PVT_FIXTURES = Path(__file__).parent / 'fixtures' / 'pvt'

# measured on this code (PyTorch parameter count at any input size)
PARAMS = {
    'san10': 11_841_124, 'san15': 16_181_310, 'san19': 20_518_470,            # SAN README: 11.8M / 16.2M / 20.5M
    'acmix_san10': 11_994_612, 'acmix_san15': 16_414_134, 'acmix_san19': 20_829_278,
    'pvt_v1_tiny': 13_229_288, 'pvt_v1_small': 24_485_864,                   # = the original code; README 13.2M / 24.5M
    'acmix_pvt_tiny': 13_396_128, 'acmix_pvt_small': 24_824_755,
}
# ACmix README (paper Table): ACmix-SAN 12.1M / 16.6M / 21.2M, ACmix-PVT 13M / 25M
README = {'acmix_san10': 12.1e6, 'acmix_san15': 16.6e6, 'acmix_san19': 21.2e6,
          'acmix_pvt_tiny': 13e6, 'acmix_pvt_small': 25e6}


# ---------------------------------------------------------------- parameter counts

@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_counts(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert n == PARAMS[name]
    if name in README:
        assert abs(n / README[name] - 1) < 0.05, f'{name}: {n:,} vs README {README[name]:,.0f}'


def test_san_acmix_is_san_plus_the_conv_path():
    """SAN-ACmix keeps SAN's Stage I and attention path key for key and adds only fc, dep_conv and the rates
    (81 * P/4 + 6 * 9 + 2 parameters per block); with rate1 = 1, rate2 = 0 it computes SAN exactly."""
    torch.manual_seed(0)
    san = timm.create_model('san10', **_SMALL_SAN).eval()
    twin = timm.create_model('acmix_san10', **_SMALL_SAN).eval()
    san_sd, twin_sd = san.state_dict(), twin.state_dict()
    added = {k: tuple(v.shape) for k, v in twin_sd.items() if k not in san_sd}
    assert set(san_sd) < set(twin_sd)
    assert {k.rsplit('.mixer.', 1)[1] for k in added} == {'fc.weight', 'dep_conv.weight', 'rate1', 'rate2'}
    for i, width in enumerate(_SMALL_SAN['widths']):
        prefix = f'stages.{i}.blocks.0.mixer.'
        assert added[prefix + 'fc.weight'] == (9, 6, 1, 1)
        assert added[prefix + 'dep_conv.weight'] == (width // 4, 9, 3, 3)  # groups = P/16: 9 taps per input map
    twin.load_state_dict(dict(twin_sd, **san_sd))
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if name.endswith(('rate1', 'rate2')):
                p.fill_(1.0 if name.endswith('rate1') else 0.0)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), san(x))
    assert twin.stages[1].blocks[0].mixer.extra_repr().startswith('32, 8, kernel_att=7, head=1, qk_planes=2,')


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


@pytest.mark.parametrize('name', ['acmix_san10', 'acmix_pvt_tiny'])
def test_intermediates_stop_early_and_prune(name):
    """``stop_early`` runs the stages up to the last requested one only (PVT's final LayerNorm, sized for the last
    stage, is then not applied); pruning keeps those stages' maps, the reduced width and no classifier."""
    torch.manual_seed(0)
    model = timm.create_model(name, **(_SMALL_SAN if 'san' in name else _SMALL_PVT)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        full = model.forward_intermediates(x, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0, 1], stop_early=True, intermediates_only=True)
        model.prune_intermediate_layers(indices=[0, 1])
        pruned = model.forward_intermediates(x, intermediates_only=True)
    assert len(early) == len(pruned) == 2 and len(model.stages) == 2
    for a, b, c in zip(early, pruned, full[:2]):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(b, c, rtol=0, atol=0)
    assert model.num_features == model.feature_info[1]['num_chs']
    assert isinstance(model.get_classifier(), torch.nn.Identity)


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
    assert tuple(model.stages[0].pos_embed.shape) == (1, 56 * 56, 64)
    assert tuple(model.stages[3].pos_embed.shape) == (1, 1 + 7 * 7, 512)  # the class token's row first
    big = timm.create_model('pvt_v1_tiny', img_size=(64, 96))
    assert tuple(big.stages[0].pos_embed.shape) == (1, 16 * 24, 64)


@pytest.mark.parametrize('name', ['pvt_v1_tiny', 'acmix_pvt_tiny'])
def test_pvt_class_token(small_models, name):
    """PVT v1's class token (ACmix-PVT's too): in the last stage only, the head reads it, PVT's weight decay skips
    only it; ``class_token=False`` is the token-free backbone of PVT's dense-prediction code."""
    model = small_models[name]
    assert [s.cls_token is not None for s in model.stages] == [False, False, False, True]
    assert model.no_weight_decay() == {'stages.3.cls_token'}
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (1, 1 + 2 * 3, 512)
        torch.testing.assert_close(model(x), model.head(tokens[:, 0]))
        _, maps = model.forward_intermediates(x)
        torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), model.stages[3](maps[2])[0].flatten(2)
                                   .transpose(1, 2))
    assert maps[-1].shape == (1, 512, 2, 3)
    free = timm.create_model(name, class_token=False, **_SMALL_PVT)
    assert free.global_pool == 'avg' and free.no_weight_decay() == set()
    assert 'stages.3.cls_token' not in free.state_dict()
    with pytest.raises(ValueError, match="global_pool must be one of \\('avg', ''\\)"):
        timm.create_model(name, class_token=False, global_pool='token', **_SMALL_PVT)


@pytest.mark.parametrize('name', ['pvt_v1_tiny', 'acmix_pvt_tiny'])
def test_pvt_mac_growth_is_the_conv_path_only(name):
    """ACmix-PVT shares Stage I (q, reduced k/v): over PVT it adds exactly fc (27 C) + dep_conv (81 C) MACs per
    spatial token and block, k_c = 3, and no full-resolution kv projection (2 C^2 per token)."""
    kw = dict(_SMALL_PVT, depths=(1, 2, 1, 2))
    macs = {n: count_macs(timm.create_model(n, **kw), (3, 64, 96)) for n in ('pvt_v1_tiny', 'acmix_pvt_tiny')}
    grids = [(16, 24), (8, 12), (4, 6), (2, 3)]
    extra = sum(d * 108 * c * h * w for d, c, (h, w) in zip(kw['depths'], kw['embed_dims'], grids))
    assert macs['acmix_pvt_tiny'] - macs['pvt_v1_tiny'] == extra


@pytest.mark.slow
@pytest.mark.parametrize('name,paper', [
    ('acmix_pvt_tiny', (13e6, 2.0e9)), ('acmix_pvt_small', (25e6, 3.9e9)),
    ('acmix_san10', (12.1e6, 1.9e9)), ('acmix_san15', (16.6e6, 2.7e9)), ('acmix_san19', (21.2e6, 3.4e9))])
def test_acmix_near_paper_at_224(name, paper):
    """Within 5% of the ACmix paper's params and FLOPs (= MACs) at 224."""
    model = timm.create_model(name)
    params, macs = sum(p.numel() for p in model.parameters()), count_macs(model)
    assert abs(params / paper[0] - 1) < 0.05 and abs(macs / paper[1] - 1) < 0.05, (params, macs)


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
    """Our keys -> PVT v1's released names."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stages\.(\d)\.patch_embed\.', lambda m: f'patch_embed{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.', lambda m: f'block{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d)\.pos_embed$', lambda m: f'pos_embed{int(m.group(1)) + 1}', k)
        k = re.sub(r'^stages\.3\.cls_token$', 'cls_token', k)
        out[k] = v
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


# ---------------------------------------------------------------- the original PVT v1 code

def _pvt_fixture():
    return torch.load(PVT_FIXTURES / 'pvt_v1_small_config.pt', weights_only=True)


@pytest.mark.parametrize('fmt', ['plain', 'model'])
def test_pvt_v1_reproduces_original_logits(tmp_path, fmt):
    """A state dict of the original PVT v1 code (plain, as released, or ``{'model': sd}``) loads strictly through
    timm and gives that code's logits, at its position grid and resampled to a non-square input."""
    fx = _pvt_fixture()
    sd = fx['state_dict']
    assert 'cls_token' in sd and sd['pos_embed4'].shape[1] == 1 + 2 * 2
    path = tmp_path / 'pvt.pth'
    torch.save(sd if fmt == 'plain' else {'model': sd}, path)
    overlay = dict(file=str(path), num_classes=fx['our_kwargs']['num_classes'])
    model = timm.create_model(fx['our_model'], pretrained=True, pretrained_cfg_overlay=overlay,
                              **fx['our_kwargs']).eval()
    assert len(model.state_dict()) == len(sd)
    torch.testing.assert_close(model.stages[3].cls_token, sd['cls_token'], rtol=0, atol=0)
    for name, x in fx['inputs'].items():
        with torch.no_grad():
            out = model(x)
        ref = fx['logits'][name]
        err = ((out - ref).abs().max() / ref.abs().max()).item()
        assert err < 1e-5, f'{name}: relative error {err:.2e}'  # measured 5e-7; issue bar 1e-3


@pytest.mark.parametrize('name', ['pvt_v1_tiny', 'pvt_v1_small'])
def test_pvt_v1_original_full_layout(name):
    """Every key and shape of the original full pvt_tiny / pvt_small maps onto ours; nothing may be left out."""
    shapes = json.loads((PVT_FIXTURES / f'keys_{name}.json').read_text())
    assert 'cls_token' in shapes and shapes['pos_embed4'] == [1, 50, 512]
    with torch.device('meta'):
        model = timm.create_model(name)
    sd = {k: torch.empty(s, device='meta') for k, s in shapes.items()}
    out = models.pvt.checkpoint_filter_fn(sd, model)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for drop in ('cls_token', 'pos_embed4'):
        bad = {k: v for k, v in sd.items() if k != drop}
        with pytest.raises(KeyError, match=re.escape(f'stages.3.{drop[:-1] if drop[-1] == "4" else drop}')):
            models.pvt.checkpoint_filter_fn(bad, model)
    bad = dict(sd, pos_embed4=torch.empty(1, 49, 512, device='meta'))  # a token-free position table
    with pytest.raises(KeyError, match='stages.3.pos_embed: checkpoint'):
        models.pvt.checkpoint_filter_fn(bad, model)


PVT_REPO = Path('/work/.mirror/whai362+PVT/repo')


@pytest.mark.slow
@pytest.mark.skipif(not PVT_REPO.exists(), reason=f'PVT repository not mirrored at {PVT_REPO}')
def test_pvt_fixtures_regenerate(tmp_path):
    """The committed fixtures are what tools/make_pvt_fixtures.py writes from the original code."""
    from tools.make_pvt_fixtures import main
    main(['--pvt-repo', str(PVT_REPO), '--out', str(tmp_path)])
    for path in sorted(PVT_FIXTURES.glob('*.json')):
        assert json.loads(path.read_text()) == json.loads((tmp_path / path.name).read_text()), path.name
    old, new = _pvt_fixture(), torch.load(tmp_path / 'pvt_v1_small_config.pt', weights_only=True)
    assert all(torch.equal(v, new['state_dict'][k]) for k, v in old['state_dict'].items())
    for name, x in old['inputs'].items():
        assert torch.equal(x, new['inputs'][name])
        torch.testing.assert_close(old['logits'][name], new['logits'][name], rtol=1e-5, atol=1e-6)  # threads


def test_pvt_v1_original_into_token_free_backbone(tmp_path):
    """``class_token=False`` (PVT's detection / segmentation backbone) drops the token and its position row, as
    that code does; the four stage maps then match the full model's first three exactly."""
    fx = _pvt_fixture()
    path = tmp_path / 'pvt.pth'
    torch.save(fx['state_dict'], path)
    overlay = dict(file=str(path), num_classes=10)
    free = timm.create_model('pvt_v1_tiny', pretrained=True, pretrained_cfg_overlay=overlay, class_token=False,
                             **fx['our_kwargs']).eval()
    torch.testing.assert_close(free.stages[3].pos_embed, fx['state_dict']['pos_embed4'][:, 1:], rtol=0, atol=0)
    full = timm.create_model('pvt_v1_tiny', pretrained=True, pretrained_cfg_overlay=overlay, **fx['our_kwargs']).eval()
    x = fx['inputs']['grid']
    with torch.no_grad():
        a, b = (m.forward_intermediates(x, intermediates_only=True) for m in (free, full))
    for i in range(3):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)
    assert not torch.allclose(a[3], b[3])  # stage 4 attends to the class token in the classifier only
