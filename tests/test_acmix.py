"""Tests of the ACmix operator (``acmix.ACmix``, ``ACmixWindowAttention``, ``ACmixSRAttention``).

The authors' fixtures (``tests/fixtures/authors/*.pt``) are written by ``tools/make_authors_fixtures.py`` from
the authors' own modules with randomised weights.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.models.pvt_v2 import Attention as PvtAttention
from timm.models.swin_transformer import SwinTransformerBlock

from acmix import ACmix, ACmixSRAttention, ACmixWindowAttention, ATTN_MODES, MIX_MODES, SHIFT_MODES, position_grid
from acmix.patchwise import PatchwiseAttention, patchwise_aggregate
from acmix.window import MASKED_LOGIT, zero_weight_mask

FIXTURES = Path(__file__).parent / 'fixtures' / 'authors'


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """The tensors here are tiny: intra-op threads only add synchronisation (seconds per test on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fixtures(kind: str) -> list[Path]:
    paths = sorted(FIXTURES.glob(f'{kind}*.pt'))
    assert paths, f'no {kind} fixtures in {FIXTURES}: run tools/make_authors_fixtures.py'
    return paths


def _build(kind: str, mix: str = 'learnable', shift: str = 'group_conv', **kw) -> torch.nn.Module:
    """Small instance of each operator flavour ('local' / 'patchwise' / 'global' image modes, 'window', 'sr')."""
    if kind == 'window':
        return ACmixWindowAttention(16, 2, window_size=4, mix=mix, shift=shift, **kw)
    if kind == 'sr':
        return ACmixSRAttention(16, 2, sr_ratio=2, mix=mix, shift=shift, **kw)
    return ACmix(8, 16, kernel_att=5, head=2, attn_mode=kind, mix=mix, shift=shift, **kw)


def _run(kind: str, m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if kind == 'window':
        return m(x, (2, 2))
    if kind == 'sr':
        return m(x, 6, 7)
    return m(x)


def _input(kind: str, batch: int = 2) -> torch.Tensor:
    shape = {'window': (batch, 6, 7, 16), 'sr': (batch, 42, 16)}.get(kind, (batch, 8, 6, 7))
    return torch.randn(shape)


# ---------------------------------------------------------------- equivalence with the authors' code
@pytest.mark.parametrize('impl', ['auto', 'reference'])
@pytest.mark.parametrize('path', _fixtures('resnet_acmix'), ids=lambda p: p.stem)
def test_authors_resnet_acmix(path: Path, impl: str) -> None:
    data = torch.load(path, weights_only=True)
    m = ACmix(**data['config'], impl=impl).eval()
    m.load_state_dict(data['state_dict'], strict=True)  # no dep_conv.bias: the authors' init set it to None
    with torch.no_grad():
        out = m(data['input'])
    assert out.shape == data['output'].shape
    assert (out - data['output']).abs().max().item() < 1e-5


@pytest.mark.parametrize('path', _fixtures('swin_window_acmix'), ids=lambda p: p.stem)
def test_authors_swin_window_acmix(path: Path) -> None:
    data = torch.load(path, weights_only=True)
    state = dict(data['state_dict'])
    state.pop('relative_position_index')  # a persistent buffer in their module, recomputed (non-persistent) here
    m = ACmixWindowAttention(**data['config']).eval()
    m.load_state_dict(state, strict=True)
    shift = (data['shift_size'],) * 2
    with torch.no_grad():
        given = m(data['input'], shift, data['attn_mask'])   # their block's mask
        built = m(data['input'], shift)                      # our mask
    assert (given - data['output']).abs().max().item() < 1e-5
    assert (built - data['output']).abs().max().item() < 1e-5


AUTHORS_REPO = Path('/work/.mirror/LeapLabTHU+ACmix/repo')


@pytest.mark.slow
@pytest.mark.skipif(not AUTHORS_REPO.exists(), reason=f'authors\' repository not mirrored at {AUTHORS_REPO}')
def test_fixtures_regenerate(tmp_path: Path) -> None:
    """The committed fixtures are what the tool writes from the authors' code (seed 0)."""
    tool = importlib.util.spec_from_file_location('make_authors_fixtures',
                                                  Path(__file__).parents[1] / 'tools' / 'make_authors_fixtures.py')
    module = importlib.util.module_from_spec(tool)
    tool.loader.exec_module(module)
    module.main(['--authors-repo', str(AUTHORS_REPO), '--out', str(tmp_path)])
    for path in sorted(FIXTURES.glob('*.pt')):
        old, new = torch.load(path, weights_only=True), torch.load(tmp_path / path.name, weights_only=True)
        assert torch.equal(old['input'], new['input']), path.name
        assert torch.allclose(old['output'], new['output'], atol=1e-6), path.name  # thread count may change rounding
        assert old['state_dict'].keys() == new['state_dict'].keys()


# ---------------------------------------------------------------- baselines: mix='attn_only'
@pytest.mark.parametrize('res, window, shift', [((7, 10), 4, 2), ((8, 8), 4, 0), ((9, 9), 3, 1)])
def test_window_attn_only_is_timm_swin(res: tuple[int, int], window: int, shift: int) -> None:
    block = SwinTransformerBlock(16, res, num_heads=2, window_size=window, shift_size=shift).double().eval()
    m = ACmixWindowAttention(16, 2, window, mix='attn_only').double().eval()
    with torch.no_grad():
        for p in block.attn.parameters():
            p.normal_(std=0.5)
    m.load_state_dict(block.attn.state_dict(), strict=True)
    x = torch.randn(2, *res, 16, dtype=torch.float64)
    with torch.no_grad():  # timm's roll + pad + partition + WindowAttention + reverse + crop + roll back
        ref = block._attn(x)
        assert torch.allclose(m(x, block.shift_size), ref, atol=1e-10)
        assert torch.allclose(m(x, block.shift_size, block.attn_mask), ref, atol=1e-10)


def test_window_mask_gives_exact_zero_weights() -> None:
    """Swin's -100 mask entries become MASKED_LOGIT: the masked softmax weights are exact zeros instead of float32
    subnormals, and the float32 outputs stay timm's Swin block's to float32 resolution."""
    torch.manual_seed(0)
    block = SwinTransformerBlock(32, (16, 16), num_heads=2, window_size=8, shift_size=4).eval()
    m = ACmixWindowAttention(32, 2, 8, mix='attn_only').eval()
    m.load_state_dict(block.attn.state_dict(), strict=True)
    mask = block.attn_mask
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert set(zero_weight_mask(mask).unique().tolist()) == {0.0, MASKED_LOGIT}
    assert torch.equal(zero_weight_mask(mask) == 0, mask == 0)
    logits = torch.randn(mask.shape)
    subnormal = lambda p: ((p != 0) & (p.abs() < torch.finfo(p.dtype).tiny)).sum().item()  # noqa: E731
    assert subnormal((logits + mask).softmax(-1)) > 0
    assert subnormal((logits + zero_weight_mask(mask)).softmax(-1)) == 0
    x = torch.randn(2, 16, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x, block.shift_size, mask), block._attn(x), rtol=2e-7, atol=2e-7)


@pytest.mark.parametrize('sr_ratio', [1, 2])
def test_sr_attn_only_is_pvt_attention(sr_ratio: int) -> None:
    ref = PvtAttention(16, 2, sr_ratio=sr_ratio, qkv_bias=False).eval()  # timm's PVT v2 Attention = v1 when not linear
    m = ACmixSRAttention(16, 2, sr_ratio, mix='attn_only').eval()
    m.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 7 * 5, 16)
    with torch.no_grad():
        assert torch.allclose(m(x, 7, 5), ref(x, (7, 5)), atol=1e-6)


