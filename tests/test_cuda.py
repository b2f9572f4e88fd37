"""The CUDA path: the Triton local-attention kernel against the readable reference, every ACmix family on the
GPU against the same weights on the CPU, and a bf16-autocast training step.  Skipped without CUDA (CI has no GPU;
run on a GPU machine with ``pytest tests/test_cuda.py``)."""
import warnings

import pytest
import timm
import torch

import models  # noqa: F401  (registers the acmix_* models)
from acmix.kernels import local_attention, multihead_local_attention, ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')

# (N, D, H, W, K, dilation, stride): odd sizes, maps smaller than the window, strides and dilations
CASES = [
    (2, 16, 7, 6, 7, 1, 1),
    (1, 8, 5, 5, 3, 2, 2),
    (2, 4, 9, 11, 7, 1, 2),
    (2, 32, 28, 28, 7, 1, 1),
    (3, 2, 1, 1, 7, 1, 1),
    (2, 64, 14, 14, 7, 1, 2),
]

# one model per family, at a size that keeps the CPU side short
FAMILIES = [('acmix_resnet26', 64), ('acmix_san10', 64), ('acmix_pvt_tiny', 64),
            ('acmix_swin_tiny_patch4_window7_224', 224)]


@pytest.fixture(autouse=True)
def _exact_fp32():
    """Full fp32 matmuls and convolutions (no TF32), so the GPU can be compared with the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _create(name: str, img: int) -> torch.nn.Module:
    """``timm.create_model(name)`` for ``img`` x ``img`` inputs (PVT's and Swin's geometry depends on it)."""
    return timm.create_model(name, **({'img_size': img} if img != 224 and ('pvt' in name or 'swin' in name) else {}))


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-30) -> float:
    """||a - b|| / max(||b||, floor * sqrt(numel)): relative, or against an RMS of ``floor`` where ``b`` is ~0."""
    scale = max(b.double().norm().item(), floor * b.numel() ** 0.5)
    return (a.double() - b.double()).norm().item() / scale


@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=str)
@pytest.mark.parametrize('case', CASES, ids=str)
def test_triton_matches_reference(case, dtype, tol):
    n, d, h, w, kernel, dilation, stride = case
    gen = torch.Generator(device='cuda').manual_seed(sum(case))
    qkv = [torch.randn(n, d, h, w, device='cuda', generator=gen).to(dtype).requires_grad_() for _ in range(3)]
    out = local_attention(*qkv, kernel, dilation, stride, impl='triton')
    ref = local_attention(*[t.double() for t in qkv], kernel, dilation, stride, impl='reference')
    assert out.dtype == dtype and out.shape == ref.shape
    assert _rel(out, ref) < tol
    grad_out = torch.randn(out.shape, device='cuda', generator=gen)
    grads = torch.autograd.grad(out, qkv, grad_out.to(dtype))
    grads_ref = torch.autograd.grad(ref, qkv, grad_out.double())
    for g, g_ref in zip(grads, grads_ref):
        # the query and key gradients of a 1 x 1 map are exactly 0 (every tap reads the same pixel): compare those
        # against the inputs' scale of 1
        assert g.dtype == dtype and _rel(g, g_ref, floor=1.0) < 2 * tol


def test_multihead_auto_uses_triton():
    """'auto' on CUDA runs Triton (no silent fallback to the PyTorch loop) and agrees with the reference."""
    gen = torch.Generator(device='cuda').manual_seed(0)
    qkv = torch.randn(2, 3 * 4 * 8, 14, 13, device='cuda', generator=gen, requires_grad=True)
    bias = torch.randn(8, 14, 13, device='cuda', generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        out = multihead_local_attention(qkv, 4, 7, scale=8 ** -0.5, key_bias=bias)
        out.sum().backward()
    assert ops.resolve_backend('auto', qkv.device) == 'triton' and ops._triton_health['verified']
    ref = multihead_local_attention(qkv.double(), 4, 7, scale=8 ** -0.5, key_bias=bias.double(), impl='reference')
    assert _rel(out, ref) < 1e-5


@pytest.mark.parametrize('name, img', FAMILIES, ids=[f[0] for f in FAMILIES])
def test_model_cuda_matches_cpu(name, img):
    """Logits and every parameter gradient on the GPU equal the CPU's for the same weights (fp32, eval mode)."""
    torch.manual_seed(0)
    cpu, gpu = _create(name, img).eval(), _create(name, img).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = torch.randn(2, 3, img, img)
    out_cpu, out_gpu = cpu(x), gpu(x.cuda())
    assert _rel(out_gpu.cpu(), out_cpu) < 1e-4
    out_cpu.square().mean().backward()
    out_gpu.square().mean().backward()
    cpu_grads = {n: p.grad for n, p in cpu.named_parameters() if p.grad is not None}
    gpu_grads = {n: p.grad for n, p in gpu.named_parameters() if p.grad is not None}
    assert cpu_grads.keys() == gpu_grads.keys() and cpu_grads
    bad = {n: _rel(gpu_grads[n].cpu(), g) for n, g in cpu_grads.items()
           if g.norm() > 1e-8 and _rel(gpu_grads[n].cpu(), g) > 1e-3}
    assert not bad, f'{name}: gradients that differ between CPU and CUDA (relative error): {bad}'


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('name, img', FAMILIES, ids=[f[0] for f in FAMILIES])
def test_autocast_training_step(name, img, dtype):
    """Training steps under autocast: logits close to fp32's, finite loss, and finite gradients at once in bf16 or,
    in fp16, once the GradScaler has halved its initial scale (2^16) at most 8 times, as it does after an
    overflow."""
    torch.manual_seed(0)
    model = _create(name, img).cuda().train()
    x = torch.randn(4, 3, img, img, device='cuda')
    target = torch.randint(0, 1000, (4,), device='cuda')
    with torch.no_grad():
        model.eval()
        ref = model(x)
        with torch.autocast('cuda', dtype=dtype):
            low = model(x)
        model.train()
    assert low.dtype == dtype and _rel(low.float(), ref) < 5e-2
    scaler = torch.amp.GradScaler('cuda', enabled=dtype == torch.float16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(9 if dtype == torch.float16 else 1):
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x), target)
        assert torch.isfinite(loss)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        scaler.step(opt)
        scaler.update()
        if not bad:
            break
    assert not bad, f'{name}: non-finite gradients under {dtype} autocast (loss scale {scaler.get_scale()}): {bad[:5]}'
