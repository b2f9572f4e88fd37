"""acmix.kernels: the fast local-attention paths agree with the readable reference, and the op works under
autograd, gradcheck, torch.compile and torch.export.  The first run builds the C++ extension (~1 min, then
cached in TORCH_EXTENSIONS_DIR)."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from acmix.kernels import build_cpu_kernels, cpu_ext, local_attention, multihead_local_attention, ops, window_index
from acmix.kernels.indexing import padded_index, reflect_index, window_sources
from acmix.kernels.reference import _gather_windows

FAST_CPU = ['cpp', 'torch']

# (N, D, H, W, K, dilation, stride): strides 1/2/3, dilation 1/2, odd sizes, maps smaller than the window, and
# head dims the C++ kernel specialises at compile time (8, 16) next to ones it does not
CASES = [
    (2, 16, 7, 6, 7, 1, 1),
    (1, 8, 5, 5, 3, 2, 2),
    (2, 4, 9, 11, 7, 1, 1),
    (2, 4, 9, 11, 7, 1, 2),
    (2, 3, 10, 7, 3, 2, 1),
    (1, 5, 11, 9, 5, 2, 2),
    (3, 2, 1, 1, 7, 1, 1),
    (2, 4, 2, 3, 7, 1, 1),
    (2, 4, 3, 3, 7, 1, 2),
    (1, 3, 6, 5, 1, 1, 3),
    (1, 4, 8, 7, 3, 1, 3),
]


def _qkv(n, d, h, w, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, h, w, dtype=dtype, generator=gen).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize('impl', FAST_CPU)
@pytest.mark.parametrize('case', CASES, ids=str)
def test_fast_matches_reference(impl, case):
    n, d, h, w, kernel, dilation, stride = case
    qkv = _qkv(n, d, h, w)
    ref = local_attention(*qkv, kernel, dilation, stride, impl='reference')
    out = local_attention(*qkv, kernel, dilation, stride, impl=impl)
    assert out.shape == (n, d, -(-h // stride), -(-w // stride))
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(ref)
    for g, g_ref in zip(torch.autograd.grad(out, qkv, grad_out), torch.autograd.grad(ref, qkv, grad_out)):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize('stride', [1, 2])
def test_cpp_backward_writes_every_gradient_element(stride):
    """The C++ backward allocates dq | dk | dv uninitialised (dk, dv are written, not accumulated): poison the
    allocator with NaN blocks of the gradient's size first; the gradient must still equal the reference's."""
    qkv = torch.randn(2, 3 * 2 * 8, 12, 13, dtype=torch.float64, requires_grad=True)  # 60 KB: heap, reused
    bias = torch.randn(8, 12, 13, dtype=torch.float64)
    ref = multihead_local_attention(qkv, 2, 5, 1, stride, 0.3, bias, impl='reference')
    grad = torch.randn_like(ref)
    want, = torch.autograd.grad(ref, qkv, grad)
    for _ in range(3):
        out = multihead_local_attention(qkv, 2, 5, 1, stride, 0.3, bias, impl='cpp')
        poison = [torch.full_like(qkv, float('nan')) for _ in range(4)]
        del poison
        got, = torch.autograd.grad(out, qkv, grad)
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('impl', FAST_CPU)
@pytest.mark.parametrize('case', [(1, 2, 3, 4, 3, 1, 1), (1, 1, 5, 4, 3, 2, 2), (1, 1, 2, 3, 5, 1, 1)], ids=str)
def test_gradcheck(impl, case):
    n, d, h, w, kernel, dilation, stride = case
    qkv = _qkv(n, d, h, w, seed=1)
    assert torch.autograd.gradcheck(lambda q, k, v: local_attention(q, k, v, kernel, dilation, stride, impl=impl),
                                    qkv)


@pytest.mark.parametrize('h,w,kernel,dilation,stride', [(9, 11, 7, 1, 1), (9, 11, 7, 1, 2), (8, 9, 3, 2, 2),
                                                        (4, 4, 7, 1, 1)])
def test_windows_equal_reflection_pad_unfold(h, w, kernel, dilation, stride):
    # where ReflectionPad2d is defined (pad < size) the generalised reflection must agree with it
    x = torch.randn(2, 3, h, w)
    pad = dilation * (kernel - 1) // 2
    unfolded = F.unfold(torch.nn.ReflectionPad2d(pad)(x), kernel, dilation=dilation, stride=stride)
    windows = _gather_windows(x, window_index(h, kernel, dilation, stride), window_index(w, kernel, dilation, stride))
    torch.testing.assert_close(windows.flatten(3), unfolded.view(2, 3, kernel * kernel, -1), rtol=0, atol=0)
    torch.testing.assert_close(padded_index(h, kernel, dilation),
                               torch.nn.ReflectionPad1d(pad)(torch.arange(h, dtype=torch.float)[None]).long()[0])


def test_reflection_small_maps():
    # period 2(n-1): ... 1 0 [0 1 2] 1 0 1 2 1 ...; n=1 always reads 0
    assert [reflect_index(p, 3) for p in range(-4, 7)] == [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2]
    assert [reflect_index(p, 1) for p in (-3, 0, 5)] == [0, 0, 0]
    assert window_index(2, 7, 1, 1).tolist() == [[1, 0, 1, 0, 1, 0, 1], [0, 1, 0, 1, 0, 1, 0]]


@pytest.mark.parametrize('impl', FAST_CPU)
@pytest.mark.parametrize('stride', [1, 2])
def test_float32_close_to_float64_reference(impl, stride):
    """Float32 (the C++ kernel's vectorised exp, the softmax recomputed from the saved log-sum-exp in backward)
    stays within float32 rounding of the float64 reference, outputs and gradients."""
    qkv64 = _qkv(2, 16, 13, 17, seed=2)
    qkv32 = [t.detach().float().requires_grad_() for t in qkv64]
    ref = local_attention(*qkv64, 7, 1, stride, impl='reference')
    out = local_attention(*qkv32, 7, 1, stride, impl=impl)
    torch.testing.assert_close(out, ref.float(), rtol=1e-4, atol=1e-5)
    grad_out = torch.randn_like(ref)
    grads = torch.autograd.grad(out, qkv32, grad_out.float())
    for g, g_ref in zip(grads, torch.autograd.grad(ref, qkv64, grad_out)):
        torch.testing.assert_close(g, g_ref.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('stride', [1, 2])
def test_cpp_log_sum_exp_matches_the_logits(stride):
    """The log-sum-exp the C++ forward saves for backward (float32: vectorised exp and log) equals
    ``logsumexp`` of each output pixel's logits taken from the explicit windows in float64, large logits included."""
    q, k, v = _qkv(2, 8, 9, 11, seed=3)
    q = 4 * q  # logits of tens: the max-subtracted exponentials span many binades
    qkv = torch.cat([q, k, v], dim=1).detach()
    windows = F.unfold(F.pad(k.detach(), (3, 3, 3, 3), mode='reflect'), 7)        # (N, D*49, H*W)
    logits = (q.detach().flatten(2)[:, :, None] * windows.view(2, 8, 49, -1)).sum(1)  # (N, 49, H*W)
    ref = logits.logsumexp(1).view(2, 9, 11)[:, ::stride, ::stride]
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        _, lse = torch.ops.acmix.local_attention_fwd(qkv.to(dtype), None, 1, 7, 1, stride, 1.0, 'cpp')
        torch.testing.assert_close(lse[:, 0].double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize('impl', FAST_CPU)
def test_low_precision(impl):
    qkv = _qkv(2, 8, 7, 6, dtype=torch.bfloat16)
    out = local_attention(*qkv, 7, impl=impl)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 for t in qkv)
    ref = local_attention(*[t.detach().float() for t in qkv], 7, impl='reference')
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel_size=4), 'kernel_size'), (dict(kernel_size=0), 'kernel_size'), (dict(kernel_size=-3), 'kernel_size'),
    (dict(kernel_size=7, dilation=0), 'dilation'), (dict(kernel_size=7, stride=0), 'stride'),
    (dict(kernel_size=7, impl='unfold'), 'impl'),
])
def test_bad_arguments(kwargs, match):
    q = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match=match):
        local_attention(q, q, q, **kwargs)