def test_global_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    m = ACmix(8, 8, head=2, stride=2, attn_mode='global', mix='attn_only').eval()
    x = torch.randn(1, 8, 5, 6)
    q, k, v = m.conv1(x), m.conv2(x), m.conv3(x)
    q = q[:, :, ::2, ::2].reshape(2, 4, -1)                               # (head, head_dim, Ho*Wo)
    k, v = k.reshape(2, 4, -1), v.reshape(2, 4, -1)                       # (head, head_dim, H*W)
    probs = torch.einsum('hdq,hdk->hqk', q / 2.0, k).softmax(-1)          # head_dim 4 -> scale 1/2
    ref = torch.einsum('hqk,hdk->hdq', probs, v).reshape(1, 8, 3, 3)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-5)


# ---------------------------------------------------------------- every mode x mix x shift trains
@pytest.mark.parametrize('shift', SHIFT_MODES)
@pytest.mark.parametrize('mix', MIX_MODES)
@pytest.mark.parametrize('kind', [*ATTN_MODES, 'window', 'sr'])
def test_train_step(kind: str, mix: str, shift: str) -> None:
    torch.manual_seed(0)
    m = _build(kind, mix, shift, **({'stride': 2} if kind in ATTN_MODES else {}))
    names = {n for n, _ in m.named_parameters()}
    assert ('fc.weight' in names) == (mix != 'attn_only')
    assert ('rate1' in names) == (mix == 'learnable')
    # (sr's reduction is Stage I, shared by both paths; its attention-only parameter is the output projection)
    attn_only_names = {'local': 'conv_p.weight', 'window': 'relative_position_bias_table', 'sr': 'proj.weight'}
    if kind in attn_only_names:
        assert (attn_only_names[kind] in names) == (mix != 'conv_only')
    x = _input(kind)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    out = _run(kind, m, x)
    expected = {'window': x.shape, 'sr': x.shape}.get(kind, (2, 16, 3, 4))
    assert out.shape == expected
    out.square().mean().backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    unchanged = {n for n, p in m.named_parameters() if torch.equal(p, before[n])}
    # a bias that adds the same amount to every logit of a query (the key bias, conv_p's bias) cancels in the
    # softmax: its gradient is zero up to rounding, so an SGD step may leave it unchanged
    assert unchanged <= {'conv_p.bias', 'conv1.bias', 'conv2.bias'}, f'not updated: {sorted(unchanged)}'


