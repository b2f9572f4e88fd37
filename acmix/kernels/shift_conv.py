"""Fast CPU kernel for the shift module ``dep_conv`` of ACmix's convolution path, as a PyTorch custom op.

``dep_conv`` is ``Conv2d(head_dim*k^2 -> C, k, groups=head_dim)`` (``C = head * head_dim``): output channel
``o = g * head + h`` reads the ``k^2`` input channels ``g*k^2 .. g*k^2 + k^2 - 1``.  oneDNN runs such a grouped conv
(9 input and ``head`` output channels per group) far below its speed on dense convs, and its backward is slower
still, so on CPU this op computes it directly, for any number M of input planes per group (``k^2`` for
``dep_conv``; the 3 * heads Stage I maps when ``ShiftGroupConv.conv_path`` folds ``fc`` into it):

    out[b, g*N + h, y, x] = sum_{m, a, c} weight[g*N + h, m, a, c] * x[b, g, m, s*y + dy_a, s*x + dx_c]

with stride ``s``, ``dy_a = dilation*a - pad``, ``dx_c = dilation*c - pad``, ``pad = dilation*(k-1)//2`` and zero
padding, i.e. exactly ``F.conv2d(x.reshape(B, D*M, H, W), weight, None, s, pad, dilation, groups=D)``.  ``x`` is
(B, D, M, H, W) with any dense strides whose H x W planes are contiguous, so a transposed view is read in place,
and its gradient has the same strides.  One task is one (image, group) pair; its M input planes are copied into a
zero-padded buffer whose columns are split by phase (column mod s, so that a strided row of taps is one
contiguous vector), and every output row is computed in register tiles of 8 pixels x 3 or 4 output channels, so
each loaded input vector feeds several FMAs.  The input gradient is the transposed conv as such a tile loop at
stride 1, and otherwise a gather per column phase of the input (each tap one contiguous load of a grad row).  The
weight gradient runs one group per task with vector partial sums flushed to float64 per image.  The float32 loops
are compiled for AVX-512VL (its 32 vector registers hold taller tiles of 256-bit vectors), AVX2+FMA and baseline
x86-64 and picked by a CPU check at run time (``ACMIX_CPU_ISA`` caps it); float64 (tests) uses the baseline loops.
With k = 3, dilation 1 and stride 1 (every ACmix model but its strided blocks) the taps are unrolled at compile
time, and each task prefetches the next one's input while it computes.  ``ShiftGroupConv`` (``acmix.conv_path``)
keeps the grouped conv off CPU.

``shift_conv(x, weight, dilation, stride)`` is the entry point; ``shift_conv_reference`` is the same computation with
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
#include <type_traits>
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
  int64_t b, d, m, n, h, w, k, dil, s;  // batch, groups, input planes and outputs per group, map, kernel, dilation,
                                        // stride
  int64_t kk, p, c, ho, wo, hw, howo;   // k*k, padding, channels, output map, H*W, Ho*Wo
  int64_t wr, ph, pw;  // Wo rounded up to a vector; rows and columns of one column phase of a padded input plane
  int64_t sb, sg, sm;  // element strides of x (and dx) between images, groups and the planes of a group
};

// out[u] = in[2 * u] for u < n: the stride-2 de-interleave of pad_planes with a compile-time step, compiled for AVX2
// (vector permutes; pad_planes itself is compiled for baseline x86-64, where this loop ran one scalar load per
// element); callers check has_avx2()
template <typename T>
ACMIX_AVX2 __attribute__((noinline)) void deinterleave_avx2(const T* __restrict in, int64_t n, T* __restrict out) {
  for (int64_t u = 0; u < n; ++u) out[u] = in[2 * u];
}

// Zero-padded planes, their columns split by phase (column mod s): source pixel (y, x) of plane i lands at row
// y + pad, column (x + pad) / s of phase (x + pad) % s, each phase a ph x pw block (plane i at dst + i*s*ph*pw).
// With the split, the taps that a row of output pixels x, x+1, ... reads at padded columns s*x + dil*c are
// consecutive columns of one phase, so every tap is one contiguous vector load at any stride.  `planes` rows x
// cols source planes (plane i at src + i*stride, rows cols apart).  Only the source pixels are written: dst must
// start zeroed (the callers' buffers are), and as every call with one geometry writes the same positions, the
// padding stays zero when a task reuses the buffer.
template <typename T>
void pad_planes(const T* src, int64_t stride, int64_t planes, int64_t rows, int64_t cols, int64_t pad, int64_t s,
                int64_t ph, int64_t pw, T* dst) {
  for (int64_t i = 0; i < planes; ++i)
    for (int64_t y = 0; y < rows; ++y) {
      const T* in = src + i * stride + y * cols;
      if (s == 1) {
        std::memcpy(dst + (i * ph + y + pad) * pw + pad, in, cols * sizeof(T));
        continue;
      }
      for (int64_t phase = 0; phase < s; ++phase) {  // padded columns phase, phase + s, ...: the first real one
        const int64_t first = (pad + s - 1 - phase) / s;  // first column index (within the phase) with col >= pad
        const int64_t x0 = first * s + phase - pad;       // its source column
        T* out = dst + ((i * s + phase) * ph + y + pad) * pw;
        if (s == 2 && has_avx2()) deinterleave_avx2(in + x0, (cols - x0 + 1) / 2, out + first);
        else for (int64_t jj = first, x = x0; x < cols; ++jj, x += s) out[jj] = in[x];
      }
    }
}

// Offset of each tap column c from the first pixel of an output row in a padded, phase-split plane (see pad_planes)
inline std::vector<int64_t> tap_columns(const Geo& g) {
  std::vector<int64_t> cols(g.k);
  for (int64_t c = 0; c < g.k; ++c) cols[c] = ((g.dil * c) % g.s) * g.ph * g.pw + (g.dil * c) / g.s;
  return cols;
}

// Zero columns on each side of a grad row for the strided input-gradient gather: its tap columns read at
// u + (q + p - dil*c) / s, from -p/s to (s - 1 + p)/s, rounded up to whole vectors
inline int64_t strided_margin(const Geo& g, int64_t lanes) {
  return ((g.p + g.s - 1) / g.s + 1 + lanes - 1) / lanes * lanes;
}

// Vectors of columns per register tile of that gather, and the columns u of one phase row: Wo rounded up to tiles
constexpr int kStridedTile = 2;
inline int64_t strided_row(const Geo& g, int64_t lanes) {
  const int64_t tile = kStridedTile * lanes;
  return (g.wr + tile - 1) / tile * tile;
}

// One register tile: RY output rows y .. y+RY-1 x L pixels from x0 x BS outputs of block ob (see tile_sums).  Each
// weight serves the RY rows, so a tile keeps RY*BS independent FMA chains in flight.  The RY input vectors of a tap
// are loaded first and each weight is broadcast once for them: with BS = 4 and RY = 3 that is 12 accumulators + 3
// vectors + 1 weight = 16 AVX2 registers (the row-by-row order spilled and ran 0.77x).
template <typename T, int BS, int DIR, int RY, bool UNIT3>
inline __attribute__((always_inline)) void tile(const T* buf, int64_t planes, const T* wp, int64_t outs, int64_t y,
                                                int64_t x0, int64_t cols, int64_t ob, T* dst, int64_t ostride,
                                                const int64_t* tap_col, const Geo& g) {
  using VT = typename Vec<T>::type;
  constexpr int64_t L = sizeof(VT) / sizeof(T);
  const int64_t k = UNIT3 ? 3 : g.k;
  const int64_t step = DIR * g.dil, origin = DIR > 0 ? 0 : 2 * g.p, s = DIR > 0 ? g.s : 1;
  int64_t off[RY];  // the tile's rows from its first, in registers: each load is row + off[r] + a tap column
  for (int r = 0; r < RY; ++r) off[r] = r * s * g.pw;
  VT acc[RY][BS] = {};
  for (int64_t j = 0; j < planes; ++j)
#pragma GCC unroll 4
    for (int64_t ta = 0; ta < k; ++ta) {
      const T* row = buf + (j * s * g.ph + s * y + step * ta + origin) * g.pw + x0 + origin;
#pragma GCC unroll 4
      for (int64_t tc = 0; tc < k; ++tc, wp += BS) {
        const T* at = row + (UNIT3 ? DIR * tc : tap_col[tc]);  // UNIT3: column offsets known at compile time
        VT v[RY];
#pragma GCC unroll 16
        for (int r = 0; r < RY; ++r) v[r] = load(at + off[r]);
#pragma GCC unroll 8
        for (int i = 0; i < BS; ++i) {
          const T w = wp[i];
#pragma GCC unroll 16
          for (int r = 0; r < RY; ++r) acc[r][i] += v[r] * w;
        }
      }
    }
  const int64_t lanes = std::min<int64_t>(L, cols - x0);
#pragma GCC unroll 16
  for (int r = 0; r < RY; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < BS; ++i) {  // unrolled: acc stays in registers (a run-time index spilled it)
      if (ob * BS + i >= outs) break;
      T* o = dst + (ob * BS + i) * ostride + (y + r) * cols + x0;
      if (lanes == L) {
        std::memcpy(o, &acc[r][i], sizeof(VT));
      } else {
        T part[L];
        std::memcpy(part, &acc[r][i], sizeof(VT));
        std::memcpy(o, part, lanes * sizeof(T));
      }
    }
}

// Prefetch into L2 of the next task's source planes (`planes` planes of `elems` elements, `stride` apart), spread
// over the current task's register tiles (`step` per tile column), so that the next pad_planes copies from L2
// rather than waiting on L3 or memory (a quarter of the forward at Swin's stage 1 without it)
struct Prefetch {
  const char* src = nullptr;
  int64_t stride = 0, lines_per_plane = 0, total = 0, per_step = 0, line = 0;  // strides in bytes, 64-byte lines
  Prefetch() = default;
  template <typename T> Prefetch(const T* p, int64_t plane_stride, int64_t planes, int64_t elems)
      : src(reinterpret_cast<const char*>(p)), stride(plane_stride * sizeof(T)),
        lines_per_plane((elems * sizeof(T) + 63) / 64), total(planes * lines_per_plane) {}
  void spread(int64_t steps) { per_step = (total + steps - 1) / std::max<int64_t>(steps, 1); }
  inline __attribute__((always_inline)) void step() {
    for (int64_t i = 0; i < per_step && line < total; ++i, ++line)
      __builtin_prefetch(src + line / lines_per_plane * stride + line % lines_per_plane * 64, 0, 2);
  }
};

// Rows per register tile of BS outputs: RY*BS accumulators, RY input vectors and a weight fit the 16 vector
// registers of AVX2 (WIDE = false) or the 32 that AVX-512VL gives 256-bit vectors (WIDE = true)
template <int BS, bool WIDE> constexpr int tile_height() {
  if constexpr (WIDE) return BS >= 4 ? 5 : BS == 3 ? 6 : BS == 2 ? 8 : 12;
  return BS >= 3 ? 3 : BS == 2 ? 4 : 6;
}

// Rows y, y+R, ... of tiles R rows tall while R rows remain (y is left at the first row not done)
template <typename T, int BS, int DIR, int R, bool UNIT3>
inline __attribute__((always_inline)) void tile_band(const T* buf, int64_t planes, const T* wpk, int64_t outs,
                                                     int64_t rows, int64_t cols, T* dst, int64_t ostride,
                                                     const int64_t* tap_col, const Geo& g, Prefetch& next,
                                                     int64_t& y) {
  constexpr int64_t L = 32 / sizeof(T);
  const int64_t blocks = (outs + BS - 1) / BS;
  for (; y + R <= rows; y += R)
    for (int64_t x0 = 0; x0 < cols; x0 += L, next.step())
      for (int64_t ob = 0; ob < blocks; ++ob)
        tile<T, BS, DIR, R, UNIT3>(buf, planes, wpk + ob * planes * g.kk * BS, outs, y, x0, cols, ob, dst, ostride,
                                tap_col, g);
}

// Bands of tile_height rows, then the leftover rows three, two and one at a time
template <typename T, int BS, int DIR, bool UNIT3, bool WIDE>
inline __attribute__((always_inline)) void tile_rows(const T* buf, int64_t planes, const T* wpk, int64_t outs,
                                                     int64_t rows, int64_t cols, T* dst, int64_t ostride,
                                                     const int64_t* tap_col, const Geo& g, Prefetch& next) {
  constexpr int64_t L = 32 / sizeof(T);
  constexpr int RY = tile_height<BS, WIDE>();
  next.spread((rows / RY + RY - 1) * ((cols + L - 1) / L));  // tile columns, at most
  int64_t y = 0;
  tile_band<T, BS, DIR, RY, UNIT3>(buf, planes, wpk, outs, rows, cols, dst, ostride, tap_col, g, next, y);
  if constexpr (RY > 3)
    tile_band<T, BS, DIR, 3, UNIT3>(buf, planes, wpk, outs, rows, cols, dst, ostride, tap_col, g, next, y);
  if constexpr (RY > 2)
    tile_band<T, BS, DIR, 2, UNIT3>(buf, planes, wpk, outs, rows, cols, dst, ostride, tap_col, g, next, y);
  tile_band<T, BS, DIR, 1, UNIT3>(buf, planes, wpk, outs, rows, cols, dst, ostride, tap_col, g, next, y);
}

// Register tiles of one task: `outs` output planes of rows x cols pixels at dst (plane i at dst + i*ostride), each
// a sum over the `planes` padded planes in buf (see pad_planes) of k x k taps; tiles of RY rows x L pixels x BS
// outputs (RY*BS accumulators: 6 to 12), weights packed (blocks, planes, K, K, BS) from wpk, zero past the last
// output.  DIR = +1 reads tap (a, c) of output pixel (y, x) at padded (s*y + dil*a, s*x + dil*c) (the
// correlation, forward); DIR = -1 (stride 1 only) at (y - dil*a + 2p, x - dil*c + 2p) (its transpose, input grad).
// k = 3 (every ACmix model) runs with the taps unrolled at compile time.
template <typename T, int BS, int DIR, bool WIDE>
inline __attribute__((always_inline)) void tile_sums(const T* buf, int64_t planes, const T* wpk, int64_t outs,
                                                     int64_t rows, int64_t cols, T* dst, int64_t ostride,
                                                     const Geo& g, Prefetch& next) {
  std::vector<int64_t> tap_col = tap_columns(g);  // DIR = -1: stride 1, column offsets -dil*c instead
  if (DIR < 0)
    for (int64_t tc = 0; tc < g.k; ++tc) tap_col[tc] = -g.dil * tc;
  if (g.k == 3 && g.dil == 1 && (DIR < 0 || g.s == 1))
    tile_rows<T, BS, DIR, true, WIDE>(buf, planes, wpk, outs, rows, cols, dst, ostride, tap_col.data(), g, next);
  else
    tile_rows<T, BS, DIR, false, WIDE>(buf, planes, wpk, outs, rows, cols, dst, ostride, tap_col.data(), g, next);
}

// out channels g*N .. g*N+N-1 of image bi from the M input planes of group gi; packed (D, NB, M, KK, BS)
template <typename T, int BS, bool WIDE>
inline __attribute__((always_inline)) void forward_task(const T* f, const T* wpk, T* out, const Geo& g,
                                                        int64_t bi, int64_t gi, T* buf, Prefetch& next) {
  pad_planes(f + bi * g.sb + gi * g.sg, g.sm, g.m, g.h, g.w, g.p, g.s, g.ph, g.pw, buf);
  const int64_t nb = (g.n + BS - 1) / BS;
  tile_sums<T, BS, 1, WIDE>(buf, g.m, wpk + gi * nb * g.m * g.kk * BS, g.n, g.ho, g.wo,
                            out + (bi * g.c + gi * g.n) * g.howo, g.howo, g, next);
}

// dx planes (gi, 0 .. M-1) of image bi from the N grad planes of group gi, stride 1; packed (D, JB, N, KK, BS)
template <typename T, int BS, bool WIDE>
inline __attribute__((always_inline)) void backward_input_task(const T* grad, const T* wpk, T* df, const Geo& g,
                                                               int64_t bi, int64_t gi, T* buf, Prefetch& next) {
  pad_planes(grad + (bi * g.c + gi * g.n) * g.hw, g.hw, g.n, g.h, g.w, g.p, 1, g.ph, g.pw, buf);
  const int64_t jbs = (g.m + BS - 1) / BS;
  tile_sums<T, BS, -1, WIDE>(buf, g.n, wpk + gi * jbs * g.n * g.kk * BS, g.m, g.h, g.w, df + bi * g.sb + gi * g.sg,
                             g.sm, g, next);
}

// What the forward (input-gradient) task t + 1 copies first, for task t to prefetch; nothing past the thread's last
template <typename T> Prefetch forward_source(const T* f, const Geo& g, int64_t t, int64_t end) {
  if (t + 1 >= end) return {};
  return Prefetch(f + (t + 1) / g.d * g.sb + (t + 1) % g.d * g.sg, g.sm, g.m, g.hw);
}
template <typename T> Prefetch grad_source(const T* grad, const Geo& g, int64_t t, int64_t end) {
  if (t + 1 >= end) return {};
  return Prefetch(grad + ((t + 1) / g.d * g.c + (t + 1) % g.d * g.n) * g.hw, g.hw, g.n, g.hw);
}

// The same for stride s > 1, as a gather.  Input pixel (Y, X) sums the weighted grads g[o, y, x] of the taps (a, c)
// that reach it: s*y + dil*a - p = Y and s*x + dil*c - p = X.  Along a column phase q (X = s*u + q) a valid tap
// column c reads x = u + (q + p - dil*c) / s, so for fixed Y, q and c every tap is one contiguous vector load from
// gbuf (the N grad planes, rows rs apart with zero margins of `margin` columns on both sides).  Tiles of UB vectors
// of u x BS input planes accumulate over the N outputs and the valid taps, into one row per plane and phase of
// rowbuf, which is then interleaved into dx.  wpk packed as for stride 1 (D, JB, N, KK, BS).
template <typename T, int BS>
inline __attribute__((always_inline)) void backward_input_strided_task(const T* grad, const T* wpk, T* df,
                                                                       const Geo& g, int64_t bi, int64_t gi, T* gbuf,
                                                                       T* rowbuf) {
  using VT = typename Vec<T>::type;
  constexpr int64_t L = sizeof(VT) / sizeof(T);
  constexpr int UB = kStridedTile;
  const int64_t margin = strided_margin(g, L), rw = strided_row(g, L), rs = rw + 2 * margin;
  const int64_t jbs = (g.m + BS - 1) / BS;
  for (int64_t o = 0; o < g.n; ++o)  // the margins of the (zero-initialised, reused) gbuf are never written
    for (int64_t y = 0; y < g.ho; ++y)
      std::memcpy(gbuf + (o * g.ho + y) * rs + margin, grad + ((bi * g.c + gi * g.n + o) * g.ho + y) * g.wo,
                  g.wo * sizeof(T));
  const T* wg = wpk + gi * jbs * g.n * g.kk * BS;
  // per column phase q: the tap columns c that reach it and their gbuf column offsets
  std::vector<std::vector<int64_t>> cols(g.s), offs(g.s);
  for (int64_t q = 0; q < g.s; ++q)
    for (int64_t c = 0; c < g.k; ++c) {
      const int64_t num = q + g.p - g.dil * c;
      if (((num % g.s) + g.s) % g.s == 0) {
        cols[q].push_back(c);
        offs[q].push_back(margin + num / g.s);
      }
    }
  std::vector<int64_t> rows, tap_rows;
  for (int64_t yy = 0; yy < g.h; ++yy) {
    rows.clear();
    tap_rows.clear();
    for (int64_t a = 0; a < g.k; ++a) {
      const int64_t num = yy + g.p - g.dil * a;
      if (num >= 0 && num % g.s == 0 && num / g.s < g.ho) {
        rows.push_back(num / g.s);
        tap_rows.push_back(a);
      }
    }
    for (int64_t q = 0; q < g.s; ++q) {
      const int64_t us = (g.w - q + g.s - 1) / g.s;  // columns X = s*u + q of this phase
      for (int64_t jb = 0; jb < jbs; ++jb)
        for (int64_t u0 = 0; u0 < us; u0 += UB * L) {
          VT acc[UB][BS] = {};
          for (size_t ra = 0; ra < rows.size(); ++ra)
            for (size_t ci = 0; ci < cols[q].size(); ++ci) {
              const T* w = wg + (jb * g.n * g.kk + tap_rows[ra] * g.k + cols[q][ci]) * BS;
              const T* gv0 = gbuf + rows[ra] * rs + offs[q][ci] + u0;
              for (int64_t o = 0; o < g.n; ++o, w += g.kk * BS, gv0 += g.ho * rs) {
                VT gv[UB];
#pragma GCC unroll 4
                for (int v = 0; v < UB; ++v) gv[v] = load(gv0 + v * L);
#pragma GCC unroll 4
                for (int i = 0; i < BS; ++i) {
                  const T wi = w[i];
#pragma GCC unroll 4
                  for (int v = 0; v < UB; ++v) acc[v][i] += gv[v] * wi;
                }
              }
            }
          for (int i = 0; i < BS; ++i)
            for (int v = 0; v < UB; ++v)
              std::memcpy(rowbuf + ((jb * BS + i) * g.s + q) * rw + u0 + v * L, &acc[v][i], sizeof(VT));
        }
    }
    for (int64_t j = 0; j < g.m; ++j) {
      T* out = df + bi * g.sb + gi * g.sg + j * g.sm + yy * g.w;
      const T* in = rowbuf + j * g.s * rw;
      if (g.s == 2) {
        for (int64_t u = 0; u < g.w / 2; ++u) { out[2 * u] = in[u]; out[2 * u + 1] = in[rw + u]; }
        if (g.w % 2) out[g.w - 1] = in[g.w / 2];
      } else {
        for (int64_t x = 0; x < g.w; ++x) out[x] = in[(x % g.s) * rw + x / g.s];
      }
    }
  }
}

// Images whose weight-gradient products one float32 accumulator sums before it is added to the float64 total:
// about 512 products per lane (one image at 56x56 and up, every image of a batch of 4 at 14x14), so small maps do not
// pay a horizontal float64 flush per image.
inline int64_t images_per_flush(const Geo& g, int64_t lanes) {
  const int64_t per_image = g.ho * ((g.wo + lanes - 1) / lanes);
  return std::max<int64_t>(1, std::min<int64_t>(g.b, 512 / per_image));
}

// dweight rows g*N .. g*N+N-1: sum over images and pixels.  Register tiles of BS outputs x TA rows of 3 tap columns
// (columns past k are clamped and dropped) run over all pixels of `images_per_flush` images, so each accumulator
// stays in a register for the whole pass; their sums are added in float64.  TA = 1 (16 registers): per pixel
// vector the 3 taps are loaded and each output's grad is streamed; TA = 3 (k = 3 and BS = 3 in AVX-512VL's 32
// registers: all 9 taps, 27 accumulators) the 3 grads are loaded and the 9 taps streamed, 12 loads per 27 FMAs
// instead of 6 per 9.  fbuf holds those images' padded input planes, gbuf their NB*BS grad planes each (Ho x Wr,
// zero past Wo and past the last output: both buffers start zeroed and only their source pixels are written).
template <typename T, int BS, int TA>
inline __attribute__((always_inline)) void backward_weight_task(const T* grad, const T* f, T* dw, const Geo& g,
                                                                int64_t gi, T* fbuf, T* gbuf) {
  using VT = typename Vec<T>::type;
  constexpr int64_t L = sizeof(VT) / sizeof(T);
  constexpr int TC = 3;
  const int64_t taps = g.m * g.kk;  // weights per output channel
  const int64_t nb = (g.n + BS - 1) / BS, gplane = g.ho * g.wr;
  const int64_t chunk = images_per_flush(g, L), fsize = g.m * g.s * g.ph * g.pw, gsize = nb * BS * gplane;
  std::vector<double> total(g.n * taps, 0.0);
  const std::vector<int64_t> tap_col = tap_columns(g);
  for (int64_t b0 = 0; b0 < g.b; b0 += chunk) {
    const int64_t images = std::min(chunk, g.b - b0);
    for (int64_t c = 0; c < images; ++c) {
      pad_planes(f + (b0 + c) * g.sb + gi * g.sg, g.sm, g.m, g.h, g.w, g.p, g.s, g.ph, g.pw, fbuf + c * fsize);
      pad_planes(grad + ((b0 + c) * g.c + gi * g.n) * g.howo, g.howo, g.n, g.ho, g.wo, 0, 1, g.ho, g.wr,
                 gbuf + c * gsize);
    }
    const int64_t row_step = g.dil * g.pw;  // from a tap row to the next in fbuf
    for (int64_t ob = 0; ob < nb; ++ob)
      for (int64_t j = 0; j < g.m; ++j)
        for (int64_t ta0 = 0; ta0 < g.k; ta0 += TA)
          for (int64_t t0 = 0; t0 < g.k; t0 += TC) {
            int64_t col[TC];
            for (int u = 0; u < TC; ++u) col[u] = tap_col[std::min<int64_t>(t0 + u, g.k - 1)];
            VT acc[BS][TA][TC] = {};
            for (int64_t c = 0; c < images; ++c)
              for (int64_t y = 0; y < g.ho; ++y) {
                const T* frow = fbuf + c * fsize + (j * g.s * g.ph + g.s * y + g.dil * ta0) * g.pw;
                const T* grow = gbuf + c * gsize + ob * BS * gplane + y * g.wr;
                for (int64_t x0 = 0; x0 < g.wo; x0 += L) {
                  if constexpr (TA == 1) {
                    VT fv[TC];
                    for (int u = 0; u < TC; ++u) fv[u] = load(frow + x0 + col[u]);
#pragma GCC unroll 4
                    for (int i = 0; i < BS; ++i) {
                      const VT gv = load(grow + i * gplane + x0);
                      for (int u = 0; u < TC; ++u) acc[i][0][u] += gv * fv[u];
                    }
                  } else {
                    VT gv[BS];
#pragma GCC unroll 4
                    for (int i = 0; i < BS; ++i) gv[i] = load(grow + i * gplane + x0);
#pragma GCC unroll 4
                    for (int a = 0; a < TA; ++a)
#pragma GCC unroll 4
                      for (int u = 0; u < TC; ++u) {
                        const VT fv = load(frow + a * row_step + x0 + col[u]);
#pragma GCC unroll 4
                        for (int i = 0; i < BS; ++i) acc[i][a][u] += gv[i] * fv;
                      }
                  }
                }
              }
#pragma GCC unroll 4
            for (int i = 0; i < BS; ++i)  // unrolled: constant indices keep acc in registers
#pragma GCC unroll 4
              for (int a = 0; a < TA; ++a)
#pragma GCC unroll 4
                for (int u = 0; u < TC; ++u) {
                  if (ob * BS + i >= g.n || ta0 + a >= g.k || t0 + u >= g.k) continue;
                  double sum = 0.0;
                  for (int64_t v = 0; v < L; ++v) sum += acc[i][a][u][v];
                  total[((ob * BS + i) * g.m + j) * g.kk + (ta0 + a) * g.k + t0 + u] += sum;
                }
          }
  }
  for (int64_t i = 0; i < g.n * taps; ++i) dw[gi * g.n * taps + i] = static_cast<T>(total[i]);
}

// One register-tile task: DIR = +1 the forward (forward_task), -1 the stride-1 input gradient (backward_input_task)
template <typename T, int BS, int DIR, bool WIDE>
inline __attribute__((always_inline)) void tiles_task(const T* src, const T* wpk, T* dst, const Geo& g, int64_t bi,
                                                      int64_t gi, T* buf, Prefetch& next) {
  if constexpr (DIR > 0) forward_task<T, BS, WIDE>(src, wpk, dst, g, bi, gi, buf, next);
  else backward_input_task<T, BS, WIDE>(src, wpk, dst, g, bi, gi, buf, next);
}

// float32 loops compiled for AVX-512VL (the wide register tiles), AVX2+FMA and baseline x86-64, picked by a CPU
// check; float64 (tests): baseline only
template <int BS, int DIR> ACMIX_AVX512 void tiles_avx512(const float* src, const float* w, float* dst, const Geo& g, int64_t b, int64_t d, float* buf, Prefetch& nx) { tiles_task<float, BS, DIR, true>(src, w, dst, g, b, d, buf, nx); }
template <int BS, int DIR> ACMIX_AVX2 void tiles_avx2(const float* src, const float* w, float* dst, const Geo& g, int64_t b, int64_t d, float* buf, Prefetch& nx) { tiles_task<float, BS, DIR, false>(src, w, dst, g, b, d, buf, nx); }
template <int BS> ACMIX_AVX2 void bwis_avx2(const float* gr, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* gb, float* rb) { backward_input_strided_task<float, BS>(gr, w, o, g, b, d, gb, rb); }
template <int BS> ACMIX_AVX2 void bww_avx2(const float* gr, const float* f, float* dw, const Geo& g, int64_t d, float* fb, float* gb) { backward_weight_task<float, BS, 1>(gr, f, dw, g, d, fb, gb); }
// The weight gradient's all-taps tiles (backward_weight_task with BS = TA = 3) apply: float32 on AVX-512VL, k = 3
inline bool all_taps_weight_tiles(const Geo& g) { return g.k == 3 && has_avx512(); }
ACMIX_AVX512 void bww_avx512_all_taps(const float* gr, const float* f, float* dw, const Geo& g, int64_t d, float* fb, float* gb) { backward_weight_task<float, 3, 3>(gr, f, dw, g, d, fb, gb); }

template <int BS, int DIR> void tiles_one(const float* src, const float* w, float* dst, const Geo& g, int64_t b, int64_t d, float* buf, Prefetch& nx) {
  if (has_avx512()) tiles_avx512<BS, DIR>(src, w, dst, g, b, d, buf, nx);
  else if (has_avx2()) tiles_avx2<BS, DIR>(src, w, dst, g, b, d, buf, nx);
  else tiles_task<float, BS, DIR, false>(src, w, dst, g, b, d, buf, nx);
}
template <int BS, int DIR> void tiles_one(const double* src, const double* w, double* dst, const Geo& g, int64_t b, int64_t d, double* buf, Prefetch& nx) {
  tiles_task<double, BS, DIR, false>(src, w, dst, g, b, d, buf, nx);
}
template <int BS> void bwis_one(const float* gr, const float* w, float* o, const Geo& g, int64_t b, int64_t d, float* gb, float* rb) {
  if (has_avx2()) bwis_avx2<BS>(gr, w, o, g, b, d, gb, rb);
  else backward_input_strided_task<float, BS>(gr, w, o, g, b, d, gb, rb);
}
template <int BS> void bwis_one(const double* gr, const double* w, double* o, const Geo& g, int64_t b, int64_t d, double* gb, double* rb) {
  backward_input_strided_task<double, BS>(gr, w, o, g, b, d, gb, rb);
}
template <int BS> void bww_one(const float* gr, const float* f, float* dw, const Geo& g, int64_t d, float* fb, float* gb) {
  if constexpr (BS == 3)
    if (all_taps_weight_tiles(g)) return bww_avx512_all_taps(gr, f, dw, g, d, fb, gb);
  if (has_avx2()) bww_avx2<BS>(gr, f, dw, g, d, fb, gb);
  else backward_weight_task<float, BS, 1>(gr, f, dw, g, d, fb, gb);
}
template <int BS> void bww_one(const double* gr, const double* f, double* dw, const Geo& g, int64_t d, double* fb, double* gb) {
  backward_weight_task<double, BS, 1>(gr, f, dw, g, d, fb, gb);
}

Geo geometry(const at::Tensor& f, const at::Tensor& weight, int64_t dil, int64_t stride, int64_t lanes) {
  Geo g{};
  g.k = weight.size(2); g.kk = g.k * g.k;
  g.b = f.size(0); g.d = f.size(1); g.m = f.size(2); g.h = f.size(3); g.w = f.size(4);
  g.sb = f.stride(0); g.sg = f.stride(1); g.sm = f.stride(2);
  g.n = weight.size(0) / g.d; g.dil = dil; g.s = stride; g.p = dil * (g.k - 1) / 2; g.c = g.d * g.n;
  g.ho = (g.h + stride - 1) / stride; g.wo = (g.w + stride - 1) / stride; g.hw = g.h * g.w; g.howo = g.ho * g.wo;
  g.wr = (g.wo + lanes - 1) / lanes * lanes; g.ph = g.h + 2 * g.p;
  // room for the farthest tap of the last vector, and for every padded column of a phase
  g.pw = std::max(g.wr + (dil * (g.k - 1)) / stride, (g.w - 1 + 2 * g.p) / stride + 1);
  return g;
}

void check(const at::Tensor& f, const at::Tensor& weight, int64_t dilation, int64_t stride) {
  TORCH_CHECK(dilation >= 1 && stride >= 1, "dilation and stride must be positive");
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

// x (B, D, M, H, W), weight (C, M, K, K) -> (B, C, Ho, Wo), Ho = ceil(H / stride)
at::Tensor forward(const at::Tensor& f, const at::Tensor& weight, int64_t dilation, int64_t stride) {
  check(f, weight, dilation, stride);
  auto out = at::empty({f.size(0), weight.size(0), (f.size(3) + stride - 1) / stride, (f.size(4) + stride - 1) / stride},
                       f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "acmix_shift_conv_forward", [&] {
    const Geo g = geometry(f, weight, dilation, stride, 32 / sizeof(scalar_t));
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
      std::vector<scalar_t> buf(g.m * g.s * g.ph * g.pw);
      for (int64_t t = begin; t < end; ++t) {
        Prefetch next = forward_source(fp, g, t, end);
        if (bs == 1) tiles_one<1, 1>(fp, wp, op, g, t / g.d, t % g.d, buf.data(), next);
        else if (bs == 2) tiles_one<2, 1>(fp, wp, op, g, t / g.d, t % g.d, buf.data(), next);
        else if (bs == 3) tiles_one<3, 1>(fp, wp, op, g, t / g.d, t % g.d, buf.data(), next);
        else tiles_one<4, 1>(fp, wp, op, g, t / g.d, t % g.d, buf.data(), next);
      }
    });
  });
  return out;
}

// grad (B, C, Ho, Wo) -> [dx (B, D, M, H, W) with x's strides, dweight (C, M, K, K)]
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& f, const at::Tensor& weight,
                                 int64_t dilation, int64_t stride) {
  check(f, weight, dilation, stride);
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == f.scalar_type() && grad.dim() == 4, "grad must be contiguous (B, C, H, W)");
  auto df = at::empty_like(f);  // keeps x's strides (dense)
  auto dw = at::empty_like(weight);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "acmix_shift_conv_backward", [&] {
    const Geo g = geometry(f, weight, dilation, stride, 32 / sizeof(scalar_t));
    TORCH_CHECK(grad.size(0) == g.b && grad.size(1) == g.c && grad.size(2) == g.ho && grad.size(3) == g.wo,
                "grad must be (B, C, Ho, Wo) for x and weight");
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
      if (g.s > 1) {
        constexpr int64_t L = 32 / sizeof(scalar_t);
        const int64_t rw = strided_row(g, L);
        std::vector<scalar_t> gbuf(g.n * g.ho * (rw + 2 * strided_margin(g, L))), rbuf(jbs * bs * g.s * rw);
        for (int64_t t = begin; t < end; ++t) {
          if (bs == 3) bwis_one<3>(gp, wp, dfp, g, t / g.d, t % g.d, gbuf.data(), rbuf.data());
          else bwis_one<4>(gp, wp, dfp, g, t / g.d, t % g.d, gbuf.data(), rbuf.data());
        }
        return;
      }
      std::vector<scalar_t> buf(g.n * g.ph * g.pw);
      for (int64_t t = begin; t < end; ++t) {
        Prefetch next = grad_source(gp, g, t, end);
        if (bs == 3) tiles_one<3, -1>(gp, wp, dfp, g, t / g.d, t % g.d, buf.data(), next);
        else tiles_one<4, -1>(gp, wp, dfp, g, t / g.d, t % g.d, buf.data(), next);
      }
    });
    at::parallel_for(0, g.d, 1, [&](int64_t begin, int64_t end) {
      // outputs per weight-gradient tile; 3 for the all-taps tiles when the outputs divide into threes
      const bool all_taps = std::is_same_v<scalar_t, float> && g.n % 3 == 0 && all_taps_weight_tiles(g);
      const int wbs = all_taps ? 3 : block_size(g.n);
      const int64_t chunk = images_per_flush(g, 32 / sizeof(scalar_t));
      std::vector<scalar_t> fbuf(chunk * g.m * g.s * g.ph * g.pw), gbuf(chunk * ((g.n + wbs - 1) / wbs * wbs) * g.ho * g.wr);
      for (int64_t gi = begin; gi < end; ++gi) {
        if (wbs == 1) bww_one<1>(gp, fp, dwp, g, gi, fbuf.data(), gbuf.data());
        else if (wbs == 2) bww_one<2>(gp, fp, dwp, g, gi, fbuf.data(), gbuf.data());
        else if (wbs == 3) bww_one<3>(gp, fp, dwp, g, gi, fbuf.data(), gbuf.data());
        else bww_one<4>(gp, fp, dwp, g, gi, fbuf.data(), gbuf.data());
      }
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
def _fwd_op(x: torch.Tensor, weight: torch.Tensor, dilation: int, stride: int) -> torch.Tensor:
    dt = _compute_dtype(x)
    return _load().forward(_compute_planes(x, dt), _compute(weight, dt), dilation, stride).to(x.dtype)


@_fwd_op.register_fake
def _fwd_fake(x, weight, dilation, stride):
    return x.new_empty(x.shape[0], weight.shape[0], -(-x.shape[3] // stride), -(-x.shape[4] // stride))


@torch.library.custom_op('acmix::shift_conv_bwd', mutates_args=())
def _bwd_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, dilation: int,
            stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    dt = _compute_dtype(x)
    dx, dw = _load().backward(_compute(grad, dt), _compute_planes(x, dt), _compute(weight, dt), dilation, stride)
    return dx.to(x.dtype), dw.to(weight.dtype)


@_bwd_op.register_fake
def _bwd_fake(grad, x, weight, dilation, stride):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, dilation, stride = inputs
    ctx.save_for_backward(x, weight)
    ctx.window = (dilation, stride)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    dx, dw = _bwd_op(grad.contiguous(), x, weight, *ctx.window)
    return dx, dw, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _check(x: torch.Tensor, weight: torch.Tensor, dilation: int, stride: int) -> None:
    if x.dim() != 5 or weight.dim() != 4 or weight.shape[2] != weight.shape[3] or \
            weight.shape[1] != x.shape[2] or weight.shape[0] % x.shape[1]:
        raise ValueError(f'shift_conv needs x (B, D, M, H, W) and weight (D*N, M, k, k), got x {tuple(x.shape)} '
                         f'and weight {tuple(weight.shape)}')
    if dilation < 1 or stride < 1:
        raise ValueError(f'shift_conv needs a positive dilation and stride, got {dilation} and {stride}')


def shift_conv(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1, stride: int = 1) -> torch.Tensor:
    """Grouped k x k conv (zero padding ``dilation*(k-1)//2``, no bias, ``D`` groups) with the C++ kernel.

    Args:
        x: (B, D, M, H, W) CPU tensor, the M input planes of each of the D groups, any strides with contiguous
            H x W planes: ``dep_conv``'s input ``(B, D*k*k, H, W)`` viewed as (B, D, k*k, H, W), or the conv
            path's Stage I maps (B, M, D, H, W) transposed (``acmix.conv_path.ShiftGroupConv.conv_path``).
        weight: (D*N, M, k, k); output channel ``g*N + h`` reads the planes of group ``g``.
        dilation: spacing of the k x k taps.
        stride: output subsampling (output pixel (y, x) is centred on input pixel (stride*y, stride*x)).

    Returns:
        (B, D*N, ceil(H/stride), ceil(W/stride)), equal to ``shift_conv_reference(x, weight, dilation, stride)``.
    """
    _check(x, weight, dilation, stride)
    return _fwd_op(x, weight, dilation, stride)


def shift_conv_reference(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1, stride: int = 1) -> torch.Tensor:
    """The grouped ``F.conv2d`` that ``shift_conv`` computes."""
    _check(x, weight, dilation, stride)
    b, d, m, h, w = x.shape
    k = weight.shape[-1]
    return F.conv2d(x.reshape(b, d * m, h, w), weight, None, stride, dilation * (k - 1) // 2, dilation, d)
