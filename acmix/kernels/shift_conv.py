"""Fast CPU kernel for the shift module ``dep_conv`` of ACmix's convolution path, as a PyTorch custom op.

``dep_conv`` is ``Conv2d(head_dim*k^2 -> C, k, groups=head_dim)`` (``C = head * head_dim``): output channel
``o = g * head + h`` reads the ``k^2`` input channels ``g*k^2 .. g*k^2 + k^2 - 1``.  oneDNN runs such a grouped conv
(9 input and ``head`` output channels per group) far below its speed on dense convs, and its backward is slower
still, so on CPU this op computes it directly, for any number M of input planes per group (``k^2`` for
``dep_conv``; the 3 * heads Stage I maps when ``ShiftGroupConv.conv_path`` folds ``fc`` into it):

    out[b, g*N + h, y, x] = sum_{m, a, c} weight[g*N + h, m, a, c] * x[b, g, m, y + dy_a, x + dx_c]

with ``dy_a = dilation*a - pad``, ``dx_c = dilation*c - pad``, ``pad = dilation*(k-1)//2`` and zero padding,
i.e. exactly ``F.conv2d(x.reshape(B, D*M, H, W), weight, None, 1, pad, dilation, groups=D)``.  ``x`` is
(B, D, M, H, W) with any dense strides whose H x W planes are contiguous, so a transposed view is read in place,
and its gradient has the same strides.  One task is one (image, group) pair; its M input planes are copied into a
zero-padded buffer and every output row is computed in register tiles of 8 pixels x 3 or 4 output channels, so
each loaded input vector feeds several FMAs.  The weight gradient runs one group per task with vector partial sums
flushed to float64 per image.  The float32 loops are compiled for AVX2+FMA and for baseline x86-64 and picked by a
CPU check at run time; float64 (tests) uses the baseline loops.  Stride 1 only: ``ShiftGroupConv``
(``acmix.conv_path``) keeps the grouped conv for strided blocks and off CPU.

``shift_conv(x, weight, dilation)`` is the entry point; ``shift_conv_reference`` is the same computation with
``F.conv2d``, and the tests check that they agree (outputs and gradients, float64 ``gradcheck``).
"""
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from .cpu_ext import build_extension

__all__ = ['shift_conv', 'shift_conv_reference', 'available']