# Stage I outputs that both paths read, for _build / _input: q | k | v (local), the q | k | v windows of the padded
# 8 x 8 map (window), q and the reduced k | v tokens (sr)
_STAGE1_SHAPES = {'local': [(2, 48, 6, 7)], 'window': [(8, 16, 48)], 'sr': [(2, 42, 16), (2, 9, 32)]}


@pytest.mark.parametrize('kind, fold_fc', [('local', True), ('window', True), ('window', False), ('sr', True)])
def test_backward_adds_the_paths_stage1_gradients_in_place(kind: str, fold_fc: bool) -> None:
    """Backward adds one path's gradient of a Stage I output into the other's in place (``add_``), not into a
    fresh full-size tensor (``add``: ~10 MB of newly touched memory per block at stage 1 of a ResNet or Swin).
    This needs both gradients to reach Stage I as plain tensors (the local-attention op, ``tokens_to_planes``,
    ``tokens_fc_to_planes`` (Swin's unfolded fc, ``fold_fc`` off) and ``sr_conv_maps`` return them so, not as
    views) and, in ``ACmix``, the attention path's to arrive first."""
    torch.manual_seed(0)
    m = _build(kind)
    m.dep_conv.fold_fc = fold_fc
    # unfolded, Swin's fc reads the tokens only on a map of window multiples (here 8 x 8, the padded map's size)
    x = _input(kind) if fold_fc else torch.randn(2, 8, 8, 16)
    out = _run(kind, m, x)
    # the profiler, not a Python dispatch mode: a mode holds references to the gradients, which alone makes
    # autograd add out of place
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        out.square().mean().backward()
    adds = [(e.name, [tuple(s) for s in e.input_shapes[:2]]) for e in prof.events()
            if e.name in ('aten::add', 'aten::add_')]
    for shape in _STAGE1_SHAPES[kind]:
        ops = [name for name, shapes in adds if shapes == [shape, shape]]
        assert ops == ['aten::add_'], f'gradient sums of the {shape} Stage I output: {ops}'


# ---------------------------------------------------------------- shift variants and mixing
@pytest.mark.parametrize('shift', SHIFT_MODES[1:])
@pytest.mark.parametrize('kind, kw', [('local', dict(stride=2, dilation=2, kernel_conv=5)), ('local', {}),
                                      ('window', {}), ('sr', dict(kernel_conv=5))])
