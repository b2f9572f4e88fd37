"""The timm model contract, for every registered ``acmix_*`` model and every baseline it is compared with.

Modelled on timm's own ``tests/test_models.py``: forward / backward, default cfg, features_only, classifier reset,
pre-logits, forward_intermediates, gradient checkpointing, no_weight_decay, checkpoint round trips through timm's
``pretrained_cfg_overlay=dict(file=...)`` in each format we accept, and odd input sizes; then the graph-capture
contract: torch.fx tracing (forward, backward, scripted, FX feature wrapper) with timm's notrace leaf modules and
functions, TorchScript under ``timm.set_scriptable(True)``, ``torch.compile`` and ``torch.export``.  Small inputs
keep the default run fast; the full 224x224 forward, and compile/export beyond one ACmix model and its baseline per
family, are ``slow``.  ``tools/run_timm_model_tests.py`` runs timm's own test file on these models.
"""
import copy
import math
from functools import lru_cache, partial

import pytest
import timm
import torch
from timm.layers import PatchEmbed
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import models  # noqa: F401  (registers the entrypoints)
from models.paper import BASELINES, baseline_of

torch.set_num_threads(1)

ACMIX_MODELS = sorted(timm.list_models('acmix_*'))
BASELINE_MODELS = sorted(b for b in set(BASELINES.values()) if b in timm.list_models())
MODELS = ACMIX_MODELS + BASELINE_MODELS
# timm's own Swin baselines are built for 224 only unless asked: same any-size behaviour as our entrypoints.
_ANY_SIZE = dict(strict_img_size=False, embed_layer=partial(PatchEmbed, dynamic_img_pad=True))
CREATE_KWARGS = {n: _ANY_SIZE for n in BASELINE_MODELS if n.startswith('swin_')}
FORMATS = ('plain', 'model', 'ddp')
# torch.compile / torch.export take tens of seconds per model on a CPU: by default one ACmix model and its baseline
# per family (every code path: each attention mode and each baseline block); every model under ``slow``.
GRAPH_REPRESENTATIVES = ('acmix_resnet26', 'conv_resnet26', 'acmix_san10', 'san10', 'acmix_pvt_tiny', 'pvt_v1_tiny',
                         'acmix_swin_tiny_patch4_window7_224', 'swin_tiny_patch4_window7_224')
GRAPH_MODELS = [pytest.param(n, marks=() if n in GRAPH_REPRESENTATIVES else pytest.mark.slow) for n in MODELS]
# Dynamo and export unroll SAN's tap loops (K*K per block): 3x3 footprints keep the default representatives to
# seconds; san15/san19 (slow) run their registered 7x7.
GRAPH_CREATE_KWARGS = {n: dict(kernels=(3,) * 5) for n in ('acmix_san10', 'san10')}
# PVT v1 stages return (map, class tokens): timm's FX feature wrapper takes a module's output as the feature, so it
# applies to map-output models only (timm's feature tests leave such class-token models out as "non-standard")
FX_FEATURE_MODELS = [n for n in MODELS if 'pvt' not in n]


def _size(name: str):
    """(H, W): non-square for token models, square for conv-like ones; reductions divide both exactly."""
    return (64, 96) if ('swin' in name or 'pvt' in name) else (64, 64)


# timm's own Swin builds input-dependent shift masks (strict_img_size=False) with Python slicing, which torch.fx
# cannot trace (timm's own FX tests use fixed sizes too): the FX tests build those baselines for the test size.
FX_CREATE_KWARGS = {n: dict(img_size=_size(n), strict_img_size=True) for n in BASELINE_MODELS if n.startswith('swin_')}


def _create(name: str, **kwargs):
    return timm.create_model(name, **dict(CREATE_KWARGS.get(name, {}), **kwargs))


@lru_cache(maxsize=None)
def _model(name: str):
    """One eval-mode instance per model (tests that mutate it work on a deep copy)."""
    torch.manual_seed(0)
    return _create(name).eval()


def _input(name: str, batch: int = 1, size=None):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *(size or _size(name)), generator=g)


def test_every_acmix_model_has_a_baseline():
    missing = [n for n in ACMIX_MODELS if baseline_of(n) is None]
    assert not missing, f'no registered baseline for {missing}'


@pytest.mark.parametrize('name', MODELS)
def test_forward_backward(name):
    model = copy.deepcopy(_model(name))  # eval mode: no drop-path, so every parameter is on the graph
    x = _input(name, batch=2)
    out = model(x)
    assert out.shape == (2, model.num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without a gradient: {no_grad[:10]}'


@pytest.mark.parametrize('name', MODELS)
def test_odd_input_size(name):
    with torch.no_grad():
        out = _model(name)(_input(name, size=(33, 45)))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg(name):
    model = _model(name)
    cfg = model.pretrained_cfg
    assert len(cfg['input_size']) == 3 and cfg['input_size'][0] == 3
    assert len(cfg['mean']) == 3 and len(cfg['std']) == 3
    assert cfg['num_classes'] == model.num_classes == 1000
    first = model.get_submodule(cfg['first_conv'])
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3
    head = model.get_submodule(cfg['classifier'])
    assert isinstance(head, torch.nn.Linear) and head.out_features == 1000
    assert head is model.get_classifier()


@pytest.mark.parametrize('name', MODELS)
def test_head_and_reset_classifier(name):
    model = copy.deepcopy(_model(name))
    x = _input(name)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        model.reset_classifier(3)
        assert model(x).shape == (1, 3)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)


