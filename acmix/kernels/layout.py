"""Token <-> planar layout copies of the conv path, as PyTorch custom ops with a C++ CPU kernel.

Swin-ACmix's Stage I gives q | k | v as window tokens (B*nW, Wh*Ww, 3C) in ``window_partition`` order, and its conv
path reads planar maps (B, 3C, H, W); its output goes back to tokens for the mix.  Both directions are transposes
between a token's C channels (contiguous) and a plane's pixels (contiguous), which ``Tensor.copy_`` of a permuted
6-D view runs element by element at a few GB/s.  The C++ kernel takes 256 pixels per task, 8 at a time: the 8
tokens' channels are loaded as vectors, transposed 8 x 8 in registers (AVX2, float32) and stored as runs of 8
pixels of 8 planes, and the reverse (any map width: a run may span rows); remainders and float64 take a scalar
loop.  A task walks its pixels once per 8 channels, so it writes (reads) 8 planes at a time in whole cache lines:
walking the channels per 8 pixels touched every plane at once, and planes of 56 x 56 pixels are 12544 bytes apart,
so they fall into a quarter of the L1 sets (2x slower).  Other dtypes, tensors that are not contiguous and a failed
build take the ``copy_`` path, which gives the same values.

``tokens_to_planes`` / ``planes_to_tokens`` are each other's backward and return plain contiguous tensors, so that
autograd can add another path's gradient of the same tensor into them in place.

``tokens_fc_to_planes`` is the conv path's ``fc`` (3N maps -> k^2, shared over each map's ``head_dim`` channels) read
straight from the tokens, for Swin's stages where ``fc`` is not folded into the shift kernel: per 8 tokens the
k^2 x head_dim outputs accumulate in registers over the 3N maps and are stored as runs of 8 pixels of the
(B, head_dim, k^2, H, W) planes the shift kernel reads.  This replaces ``tokens_to_planes`` of all 3C channels plus
a batched GEMM whose output was laid out again (the (B, 3C, H, W) maps, which the GEMM also kept for its backward,
are never built); the backward writes the token gradient in token order and sums the weight gradient in float64.
"""
from types import SimpleNamespace

import torch

from .cpu_ext import build_extension

__all__ = ['tokens_to_planes', 'planes_to_tokens', 'tokens_fc_to_planes', 'write_tokens_to_planes',
           'write_planes_to_tokens', 'available']

