"""Token <-> planar layout copies of the conv path, as PyTorch custom ops with a C++ CPU kernel.

Swin-ACmix's Stage I gives q | k | v as window tokens (B*nW, Wh*Ww, 3C) in ``window_partition`` order, and its conv
path reads planar maps (B, 3C, H, W); its output goes back to tokens for the mix.  Both directions are transposes
between a token's C channels (contiguous) and a plane's pixels (contiguous), which ``Tensor.copy_`` of a permuted
6-D view runs element by element at a few GB/s.  The C++ kernel takes 64 pixels per task, 8 at a time: the 8
tokens' channels are loaded as vectors, transposed 8 x 8 in registers (AVX2, float32) and stored as runs of 8
pixels of 8 planes, and the reverse (any map width: a run may span rows); remainders and float64 take a scalar
loop.  Other dtypes, tensors that are not contiguous and a failed build take the ``copy_`` path, which gives the
same values.

``tokens_to_planes`` / ``planes_to_tokens`` are each other's backward and return plain contiguous tensors, so that
autograd can add another path's gradient of the same tensor into them in place.
"""
from types import SimpleNamespace

import torch

from .cpu_ext import build_extension

__all__ = ['tokens_to_planes', 'planes_to_tokens', 'write_tokens_to_planes', 'write_planes_to_tokens', 'available']

_SOURCE = r"""
#include <immintrin.h>
#include <algorithm>
#include <type_traits>

namespace {

// B maps of H x W pixels with C channels, as tokens and as planes.  Tokens: pixel p = y*W + x of image b starts at
// tokens + b*tb + t*ts, channels contiguous, t its index in window_partition order for Wh x Ww windows
// (row-major when the window is the whole map).  Planes: channel ch of pixel p of image b at
// planes + b*pb + ch*H*W + p.
template <typename T> struct Layout {
  T* tokens;
  T* planes;
  int64_t b, c, h, w, wh, ww, tb, ts, pb;
  T* plane_pixel(int64_t bi, int64_t p) const { return planes + bi * pb + p; }
};

// The token of pixel p, p + 1, ... of one image (see Layout): window row / column and position in the window are
// stepped along, so that the run needs one division at its start, not four per pixel.
template <typename T> struct TokenCursor {
  const Layout<T>& g;
  T* base;
  int64_t wy, ry, wx, rx;  // window row, row in the window, window column, column in the window
  TokenCursor(const Layout<T>& layout, int64_t bi, int64_t p) : g(layout), base(layout.tokens + bi * layout.tb) {
    const int64_t y = p / g.w, x = p % g.w;
    wy = y / g.wh; ry = y % g.wh; wx = x / g.ww; rx = x % g.ww;
  }
  T* get() const { return base + ((wy * (g.w / g.ww) + wx) * g.wh * g.ww + ry * g.ww + rx) * g.ts; }
  void next() {
    if (++rx < g.ww) return;
    rx = 0;
    if (++wx < g.w / g.ww) return;
    wx = 0;
    if (++ry < g.wh) return;
    ry = 0;
    ++wy;
  }
};

// Pixels p0 .. p1-1 of image bi, channels >= c0 of the first `blocked` pixels and every channel of the others (the
// rest is done in 8 x 8 blocks by run_avx2): TO_PLANES copies tokens to planes, else planes to tokens.  Any T and
// CPU.
template <typename T, bool TO_PLANES>
void run_scalar(const Layout<T>& g, int64_t bi, int64_t p0, int64_t p1, int64_t c0, int64_t blocked) {
  const int64_t hw = g.h * g.w;
  TokenCursor<T> cursor(g, bi, p0);
  for (int64_t p = p0; p < p1; ++p, cursor.next()) {
    T* tok = cursor.get();
    T* pix = g.plane_pixel(bi, p);
    for (int64_t ch = p < p0 + blocked ? c0 : 0; ch < g.c; ++ch) {
      if constexpr (TO_PLANES) pix[ch * hw] = tok[ch];
      else tok[ch] = pix[ch * hw];
    }
  }
}


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

// run_scalar's copy with 8 consecutive pixels (of a plane; any tokens) x 8 channels per register transpose
// (float32, AVX2)
template <bool TO_PLANES>
ACMIX_AVX2 void run_avx2(const Layout<float>& g, int64_t bi, int64_t p0, int64_t p1) {
  const int64_t hw = g.h * g.w, c0 = g.c / 8 * 8, blocked = (p1 - p0) / 8 * 8;
  float* tok[8];
  __m256 r[8];
  TokenCursor<float> cursor(g, bi, p0);
  for (int64_t p = p0; p < p0 + blocked; p += 8) {
    for (int i = 0; i < 8; ++i, cursor.next()) tok[i] = cursor.get();
    float* pix = g.plane_pixel(bi, p);
    for (int64_t ch = 0; ch < c0; ch += 8) {
      if constexpr (TO_PLANES) {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tok[i] + ch);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(pix + (ch + i) * hw, r[i]);
      } else {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(pix + (ch + i) * hw);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(tok[i] + ch, r[i]);
      }
    }
  }
  run_scalar<float, TO_PLANES>(g, bi, p0, p1, c0, blocked);
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
    // tasks of 64 pixels of one image: 8 register blocks, and a remainder only at the end of an image
    const int64_t hw = g.h * g.w, runs = (hw + 63) / 64;
    at::parallel_for(0, g.b * runs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bi = t / runs, p0 = t % runs * 64, p1 = std::min(p0 + 64, hw);
        if constexpr (std::is_same_v<scalar_t, float>)
          if (has_avx2()) {
            run_avx2<TO_PLANES>(g, bi, p0, p1);
            continue;
          }
        run_scalar<scalar_t, TO_PLANES>(g, bi, p0, p1, 0, 0);
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


def _kernel(tokens: torch.Tensor, planes: torch.Tensor) -> SimpleNamespace | None:
    """The extension when it can copy between these two tensors (CPU, float32/64, contiguous channels and planes),
    else None."""
    if (tokens.device.type == 'cpu' and tokens.dtype in (torch.float32, torch.float64) and tokens.stride(-1) == 1
            and planes.stride(-1) == 1 and planes.stride(-2) == planes.shape[-1]
            and planes.stride(-3) == planes.shape[-1] * planes.shape[-2]):
        return _load()
    return None


def write_tokens_to_planes(planes: torch.Tensor, tokens: torch.Tensor, window_h: int, window_w: int) -> None:
    """Copy tokens (B, H*W, C) in ``window_partition`` order for Wh x Ww windows (row-major: the window is the
    map) into planes (B, C, H, W); both may be views (channels, and the H x W planes, contiguous for the kernel)."""
    ext = _kernel(tokens, planes)
    if ext is not None:
        ext.forward(tokens, planes, window_h, window_w)
    else:
        grid_tokens, grid_planes = _grid(tokens, planes, window_h, window_w)
        grid_planes.copy_(grid_tokens)


def write_planes_to_tokens(tokens: torch.Tensor, planes: torch.Tensor, window_h: int, window_w: int) -> None:
    """The inverse copy of ``write_tokens_to_planes``: planes (B, C, H, W) into tokens (B, H*W, C)."""
    ext = _kernel(tokens, planes)
    if ext is not None:
        ext.backward(planes, tokens, window_h, window_w)
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