def test_shift_variants_equal_group_conv_at_init(kind: str, kw: dict, shift: str) -> None:
    ref = _build(kind, **kw).eval()
    m = _build(kind, shift=shift, **kw).eval()
    shared = {k: v for k, v in ref.state_dict().items() if not k.startswith('dep_conv.')}
    missing, unexpected = m.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith('dep_conv.') for k in missing)
    x = _input(kind, batch=1)
    with torch.no_grad():
        assert torch.allclose(_run(kind, m, x), _run(kind, ref, x), atol=1e-5)


@pytest.mark.filterwarnings('ignore::UserWarning')  # raised inside timm's table interpolation
def test_window_set_window_size() -> None:
    m = ACmixWindowAttention(16, 2, window_size=4)
    x = torch.randn(1, 6, 6, 16)
    m.set_window_size(3)
    assert m.window_size == (3, 3) and m.relative_position_bias_table.shape == (25, 2)
    assert m.relative_position_index.shape == (9, 9) and 'relative_position_index' not in m.state_dict()
    assert m(x, (1, 1)).shape == x.shape


def test_fixed_mix_is_unit_rates() -> None:
    torch.manual_seed(0)
    learn = ACmix(8, 8, head=2).eval()
    fixed = ACmix(8, 8, head=2, mix='fixed').eval()
    fixed.load_state_dict({k: v for k, v in learn.state_dict().items() if not k.startswith('rate')}, strict=True)
    with torch.no_grad():
        learn.rate1.fill_(1.0)
        learn.rate2.fill_(1.0)
        x = torch.randn(1, 8, 6, 6)
        assert torch.allclose(fixed(x), learn(x), atol=1e-6)
    assert 'rate1' not in dict(fixed.named_parameters()) and fixed.rate1.item() == 1.0


@pytest.mark.parametrize('kind', ['window', 'sr'])
def test_project_mix_is_rate1_times_proj_plus_conv(kind: str) -> None:
    """The token flavours' one-GEMM mix equals ``rate1 * proj(attn) + conv`` in value and in every gradient (the
    attention output, the conv path output, ``rate1`` and ``proj``'s weight and bias)."""
    torch.manual_seed(0)
    m = _build(kind).double()
    with torch.no_grad():
        m.rate1.fill_(0.7)
        m.proj.bias.normal_()
    attn = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    conv = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 5, 16, dtype=torch.float64)
    leaves = [attn, conv, m.rate1, m.proj.weight, m.proj.bias]
    fused = m._project_mix(attn, conv)
    fused_grads = torch.autograd.grad(fused, leaves, grad)
    explicit = m.rate1 * m.proj(attn) + conv
    explicit_grads = torch.autograd.grad(explicit, leaves, grad)
    torch.testing.assert_close(fused, explicit)
    for name, a, b in zip(('attn', 'conv', 'rate1', 'proj.weight', 'proj.bias'), fused_grads, explicit_grads):
        torch.testing.assert_close(a, b, msg=lambda text: f'{name}: {text}')
    torch.testing.assert_close(m._project_mix(attn, None), m.proj(attn))