@pytest.mark.parametrize('name', MODELS)
def test_features_only(name):
    model = _create(name, features_only=True).eval()
    h, w = _size(name)
    with torch.no_grad():
        outs = model(_input(name))
    nhwc = str(getattr(model, 'output_fmt', 'NCHW')).endswith('NHWC')
    chs, reds = model.feature_info.channels(), model.feature_info.reduction()
    assert len(outs) == len(chs) == len(reds)
    for o, c, r in zip(outs, chs, reds):
        oh, ow, oc = (o.shape[1], o.shape[2], o.shape[3]) if nhwc else (o.shape[2], o.shape[3], o.shape[1])
        assert (oc, oh, ow) == (c, math.ceil(h / r), math.ceil(w / r)), f'reduction {r}'


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    model = _model(name)
    h, w = _size(name)
    with torch.no_grad():
        final, inter = model.forward_intermediates(_input(name))
        only = model.forward_intermediates(_input(name), intermediates_only=True)
    info = model.feature_info
    assert len(inter) == len(only) == len(info)
    for t, t2, fi in zip(inter, only, info):
        assert t.shape == (1, fi['num_chs'], math.ceil(h / fi['reduction']), math.ceil(w / fi['reduction']))
        torch.testing.assert_close(t, t2)
    with torch.no_grad():
        torch.testing.assert_close(final, model.forward_features(_input(name)))


@pytest.mark.parametrize('name', MODELS)
def test_grad_checkpointing(name):
    model = copy.deepcopy(_model(name))
    x = _input(name)
    with torch.no_grad():
        ref = model(x)
    model.set_grad_checkpointing(True)
    out = model(x)
    torch.testing.assert_close(out, ref)
    out.sum().backward()


@pytest.mark.parametrize('name', MODELS)
def test_no_weight_decay_names_exist(name):
    model = _model(name)
    if not hasattr(model, 'no_weight_decay'):
        pytest.skip('no no_weight_decay()')
    params = dict(model.named_parameters())
    unknown = [n for n in model.no_weight_decay() if n not in params]
    assert not unknown, f'no_weight_decay names that are not parameters: {unknown}'


@pytest.mark.parametrize('name', MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    """Our checkpoints load through timm's file mechanism: formats rotate over the models (all are covered)."""
    fmt = FORMATS[MODELS.index(name) % len(FORMATS)]
    src = _model(name)
    sd = src.state_dict()
    blob = {'plain': sd, 'model': {'model': sd, 'epoch': 3},
            'ddp': {'state_dict': {f'module.{k}': v for k, v in sd.items()}}}[fmt]
    path = tmp_path / 'ck.pth'
    torch.save(blob, path)
    model = _create(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    got = model.state_dict()
    assert got.keys() == sd.keys()
    assert all(torch.equal(got[k], sd[k]) for k in sd), fmt


@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_forward_224(name):
    with torch.no_grad():
        out = _model(name)(_input(name, size=(224, 224)))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def _fx_model(model: torch.nn.Module) -> torch.fx.GraphModule:
    """``model`` traced by torch.fx as timm's tests do: timm's notrace modules are leaves, its notrace functions
    are wrapped, and the graph returns the model output (train and eval graphs are traced separately)."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                    eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)


def _fx_source(name: str, **kwargs) -> torch.nn.Module:
    """A fresh model for the FX tests (seeded; ``FX_CREATE_KWARGS`` applied)."""
    torch.manual_seed(0)
    return _create(name, **dict(FX_CREATE_KWARGS.get(name, {}), **kwargs))


def _scriptable_model(name: str, **kwargs) -> torch.nn.Module:
    """The eval model built under ``timm.set_scriptable(True)`` (seeded)."""
    torch.manual_seed(0)
    with timm.set_scriptable(True):
        return _create(name, **kwargs).eval()


def _only_output(outputs: dict) -> torch.Tensor:
    (out,) = outputs.values()
    return out


@pytest.mark.parametrize('name', MODELS)
def test_fx_forward(name):
    model = _fx_source(name).eval()
    x = _input(name)
    with torch.no_grad():
        ref = model(x)
        out = _only_output(_fx_model(model)(x))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_fx_backward(name):
    model = _fx_model(_fx_source(name, num_classes=7).train())
    out = _only_output(model(_input(name, batch=2)))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without a gradient after the FX graph: {no_grad[:10]}'


@pytest.mark.parametrize('name', MODELS)
def test_fx_torchscript(name):
    model = _scriptable_model(name, **FX_CREATE_KWARGS.get(name, {}))
    x = _input(name)
    scripted = torch.jit.script(_fx_model(model))
    with torch.no_grad():
        torch.testing.assert_close(_only_output(scripted(x)), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', FX_FEATURE_MODELS)
def test_fx_features(name):
    """timm's FX feature wrapper (``feature_cls='fx'``) returns the same maps as the default features_only (both
    wrap a model built from the same seed, so the weights agree)."""
    ref_model = _fx_source(name, features_only=True).eval()
    fx_model = _fx_source(name, features_only=True, feature_cls='fx').eval()
    x = _input(name)
    with torch.no_grad():
        refs, outs = ref_model(x), fx_model(x)
    assert fx_model.feature_info.channels() == ref_model.feature_info.channels()
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_torchscript(name):
    model = _scriptable_model(name)
    x = _input(name)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', GRAPH_MODELS)
def test_torch_compile(name):
    """One whole graph (``fullgraph=True``: no graph breaks), same output as eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _create(name, **GRAPH_CREATE_KWARGS.get(name, {})).eval()
    x = _input(name)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', GRAPH_MODELS)
def test_torch_export(name):
    torch.manual_seed(0)
    model = _create(name, **GRAPH_CREATE_KWARGS.get(name, {})).eval()
    x = _input(name)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)
