"""The C++ shift-conv kernel (``acmix.kernels.shift_conv``) against the grouped conv it replaces, and its use as
``dep_conv`` (``acmix.conv_path.ShiftGroupConv``)."""
import re

import pytest
import torch

from acmix import ACmix, ACmixSRAttention, ACmixWindowAttention
from acmix import conv_path
from acmix.conv_path import ShiftGroupConv, build_dep_conv
from acmix.kernels.shift_conv import shift_conv, shift_conv_reference

# (batch, heads N, groups D, planes per group M, H, W, k, dilation): heads 4 / 3 / 5 use the 4-wide, 3-wide and
# zero-padded tiles, M = k*k is dep_conv's layout and other M (3 * heads) the fused fc + shift; maps narrower than
# a vector, 1-pixel maps and a dilation wider than the map check the borders; the 100 x 16 map makes the weight
# gradient flush its float32 sums after 2 of the 3 images (float32, stride 1), then after the last one; heads 3 and
# 6 with k = 3 (dilation 1 and 2) take the all-taps weight-gradient tiles and the tallest forward tiles
CASES = [(2, 4, 3, 9, 5, 7, 3, 1), (2, 3, 4, 25, 6, 5, 5, 2), (1, 2, 2, 9, 2, 1, 3, 1), (2, 5, 3, 9, 9, 17, 3, 1),
         (1, 4, 2, 9, 3, 3, 3, 4), (2, 1, 3, 1, 11, 10, 1, 1), (2, 4, 3, 12, 5, 7, 3, 1), (2, 1, 5, 3, 6, 9, 3, 1),
         (1, 2, 2, 6, 4, 4, 3, 2), (3, 2, 2, 9, 100, 16, 3, 1), (2, 3, 2, 9, 17, 10, 3, 1),
         (1, 6, 2, 4, 9, 9, 3, 2)]