def test_reset_parameters_restores_shift_init() -> None:
    m = ACmix(8, 8, head=2, kernel_conv=5)
    with torch.no_grad():
        torch.nn.init.kaiming_normal_(m.dep_conv.weight)
        m.rate1.zero_()
    m.reset_parameters()
    w = m.dep_conv.weight                                                   # (out, 25, 5, 5)
    assert w.sum().item() == 8 * 25 and all(w[:, j, j // 5, j % 5].eq(1).all() for j in range(25))
    assert m.rate1.item() == 0.5


# ---------------------------------------------------------------- robustness
@pytest.mark.parametrize('size, stride, dilation', [((1, 1), 1, 1), ((2, 3), 1, 1), ((1, 1), 2, 1), ((5, 7), 2, 1),
                                                    ((13, 9), 2, 2), ((3, 3), 1, 3)])
@pytest.mark.parametrize('mode', ATTN_MODES)
def test_acmix_any_size(mode: str, size: tuple[int, int], stride: int, dilation: int) -> None:
    m = ACmix(8, 8, kernel_att=7, head=2, stride=stride, dilation=dilation, attn_mode=mode)
    out = m(torch.randn(2, 8, *size))  # batch 2: the patchwise core has BatchNorm
    assert out.shape == (2, 8, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('size', [(1, 1), (2, 3), (7, 10)])
def test_window_and_sr_any_size(size: tuple[int, int]) -> None:
    x = torch.randn(1, *size, 16)
    assert ACmixWindowAttention(16, 2, window_size=4)(x, (2, 2)).shape == x.shape
    tokens = x.flatten(1, 2)
    assert ACmixSRAttention(16, 2, sr_ratio=1)(tokens, *size).shape == tokens.shape
    # maps smaller than sr_ratio (PVT v1 would reduce them to zero tokens) are padded to one reduction cell
    for sr_ratio in (2, 8):
        out = ACmixSRAttention(16, 2, sr_ratio=sr_ratio)(tokens, *size)
        assert out.shape == tokens.shape and torch.isfinite(out).all()


def test_sr_padding_only_below_ratio() -> None:
    """Where PVT v1's floor reduction works (map >= sr_ratio), nothing is padded: a 5x6 map with sr 2 uses
    only the 4x6 top rows for keys, so changing the last row must not change the attention of other tokens."""
    torch.manual_seed(0)
    m = ACmixSRAttention(16, 2, sr_ratio=2, mix='attn_only').eval()
    x = torch.randn(1, 5 * 6, 16)
    y = x.clone()
    y[:, -6:] += 1.0                       # last row: dropped by the floor reduction, only its queries change
    with torch.no_grad():
        assert torch.allclose(m(x, 5, 6)[:, :-6], m(y, 5, 6)[:, :-6], atol=1e-6)


def test_dilation_changes_both_paths() -> None:
    torch.manual_seed(0)
    base = ACmix(8, 8, kernel_att=3, head=2).eval()
    dil = ACmix(8, 8, kernel_att=3, head=2, dilation=2).eval()
    dil.load_state_dict(base.state_dict())
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        # centre pixel (4, 4): its dilated 3x3 window / conv taps read rows and columns 2, 4, 6 only, so changing
        # an odd row must leave it unchanged with dilation 2 and change it with dilation 1
        y = x.clone()
        y[:, :, 3] += 1.0
        assert torch.allclose(dil(x)[..., 4, 4], dil(y)[..., 4, 4], atol=1e-6)
        assert not torch.allclose(base(x)[..., 4, 4], base(y)[..., 4, 4], atol=1e-3)


def test_position_grid() -> None:
    g = position_grid(3, 2, dtype=torch.float64)
    assert g.shape == (1, 2, 3, 2) and g.dtype == torch.float64
    assert g[0, 0].tolist() == [[-1.0, 1.0]] * 3                           # x along the columns
    assert g[0, 1, :, 0].tolist() == [-1.0, 0.0, 1.0]                      # y along the rows


@pytest.mark.parametrize('kind', [*ATTN_MODES, 'window', 'sr'])
def test_bf16_autocast_and_channels_last(kind: str) -> None:
    torch.manual_seed(0)
    m = _build(kind).eval()
    x = _input(kind, batch=1)
    with torch.no_grad():
        ref = _run(kind, m, x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = _run(kind, m, x)
        assert low.dtype == torch.bfloat16
        assert (low.float() - ref).abs().max().item() < 0.05 * ref.abs().max().item()
        if kind in ATTN_MODES:
            assert torch.allclose(m(x.to(memory_format=torch.channels_last)), ref, atol=1e-6)


def test_compile_and_export() -> None:
    torch.manual_seed(0)
    m = ACmix(8, 8, kernel_att=3, head=2, stride=2).eval()
    x = torch.randn(1, 8, 7, 6)
    with torch.no_grad():
        ref = m(x)
        assert torch.allclose(torch.compile(m, backend='aot_eager', fullgraph=True)(x), ref, atol=1e-5)
        assert torch.allclose(torch.export.export(m, (x,)).module()(x), ref, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_half_on_cuda() -> None:
    for kind in ['local', 'window', 'sr']:
        m = _build(kind).cuda().half()
        out = _run(kind, m, _input(kind).cuda().half())
        assert out.dtype == torch.float16 and torch.isfinite(out).all()


# ---------------------------------------------------------------- loud errors
@pytest.mark.parametrize('build, match', [
    (lambda: ACmix(8, 10, head=4), 'out_planes 10 must be divisible by head 4'),
    (lambda: ACmix(8, 8, kernel_att=4), 'kernel_att must be an odd positive int, got 4'),
    (lambda: ACmix(8, 8, kernel_conv=0), 'kernel_conv must be an odd positive int, got 0'),
    (lambda: ACmix(8, 8, attn_mode='sliding'), r"attn_mode must be one of \('local', 'patchwise', 'global'\)"),
    (lambda: ACmix(8, 8, mix='both'), r"mix must be one of \('learnable', 'fixed', 'attn_only', 'conv_only'\)"),
    (lambda: ACmix(8, 8, shift='roll'), r"shift must be one of \('group_conv', 'shift_init'"),
    (lambda: ACmix(8, 8, impl='cuda'), 'impl must be one of'),
    (lambda: ACmix(8, 8, stride=0), 'stride must be an int >= 1, got 0'),
    (lambda: ACmixWindowAttention(30, 4), 'dim 30 must be divisible by num_heads 4'),
    (lambda: ACmixWindowAttention(32, 4, kernel_conv=2), 'kernel_conv must be an odd positive int, got 2'),
    (lambda: ACmixSRAttention(30, 4), 'dim 30 must be divisible by num_heads 4'),
    (lambda: ACmixSRAttention(32, 4, sr_ratio=0), 'sr_ratio must be an int >= 1, got 0'),
])
def test_errors(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_sr_token_count_error() -> None:
    with pytest.raises(ValueError, match=r'token count 10 does not match num_prefix_tokens \+ H\*W = 0 \+ 3\*4 = 12'):
        ACmixSRAttention(16, 2)(torch.randn(1, 10, 16), 3, 4)


# ---------------------------------------------------------------- SAN patchwise attention (acmix/patchwise.py)

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


# ---------------------------------------------------------------- ACmixSRAttention: class token, shared Stage I

def _split_paths(m: ACmixSRAttention, **kw):
    """The ``attn_only`` and ``conv_only`` twins of ``m``, holding its weights."""
    sd = m.state_dict()
    twins = []
    for mix in ('attn_only', 'conv_only'):
        t = ACmixSRAttention(m.dim, m.num_heads, m.sr_ratio, mix=mix, **kw).eval()
        t.load_state_dict({k: v for k, v in sd.items() if k in t.state_dict()})
        twins.append(t)
    return twins


def test_sr_conv_path_on_spatial_tokens_only():
    """Class token: attention as PVT v1 over every token; the conv path sees (and writes) the spatial ones only."""
    torch.manual_seed(0)
    m = ACmixSRAttention(16, 2, sr_ratio=1, num_prefix_tokens=1).eval()
    with torch.no_grad():
        m.rate1.fill_(0.3), m.rate2.fill_(0.8)
    attn, conv = _split_paths(m, num_prefix_tokens=1)
    x = torch.randn(2, 1 + 3 * 5, 16)
    with torch.no_grad():
        out, out_conv = m(x, 3, 5), conv(x, 3, 5)
        torch.testing.assert_close(out, 0.3 * attn(x, 3, 5) + 0.8 * out_conv)
        assert torch.equal(out_conv[:, 0], torch.zeros_like(out_conv[:, 0]))
        x2 = x.clone()
        x2[:, 0] += 1  # the class token does not reach the conv path
        torch.testing.assert_close(conv(x2, 3, 5), out_conv)
        spatial = ACmixSRAttention(16, 2, mix='conv_only').eval()
        spatial.load_state_dict(conv.state_dict())
        torch.testing.assert_close(spatial(x[:, 1:], 3, 5), out_conv[:, 1:])
    with pytest.raises(ValueError, match='token count 15 does not match num_prefix_tokens'):
        m(x[:, 1:], 3, 5)
    with pytest.raises(ValueError, match='needs sr_ratio 1'):
        ACmixSRAttention(16, 2, sr_ratio=2, num_prefix_tokens=1)


@pytest.mark.parametrize('size', [(8, 12), (7, 5), (1, 3)])
def test_sr_conv_path_shares_stage_one(size):
    """The conv path reads q and the spatially reduced k / v (nearest-upsampled), no extra projection."""
    torch.manual_seed(0)
    h, w = size
    m = ACmixSRAttention(16, 2, sr_ratio=4, mix='conv_only').eval()
    x = torch.randn(2, h * w, 16)
    x_map = F.pad(x.transpose(1, 2).reshape(2, 16, h, w), (0, max(4 - w, 0), 0, max(4 - h, 0)))
    with torch.no_grad():
        reduced = m.sr(x_map)                                          # (2, 16, h', w')
        kv = m.kv(m.norm(reduced.flatten(2).transpose(1, 2)))          # (2, h'*w', 32)
        kv = F.interpolate(kv.transpose(1, 2).reshape(2, 32, *reduced.shape[-2:]), size=(h, w), mode='nearest')
        q = m.q(x).transpose(1, 2).reshape(2, 16, h, w)
        f = m.fc(torch.cat([q, kv], 1).reshape(2, 6, 8, h * w))       # (2, 9, head_dim 8, h*w)
        ref = m.dep_conv(f.transpose(1, 2).reshape(2, 72, h, w)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(m(x, h, w), ref)


@pytest.mark.parametrize('size, reduced', [((8, 12), (2, 3)), ((7, 10), (3, 4)), ((5, 5), (5, 5))])
def test_sr_conv_maps_op_matches_upsample_and_concat(size, reduced):
    """``acmix::sr_conv_maps`` (PVT's conv-path input written in one pass) equals q to planar maps, k | v
    nearest-upsampled (F.interpolate), concatenated: values and gradients, whole multiples or not."""
    (h, w), (h_r, w_r) = size, reduced
    q = torch.randn(2, h * w, 4, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(2, h_r * w_r, 8, dtype=torch.float64, requires_grad=True)
    out = torch.ops.acmix.sr_conv_maps(q, kv, h, w, h_r, w_r)
    kv_map = kv.transpose(1, 2).reshape(2, 8, h_r, w_r)
    ref = torch.cat([q.transpose(1, 2).reshape(2, 4, h, w), F.interpolate(kv_map, size=(h, w), mode='nearest')], 1)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(ref)
    for g, g_ref in zip(torch.autograd.grad(out, (q, kv), grad), torch.autograd.grad(ref, (q, kv), grad)):
        torch.testing.assert_close(g, g_ref)
        assert g.is_contiguous() and g._base is None  # plain tensors: autograd can add the attention's in place


@pytest.mark.parametrize('size, window', [((8, 12), (4, 3)), ((6, 5), (6, 5))])
def test_tokens_to_planes_is_window_reverse_to_planar(size, window):
    """``tokens_to_planes`` = timm's ``window_reverse`` then (B, C, H, W); its gradient is the inverse copy, a
    plain contiguous tensor (not a view) that autograd can add another gradient into in place."""
    from timm.models.swin_transformer import window_partition, window_reverse
    from acmix.conv_path import tokens_to_planes
    (h, w), (wh, ww) = size, window
    x = torch.randn(2, h, w, 5, dtype=torch.float64)
    tokens = window_partition(x, window).reshape(-1, wh * ww, 5).requires_grad_()
    out = tokens_to_planes(tokens, 2, h, w, wh, ww)
    ref = window_reverse(tokens.view(-1, wh, ww, 5), window, h, w).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref)
    assert torch.equal(out, x.permute(0, 3, 1, 2)) and out.is_contiguous()
    grad = torch.randn_like(out)
    (g,), (g_ref,) = torch.autograd.grad(out, tokens, grad), torch.autograd.grad(ref, tokens, grad)
    torch.testing.assert_close(g, g_ref)
    assert g.is_contiguous() and g._base is None