_SOURCE = r"""
#include <immintrin.h>
#include <algorithm>
#include <mutex>
#include <type_traits>
#include <vector>

namespace {

// Pixels per task of the layout copies and of fc (the tasks' pixel runs; runs of 8 in registers)
constexpr int64_t kRun = 256;

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
// (float32, AVX2), the run's pixels walked once per 8 channels (whole cache lines of 8 planes at a time)
template <bool TO_PLANES>
ACMIX_AVX2 void run_avx2(const Layout<float>& g, int64_t bi, int64_t p0, int64_t p1) {
  const int64_t hw = g.h * g.w, c0 = g.c / 8 * 8, blocked = (p1 - p0) / 8 * 8;
  float* tok[kRun];
  __m256 r[8];
  TokenCursor<float> cursor(g, bi, p0);
  for (int64_t i = 0; i < blocked; ++i, cursor.next()) tok[i] = cursor.get();
  float* pix = g.plane_pixel(bi, p0);
  for (int64_t ch = 0; ch < c0; ch += 8) {
    // every other pass enters new token lines: fetch the next line of each token ahead of the walk (the hardware
    // prefetchers do not follow kRun token rows at once; the planes are a few sequential streams)
    const bool ahead = ch % 16 == 0 && ch + 16 < g.c;
    for (int64_t p = 0; p < blocked; p += 8) {
      if constexpr (TO_PLANES) {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tok[p + i] + ch);
        if (ahead)
          for (int i = 0; i < 8; ++i) __builtin_prefetch(tok[p + i] + ch + 16, 0, 3);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(pix + (ch + i) * hw + p, r[i]);
      } else {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(pix + (ch + i) * hw + p);
        if (ahead)
          for (int i = 0; i < 8; ++i) __builtin_prefetch(tok[p + i] + ch + 16, 1, 3);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(tok[p + i] + ch, r[i]);
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
    // tasks of kRun pixels of one image: runs of 8 in registers, and a remainder only at the end of an image
    const int64_t hw = g.h * g.w, runs = (hw + kRun - 1) / kRun;
    at::parallel_for(0, g.b * runs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bi = t / runs, p0 = t % runs * kRun, p1 = std::min(p0 + kRun, hw);
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

// ---- The conv path's fc read from the tokens: f[b, d, j, p] = bias[j] + sum_m weight[j, m] * token(b, p)[m*D + d]
// (each Stage I token holds M maps of D channels, channel m*D + d), written as planes (B, D, J, H, W): Layout's
// planes with c = D*J, channel d*J + j.  The AVX2 loops take the weights transposed to (M, JP), padded with zero
// taps to JP, a multiple of JB (taps_by_map).

constexpr int JB = 9;  // taps per register block (k = 3); more taps take several blocks

// fc of pixels p0 .. p1-1 of image bi; weight (J, M), any T
template <typename T>
void fc_scalar(const Layout<T>& g, const T* weight, const T* bias, int64_t J, int64_t M, int64_t D, int64_t bi,
               int64_t p0, int64_t p1) {
  const int64_t hw = g.h * g.w;
  TokenCursor<T> cursor(g, bi, p0);
  for (int64_t p = p0; p < p1; ++p, cursor.next()) {
    const T* tok = cursor.get();
    T* pix = g.plane_pixel(bi, p);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < J; ++j) {
        T sum = bias[j];
        for (int64_t m = 0; m < M; ++m) sum += weight[j * M + m] * tok[m * D + d];
        pix[(d * J + j) * hw] = sum;
      }
  }
}

// The first n of 8 lanes
ACMIX_AVX2 inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// fc_scalar for float32, D a multiple of 8: per 8 channels and JB taps the run's pixels are walked 8 at a time (8
// planes written in whole cache lines, as run_avx2); per 8 pixels the JB taps accumulate in registers over the M maps
// (one token vector, JB weight broadcasts per map), are transposed 8 x 8 and stored as runs of 8 pixels (masked in
// the run's last 1-7 pixels).  wt: (M, JP) (taps_by_map); bias padded to JP.
ACMIX_AVX2 void fc_avx2(const Layout<float>& g, const float* wt, const float* bias, int64_t JP, int64_t J, int64_t M,
                        int64_t D, int64_t bi, int64_t p0, int64_t p1) {
  const int64_t hw = g.h * g.w, n = p1 - p0;
  const float* tok[kRun + 8];
  __m256 res[JB][8];
  TokenCursor<float> cursor(g, bi, p0);
  for (int64_t i = 0; i < n; ++i, cursor.next()) tok[i] = cursor.get();
  for (int64_t i = n; i < (n + 7) / 8 * 8; ++i) tok[i] = tok[0];  // lanes past the run: computed, not stored
  float* pix = g.plane_pixel(bi, p0);
  for (int64_t d0 = 0; d0 < D; d0 += 8)
    for (int64_t j0 = 0; j0 < JP; j0 += JB)
      for (int64_t p = 0; p < n; p += 8) {
        const int64_t lanes = std::min<int64_t>(8, n - p);
        // the first tap block of every other pass enters new token lines: fetch the next ones ahead (as run_avx2)
        const bool ahead = j0 == 0 && d0 % 16 == 0 && d0 + 16 < D;
        for (int i = 0; i < 8; ++i) {
          __m256 acc[JB];
          for (int u = 0; u < JB; ++u) acc[u] = _mm256_set1_ps(bias[j0 + u]);
          for (int64_t m = 0; m < M; ++m) {
            if (ahead) __builtin_prefetch(tok[p + i] + m * D + d0 + 16, 0, 3);
            const __m256 t = _mm256_loadu_ps(tok[p + i] + m * D + d0);
            const float* w = wt + m * JP + j0;
            for (int u = 0; u < JB; ++u) acc[u] = _mm256_fmadd_ps(_mm256_set1_ps(w[u]), t, acc[u]);
          }
          for (int u = 0; u < JB; ++u) res[u][i] = acc[u];
        }
        for (int u = 0; u < JB && j0 + u < J; ++u) {
          transpose8(res[u]);  // res[u][c]: channel d0 + c of the 8 pixels
          for (int c = 0; c < 8; ++c) {
            float* out = pix + ((d0 + c) * J + j0 + u) * hw + p;
            if (lanes == 8) _mm256_storeu_ps(out, res[u][c]);
            else _mm256_maskstore_ps(out, first_lanes(lanes), res[u][c]);
          }
        }
      }
}

// Backward of fc_scalar for pixels p0 .. p1-1 of image bi: the token gradient (g.tokens, written; tokens read at
// the same offsets from `tokens`) and the weight and bias gradients added to dw (J, M) and db (J) in float64.
// g.planes: the gradient of f.
template <typename T>
void fc_backward_scalar(const Layout<T>& g, const T* tokens, const T* weight, int64_t J, int64_t M, int64_t D,
                        int64_t bi, int64_t p0, int64_t p1, double* dw, double* db) {
  const int64_t hw = g.h * g.w;
  TokenCursor<T> cursor(g, bi, p0);
  for (int64_t p = p0; p < p1; ++p, cursor.next()) {
    T* dtok = cursor.get();
    const T* tok = tokens + (dtok - g.tokens);
    const T* pix = g.plane_pixel(bi, p);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t d = 0; d < D; ++d) {
        T sum = 0;
        for (int64_t j = 0; j < J; ++j) sum += weight[j * M + m] * pix[(d * J + j) * hw];
        dtok[m * D + d] = sum;
      }
    for (int64_t j = 0; j < J; ++j)
      for (int64_t d = 0; d < D; ++d) {
        const T gv = pix[(d * J + j) * hw];
        db[j] += gv;
        for (int64_t m = 0; m < M; ++m) dw[j * M + m] += static_cast<double>(gv) * tok[m * D + d];
      }
  }
}

// fc_backward_scalar for float32, D a multiple of 8: per 8 pixels and 8 channels the J tap gradients are loaded
// as runs of 8 pixels and transposed to per-pixel vectors (gr: JP x 8 pixels x 8 channels, zero past J and past
// the run's n pixels).  Both gradients are register tiles over gr: the token gradient in tiles of PB pixels x MB
// maps with all J taps summed in registers (a tap's PB vectors serve MB broadcast weights), the weight gradient in
// tiles of 3 taps x WB maps summed over the 8 pixels (a pixel's 3 tap vectors serve its WB token vectors) and added
// to the vector partials in dwv ((J*M + JP) x 8 floats, bias partials last), which are added to dw and db (float64)
// at the end of the run.  Maps past M in a tile are computed on map M - 1 and not stored.  wt: (M, JP)
// (taps_by_map).  Compiled for AVX2 (16 registers) and AVX-512VL (32: larger tiles).
template <int PB, int MB, int WB>
ACMIX_AVX2 inline __attribute__((always_inline)) void fc_backward_tiles(
    const Layout<float>& g, const float* tokens, const float* wt, int64_t J, int64_t JP, int64_t M, int64_t D,
    int64_t bi, int64_t p0, int64_t p1, double* dw, double* db, float* dwv, float* gr) {
  const int64_t hw = g.h * g.w;
  float* dtok[8];
  const float* tok[8];
  std::fill(dwv, dwv + (J * M + JP) * 8, 0.0f);  // weight partials (J*M vectors), then the bias partials (JP)
  float* dbv = dwv + J * M * 8;
  std::fill(gr + J * 64, gr + JP * 64, 0.0f);  // gr (JP, 8 pixels, 8 channels): the padded taps stay zero
  TokenCursor<float> cursor(g, bi, p0);
  const int64_t lines = (M * D + 15) / 16, passes = D / 8;  // 64-byte lines per token; channel passes per group
  for (int64_t p = p0; p < p1; p += 8) {
    // the lanes past the run's n pixels load zero gradients (so add nothing to dw, db) and store no token gradient
    const int64_t n = std::min<int64_t>(8, p1 - p);
    for (int i = 0; i < n; ++i, cursor.next()) {
      dtok[i] = cursor.get();
      tok[i] = tokens + (dtok[i] - g.tokens);
    }
    for (int64_t i = n; i < 8; ++i) tok[i] = tok[0];
    // the next group's tokens and their gradient rows, fetched a slice per channel pass (the hardware prefetchers
    // do not follow 8 token rows at once)
    const int64_t n_next = std::min<int64_t>(8, p1 - p - n);
    float* next_dtok[8];
    TokenCursor<float> look = cursor;  // at the next group's first pixel
    for (int i = 0; i < n_next; ++i, look.next()) next_dtok[i] = look.get();
    const __m256i mask = first_lanes(n);
    const float* pix = g.plane_pixel(bi, p);
    for (int64_t d0 = 0; d0 < D; d0 += 8) {
      const int64_t l0 = d0 / 8 * lines / passes, l1 = (d0 / 8 + 1) * lines / passes;
      for (int i = 0; i < n_next; ++i)
        for (int64_t l = l0; l < l1; ++l) {
          __builtin_prefetch(tokens + (next_dtok[i] - g.tokens) + l * 16, 0, 3);
          __builtin_prefetch(next_dtok[i] + l * 16, 1, 3);
        }
      for (int64_t j = 0; j < J; ++j) {
        __m256 r[8];
        for (int c = 0; c < 8; ++c) {
          const float* in = pix + ((d0 + c) * J + j) * hw;
          r[c] = n == 8 ? _mm256_loadu_ps(in) : _mm256_maskload_ps(in, mask);
        }
        transpose8(r);  // r[i]: pixel i, channels d0 .. d0+7
        __m256 sum = _mm256_loadu_ps(dbv + j * 8);
        for (int i = 0; i < 8; ++i) {
          _mm256_storeu_ps(gr + (j * 8 + i) * 8, r[i]);
          sum = _mm256_add_ps(sum, r[i]);
        }
        _mm256_storeu_ps(dbv + j * 8, sum);
      }
      for (int64_t m0 = 0; m0 < M; m0 += MB) {  // token gradient
        const float* w[MB];
        for (int u = 0; u < MB; ++u) w[u] = wt + std::min<int64_t>(m0 + u, M - 1) * JP;
        for (int i0 = 0; i0 < n; i0 += PB) {
          __m256 acc[PB][MB];
          for (int q = 0; q < PB; ++q)
            for (int u = 0; u < MB; ++u) acc[q][u] = _mm256_setzero_ps();
          for (int64_t j = 0; j < J; ++j) {
            __m256 gv[PB];
            for (int q = 0; q < PB; ++q) gv[q] = _mm256_loadu_ps(gr + (j * 8 + i0 + q) * 8);
            for (int u = 0; u < MB; ++u) {
              const __m256 wv = _mm256_broadcast_ss(w[u] + j);
              for (int q = 0; q < PB; ++q) acc[q][u] = _mm256_fmadd_ps(wv, gv[q], acc[q][u]);
            }
          }
          for (int q = 0; q < PB && i0 + q < n; ++q)
            for (int u = 0; u < MB && m0 + u < M; ++u) _mm256_storeu_ps(dtok[i0 + q] + (m0 + u) * D + d0, acc[q][u]);
        }
      }
      for (int64_t m0 = 0; m0 < M; m0 += WB) {  // weight gradient
        int64_t moff[WB];
        for (int u = 0; u < WB; ++u) moff[u] = std::min<int64_t>(m0 + u, M - 1) * D + d0;
        for (int64_t j0 = 0; j0 < J; j0 += 3) {  // JP is a multiple of 3: gr holds taps j0 .. j0+2
          __m256 acc[3][WB];
          for (int t = 0; t < 3; ++t)
            for (int u = 0; u < WB; ++u) acc[t][u] = _mm256_setzero_ps();
          for (int i = 0; i < 8; ++i) {
            __m256 tv[WB];
            for (int u = 0; u < WB; ++u) tv[u] = _mm256_loadu_ps(tok[i] + moff[u]);
            for (int t = 0; t < 3; ++t) {
              const __m256 gv = _mm256_loadu_ps(gr + ((j0 + t) * 8 + i) * 8);
              for (int u = 0; u < WB; ++u) acc[t][u] = _mm256_fmadd_ps(gv, tv[u], acc[t][u]);
            }
          }
          for (int t = 0; t < 3 && j0 + t < J; ++t)
            for (int u = 0; u < WB && m0 + u < M; ++u) {
              float* part = dwv + ((j0 + t) * M + m0 + u) * 8;
              _mm256_storeu_ps(part, _mm256_add_ps(_mm256_loadu_ps(part), acc[t][u]));
            }
        }
      }
    }
  }
  for (int64_t j = 0; j < J; ++j) {
    for (int v = 0; v < 8; ++v) db[j] += dbv[j * 8 + v];
    for (int64_t m = 0; m < M; ++m)
      for (int v = 0; v < 8; ++v) dw[j * M + m] += dwv[(j * M + m) * 8 + v];
  }
}

ACMIX_AVX2 void fc_backward_avx2(const Layout<float>& g, const float* tokens, const float* wt, int64_t J, int64_t JP,
                                 int64_t M, int64_t D, int64_t bi, int64_t p0, int64_t p1, double* dw, double* db,
                                 float* dwv, float* gr) {
  fc_backward_tiles<4, 2, 3>(g, tokens, wt, J, JP, M, D, bi, p0, p1, dw, db, dwv, gr);
}
ACMIX_AVX512 void fc_backward_avx512(const Layout<float>& g, const float* tokens, const float* wt, int64_t J,
                                     int64_t JP, int64_t M, int64_t D, int64_t bi, int64_t p0, int64_t p1,
                                     double* dw, double* db, float* dwv, float* gr) {
  fc_backward_tiles<4, 6, 6>(g, tokens, wt, J, JP, M, D, bi, p0, p1, dw, db, dwv, gr);
}

void check_fc(const at::Tensor& tokens, const at::Tensor& weight, int64_t height, int64_t width, int64_t window_h,
              int64_t window_w) {
  TORCH_CHECK(tokens.device().is_cpu() && tokens.dim() == 3 && tokens.stride(2) == 1 &&
              tokens.size(1) == height * width, "tokens must be a CPU (B, H*W, M*D) tensor with contiguous channels");
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.scalar_type() == tokens.scalar_type() &&
              tokens.size(2) % weight.size(1) == 0,
              "fc weight must be a contiguous (J, M) tensor of the tokens' dtype, M dividing the channels");
  TORCH_CHECK(height % window_h == 0 && width % window_w == 0, "H, W must be window multiples");
}

// one task: kRun pixels of one image
inline int64_t fc_runs(int64_t hw) { return (hw + kRun - 1) / kRun; }

// weight (J, M) -> (M, JP), JP = J rounded up to a multiple of JB, zero past J: the JB taps of one map side by side
at::Tensor taps_by_map(const at::Tensor& weight) {
  const int64_t J = weight.size(0), JP = (J + JB - 1) / JB * JB;
  auto wt = at::zeros({weight.size(1), JP}, weight.options());
  wt.narrow(1, 0, J).copy_(weight.t());
  return wt;
}

// The AVX2 loops where they apply (float32, D a multiple of 8, the CPU has AVX2); false: take the scalar loop
template <typename T>
bool fc_fast(const Layout<T>&, const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) {
  return false;
}
bool fc_fast(const Layout<float>& g, const float* wt, const float* bias, int64_t JP, int64_t J, int64_t M, int64_t D,
             int64_t bi, int64_t p0, int64_t p1) {
  if (!has_avx2() || D % 8) return false;
  fc_avx2(g, wt, bias, JP, J, M, D, bi, p0, p1);
  return true;
}
template <typename T>
bool fc_backward_fast(const Layout<T>&, const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                      int64_t, double*, double*, float*, float*) {
  return false;
}
bool fc_backward_fast(const Layout<float>& g, const float* tokens, const float* wt, int64_t J, int64_t JP, int64_t M,
                      int64_t D, int64_t bi, int64_t p0, int64_t p1, double* dw, double* db, float* dwv, float* gr) {
  if (!has_avx2() || D % 8) return false;
  if (has_avx512()) fc_backward_avx512(g, tokens, wt, J, JP, M, D, bi, p0, p1, dw, db, dwv, gr);
  else fc_backward_avx2(g, tokens, wt, J, JP, M, D, bi, p0, p1, dw, db, dwv, gr);
  return true;
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

// fc of the tokens (B, H*W, M*D) (window_partition order) with weight (J, M) and bias (J,) -> f (B, D, J, H, W)
at::Tensor fc_forward(const at::Tensor& tokens, const at::Tensor& weight, const at::Tensor& bias, int64_t height,
                      int64_t width, int64_t window_h, int64_t window_w) {
  check_fc(tokens, weight, height, width, window_h, window_w);
  TORCH_CHECK(bias.dim() == 1 && bias.is_contiguous() && bias.size(0) == weight.size(0) &&
              bias.scalar_type() == tokens.scalar_type(), "fc bias must be a contiguous (J,) tensor like the weight");
  const int64_t J = weight.size(0), M = weight.size(1), D = tokens.size(2) / M, B = tokens.size(0);
  auto f = at::empty({B, D, J, height, width}, tokens.options());
  const auto wt = taps_by_map(weight);
  const int64_t JP = wt.size(1);
  auto bias_p = at::zeros({JP}, bias.options());
  bias_p.narrow(0, 0, J).copy_(bias);
  AT_DISPATCH_FLOATING_TYPES(tokens.scalar_type(), "acmix_fc_forward", [&] {
    const Layout<scalar_t> g{const_cast<scalar_t*>(tokens.data_ptr<scalar_t>()), f.data_ptr<scalar_t>(), B, D * J,
                             height, width, window_h, window_w, tokens.stride(0), tokens.stride(1), D * J * height * width};
    const int64_t runs = fc_runs(height * width);
    at::parallel_for(0, B * runs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bi = t / runs, p0 = t % runs * kRun, p1 = std::min(p0 + kRun, height * width);
        if (!fc_fast(g, wt.data_ptr<scalar_t>(), bias_p.data_ptr<scalar_t>(), JP, J, M, D, bi, p0, p1))
          fc_scalar<scalar_t>(g, weight.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), J, M, D, bi, p0, p1);
      }
    });
  });
  return f;
}

// grad f (B, D, J, H, W), tokens (B, H*W, M*D), weight (J, M) -> [d tokens, d weight, d bias]; d tokens is a
// plain tensor of dtok_sizes (the caller's token shape, B*H*W*M*D elements), not a view, so that autograd can add
// another path's gradient into it in place
std::vector<at::Tensor> fc_backward(const at::Tensor& grad, const at::Tensor& tokens, const at::Tensor& weight,
                                    int64_t height, int64_t width, int64_t window_h, int64_t window_w,
                                    at::IntArrayRef dtok_sizes) {
  const int64_t J = weight.size(0), M = weight.size(1);
  check_fc(tokens, weight, height, width, window_h, window_w);
  const int64_t D = tokens.size(2) / M, B = tokens.size(0);
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == tokens.scalar_type() && grad.dim() == 5 &&
              grad.size(0) == B && grad.size(1) == D && grad.size(2) == J && grad.size(3) == height &&
              grad.size(4) == width, "grad must be a contiguous (B, D, J, H, W) tensor for the tokens and weight");
  TORCH_CHECK(c10::multiply_integers(dtok_sizes) == B * height * width * M * D,
              "fc_backward: dtok_sizes must hold the tokens' B*H*W*M*D elements");
  auto dtok = at::empty(dtok_sizes, tokens.options());
  const at::Tensor dtok_flat = dtok.view({B, height * width, M * D});
  const auto wt = taps_by_map(weight);
  const int64_t JP = wt.size(1);
  std::vector<double> dw(J * M, 0.0), db(J, 0.0);
  std::mutex lock;
  AT_DISPATCH_FLOATING_TYPES(tokens.scalar_type(), "acmix_fc_backward", [&] {
    const Layout<scalar_t> g{dtok_flat.data_ptr<scalar_t>(), const_cast<scalar_t*>(grad.data_ptr<scalar_t>()), B,
                             D * J, height, width, window_h, window_w, dtok_flat.stride(0), dtok_flat.stride(1),
                             D * J * height * width};
    // tokens and dtok must have the same strides: the kernel reads tokens at dtok's offsets
    const at::Tensor tok = tokens.contiguous();
    const int64_t runs = fc_runs(height * width);
    at::parallel_for(0, B * runs, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> dw_t(J * M, 0.0), db_t(J, 0.0);
      std::vector<float> dwv((J * M + JP) * 8), gr(JP * 64);  // see fc_backward_tiles
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bi = t / runs, p0 = t % runs * kRun, p1 = std::min(p0 + kRun, height * width);
        if (!fc_backward_fast(g, tok.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), J, JP, M, D, bi, p0, p1,
                              dw_t.data(), db_t.data(), dwv.data(), gr.data()))
          fc_backward_scalar<scalar_t>(g, tok.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), J, M, D, bi, p0, p1,
                                     dw_t.data(), db_t.data());
      }
      const std::lock_guard<std::mutex> guard(lock);
      for (int64_t i = 0; i < J * M; ++i) dw[i] += dw_t[i];
      for (int64_t i = 0; i < J; ++i) db[i] += db_t[i];
    });
  });
  auto dweight = at::empty_like(weight), dbias = at::empty({J}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "acmix_fc_backward_sums", [&] {
    for (int64_t i = 0; i < J * M; ++i) dweight.data_ptr<scalar_t>()[i] = static_cast<scalar_t>(dw[i]);
    for (int64_t i = 0; i < J; ++i) dbias.data_ptr<scalar_t>()[i] = static_cast<scalar_t>(db[i]);
  });
  return {dtok, dweight, dbias};
}
"""


