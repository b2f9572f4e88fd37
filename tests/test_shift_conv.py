"""The C++ shift-conv kernel (``acmix.kernels.shift_conv``) against the grouped conv it replaces, and its use as
``dep_conv`` (``acmix.conv_path.ShiftGroupConv``)."""
import pytest
import torch

from acmix import ACmix, ACmixWindowAttention
from acmix.conv_path import ShiftGroupConv, build_dep_conv
from acmix.kernels.shift_conv import shift_conv, shift_conv_reference

# (batch, heads N, groups D, H, W, k, dilation): heads 4 / 3 / 5 use the 4-wide, 3-wide and zero-padded tiles;
# maps narrower than a vector, 1-pixel maps and a dilation wider than the map check the borders
CASES = [(2, 4, 3, 5, 7, 3, 1), (2, 3, 4, 6, 5, 5, 2), (1, 2, 2, 2, 1, 3, 1), (2, 5, 3, 9, 17, 3, 1),
         (1, 4, 2, 3, 3, 3, 4), (2, 1, 3, 11, 10, 1, 1)]


def _inputs(case, dtype, seed=0):
    b, n, d, h, w, k, dil = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d * k * k, h, w, generator=gen, dtype=dtype).requires_grad_()
    weight = torch.randn(d * n, k * k, k, k, generator=gen, dtype=dtype).requires_grad_()
    grad = torch.randn(b, d * n, h, w, generator=gen, dtype=dtype)
    return x, weight, grad, dil


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_shift_conv_matches_grouped_conv(case, dtype):
    x, weight, grad, dil = _inputs(case, dtype)
    out = shift_conv(x, weight, dil)
    dx, dw = torch.autograd.grad(out, (x, weight), grad)
    ref = shift_conv_reference(x, weight, dil)
    rdx, rdw = torch.autograd.grad(ref, (x, weight), grad)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(dx, rdx, **tol)
    torch.testing.assert_close(dw, rdw, **tol)


def test_shift_conv_gradcheck():
    x, weight, _, dil = _inputs((1, 3, 2, 4, 5, 3, 1), torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: shift_conv(a, b, dil), (x, weight))


def test_shift_conv_half_precision_computes_in_float32():
    x, weight, _, dil = _inputs((2, 4, 3, 6, 6, 3, 1), torch.float32)
    out = shift_conv(x.detach().bfloat16(), weight.detach().bfloat16(), dil)
    assert out.dtype == torch.bfloat16
    ref = shift_conv_reference(x.detach().bfloat16().float(), weight.detach().bfloat16().float(), dil)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_shift_conv_rejects_bad_shapes():
    with pytest.raises(ValueError, match='shift_conv needs'):
        shift_conv(torch.randn(1, 10, 4, 4), torch.randn(4, 9, 3, 3))


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


@pytest.mark.parametrize('module', ['acmix', 'window'])
def test_modules_with_kernel_match_grouped_conv(module):
    """Whole ACmix / Swin-ACmix modules: output and every gradient equal with the kernel on and off."""
    torch.manual_seed(0)
    if module == 'acmix':
        m = ACmix(16, 16, head=4).double()
        x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    else:
        m = ACmixWindowAttention(12, 3, window_size=4).double()
        x = torch.randn(2, 8, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        m.dep_conv.weight.normal_()
    results = []
    for use_kernel in (True, False):
        m.dep_conv.use_kernel = use_kernel
        m.zero_grad()
        xi = x.clone().requires_grad_()
        out = m(xi)
        out.backward(torch.ones_like(out))
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