def test_bad_shapes():
    q = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match=r'\(2, 4, 5, 6\)'):
        local_attention(q, torch.randn(2, 4, 5, 6), q, 7)
    with pytest.raises(ValueError, match=r'\(8, 5, 5\)'):
        local_attention(q.flatten(0, 1), q.flatten(0, 1), q.flatten(0, 1), 7)


class _TinyAttention(torch.nn.Module):
    """A 1x1 qkv projection followed by the fast op, as the ACmix module uses it."""

    def __init__(self, dim=4, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Conv2d(dim, 3 * dim, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(3, b * self.heads, c // self.heads, h, w).unbind(0)
        out = local_attention(q, k, v, 3, stride=2, impl='fast')  # (B*heads, C/heads, ceil(H/2), ceil(W/2))
        return out.reshape(b, c, *out.shape[-2:])


def test_torch_compile():
    torch.manual_seed(0)
    model = _TinyAttention()
    x = torch.randn(2, 4, 7, 6)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    out, out_eager = compiled(x), model(x)
    torch.testing.assert_close(out, out_eager)
    grad = torch.autograd.grad(out.sum(), model.qkv.weight)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(out_eager.sum(), model.qkv.weight)[0])


def test_torch_export():
    torch.manual_seed(0)
    model = _TinyAttention()
    x = torch.randn(2, 4, 7, 6)
    # symbolic H, W: the op's fake must derive ceil(H/2) itself (min 3 keeps reshape from guarding on size 1)
    dims = {2: torch.export.Dim('h', min=3, max=64), 3: torch.export.Dim('w', min=3, max=64)}
    exported = torch.export.export(model, (x,), dynamic_shapes=(dims,))
    assert 'acmix.local_attention_fwd' in str(exported.graph)
    torch.testing.assert_close(exported.module()(x), model(x))
    x_other = torch.randn(2, 4, 13, 5)
    torch.testing.assert_close(exported.module()(x_other), model(x_other))


def test_build_cpu_kernels_builds_all_at_once(monkeypatch):
    monkeypatch.setattr(cpu_ext, '_built', {})  # loads them again (from torch's cache when built before)
    assert build_cpu_kernels() == {'local-attention': True, 'shift-conv': True, 'layout': True}
    assert set(cpu_ext._built) == {'acmix_local_attention_cpu', 'acmix_shift_conv_cpu', 'acmix_layout_cpu'}
    monkeypatch.setattr(cpu_ext, '_built', {})
    assert build_cpu_kernels(('shift-conv',)) == {'shift-conv': True}   # the classification demo's choice
    assert set(cpu_ext._built) == {'acmix_shift_conv_cpu'}
    with pytest.raises(ValueError, match=r"unknown CPU kernels \['triton'\]"):
        build_cpu_kernels(('triton',))


def test_build_failure_falls_back_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError('no compiler')

    monkeypatch.setattr(cpp_extension, 'load', broken)
    monkeypatch.setattr(cpu_ext, '_built', {})
    with pytest.warns(RuntimeWarning, match='local-attention kernel failed, falling back') as record:
        assert ops.resolve_backend('auto', torch.device('cpu')) == 'torch'
        q = torch.randn(1, 2, 4, 4)
        torch.testing.assert_close(local_attention(q, q, q, 3), local_attention(q, q, q, 3, impl='reference'))
    assert len(record) == 1
    # the dep_conv kernel is built by the same function: its failure leaves the grouped conv, with one warning
    from acmix.conv_path import ShiftGroupConv
    from acmix.kernels import shift_conv
    conv = ShiftGroupConv(9 * 2, 4, 3, padding=1, groups=2, bias=False)
    x = torch.randn(1, 18, 5, 6)
    with pytest.warns(RuntimeWarning, match='shift-conv kernel failed, falling back') as record:
        assert not shift_conv.available()
        torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, conv.weight, padding=1, groups=2))
    assert len(record) == 1
    monkeypatch.setattr(cpu_ext, '_built', {})
    with pytest.warns(RuntimeWarning, match='kernel failed, falling back'):
        assert build_cpu_kernels() == {'local-attention': False, 'shift-conv': False, 'layout': False}
    # the layout copies take torch's copy_ then, with the same values
    from acmix.kernels.layout import planes_to_tokens
    planes = torch.randn(2, 3, 4, 6)
    assert torch.equal(planes_to_tokens(planes, 4, 6), planes.flatten(2).transpose(1, 2))


