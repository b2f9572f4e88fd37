"""Token <-> planar layout copies of the conv path, as PyTorch custom ops with a C++ CPU kernel.

Swin-ACmix's Stage I gives q | k | v as window tokens (B*nW, Wh*Ww, 3C) in ``window_partition`` order, and its conv
path reads planar maps (B, 3C, H, W); its output goes back to tokens for the mix.  Both directions are transposes
between a token's C channels (contiguous) and a plane's pixels (contiguous), which ``Tensor.copy_`` of a permuted
6-D view runs element by element at a few GB/s.  The C++ kernel walks one map row per task: 8 tokens x 8 channels
are loaded as 8 vectors, transposed in registers (AVX2, float32) and stored as 8 plane rows, and the reverse;
remainders and float64 take a scalar loop.  Other dtypes, tensors that are not contiguous and a failed build take
the ``copy_`` path, which gives the same values.

``tokens_to_planes`` / ``planes_to_tokens`` are each other's backward and return plain contiguous tensors, so that
autograd can add another path's gradient of the same tensor into them in place.
"""
from types import SimpleNamespace

import torch

from .cpu_ext import build_extension

__all__ = ['tokens_to_planes', 'planes_to_tokens', 'write_tokens_to_planes', 'write_planes_to_tokens', 'available']

_SOURCE = r"""
#include <immintrin.h>
#include <type_traits>

namespace {

// B maps of H x W pixels with C channels, as tokens and as planes.  Tokens: token (b, y, x) starts at
// tokens + b*tb + t*ts, channels contiguous, t its index in window_partition order for Wh x Ww windows
// (row-major when the window is the whole map).  Planes: channel ch of pixel (b, y, x) at
// planes + b*pb + ch*H*W + y*W + x.
template <typename T> struct Layout {
  T* tokens;
  T* planes;
  int64_t b, c, h, w, wh, ww, tb, ts, pb;
  T* token(int64_t bi, int64_t y, int64_t x) const {
    const int64_t t = ((y / wh) * (w / ww) + x / ww) * wh * ww + (y % wh) * ww + x % ww;
    return tokens + bi * tb + t * ts;
  }
  T* plane_row(int64_t bi, int64_t y) const { return planes + bi * pb + y * w; }
};

// Map row (bi, y), channels >= c0 of pixels < x0 and every channel of pixels >= x0 (the rest is done in
// 8 x 8 blocks by row_avx2): TO_PLANES copies tokens to planes, else planes to tokens.  Any T, any CPU.
template <typename T, bool TO_PLANES>
void row_scalar(const Layout<T>& g, int64_t bi, int64_t y, int64_t c0, int64_t x0) {
  const int64_t hw = g.h * g.w;
  T* prow = g.plane_row(bi, y);
  for (int64_t x = 0; x < g.w; ++x) {
    T* tok = g.token(bi, y, x);
    for (int64_t ch = x < x0 ? c0 : 0; ch < g.c; ++ch) {
      if constexpr (TO_PLANES) prow[ch * hw + x] = tok[ch];
      else tok[ch] = prow[ch * hw + x];
    }
  }
}

#define ACMIX_AVX2 __attribute__((target("avx2,fma")))

// rows r[0..7] -> columns, in registers
ACMIX_AVX2 inline void transpose8(__m256* r) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// row_scalar's copy with 8 tokens x 8 channels per register transpose (float32, AVX2)
template <bool TO_PLANES>
ACMIX_AVX2 void row_avx2(const Layout<float>& g, int64_t bi, int64_t y) {
  const int64_t hw = g.h * g.w, c0 = g.c / 8 * 8, x0 = g.w / 8 * 8;
  float* prow = g.plane_row(bi, y);
  float* tok[8];
  __m256 r[8];
  for (int64_t x = 0; x < x0; x += 8) {
    for (int i = 0; i < 8; ++i) tok[i] = g.token(bi, y, x + i);
    for (int64_t ch = 0; ch < c0; ch += 8) {
      if constexpr (TO_PLANES) {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tok[i] + ch);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(prow + (ch + i) * hw + x, r[i]);
      } else {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(prow + (ch + i) * hw + x);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(tok[i] + ch, r[i]);
      }
    }
  }
  row_scalar<float, TO_PLANES>(g, bi, y, c0, x0);
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

template <bool TO_PLANES>
void copy(const at::Tensor& tokens, const at::Tensor& planes, int64_t window_h, int64_t window_w) {
  TORCH_CHECK(tokens.device().is_cpu() && planes.device().is_cpu() && tokens.scalar_type() == planes.scalar_type(),
              "tokens and planes must be CPU tensors of one dtype");
  TORCH_CHECK(tokens.dim() == 3 && planes.dim() == 4 && tokens.size(0) == planes.size(0) &&
              tokens.size(1) == planes.size(2) * planes.size(3) && tokens.size(2) == planes.size(1),
              "tokens must be (B, H*W, C) for planes (B, C, H, W)");
  TORCH_CHECK(planes.size(2) % window_h == 0 && planes.size(3) % window_w == 0, "H, W must be window multiples");
  TORCH_CHECK(tokens.stride(2) == 1 && planes.stride(3) == 1 && planes.stride(2) == planes.size(3) &&
              planes.stride(1) == planes.size(2) * planes.size(3),
              "tokens need contiguous channels, planes contiguous H x W planes");
  AT_DISPATCH_FLOATING_TYPES(tokens.scalar_type(), "acmix_layout", [&] {
    const Layout<scalar_t> g{tokens.data_ptr<scalar_t>(), planes.data_ptr<scalar_t>(), planes.size(0),
                             planes.size(1), planes.size(2), planes.size(3), window_h, window_w, tokens.stride(0),
                             tokens.stride(1), planes.stride(0)};
    at::parallel_for(0, g.b * g.h, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if constexpr (std::is_same_v<scalar_t, float>)
          if (has_avx2()) {
            row_avx2<TO_PLANES>(g, t / g.h, t % g.h);
            continue;
          }
        row_scalar<scalar_t, TO_PLANES>(g, t / g.h, t % g.h, 0, 0);
      }
    });
  });
}

}  // namespace

// Writes tokens (B, H*W, C) into planes (B, C, H, W) (see Layout) and returns planes.  Called only by the Python
// custom ops of acmix.kernels.layout, which allocate planes; the schema does not mark the write.
at::Tensor forward(const at::Tensor& tokens, const at::Tensor& planes, int64_t window_h, int64_t window_w) {
  copy<true>(tokens, planes, window_h, window_w);
  return planes;
}

// Writes planes (B, C, H, W) into tokens (B, H*W, C) and returns tokens; as forward.
at::Tensor backward(const at::Tensor& planes, const at::Tensor& tokens, int64_t window_h, int64_t window_w) {
  copy<false>(tokens, planes, window_h, window_w);
  return tokens;
}
"""