_SOURCE = r"""
#include <algorithm>
#include <cstring>
#include <vector>

namespace {

// 32-byte vectors (GCC vector extensions): 8 floats or 4 doubles; AVX2 registers in the haswell clones
template <typename T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(32))); };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(32))); };

template <typename T>
inline __attribute__((always_inline)) typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

struct Geo {
  int64_t b, d, m, n, h, w, k, dil;  // batch, groups, input planes and outputs per group, map, kernel, dilation
  int64_t kk, p, c, hw, wr, ph, pw;  // k*k, padding, channels, H*W, W rounded up to a vector, padded plane size
  int64_t sb, sg, sm;  // element strides of x (and dx) between images, groups and the planes of a group
};

// `planes` H x W planes (plane i at src + i*stride) -> zero-padded (H+2*pad) x pw planes at dst, data at (pad, pad)
template <typename T>
void pad_planes(const T* src, int64_t stride, int64_t planes, const Geo& g, int64_t pad, int64_t ph, int64_t pw,
                T* dst) {
  std::fill(dst, dst + planes * ph * pw, T(0));
  for (int64_t i = 0; i < planes; ++i)
    for (int64_t y = 0; y < g.h; ++y)
      std::memcpy(dst + (i * ph + y + pad) * pw + pad, src + i * stride + y * g.w, g.w * sizeof(T));
}

// Register tiles of one task: `outs` output planes at dst (plane i at dst + i*ostride), each a sum over the `planes`
// zero-padded planes in buf of k x k taps; tiles of L pixels x BS outputs, weights packed (blocks, planes, K, K, BS)
// from wpk, zero past the last output.  DIR = +1 reads tap (a, c) of output pixel (y, x) at padded (y + dil*a,
// x + dil*c) (the correlation, forward); DIR = -1 at (y - dil*a + 2p, x - dil*c + 2p) (its transpose, input grad).
template <typename T, int BS, int DIR>
inline __attribute__((always_inline)) void tile_sums(const T* buf, int64_t planes, const T* wpk, int64_t outs,
                                                     T* dst, int64_t ostride, const Geo& g) {
  using VT = typename Vec<T>::type;
  constexpr int64_t L = sizeof(VT) / sizeof(T);
  const int64_t blocks = (outs + BS - 1) / BS;
  const int64_t step = DIR * g.dil, origin = DIR > 0 ? 0 : 2 * g.p;
  for (int64_t y = 0; y < g.h; ++y)
    for (int64_t x0 = 0; x0 < g.w; x0 += L)
      for (int64_t ob = 0; ob < blocks; ++ob) {
        VT acc[BS] = {};
        const T* wp = wpk + ob * planes * g.kk * BS;
        for (int64_t j = 0; j < planes; ++j)
          for (int64_t ta = 0; ta < g.k; ++ta) {
            const T* row = buf + (j * g.ph + y + step * ta + origin) * g.pw + x0 + origin;
            for (int64_t tc = 0; tc < g.k; ++tc, wp += BS) {
              const VT s = load(row + step * tc);
#pragma GCC unroll 8
              for (int i = 0; i < BS; ++i) acc[i] += s * wp[i];
            }
          }
        const int64_t lanes = std::min<int64_t>(L, g.w - x0);
        for (int i = 0; i < BS && ob * BS + i < outs; ++i) {
          T* o = dst + (ob * BS + i) * ostride + y * g.w + x0;
          for (int64_t v = 0; v < lanes; ++v) o[v] = acc[i][v];
        }
      }
}

// out channels g*N .. g*N+N-1 of image bi from the M input planes of group gi; packed (D, NB, M, KK, BS)
template <typename T, int BS>
inline __attribute__((always_inline)) void forward_task(const T* f, const T* wpk, T* out, const Geo& g,
                                                        int64_t bi, int64_t gi, T* buf) {
  pad_planes(f + bi * g.sb + gi * g.sg, g.sm, g.m, g, g.p, g.ph, g.pw, buf);
  const int64_t nb = (g.n + BS - 1) / BS;
  tile_sums<T, BS, 1>(buf, g.m, wpk + gi * nb * g.m * g.kk * BS, g.n, out + (bi * g.c + gi * g.n) * g.hw, g.hw, g);
}

// dx planes (gi, 0 .. M-1) of image bi from the N grad planes of group gi; packed (D, JB, N, KK, BS)
template <typename T, int BS>
inline __attribute__((always_inline)) void backward_input_task(const T* grad, const T* wpk, T* df, const Geo& g,
                                                               int64_t bi, int64_t gi, T* buf) {
  pad_planes(grad + (bi * g.c + gi * g.n) * g.hw, g.hw, g.n, g, g.p, g.ph, g.pw, buf);
  const int64_t jbs = (g.m + BS - 1) / BS;
  tile_sums<T, BS, -1>(buf, g.n, wpk + gi * jbs * g.n * g.kk * BS, g.m, df + bi * g.sb + gi * g.sg, g.sm, g);
}

// dweight rows g*N .. g*N+N-1: sum over images and pixels, vector partial sums flushed to double per image
// (the partial sums live in plain T arrays accessed unaligned: heap blocks are not 32-byte aligned)
template <typename T>
inline __attribute__((always_inline)) void backward_weight_task(const T* grad, const T* f, T* dw, const Geo& g,
                                                                int64_t gi, T* fbuf, T* gbuf) {
  using VT = typename Vec<T>::type;
  constexpr int64_t L = sizeof(VT) / sizeof(T);
  const int64_t taps = g.m * g.kk;  // weights per output channel
  std::vector<T> acc(g.n * taps * L);
  std::vector<double> total(g.n * taps, 0.0);
  for (int64_t bi = 0; bi < g.b; ++bi) {
    std::fill(acc.begin(), acc.end(), T(0));
    pad_planes(f + bi * g.sb + gi * g.sg, g.sm, g.m, g, g.p, g.ph, g.pw, fbuf);
    pad_planes(grad + (bi * g.c + gi * g.n) * g.hw, g.hw, g.n, g, 0, g.h, g.wr, gbuf);
    for (int64_t y = 0; y < g.h; ++y)
      for (int64_t x0 = 0; x0 < g.w; x0 += L)
        for (int64_t hh = 0; hh < g.n; ++hh) {
          const VT gv = load(gbuf + (hh * g.h + y) * g.wr + x0);
          T* a = acc.data() + hh * taps * L;
          for (int64_t j = 0; j < g.m; ++j)
            for (int64_t ta = 0; ta < g.k; ++ta) {
              const T* row = fbuf + (j * g.ph + y + g.dil * ta) * g.pw + x0;
              for (int64_t tc = 0; tc < g.k; ++tc, a += L) {
                const VT sum = load(a) + gv * load(row + g.dil * tc);
                std::memcpy(a, &sum, sizeof(VT));
              }
            }
        }
    for (int64_t i = 0; i < g.n * taps; ++i)
      for (int64_t v = 0; v < L; ++v) total[i] += acc[i * L + v];
  }
  for (int64_t i = 0; i < g.n * taps; ++i) dw[gi * g.n * taps + i] = static_cast<T>(total[i]);
}

// float32 loops compiled twice, for AVX2+FMA and for baseline x86-64, picked once by a CPU check; float64 (tests):
// baseline only
#define ACMIX_AVX2 __attribute__((target("avx2,fma")))
ACMIX_AVX2 void fwd_avx2_1(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) { forward_task<float, 1>(f, w, o, g, b, d, buf); }
ACMIX_AVX2 void fwd_avx2_2(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) { forward_task<float, 2>(f, w, o, g, b, d, buf); }
ACMIX_AVX2 void fwd_avx2_3(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) { forward_task<float, 3>(f, w, o, g, b, d, buf); }
ACMIX_AVX2 void fwd_avx2_4(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) { forward_task<float, 4>(f, w, o, g, b, d, buf); }
ACMIX_AVX2 void bwi_avx2_3(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) { backward_input_task<float, 3>(f, w, o, g, b, d, buf); }
ACMIX_AVX2 void bwi_avx2_4(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) { backward_input_task<float, 4>(f, w, o, g, b, d, buf); }
ACMIX_AVX2 void bww_avx2(const float* gr, const float* f, float* dw, const Geo& g, int64_t d, float* fb, float* gb) { backward_weight_task<float>(gr, f, dw, g, d, fb, gb); }

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

template <int BS> void fwd_one(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) {
  if (!has_avx2()) forward_task<float, BS>(f, w, o, g, b, d, buf);
  else if constexpr (BS == 1) fwd_avx2_1(f, w, o, g, b, d, buf);
  else if constexpr (BS == 2) fwd_avx2_2(f, w, o, g, b, d, buf);
  else if constexpr (BS == 3) fwd_avx2_3(f, w, o, g, b, d, buf);
  else fwd_avx2_4(f, w, o, g, b, d, buf);
}
template <int BS> void fwd_one(const double* f, const double* w, double* o, const Geo& g, int64_t b, int64_t d, double* buf) {
  forward_task<double, BS>(f, w, o, g, b, d, buf);
}
template <int BS> void bwi_one(const float* f, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* buf) {
  if (!has_avx2()) backward_input_task<float, BS>(f, w, o, g, b, d, buf);
  else if constexpr (BS == 3) bwi_avx2_3(f, w, o, g, b, d, buf);
  else bwi_avx2_4(f, w, o, g, b, d, buf);
}
template <int BS> void bwi_one(const double* f, const double* w, double* o, const Geo& g, int64_t b, int64_t d, double* buf) {
  backward_input_task<double, BS>(f, w, o, g, b, d, buf);
}
void bww_one(const float* gr, const float* f, float* dw, const Geo& g, int64_t d, float* fb, float* gb) {
  if (has_avx2()) bww_avx2(gr, f, dw, g, d, fb, gb); else backward_weight_task<float>(gr, f, dw, g, d, fb, gb);
}
void bww_one(const double* gr, const double* f, double* dw, const Geo& g, int64_t d, double* fb, double* gb) {
  backward_weight_task<double>(gr, f, dw, g, d, fb, gb);
}

Geo geometry(const at::Tensor& f, const at::Tensor& weight, int64_t dil, int64_t lanes) {
  Geo g{};
  g.k = weight.size(2); g.kk = g.k * g.k;
  g.b = f.size(0); g.d = f.size(1); g.m = f.size(2); g.h = f.size(3); g.w = f.size(4);
  g.sb = f.stride(0); g.sg = f.stride(1); g.sm = f.stride(2);
  g.n = weight.size(0) / g.d; g.dil = dil; g.p = dil * (g.k - 1) / 2; g.c = g.d * g.n; g.hw = g.h * g.w;
  g.wr = (g.w + lanes - 1) / lanes * lanes; g.ph = g.h + 2 * g.p; g.pw = g.wr + 2 * g.p;
  return g;
}

void check(const at::Tensor& f, const at::Tensor& weight) {
  TORCH_CHECK(f.device().is_cpu() && f.dim() == 5 && f.stride(4) == 1 && f.stride(3) == f.size(4) &&
              f.is_non_overlapping_and_dense(),
              "x must be a dense (B, D, M, H, W) CPU tensor with contiguous H x W planes");
  TORCH_CHECK(weight.is_contiguous() && weight.dim() == 4 && weight.scalar_type() == f.scalar_type() &&
              weight.size(2) == weight.size(3) && weight.size(1) == f.size(2) && weight.size(0) % f.size(1) == 0,
              "weight must be a contiguous (D*N, M, K, K) tensor matching x (B, D, M, H, W)");
}

// block of heads (forward) / input planes (backward) per register tile: 4, 3, 2 or 1 when it divides, else 4
// (zero-padded)
int block_size(int64_t n) {
  for (int bs : {4, 3, 2, 1})
    if (n % bs == 0 && (bs > 1 || n == 1)) return bs;
  return 4;
}

}  // namespace

// x (B, D, M, H, W), weight (C, M, K, K) -> (B, C, H, W)
at::Tensor forward(const at::Tensor& f, const at::Tensor& weight, int64_t dilation) {
  check(f, weight);
  auto out = at::empty({f.size(0), weight.size(0), f.size(3), f.size(4)}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "acmix_shift_conv_forward", [&] {
    const Geo g = geometry(f, weight, dilation, 32 / sizeof(scalar_t));
    const int bs = block_size(g.n);
    const int64_t nb = (g.n + bs - 1) / bs;
    // packed (D, NB, M, KK, BS): heads of one block side by side
    auto wpk = at::zeros({g.d * nb * g.m * g.kk * bs}, weight.options());
    {
      auto padded = at::zeros({g.d, nb * bs, g.m, g.kk}, weight.options());
      padded.narrow(1, 0, g.n).copy_(weight.view({g.d, g.n, g.m, g.kk}));
      wpk.view({g.d, nb, g.m, g.kk, bs}).copy_(padded.view({g.d, nb, bs, g.m, g.kk}).permute({0, 1, 3, 4, 2}));
    }
    const scalar_t* fp = f.data_ptr<scalar_t>();
    const scalar_t* wp = wpk.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, g.b * g.d, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(g.m * g.ph * g.pw);
      for (int64_t t = begin; t < end; ++t) {
        if (bs == 1) fwd_one<1>(fp, wp, op, g, t / g.d, t % g.d, buf.data());
        else if (bs == 2) fwd_one<2>(fp, wp, op, g, t / g.d, t % g.d, buf.data());
        else if (bs == 3) fwd_one<3>(fp, wp, op, g, t / g.d, t % g.d, buf.data());
        else fwd_one<4>(fp, wp, op, g, t / g.d, t % g.d, buf.data());
      }
    });
  });
  return out;
}

// grad (B, C, H, W) -> [dx (B, D, M, H, W) with x's strides, dweight (C, M, K, K)]
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& f, const at::Tensor& weight,
                                 int64_t dilation) {
  check(f, weight);
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == f.scalar_type() && grad.dim() == 4, "grad must be contiguous (B, C, H, W)");
  auto df = at::empty_like(f);  // keeps x's strides (dense)
  auto dw = at::empty_like(weight);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "acmix_shift_conv_backward", [&] {
    const Geo g = geometry(f, weight, dilation, 32 / sizeof(scalar_t));
    const int bs = block_size(g.m) >= 3 ? block_size(g.m) : 4;  // input planes: the 3- and 4-wide tiles only
    const int64_t jbs = (g.m + bs - 1) / bs;
    // packed (D, JB, N, KK(taps), BS): input maps of one block side by side
    auto wpk = at::zeros({g.d, jbs, g.n, g.kk, bs}, weight.options());
    {
      auto padded = at::zeros({g.d, g.n, jbs * bs, g.kk}, weight.options());
      padded.narrow(2, 0, g.m).copy_(weight.view({g.d, g.n, g.m, g.kk}));
      wpk.copy_(padded.view({g.d, g.n, jbs, bs, g.kk}).permute({0, 2, 1, 4, 3}));
    }
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* fp = f.data_ptr<scalar_t>();
    const scalar_t* wp = wpk.data_ptr<scalar_t>();
    scalar_t* dfp = df.data_ptr<scalar_t>();
    scalar_t* dwp = dw.data_ptr<scalar_t>();
    at::parallel_for(0, g.b * g.d, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(g.n * g.ph * g.pw);
      for (int64_t t = begin; t < end; ++t) {
        if (bs == 3) bwi_one<3>(gp, wp, dfp, g, t / g.d, t % g.d, buf.data());
        else bwi_one<4>(gp, wp, dfp, g, t / g.d, t % g.d, buf.data());
      }
    });
    at::parallel_for(0, g.d, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> fbuf(g.m * g.ph * g.pw), gbuf(g.n * g.h * g.wr);
      for (int64_t gi = begin; gi < end; ++gi) bww_one(gp, fp, dwp, g, gi, fbuf.data(), gbuf.data());
    });
  });
  return {df, dw};
}
"""