def _load() -> SimpleNamespace | None:
    """The layout extension (built on the first call on a machine), or None if it cannot be built."""
    return build_extension('acmix_layout_cpu', _SOURCE, 'layout',
                           ('forward', 'backward', 'fc_forward', 'fc_backward'))


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


def _fc_kernel(tokens: torch.Tensor, *tensors: torch.Tensor) -> SimpleNamespace | None:
    """The extension when it can run the fc of these tensors (CPU, float32/64, all of one dtype), else None."""
    if tokens.device.type == 'cpu' and tokens.dtype in (torch.float32, torch.float64) and all(
            t.dtype == tokens.dtype for t in tensors):
        return _load()
    return None


@torch.library.custom_op('acmix::tokens_fc_to_planes', mutates_args=())
def _tokens_fc_to_planes(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, batch: int, height: int,
                         width: int, window_h: int, window_w: int) -> torch.Tensor:
    taps, maps = weight.shape
    flat = tokens.reshape(batch, height * width, -1)
    ext = _fc_kernel(flat, weight, bias)
    if ext is not None and flat.stride(-1) == 1:
        return ext.fc_forward(flat, weight.contiguous(), bias.contiguous(), height, width, window_h, window_w)
    planes = _tokens_to_planes(tokens, batch, height, width, window_h, window_w).view(batch, maps, -1, height * width)
    f = torch.einsum('jm,bmdp->bdjp', weight, planes) + bias.view(1, 1, taps, 1)
    return f.reshape(batch, -1, taps, height, width).contiguous()