def _load() -> SimpleNamespace | None:
    """The layout extension (built on the first call on a machine), or None if it cannot be built."""
    return build_extension('acmix_layout_cpu', _SOURCE, 'layout')


def _grid(tokens: torch.Tensor, planes: torch.Tensor, window_h: int,
          window_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of tokens (B, H*W, C) in windows and planes (B, C, H, W), both (B, C, nh, Wh, nw, Ww)."""
    b, c, h, w = planes.shape
    nh, nw = h // window_h, w // window_w
    return (tokens.view(b, nh, nw, window_h, window_w, c).permute(0, 5, 1, 3, 2, 4),
            planes.view(b, c, nh, window_h, nw, window_w))


def _kernel_runs(tokens: torch.Tensor, planes: torch.Tensor) -> bool:
    return (tokens.device.type == 'cpu' and tokens.dtype in (torch.float32, torch.float64) and tokens.stride(-1) == 1
            and planes.stride(-1) == 1 and planes.stride(-2) == planes.shape[-1]
            and planes.stride(-3) == planes.shape[-1] * planes.shape[-2] and _load() is not None)


def write_tokens_to_planes(planes: torch.Tensor, tokens: torch.Tensor, window_h: int, window_w: int) -> None:
    """Copy tokens (B, H*W, C) in ``window_partition`` order for Wh x Ww windows (row-major: the window is the
    map) into planes (B, C, H, W); both may be views (channels, and the H x W planes, contiguous for the kernel)."""
    if _kernel_runs(tokens, planes):
        _load().forward(tokens, planes, window_h, window_w)
    else:
        grid_tokens, grid_planes = _grid(tokens, planes, window_h, window_w)
        grid_planes.copy_(grid_tokens)


def write_planes_to_tokens(tokens: torch.Tensor, planes: torch.Tensor, window_h: int, window_w: int) -> None:
    """The inverse copy of ``write_tokens_to_planes``: planes (B, C, H, W) into tokens (B, H*W, C)."""
    if _kernel_runs(tokens, planes):
        _load().backward(planes, tokens, window_h, window_w)
    else:
        grid_tokens, grid_planes = _grid(tokens, planes, window_h, window_w)
        grid_tokens.copy_(grid_planes)


@torch.library.custom_op('acmix::tokens_to_planes', mutates_args=())
def _tokens_to_planes(tokens: torch.Tensor, batch: int, height: int, width: int, window_h: int,
                      window_w: int) -> torch.Tensor:
    planes = tokens.new_empty(batch, tokens.shape[-1], height, width)
    write_tokens_to_planes(planes, tokens.reshape(batch, height * width, -1), window_h, window_w)
    return planes


@torch.library.custom_op('acmix::planes_to_tokens', mutates_args=())
def _planes_to_tokens(planes: torch.Tensor, window_h: int, window_w: int) -> torch.Tensor:
    b, c, h, w = planes.shape
    tokens = planes.new_empty(b * (h // window_h) * (w // window_w), window_h * window_w, c)
    write_planes_to_tokens(tokens.view(b, h * w, c), planes.contiguous(), window_h, window_w)
    return tokens


@_tokens_to_planes.register_fake
def _tokens_to_planes_fake(tokens, batch, height, width, window_h, window_w):
    return tokens.new_empty(batch, tokens.shape[-1], height, width)


@_planes_to_tokens.register_fake
def _planes_to_tokens_fake(planes, window_h, window_w):
    b, c, h, w = planes.shape
    return planes.new_empty(b * (h // window_h) * (w // window_w), window_h * window_w, c)


def _setup_tokens_to_planes(ctx, inputs, output) -> None:
    ctx.window = inputs[4:]


def _setup_planes_to_tokens(ctx, inputs, output) -> None:
    planes, window_h, window_w = inputs
    ctx.window = (window_h, window_w)
    ctx.map = (planes.shape[0], planes.shape[2], planes.shape[3])


_tokens_to_planes.register_autograd(
    lambda ctx, grad: (_planes_to_tokens(grad, *ctx.window), None, None, None, None, None),
    setup_context=_setup_tokens_to_planes)
_planes_to_tokens.register_autograd(
    lambda ctx, grad: (_tokens_to_planes(grad, *ctx.map, *ctx.window), None, None),
    setup_context=_setup_planes_to_tokens)


def tokens_to_planes(tokens: torch.Tensor, batch: int, height: int, width: int, window_h: int,
                     window_w: int) -> torch.Tensor:
    """The (B, C, H, W) map, contiguous, of tokens in windows: (B*nW, Wh*Ww, C) in ``window_partition`` order (a
    row-major (B, H*W, C) token map is the case Wh, Ww = H, W).  Swin's conv-path input.

    A custom op whose backward (``planes_to_tokens``) hands autograd a plain contiguous gradient for ``tokens``,
    not a permuted view: autograd can then add the attention path's gradient of the same tokens into it in place,
    where a permuted view would cost a fresh tensor and a mixed-layout add (and a view would make the kernels copy).
    """
    return torch.ops.acmix.tokens_to_planes(tokens, batch, height, width, window_h, window_w)


def planes_to_tokens(planes: torch.Tensor, window_h: int, window_w: int) -> torch.Tensor:
    """(B, C, H, W) -> contiguous tokens (B*nW, Wh*Ww, C) in ``window_partition`` order; (B, H*W, C) row-major for
    Wh, Ww = H, W (the conv path's output as tokens, for the mix with the attention's).  Backward:
    ``tokens_to_planes``."""
    return torch.ops.acmix.planes_to_tokens(planes, window_h, window_w)


def available() -> bool:
    """True when the C++ layout kernel is built (compiled on the first call on a machine)."""
    return _load() is not None