def _load() -> SimpleNamespace | None:
    """The shift-conv extension (built on the first call on a machine), or None if it cannot be built."""
    return build_extension('acmix_shift_conv_cpu', _SOURCE, 'shift-conv')


# TorchScript calls it as Python (ShiftGroupConv.forward); no `from __future__ import annotations` in this file, so
# that TorchScript can read the annotation
@torch.jit.ignore
@torch.compiler.assume_constant_result  # a constant to Dynamo, which cannot enter the build lock
def available() -> bool:
    """True when the C++ kernel is built (compiled on the first call on a machine) and ``shift_conv`` can run."""
    return _load() is not None


_COMPUTE_DTYPES = (torch.float32, torch.float64)


def _compute(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).contiguous()


def _dense(x: torch.Tensor) -> bool:
    """True when ``x`` is a permutation of a contiguous tensor (no gaps, no overlaps)."""
    expected = 1
    for size, stride in sorted(zip(x.shape, x.stride()), key=lambda p: p[1]):
        if size > 1 and stride != expected:
            return False
        expected *= size
    return True


def _compute_planes(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (B, D, M, H, W) in ``dtype``, keeping its strides when it is dense with contiguous H x W planes."""
    x = x.to(dtype)
    planes_contiguous = x.stride(-1) == 1 and x.stride(-2) == x.shape[-1]
    return x if planes_contiguous and _dense(x) else x.contiguous()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # float16/bfloat16 are computed in float32 and cast back, like the local-attention op
    return x.dtype if x.dtype in _COMPUTE_DTYPES else torch.float32


@torch.library.custom_op('acmix::shift_conv_fwd', mutates_args=())
def _fwd_op(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    dt = _compute_dtype(x)
    return _load().forward(_compute_planes(x, dt), _compute(weight, dt), dilation).to(x.dtype)


@_fwd_op.register_fake
def _fwd_fake(x, weight, dilation):
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[3], x.shape[4])


@torch.library.custom_op('acmix::shift_conv_bwd', mutates_args=())
def _bwd_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
            dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    dt = _compute_dtype(x)
    dx, dw = _load().backward(_compute(grad, dt), _compute_planes(x, dt), _compute(weight, dt), dilation)
    return dx.to(x.dtype), dw.to(weight.dtype)


@_bwd_op.register_fake
def _bwd_fake(grad, x, weight, dilation):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, dilation = inputs
    ctx.save_for_backward(x, weight)
    ctx.dilation = dilation


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    dx, dw = _bwd_op(grad.contiguous(), x, weight, ctx.dilation)
    return dx, dw, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 5 or weight.dim() != 4 or weight.shape[2] != weight.shape[3] or \
            weight.shape[1] != x.shape[2] or weight.shape[0] % x.shape[1]:
        raise ValueError(f'shift_conv needs x (B, D, M, H, W) and weight (D*N, M, k, k), got x {tuple(x.shape)} '
                         f'and weight {tuple(weight.shape)}')


def shift_conv(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Grouped k x k conv (stride 1, zero padding ``dilation*(k-1)//2``, no bias, ``D`` groups) with the C++ kernel.

    Args:
        x: (B, D, M, H, W) CPU tensor, the M input planes of each of the D groups, any strides with contiguous
            H x W planes: ``dep_conv``'s input ``(B, D*k*k, H, W)`` viewed as (B, D, k*k, H, W), or the conv
            path's Stage I maps (B, M, D, H, W) transposed (``acmix.conv_path.ShiftGroupConv.conv_path``).
        weight: (D*N, M, k, k); output channel ``g*N + h`` reads the planes of group ``g``.
        dilation: spacing of the k x k taps.

    Returns:
        (B, D*N, H, W), equal to ``shift_conv_reference(x, weight, dilation)``.
    """
    _check(x, weight)
    return _fwd_op(x, weight, dilation)


def shift_conv_reference(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """The grouped ``F.conv2d`` that ``shift_conv`` computes."""
    _check(x, weight)
    b, d, m, h, w = x.shape
    k = weight.shape[-1]
    return F.conv2d(x.reshape(b, d * m, h, w), weight, None, 1, dilation * (k - 1) // 2, dilation, d)