@_tokens_fc_to_planes.register_fake
def _tokens_fc_to_planes_fake(tokens, weight, bias, batch, height, width, window_h, window_w):
    return tokens.new_empty(batch, tokens.shape[-1] // weight.shape[1], weight.shape[0], height, width)


@torch.library.custom_op('acmix::tokens_fc_to_planes_backward', mutates_args=())
def _tokens_fc_to_planes_backward(grad: torch.Tensor, tokens: torch.Tensor, weight: torch.Tensor, window_h: int,
                                  window_w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, dim, taps, h, w = grad.shape
    flat = tokens.reshape(b, h * w, -1)
    ext = _fc_kernel(flat, weight, grad)
    if ext is not None:
        # d tokens comes back in the tokens' shape as a plain tensor (no view): autograd adds the attention's
        # gradient of the same tokens into it in place
        return tuple(ext.fc_backward(grad.contiguous(), flat.contiguous(), weight.contiguous(), h, w, window_h,
                                     window_w, list(tokens.shape)))
    maps = weight.shape[1]
    planes = _tokens_to_planes(tokens, b, h, w, window_h, window_w).view(b, maps, dim, h * w)
    g = grad.reshape(b, dim, taps, h * w)
    dplanes = torch.einsum('jm,bdjp->bmdp', weight, g).reshape(b, maps * dim, h, w)
    dtokens = _planes_to_tokens(dplanes, window_h, window_w).view(tokens.shape)
    return dtokens, torch.einsum('bdjp,bmdp->jm', g, planes), g.sum((0, 1, 3))


@_tokens_fc_to_planes_backward.register_fake
def _tokens_fc_to_planes_backward_fake(grad, tokens, weight, window_h, window_w):
    return torch.empty_like(tokens), torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _setup_tokens_fc_to_planes(ctx, inputs, output) -> None:
    tokens, weight, _, _, _, _, window_h, window_w = inputs
    ctx.save_for_backward(tokens, weight)
    ctx.window = (window_h, window_w)


def _tokens_fc_to_planes_grads(ctx, grad):
    tokens, weight = ctx.saved_tensors
    dtokens, dweight, dbias = _tokens_fc_to_planes_backward(grad, tokens, weight, *ctx.window)
    return dtokens, dweight, dbias, None, None, None, None, None


_tokens_fc_to_planes.register_autograd(_tokens_fc_to_planes_grads, setup_context=_setup_tokens_fc_to_planes)


def tokens_fc_to_planes(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, batch: int, height: int,
                        width: int, window_h: int, window_w: int) -> torch.Tensor:
    """The conv path's ``fc`` read straight from Stage I tokens, as the shift kernel's planes.

    Args:
        tokens: (B*nW, Wh*Ww, M*D) in ``window_partition`` order (or (B, H*W, M*D) row-major, Wh, Ww = H, W); each
            token holds M maps of D channels (channel ``m*D + d``: q, k, v heads of ``head_dim`` channels).
        weight: (J, M), ``fc``'s 1x1 weight (J = k^2 taps); bias: (J,).
        batch, height, width: B, H, W of the map; window_h, window_w: the window.

    Returns:
        (B, D, J, H, W) contiguous: ``f[b, d, j] = bias[j] + sum_m weight[j, m] * map m, channel d``, the input of
        ``dep_conv``'s group d.  What ``tokens_to_planes`` then a (B, J, D*H*W) ``baddbmm`` give, without the
        (B, M*D, H, W) planes: the C++ kernel computes each token's J x D outputs in registers and stores them
        through 8 x 8 transposes; its backward writes the token gradient in token order.
    """
    return torch.ops.acmix.tokens_fc_to_planes(tokens, weight, bias, batch, height, width, window_h, window_w)


def available() -> bool:
    """True when the C++ layout kernel is built (compiled on the first call on a machine)."""
    return _load() is not None