def _inputs(case, dtype, seed=0, maps_layout=False, stride=1):
    """x (B, D, M, H, W): contiguous, or with ``maps_layout`` a transposed view of (B, M, D, H, W) maps."""
    b, n, d, m, h, w, k, dil = case
    gen = torch.Generator().manual_seed(seed)
    shape = (b, m, d, h, w) if maps_layout else (b, d, m, h, w)
    leaf = torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()
    x = leaf.transpose(1, 2) if maps_layout else leaf
    weight = torch.randn(d * n, m, k, k, generator=gen, dtype=dtype).requires_grad_()
    grad = torch.randn(b, d * n, -(-h // stride), -(-w // stride), generator=gen, dtype=dtype)
    return leaf, x, weight, grad, dil


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('maps_layout', [False, True])
@pytest.mark.parametrize('stride', [1, 2, 3])
def test_shift_conv_matches_grouped_conv(case, dtype, maps_layout, stride):
    """Output and both gradients equal the grouped conv's; strides 2 and 3 use the phase-split buffers and the
    gathered input gradient, with odd sizes (partial last phase) and maps smaller than the stride."""
    leaf, x, weight, grad, dil = _inputs(case, dtype, maps_layout=maps_layout, stride=stride)
    out = shift_conv(x, weight, dil, stride)
    dx, dw = torch.autograd.grad(out, (leaf, weight), grad)
    ref = shift_conv_reference(x, weight, dil, stride)
    rdx, rdw = torch.autograd.grad(ref, (leaf, weight), grad)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(dx, rdx, **tol)
    # the weight gradient sums B*H*W products: float32 rounding (of both sides) grows with the largest sum
    dw_tol = dict(tol, atol=tol['atol'] + 2e-6 * rdw.abs().max().item()) if dtype == torch.float32 else tol
    torch.testing.assert_close(dw, rdw, **dw_tol)


@pytest.mark.parametrize('maps_layout', [False, True])
@pytest.mark.parametrize('stride', [1, 2])
def test_shift_conv_gradcheck(maps_layout, stride):
    leaf, _, weight, _, dil = _inputs((1, 3, 2, 4, 4, 5, 3, 1), torch.float64, maps_layout=maps_layout)
    view = (lambda t: t.transpose(1, 2)) if maps_layout else (lambda t: t)
    assert torch.autograd.gradcheck(lambda a, b: shift_conv(view(a), b, dil, stride), (leaf, weight))


def test_shift_conv_half_precision_computes_in_float32():
    _, x, weight, _, dil = _inputs((2, 4, 3, 9, 6, 6, 3, 1), torch.float32)
    out = shift_conv(x.detach().bfloat16(), weight.detach().bfloat16(), dil)
    assert out.dtype == torch.bfloat16
    ref = shift_conv_reference(x.detach().bfloat16().float(), weight.detach().bfloat16().float(), dil)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_shift_conv_rejects_bad_shapes():
    with pytest.raises(ValueError, match='shift_conv needs'):
        shift_conv(torch.randn(1, 2, 5, 4, 4), torch.randn(4, 9, 3, 3))
    with pytest.raises(ValueError, match='shift_conv needs'):
        shift_conv(torch.randn(1, 18, 4, 4), torch.randn(4, 9, 3, 3))
    with pytest.raises(ValueError, match='positive dilation and stride'):
        shift_conv(torch.randn(1, 2, 9, 4, 4), torch.randn(4, 9, 3, 3), 1, 0)


@pytest.mark.parametrize('stride', [1, 2])
def test_shift_group_conv_is_the_authors_conv(stride):
    """Same parameter names and shapes as ``nn.Conv2d``; kernel and grouped conv agree with random weights."""
    conv = build_dep_conv('group_conv', head_dim=4, out_planes=16, kernel_size=3, stride=stride)
    assert isinstance(conv, ShiftGroupConv) and isinstance(conv, torch.nn.Conv2d)
    plain = torch.nn.Conv2d(36, 16, 3, stride=stride, padding=1, groups=4, bias=False)
    assert {k: v.shape for k, v in conv.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    with torch.no_grad():
        conv.weight.normal_()
    plain.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(2, 36, 9, 7)
    torch.testing.assert_close(conv(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('module, heads, fused', [('acmix', 4, True), ('acmix', 8, False), ('acmix-stride2', 4, True),
                                                  ('acmix-stride2', 8, False), ('window', 3, True),
                                                  ('window', 6, False), ('sr', 1, True), ('sr', 5, False)])
def test_modules_with_kernel_match_grouped_conv(module, heads, fused, monkeypatch):
    """Whole ACmix (stride 1 and 2) / Swin-ACmix / PVT-ACmix modules: output and every gradient equal with the kernel
    on and off, with ``fc`` folded into the kernel (``fused``: no more MACs, M*(N-1) <= N*k^2 with M = 3 * heads)
    and without (Swin: ``fc`` then reads the window tokens, ``tokens_fc_to_planes``)."""
    torch.manual_seed(0)
    if module.startswith('acmix'):
        m = ACmix(8 * heads, 8 * heads, head=heads, stride=2 if module.endswith('stride2') else 1).double()
        x = torch.randn(2, 8 * heads, 9, 11, dtype=torch.float64)
        run = m
    elif module == 'window':
        m = ACmixWindowAttention(4 * heads, heads, window_size=4).double()
        x = torch.randn(2, 8, 8, 4 * heads, dtype=torch.float64)
        run = m
    else:
        m = ACmixSRAttention(4 * heads, heads, sr_ratio=2).double()
        x = torch.randn(2, 7 * 6, 4 * heads, dtype=torch.float64)
        run = lambda t: m(t, 7, 6)  # noqa: E731
    m.dep_conv.use_kernel = True
    maps = torch.randn(1, 3 * heads, m.dep_conv.groups, 16, dtype=torch.float64)
    assert m.dep_conv._kernel_runs(maps) and m.dep_conv.folds_fc(3 * heads) == fused
    with torch.no_grad():
        m.dep_conv.weight.normal_()
        m.fc.weight.normal_()
        if m.fc.bias is not None:
            m.fc.bias.normal_()
    results = []
    for use_kernel in (True, False):
        m.dep_conv.use_kernel = use_kernel
        with monkeypatch.context() as patch:
            if use_kernel and fused:  # the folded path never lays out fc's output for the shift
                patch.setattr(conv_path, 'shift_layout', lambda *a: pytest.fail('fc was not folded'))
            if use_kernel and module == 'window' and not fused:  # fc reads the tokens: no planar q|k|v maps
                patch.setattr(conv_path, 'tokens_to_planes', lambda *a: pytest.fail('the planar maps were built'))
            m.zero_grad()
            xi = x.clone().requires_grad_()
            out = run(xi)
            out.backward(torch.randn_like(out, generator=torch.Generator().manual_seed(1)))
        results.append([out, xi.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_benchmark_models_tool_runs(capsys):
    """tools/benchmark_models.py on a tiny configuration (no timing is asserted)."""
    import tools.benchmark_models as bench
    bench.main(['--models', 'acmix_resnet26', '--img', '32', '--batch', '2', '--iters', '1', '--threads', '1',
                '--no-memory', '--clock', 'cpu'])
    out = capsys.readouterr().out
    assert '| `acmix_resnet26` / `conv_resnet26` |' in out and 'whole mixer' in out and 'cpu clock' in out
    assert 'fc folding on' in out and 'subnormals kept (IEEE)' in out


def test_benchmark_models_flush_denormal(capsys, monkeypatch):
    """--flush-denormal runs the pair with subnormals flushed to zero and says so; restored for the other tests."""
    import tools.benchmark_models as bench
    monkeypatch.setattr(bench, '_flush_denormal', False)
    tiny = torch.tensor([1e-30])
    try:
        bench.main(['--models', 'acmix_resnet26', '--img', '32', '--batch', '2', '--iters', '1', '--threads', '1',
                    '--no-memory', '--no-parts', '--flush-denormal'])
        assert (tiny * 1e-10).item() == 0.0  # 1e-40 is a float32 subnormal: flushed
    finally:
        torch.set_flush_denormal(False)
    assert (tiny * 1e-10).item() > 0.0
    out = capsys.readouterr().out
    assert '| `acmix_resnet26` / `conv_resnet26` |' in out and 'subnormals flushed to zero' in out
    monkeypatch.setattr(torch, 'set_flush_denormal', lambda mode: False)  # a CPU without flush-to-zero
    with pytest.raises(SystemExit, match='--flush-denormal: this CPU has no flush-to-zero mode'):
        bench.main(['--models', 'acmix_resnet26', '--flush-denormal'])


@pytest.mark.parametrize('name, first, count', [('acmix_resnet26', 'layer1', 8),
                                                 ('acmix_swin_tiny_patch4_window7_224', 'layers.0.blocks.0', 12),
                                                 ('acmix_pvt_tiny', 'stages.0.blocks.0', 8)])
def test_benchmark_models_blocks_pair_each_mixer_with_the_baselines_module(name, first, count):
    """--blocks: one block per ACmix mixer (the outermost module holding only it), each present under the same name
    in the baseline, and a timing row for each plus the whole model."""
    import tools.benchmark_models as bench
    from models.paper import baseline_of
    blocks = bench.mixer_blocks(bench.create(name, 64))
    assert len(blocks) == count and blocks[0] == first
    assert set(blocks) <= dict(bench.create(baseline_of(name), 64).named_modules()).keys()
    table = bench.compare_blocks(name, baseline_of(name), 64, 1, 1)
    rows = [line.split(' | ')[0].lstrip('| ') for line in table.splitlines() if line.startswith('| ')][1:]
    assert rows == blocks + ['whole model']


def test_benchmark_models_under_autocast(capsys, monkeypatch):
    """--amp bf16 runs every step, saved-activation count and part under autocast (on CPU here): the token fc's
    backward once mixed bf16 planes with a float32 gradient there."""
    import tools.benchmark_models as bench
    monkeypatch.setattr(bench, '_amp', None)  # main sets the module's --amp; restored for the tests after this one
    bench.main(['--models', 'acmix_swin_tiny_patch4_window7_224', '--img', '64', '--batch', '2', '--iters', '1',
                '--threads', '1', '--no-memory', '--amp', 'bf16'])
    out = capsys.readouterr().out
    assert '| `acmix_swin_tiny_patch4_window7_224` / `swin_tiny_patch4_window7_224` |' in out
    assert 'whole mixer' in out


def test_benchmark_models_ratio_is_the_median_of_paired_rounds():
    """The throughput ratio pairs the two models' times round by round: a slow phase that hits both sides of one
    round leaves that round's ratio alone."""
    import tools.benchmark_models as bench
    acmix = [1.0, 2.0, 1.1, 1.0, 3.0]   # rounds 2 and 5 slow for both
    base = [0.9, 1.8, 1.0, 0.8, 2.7]
    ratios = bench.paired_ratios(acmix, base)
    assert ratios == sorted(b / a for a, b in zip(acmix, base))
    assert bench.statistics.median(ratios) == 0.9   # the best rounds alone would give 0.8 / 1.0


@pytest.mark.parametrize('name', ['acmix_san10', 'acmix_pvt_tiny', 'acmix_swin_tiny_patch4_window7_224'])
def test_benchmark_models_parts_of_each_family(name, capsys):
    """--parts-only times the parts of one block of each mixer flavour, through the mixers' own part methods."""
    import tools.benchmark_models as bench
    bench.main(['--models', name, '--img', '32', '--batch', '2', '--iters', '1', '--threads', '1', '--parts-only'])
    out = capsys.readouterr().out
    assert f'**{name}**' in out and 'stage I' in out and 'whole mixer' in out
    # the mix is its own part; the token flavours mix inside proj's GEMM
    assert re.search(r'^\| (proj \+ )?mix[ |(]', out, re.M)


def test_benchmark_models_no_fold_fc_switches_folding_off(monkeypatch):
    """--no-fold-fc: every ShiftGroupConv of the benchmarked models has fold_fc off (the 'before' of folding)."""
    import tools.benchmark_models as bench
    monkeypatch.setattr(bench, '_fold_fc', True)
    bench.main(['--models', 'acmix_resnet26', '--img', '32', '--batch', '2', '--iters', '1', '--threads', '1',
                '--no-memory', '--no-fold-fc', '--parts-only'])
    model = bench.create('acmix_resnet26', 32)
    convs = [m for m in model.modules() if isinstance(m, ShiftGroupConv)]
    assert convs and not any(m.fold_fc for m in convs)