@pytest.mark.parametrize('n, kernel, dilation, stride', [(5, 3, 1, 1), (56, 7, 1, 1), (9, 7, 1, 2), (2, 7, 1, 1),
                                                          (1, 7, 1, 1), (11, 5, 2, 2), (6, 1, 1, 3)])
def test_window_sources_inverts_window_index(n, kernel, dilation, stride):
    """Each input position lists every (output position, tap) that reads it, once per tap, -1 padded."""
    rows = window_index(n, kernel, dilation, stride)
    readers = window_sources(n, kernel, dilation, stride)
    assert readers.shape[0] == n and readers.shape[1] == max(int((rows == p).sum()) for p in range(n))
    for p in range(n):
        expected = sorted(i for i in range(rows.shape[0]) for a in range(kernel) if rows[i, a] == p)
        listed = readers[p]
        assert sorted(listed[listed >= 0].tolist()) == expected and (listed[len(expected):] == -1).all()


def test_triton_interpreter():
    pytest.importorskip('triton')
    # TRITON_INTERPRET must be set before triton itself is imported (its own library functions are jit-decorated
    # at import), and other tests import it through torch.compile, so the check runs in a fresh interpreter
    code = (
        'import torch\n'
        'from acmix.kernels import local_attention\n'
        'for n, d, h, w, kernel, dil, stride in [(2, 3, 5, 4, 3, 2, 2), (1, 2, 2, 3, 5, 1, 1), (2, 4, 9, 11, 7, 1, 2),\n'
        '                                        (3, 2, 1, 1, 7, 1, 1), (1, 5, 11, 9, 5, 2, 2)]:\n'
        '    qkv = [torch.randn(n, d, h, w, dtype=torch.float64, requires_grad=True) for _ in range(3)]\n'
        '    outs = [local_attention(*qkv, kernel, dil, stride, impl=i) for i in ("triton", "reference")]\n'
        '    torch.testing.assert_close(outs[0], outs[1])\n'
        '    g = torch.randn_like(outs[1])\n'
        '    for a, b in zip(*[torch.autograd.grad(o, qkv, g) for o in outs]):\n'
        '        torch.testing.assert_close(a, b)\n'
    )
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize('isa', ['avx2', 'baseline', 'sse'])
def test_every_cpu_clone_of_the_kernels(isa: str) -> None:
    """The C++ kernels' float32 loops are compiled for baseline x86-64, AVX2+FMA and (shift conv, fc backward)
    AVX-512VL, and a CPU check takes the widest this CPU has; ``ACMIX_CPU_ISA`` caps it, so the float32 tests of
    the local attention, the shift conv and the layout ops also run the narrower clones here.  An unknown value
    stops with an error naming the variable."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    selection = ('(float32_close and cpp) or (dtype0 and (layout_copies or tokens_fc_to_planes_is_fc or '
                 'shift_conv_matches_grouped_conv))')
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', 'tests/test_kernels.py',
                          'tests/test_shift_conv.py', '-k', selection], cwd=root, env=dict(os.environ, ACMIX_CPU_ISA=isa),
                         capture_output=True, text=True, timeout=600)
    if isa == 'sse':
        assert run.returncode != 0 and "ACMIX_CPU_ISA must be avx512, avx2 or baseline, got 'sse'" in run.stdout
        return
    assert run.returncode == 0 and 'skipped' not in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.parametrize('attn_mode', ['local', 'patchwise'])
def test_inference_mode_first_call_then_training(attn_mode: str) -> None:
    """Window indices cached during a first call under inference_mode must still serve a later backward."""
    from acmix import ACmix
    from acmix.kernels import indexing
    indexing._window_index_cpu.cache_clear()
    indexing._window_index_on.cache_clear()
    indexing._padded_index_on.cache_clear()
    m = ACmix(8, 8, kernel_att=3, head=2, attn_mode=attn_mode)
    x = torch.randn(2, 8, 11, 13)
    with torch.inference_mode():
        m.eval()(x)
    m.train()(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_building_the_kernel_does_not_warn_about_a_missing_gpu(tmp_path):
    """torch's "No CUDA runtime is found, using CUDA_HOME=..." (logged when cpp_extension is imported on a machine
    with a CUDA toolkit but no GPU) is kept out of our output, and only for that import."""
    env = {**os.environ, 'CUDA_HOME': str(tmp_path), 'CUDA_VISIBLE_DEVICES': ''}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def stderr_of(code):
        return subprocess.run([sys.executable, '-c', code], cwd=root, env=env, capture_output=True, text=True,
                              check=True).stderr

    assert 'No CUDA runtime is found' in stderr_of('import torch.utils.cpp_extension')  # the setting triggers it
    ours = 'from acmix.kernels import cpu_ext; cpu_ext.import_cpp_extension()'
    assert 'No CUDA runtime is found' not in stderr_of(ours)


@pytest.mark.parametrize('impl', FAST_CPU)
@pytest.mark.parametrize('case', [(2, 4, 16, 9, 11, 7, 1, 1), (2, 2, 8, 10, 7, 3, 2, 2), (1, 3, 5, 6, 5, 7, 1, 1),
                                  (1, 2, 8, 11, 13, 7, 1, 2), (1, 2, 4, 7, 8, 3, 1, 3)],
                         ids=str)
@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_multihead_reads_qkv_with_scale_and_key_bias(impl, case, layout):
    """q | k | v as one (B, 3C, H, W) tensor, queries scaled and keys shifted by a shared (D, H, W) bias inside the
    op: same outputs and gradients (the bias's included) as the reference, which builds those maps explicitly.
    Channels-last q | k | v is read in place (columns 3C apart)."""
    from acmix.kernels import multihead_local_attention
    b, heads, d, h, w, kernel, dilation, stride = case
    c = heads * d
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(b, 3 * c, h, w, dtype=torch.float64, generator=gen).to(memory_format=layout).requires_grad_()
    bias = torch.randn(d, h, w, dtype=torch.float64, generator=gen).requires_grad_()

    def attend(qkv, bias, impl):
        return multihead_local_attention(qkv, heads, kernel, dilation, stride, d ** -0.5, bias, impl)

    out, ref = attend(qkv, bias, impl), attend(qkv, bias, 'reference')
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(ref)
    for g, g_ref in zip(torch.autograd.grad(out, (qkv, bias), grad_out), torch.autograd.grad(ref, (qkv, bias), grad_out)):
        torch.testing.assert_close(g, g_ref)
    if b * c * h * w <= 400:
        assert torch.autograd.gradcheck(lambda qkv, bias: attend(qkv, bias, impl), (qkv, bias))


def test_benchmark_acmix_stride_reaches_both_scopes():
    """tools/benchmark_acmix.py --stride 2 builds strided cases (kernel and whole-module scope, both
    implementations) and labels their rows; the timing run itself is too slow for the default suite."""
    import tools.benchmark_acmix as bench
    for scope in ('kernel', 'module'):
        for impl in bench.IMPLS:
            run, _ = bench.make_case(scope, 8, 9, 1, impl, torch.device('cpu'), stride=2)
            assert run().shape[-2:] == (5, 5), (scope, impl)
    row = {impl: dict(fwd=1.0, fwd_bwd=2.0, peak=1, saved=1) for impl in bench.IMPLS}
    assert '| kernel | 128ch@56² /2 |' in bench._fmt_row('kernel', 128, 56, row, stride=2)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('size, window, channels', [((56, 56), (7, 7), 96), ((14, 21), (7, 7), 20),
                                                    ((21, 14), (7, 7), 16), ((9, 11), (9, 11), 13),
                                                    ((16, 8), (16, 8), 8)])
def test_layout_copies_are_window_reverse_and_partition(dtype, size, window, channels):
    """The layout kernel (runs of 256 pixels across rows and windows, 8 x 8 register transposes with scalar
    remainders for float32, scalar loops for float64, torch's copy_ for other dtypes) copies window tokens to planes
    and back exactly, also between strided views (tokens after a prefix token, planes as channels of a larger map:
    PVT's q)."""
    from timm.models.swin_transformer import window_partition
    from acmix.kernels.layout import write_planes_to_tokens, write_tokens_to_planes
    (h, w), (wh, ww), c = size, window, channels
    x = torch.randn(2, h, w, c).to(dtype)
    tokens = torch.cat([torch.randn(2, 1, c).to(dtype), window_partition(x, window).reshape(2, h * w, c)], 1)
    maps = torch.full((2, c + 3, h, w), float('nan'), dtype=dtype)
    write_tokens_to_planes(maps[:, 3:], tokens[:, 1:], wh, ww)
    assert torch.equal(maps[:, 3:], x.permute(0, 3, 1, 2)) and maps[:, :3].isnan().all()
    back = torch.full_like(tokens, float('nan'))
    write_planes_to_tokens(back[:, 1:], maps[:, 3:], wh, ww)
    assert torch.equal(back[:, 1:], tokens[:, 1:]) and back[:, 0].isnan().all()


def test_layout_kernel_rejects_maps_that_are_not_window_multiples():
    """The C++ copy checks its geometry and names what is wrong instead of reading past the tokens."""
    from acmix.kernels.layout import tokens_to_planes
    with pytest.raises(RuntimeError, match='H, W must be window multiples'):
        tokens_to_planes(torch.randn(2, 30, 8), 2, 6, 5, 4, 5)   # 6 rows in windows of 4


def _fc_reference(tokens, weight, bias, b, h, w, wh, ww):
    """``tokens_fc_to_planes`` spelled out: planar maps, then fc as an einsum, as (B, D, J, H, W)."""
    from acmix.kernels.layout import tokens_to_planes
    taps, maps = weight.shape
    planes = tokens_to_planes(tokens, b, h, w, wh, ww).view(b, maps, -1, h * w)
    return (torch.einsum('jm,bmdp->bdjp', weight, planes) + bias.view(1, 1, taps, 1)).reshape(b, -1, taps, h, w)


# (B, H, W, Wh, Ww, M maps, D channels, J taps): Swin's stage-3 shape (14 x 14: a 4-pixel last run), one window as
# the map (7 x 7, PVT-like row-major), 25 taps (k = 5: three register blocks), D = 5 (no 8-channel vectors: the
# scalar loops), D = 16 with 4 taps (padded block), 21 x 21 (two tasks of up to 256 pixels, the second ending in a
# 1-pixel run)
FC_CASES = [(2, 14, 14, 7, 7, 36, 32, 9), (2, 7, 7, 7, 7, 12, 16, 25), (1, 8, 12, 4, 3, 6, 5, 9),
            (1, 9, 9, 3, 3, 4, 16, 4), (1, 21, 21, 7, 7, 6, 8, 9)]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case', FC_CASES)
def test_tokens_fc_to_planes_is_fc_of_the_planar_maps(dtype, case):
    """The fused fc (C++: per-token register blocks, masked last runs, float64 weight-gradient sums) equals
    tokens_to_planes + fc, output and the gradients of tokens, weight and bias."""
    from acmix.kernels.layout import tokens_fc_to_planes
    b, h, w, wh, ww, m, d, j = case
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(b * (h // wh) * (w // ww), wh * ww, m * d, generator=gen, dtype=dtype).requires_grad_()
    weight = torch.randn(j, m, generator=gen, dtype=dtype).requires_grad_()
    bias = torch.randn(j, generator=gen, dtype=dtype).requires_grad_()
    out = tokens_fc_to_planes(tokens, weight, bias, b, h, w, wh, ww)
    ref = _fc_reference(tokens, weight, bias, b, h, w, wh, ww)
    assert out.shape == (b, d, j, h, w) and out.is_contiguous()
    grad = torch.randn(ref.shape, generator=gen, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    for g, g_ref in zip(torch.autograd.grad(out, (tokens, weight, bias), grad),
                        torch.autograd.grad(ref, (tokens, weight, bias), grad)):
        # weight and bias gradients sum B*H*W*D products: float32 rounding grows with the sum
        torch.testing.assert_close(g, g_ref, **dict(tol, atol=tol['atol'] * max(1.0, g_ref.abs().max().item())))


def test_tokens_fc_to_planes_gradcheck_and_torch_path(monkeypatch):
    """float64 gradcheck of the C++ op; without the extension the op's torch path gives the same values."""
    from acmix.kernels import layout
    b, h, w, wh, ww, m, d, j = 1, 6, 6, 3, 3, 4, 8, 9
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randn(b * 4, wh * ww, m * d, generator=gen, dtype=torch.float64).requires_grad_()
    weight = torch.randn(j, m, generator=gen, dtype=torch.float64).requires_grad_()
    bias = torch.randn(j, generator=gen, dtype=torch.float64).requires_grad_()

    def fc(*args):
        return layout.tokens_fc_to_planes(*args, b, h, w, wh, ww)
    assert torch.autograd.gradcheck(fc, (tokens, weight, bias))
    out = fc(tokens, weight, bias)
    grads = torch.autograd.grad(out, (tokens, weight, bias), torch.ones_like(out))
    monkeypatch.setattr(layout, '_fc_kernel', lambda *tensors: None)
    out_torch = fc(tokens, weight, bias)
    torch.testing.assert_close(out_torch, out)
    for g, g_torch in zip(grads, torch.autograd.grad(out_torch, (tokens, weight, bias), torch.ones_like(out))):
        torch.testing.assert_close(g_torch, g)


def test_tokens_fc_to_planes_rejects_bad_shapes():
    from acmix.kernels.layout import tokens_fc_to_planes
    with pytest.raises(RuntimeError, match='fc weight must be a contiguous'):
        tokens_fc_to_planes(torch.randn(4, 9, 30), torch.randn(9, 4), torch.randn(9), 1, 6, 6, 3, 3)  # 4 !| 30
    with pytest.raises(RuntimeError, match='fc bias must be'):
        tokens_fc_to_planes(torch.randn(4, 9, 32), torch.randn(9, 4), torch.randn(8), 1, 6, 6, 3, 3)  # 8 taps of 9
