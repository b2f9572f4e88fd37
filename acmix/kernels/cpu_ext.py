"""C++ CPU kernel for local attention, compiled on first use (``build_extension``).

The kernel reads q, k, v as (B, heads, D, H, W) with any strides (channel slices of one q | k | v tensor, no
layout copies), applies the query scale and key bias as it reads, and vectorises along a row of output pixels:
one task is one image (batch * head), whose keys and values are first copied into a reflection-padded map (see
``Geometry`` in ``_SOURCE``), so that window tap t of 8 neighbouring pixels is one contiguous vector load.
Forward sums the values over the unnormalised exponentials and divides each output value once, and stores only
the output and the log-sum-exp of each pixel's logits (B, heads, Ho, Wo); backward
recomputes the logits and the softmax from it (flash-attention style), accumulates dk, dv in padded maps that
are folded back onto the source pixels, and writes dq | dk | dv into one (B, 3 * heads * D, H, W) tensor.
Float32 uses vectorised polynomial exp and log (about 1 ulp), float64 the library's.  The build lands in the default
``TORCH_EXTENSIONS_DIR`` cache, so only the first use on a machine pays the compile (10-20 s).  The loops are
compiled for AVX2+FMA and for baseline x86-64, and a CPU check picks one at run time.  If the build fails,
``load()`` warns once and returns None and callers use the pure-PyTorch path.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from types import ModuleType, SimpleNamespace

import torch

__all__ = ['import_cpp_extension', 'load']

_SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

// One SIMD register of T (8 floats / 4 doubles, GCC vector extension): the kernels vectorise along a row of
// output pixels, so every window tap of L neighbouring pixels is one contiguous load from the padded map.
template <typename T> struct VecOf { typedef T type __attribute__((vector_size(32))); };
template <typename T> using Vec = typename VecOf<T>::type;
template <typename T> constexpr int64_t lanes = 32 / sizeof(T);

#define ACMIX_INLINE inline __attribute__((always_inline))

template <typename T> ACMIX_INLINE Vec<T> load(const T* p) { Vec<T> v; std::memcpy(&v, p, sizeof(v)); return v; }
template <typename T> ACMIX_INLINE void store(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof(v)); }
template <typename T> ACMIX_INLINE Vec<T> splat(T x) { return Vec<T>{} + x; }
template <typename T> ACMIX_INLINE Vec<T> vmax(Vec<T> a, Vec<T> b) { return a > b ? a : b; }

// exp of every lane.  float: Cephes' expf (range reduction by ln 2, degree-7 polynomial, about 1 ulp), which
// vectorises; double (gradcheck, tests) keeps std::exp lane by lane for full accuracy.
template <typename T> ACMIX_INLINE Vec<T> vexp(Vec<T> x) {
  if constexpr (std::is_same_v<T, float>) {
    typedef int32_t Int __attribute__((vector_size(32)));
    x = vmax<T>(x, splat(-87.3f));                                  // exp(-87.3) ~ 1e-38: the smallest normal
    const Vec<T> big = splat(12582912.0f);                       // 1.5 * 2^23: adding it rounds to an integer
    const Vec<T> n = (x * 1.44269504088896341f + big) - big;     // round(x / ln 2)
    const Vec<T> r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    Vec<T> p = splat(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    const Int bits = (__builtin_convertvector(n, Int) + 127) << 23;  // 2^n, n >= -126
    Vec<T> two_n;
    std::memcpy(&two_n, &bits, sizeof(two_n));
    return p * two_n;
  } else {
    for (int64_t l = 0; l < lanes<T>; ++l) x[l] = std::exp(x[l]);
    return x;
  }
}

// log of every lane.  float: Cephes' logf (mantissa in [sqrt(1/2), sqrt(2)), degree-8 polynomial, about 1 ulp) for
// positive normal x, which vectorises; double keeps std::log lane by lane.
template <typename T> ACMIX_INLINE Vec<T> vlog(Vec<T> x) {
  if constexpr (std::is_same_v<T, float>) {
    typedef int32_t Int __attribute__((vector_size(32)));
    Int bits;
    std::memcpy(&bits, &x, sizeof(bits));
    Vec<T> e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, Vec<T>);
    bits = (bits & 0x807fffff) | 0x3f000000;                      // mantissa m in [0.5, 1)
    Vec<T> m;
    std::memcpy(&m, &bits, sizeof(m));
    const auto small = m < splat(0.707106781186547524f);
    e = small ? e - 1.0f : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    const Vec<T> z = m * m;
    Vec<T> y = splat(7.0376836292E-2f);
    y = y * m - 1.1514610310E-1f;
    y = y * m + 1.1676998740E-1f;
    y = y * m - 1.2420140846E-1f;
    y = y * m + 1.4249322787E-1f;
    y = y * m - 1.6668057665E-1f;
    y = y * m + 2.0000714765E-1f;
    y = y * m - 2.4999993993E-1f;
    y = y * m + 3.3333331174E-1f;
    y = y * m * z;
    y += e * -2.12194440e-4f;
    y += -0.5f * z;
    return m + y + e * 0.693359375f;
  } else {
    for (int64_t l = 0; l < lanes<T>; ++l) x[l] = std::log(x[l]);
    return x;
  }
}

// Strided (B, G, D, H, W) view of an input tensor, image n = (b, g) = (n / G, n % G) (batch, head), read as
// scale * (x - bias): bias (D, H, W) contiguous, shared by all images, or null
template <typename T> struct Map {
  const T* p;
  int64_t groups, sb, sg, sd, sh, sw;
  T scale;
  const T* bias;
  ACMIX_INLINE const T* image(int64_t n) const { return p + (n / groups) * sb + (n % groups) * sg; }
};

template <typename T> Map<T> map_of(const at::Tensor& t, double scale = 1.0, const at::Tensor& bias = {}) {
  return {t.data_ptr<T>(), t.size(1), t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4), T(scale),
          bias.defined() ? bias.data_ptr<T>() : nullptr};
}

// Geometry.  The keys and values of one image are copied into a reflection-padded map (Hp, Wp) = (H + 2 pad,
// W + 2 pad), where tap (a, b) of output pixel (i, j) sits at (i*s + a*dil, j*s + b*dil).  Its columns are split
// by phase (column mod stride), so tap b of the output pixels j, j+1, ... lies at consecutive columns
// j + (b*dil)/s of phase (b*dil)%s: one contiguous run for any stride.  Layout (phase, D, Hp, Wq); Wq leaves room
// for whole vectors past the last output pixel (those lanes read zeros and are never stored).
struct Geometry {
  int64_t n, groups, d, h, w, k, dil, stride, ho, wo, hp, wp, wov, wq, margin, rs;
  Geometry(const at::Tensor& q, int64_t k_, int64_t dil_, int64_t stride_, int64_t lanes_)
      : n(q.size(0) * q.size(1)), groups(q.size(1)), d(q.size(2)), h(q.size(3)), w(q.size(4)), k(k_), dil(dil_),
        stride(stride_) {
    const int64_t pad = dil * (k - 1) / 2;
    ho = (h + stride - 1) / stride;
    wo = (w + stride - 1) / stride;
    hp = h + 2 * pad;
    wp = w + 2 * pad;
    wov = (wo + lanes_ - 1) / lanes_ * lanes_;
    margin = ((k - 1) * dil / stride + lanes_ - 1) / lanes_ * lanes_;  // >= the largest column offset of a tap
    wq = std::max((wp + stride - 1) / stride, wov + margin);
    rs = wov + 2 * margin;
  }
  int64_t taps() const { return k * k; }
  // start of image n = (b, g) in the (B, 3*G*D, H, W) gradient, i.e. (B, 3, G, D, H, W) (dq, dk, dv at + 0, 1,
  // 2 * grad_part())
  int64_t grad_part() const { return groups * d * h * w; }
  int64_t grad_image(int64_t img) const { return (img / groups) * 3 * grad_part() + (img % groups) * d * h * w; }
  int64_t plane() const { return hp * wq; }             // one channel of one phase
  int64_t padded() const { return stride * d * plane(); }
  // offsets[t]: where tap t = a*K + b of output row i starts in a padded map (channel 0; channel c adds
  // c * plane()), computed once per row (the divisions must stay out of the inner loops)
  void row_taps(int64_t i, int64_t* offsets) const {
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b)
        offsets[a * k + b] = (((b * dil) % stride) * d * hp + i * stride + a * dil) * wq + (b * dil) / stride;
  }
};

// Rows of Wov values, g.rs apart, with g.margin zeros on both sides: reads at columns shifted by a tap offset
// stay inside and see zeros.  data() points at the first value of row 0.
template <typename T> struct RowBuffer {
  std::vector<T> mem;
  int64_t margin;
  RowBuffer(int64_t rows, const Geometry& g) : mem(rows * g.rs), margin(g.margin) {}
  T* data() { return mem.data() + margin; }
};

// The columns jj of phase ph of a padded row (padded column jj*s + ph): [0, lo) and [hi, end) are reflections
// (source column pcol[jj*s + ph]), [lo, hi) the unpadded middle, whose source columns src0, src0 + s, ... are one
// strided run, and [end, Wq) lie past the padded row (zeros)
struct PhaseColumns {
  int64_t lo, hi, end, src0;
  PhaseColumns(const Geometry& g, int64_t ph) {
    const int64_t pad = (g.wp - g.w) / 2, s = g.stride;
    lo = std::max<int64_t>(pad - ph + s - 1, 0) / s;
    hi = std::max(lo, (pad + g.w - ph + s - 1) / s);
    end = (g.wp - ph + s - 1) / s;
    src0 = lo * s + ph - pad;
  }
};

// Strided runs.  Each takes its steps as compile-time constants when they are 1 or 2 (S = 1, 2: loops that
// vectorise, the strided ones with permutes instead of one insert per lane) and as given otherwise (S = 0).

// dst[u] = scale * (src[u * src_step] - bias[u * bias_step]) for u < n, bias optional
template <typename T, int64_t S>
ACMIX_INLINE void copy_steps(const T* src, int64_t src_step, const T* bias, int64_t bias_step, T scale, int64_t n,
                             T* __restrict dst) {
  const int64_t ss = S > 0 ? S : src_step, bs = S > 0 ? S : bias_step;
  if (bias) for (int64_t u = 0; u < n; ++u) dst[u] = scale * (src[u * ss] - bias[u * bs]);
  else for (int64_t u = 0; u < n; ++u) dst[u] = scale * src[u * ss];
}

template <typename T>
ACMIX_INLINE void copy_run(const T* src, int64_t src_step, const T* bias, int64_t bias_step, T scale, int64_t n,
                           T* dst) {
  if (src_step == 1 && bias_step == 1) copy_steps<T, 1>(src, 1, bias, 1, scale, n, dst);
  else if (src_step == 2 && bias_step == 2) copy_steps<T, 2>(src, 2, bias, 2, scale, n, dst);
  else copy_steps<T, 0>(src, src_step, bias, bias_step, scale, n, dst);
}

// dst[u * step] += src[u] (Add) or dst[u * step] = scale * src[u] for u < n
template <bool Add, typename T, int64_t S>
ACMIX_INLINE void put_steps(const T* src, int64_t step, int64_t n, T* dst, T scale) {
  const int64_t st = S > 0 ? S : step;
  if constexpr (Add) for (int64_t u = 0; u < n; ++u) dst[u * st] += src[u];
  else for (int64_t u = 0; u < n; ++u) dst[u * st] = scale * src[u];
}

template <bool Add, typename T>
ACMIX_INLINE void put_run(const T* src, int64_t step, int64_t n, T* dst, T scale) {
  if (step == 1) put_steps<Add, T, 1>(src, 1, n, dst, scale);
  else if (step == 2) put_steps<Add, T, 2>(src, 2, n, dst, scale);
  else put_steps<Add, T, 0>(src, step, n, dst, scale);
}

template <typename T> ACMIX_INLINE void add_run(const T* src, int64_t step, int64_t n, T* dst) {
  put_run<true>(src, step, n, dst, T(1));
}

template <typename T> ACMIX_INLINE void store_run(const T* src, int64_t step, int64_t n, T* dst, T scale = T(1)) {
  put_run<false>(src, step, n, dst, scale);
}

// Reflection-padded, phase-split copy of image `img` of x (see Geometry), scale and bias applied; prow/pcol map
// padded to source indices.  The central rows are built from their source rows; a reflected row is the copy of the
// central row of its source row.
template <typename T>
ACMIX_INLINE void pad_image(const Map<T>& x, int64_t img, const int64_t* prow, const int64_t* pcol,
                            const Geometry& g, T* dst) {
  const int64_t pad = (g.hp - g.h) / 2;
  for (int64_t ph = 0; ph < g.stride; ++ph) {
    const PhaseColumns pc(g, ph);
    const int64_t n = pc.hi - pc.lo;
    for (int64_t c = 0; c < g.d; ++c) {
      T* plane = dst + (ph * g.d + c) * g.hp * g.wq;
      for (int64_t y = 0; y < g.h; ++y) {
        T* row = plane + (y + pad) * g.wq;
        const T* src = x.image(img) + c * x.sd + y * x.sh;
        const T* bias = x.bias ? x.bias + (c * g.h + y) * g.w : nullptr;
        auto reflect = [&](int64_t jj) {
          const int64_t u = pcol[jj * g.stride + ph];
          row[jj] = x.scale * (src[u * x.sw] - (bias ? bias[u] : T(0)));
        };
        for (int64_t jj = 0; jj < pc.lo; ++jj) reflect(jj);
        const T* mid_bias = bias ? bias + pc.src0 : nullptr;  // the bias is contiguous: its step is the stride
        copy_run(src + pc.src0 * x.sw, g.stride * x.sw, mid_bias, g.stride, x.scale, n, row + pc.lo);
        for (int64_t jj = pc.hi; jj < pc.end; ++jj) reflect(jj);
        std::fill(row + pc.end, row + g.wq, T(0));
      }
      for (int64_t r = 0; r < g.hp; ++r)
        if (r < pad || r >= pad + g.h) std::memcpy(plane + r * g.wq, plane + (prow[r] + pad) * g.wq, g.wq * sizeof(T));
    }
  }
}

// Adjoint of pad_image: writes the sum of every padded position onto its source pixel of image `img` of one part
// (dk or dv) of the (B, 3*G*D, H, W) gradient, which need not be initialised.  The unreflected middle of the
// central rows holds each source pixel exactly once (over the column phases), so it is assigned first; every
// reflected position is then added.
template <typename T>
ACMIX_INLINE void fold_image(const T* src, int64_t img, const int64_t* prow, const int64_t* pcol, const Geometry& g,
                             T* grad) {
  const int64_t pad = (g.hp - g.h) / 2;
  for (int64_t ph = 0; ph < g.stride; ++ph) {
    const PhaseColumns pc(g, ph);
    const int64_t n = pc.hi - pc.lo;
    for (int64_t c = 0; c < g.d; ++c) {
      T* plane = grad + g.grad_image(img) + c * g.h * g.w;
      for (int64_t y = 0; y < g.h; ++y) {
        const T* row = src + ((ph * g.d + c) * g.hp + pad + y) * g.wq + pc.lo;
        T* out = plane + y * g.w + pc.src0;
        store_run(row, g.stride, n, out);
      }
    }
  }
  for (int64_t ph = 0; ph < g.stride; ++ph) {
    const PhaseColumns pc(g, ph);
    for (int64_t c = 0; c < g.d; ++c) {
      T* plane = grad + g.grad_image(img) + c * g.h * g.w;
      for (int64_t r = 0; r < g.hp; ++r) {
        const T* row = src + ((ph * g.d + c) * g.hp + r) * g.wq;
        T* out = plane + prow[r] * g.w;
        for (int64_t jj = 0; jj < pc.lo; ++jj) out[pcol[jj * g.stride + ph]] += row[jj];
        if (r < pad || r >= pad + g.h) add_run(row + pc.lo, g.stride, pc.hi - pc.lo, out + pc.src0);  // reflected row
        for (int64_t jj = pc.hi; jj < pc.end; ++jj) out[pcol[jj * g.stride + ph]] += row[jj];
      }
    }
  }
}

// dst[c, j] = scale * x[img, c, y, j * step] for j < Wo, zero up to Wov (dst: D rows g.rs apart; no bias): the
// queries of an output row (y = i * stride, step = stride) or its output gradient (y = i, step = 1)
template <typename T>
ACMIX_INLINE void load_row(const Map<T>& x, int64_t img, int64_t y, int64_t step, const Geometry& g, T* dst) {
  for (int64_t c = 0; c < g.d; ++c) {
    const T* src = x.image(img) + c * x.sd + y * x.sh;
    T* row = dst + c * g.rs;
    copy_run(src, step * x.sw, static_cast<const T*>(nullptr), step * x.sw, x.scale, g.wo, row);
    std::fill(row + g.wo, row + g.wov, T(0));
  }
}

// dst[t, j] = sum_c x[c, j] * y_t[c, j] for every tap t of an output row, y_t = ypad + offsets[t] (channel c at
// + c * plane()): the logits (x = queries, y = keys) and dP (x = dO, y = values); x and dst are (D or K*K, Wov).
// Register tiles of four taps x NJ vectors of pixels: 4 * NJ independent FMA chains (an FMA's latency needs about
// eight in flight), each load of x shared by the four taps.
template <typename T, int64_t DC, int NJ>
ACMIX_INLINE void row_dots_tile(const T* x, const T* const* y, int64_t j, const Geometry& g, T* dst, int64_t t) {
  const int64_t d = DC > 0 ? DC : g.d, plane = g.plane(), rs = g.rs;
  constexpr int64_t L = lanes<T>;
  Vec<T> acc[NJ][4] = {};
  for (int64_t c = 0; c < d; ++c) {
#pragma GCC unroll 2
    for (int u = 0; u < NJ; ++u) {
      const Vec<T> xv = load(x + c * rs + j + u * L);
      const int64_t o = c * plane + j + u * L;
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[u][v] += xv * load(y[v] + o);
    }
  }
  for (int u = 0; u < NJ; ++u)
    for (int v = 0; v < 4; ++v) store(dst + (t + v) * rs + j + u * L, acc[u][v]);
}

template <typename T, int64_t DC>
ACMIX_INLINE void row_dots(const T* x, const T* ypad, const int64_t* offsets, const Geometry& g, T* dst) {
  const int64_t d = DC > 0 ? DC : g.d, plane = g.plane(), taps = g.taps(), wov = g.wov, rs = g.rs;
  constexpr int64_t L = lanes<T>;
  int64_t t = 0;
  for (; t + 4 <= taps; t += 4) {
    const T* y[4] = {ypad + offsets[t], ypad + offsets[t + 1], ypad + offsets[t + 2], ypad + offsets[t + 3]};
    int64_t j = 0;
    for (; j + 2 * L <= wov; j += 2 * L) row_dots_tile<T, DC, 2>(x, y, j, g, dst, t);
    if (j < wov) row_dots_tile<T, DC, 1>(x, y, j, g, dst, t);
  }
  for (; t < taps; ++t)
    for (int64_t j = 0; j < wov; j += L) {
      Vec<T> acc{};
      for (int64_t c = 0; c < d; ++c) acc += load(x + c * rs + j) * load(ypad + offsets[t] + c * plane + j);
      store(dst + t * rs + j, acc);
    }
}

// dst[c, j] = sum_t weights[t, j] * y_t[c, j] (y_t as in row_dots): the output (weights = P, y = values) and dq
// (weights = dL, y = keys); weights (K*K, Wov), dst (D, Wov).  Register tiles of four channels x NJ vectors of
// pixels (4 * NJ independent FMA chains), each load of the weights shared by the four channels.
template <typename T, int64_t DC, int NJ>
ACMIX_INLINE void row_mix_tile(const T* weights, const T* ypad, const int64_t* offsets, const Geometry& g, T* dst,
                               int64_t c, int64_t j) {
  const int64_t plane = g.plane(), taps = g.taps(), rs = g.rs;
  constexpr int64_t L = lanes<T>;
  Vec<T> acc[NJ][4] = {};
  const T* y = ypad + c * plane + j;
  for (int64_t t = 0; t < taps; ++t) {
    const T* yt = y + offsets[t];
#pragma GCC unroll 2
    for (int u = 0; u < NJ; ++u) {
      const Vec<T> w = load(weights + t * rs + j + u * L);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[u][v] += w * load(yt + v * plane + u * L);
    }
  }
  for (int u = 0; u < NJ; ++u)
    for (int v = 0; v < 4; ++v) store(dst + (c + v) * rs + j + u * L, acc[u][v]);
}

template <typename T, int64_t DC>
ACMIX_INLINE void row_mix(const T* weights, const T* ypad, const int64_t* offsets, const Geometry& g, T* dst) {
  const int64_t d = DC > 0 ? DC : g.d, plane = g.plane(), taps = g.taps(), wov = g.wov, rs = g.rs;
  constexpr int64_t L = lanes<T>;
  int64_t c = 0;
  for (; c + 4 <= d; c += 4) {
    int64_t j = 0;
    for (; j + 2 * L <= wov; j += 2 * L) row_mix_tile<T, DC, 2>(weights, ypad, offsets, g, dst, c, j);
    if (j < wov) row_mix_tile<T, DC, 1>(weights, ypad, offsets, g, dst, c, j);
  }
  for (; c < d; ++c)
    for (int64_t j = 0; j < wov; j += L) {
      Vec<T> acc{};
      for (int64_t t = 0; t < taps; ++t) acc += load(weights + t * rs + j) * load(ypad + offsets[t] + c * plane + j);
      store(dst + c * rs + j, acc);
    }
}

// ypad[tap t of pixel j][c] += weights[t, j] * x[c, j] for every tap t of output row i (the adjoint of row_dots;
// weights (K*K, Wov), x (D, Wov), row buffers with margins).  Written as a gather per padded row: the taps of one
// window row and column phase land on one padded row at column offsets off_b, so each padded vector is loaded and
// stored once while the taps' contributions (read at shifted columns of the row buffers) are summed in a register.
template <typename T, int64_t DC>
ACMIX_INLINE void row_scatter(const T* weights, const T* x, int64_t i, const Geometry& g, T* ypad) {
  const int64_t d = DC > 0 ? DC : g.d, plane = g.plane(), rs = g.rs;
  std::vector<int64_t> taps, offs;
  for (int64_t a = 0; a < g.k; ++a)
    for (int64_t ph = 0; ph < g.stride; ++ph) {
      taps.clear();
      offs.clear();
      for (int64_t b = 0; b < g.k; ++b)
        if ((b * g.dil) % g.stride == ph) {
          taps.push_back(a * g.k + b);
          offs.push_back((b * g.dil) / g.stride);
        }
      if (taps.empty()) continue;
      const int64_t n_taps = taps.size(), extent = g.wov + offs.back();  // columns of the padded row reached
      T* row = ypad + (ph * d * g.hp + i * g.stride + a * g.dil) * g.wq;
      int64_t c = 0;
      for (; c + 2 <= d; c += 2)  // two channels at a time, each summing its taps in two chains: four FMA chains
        for (int64_t col = 0; col < extent; col += lanes<T>) {
          T* y0 = row + c * plane + col;
          const T* x0 = x + c * rs + col;
          Vec<T> a0 = load(y0), a1{}, b0 = load(y0 + plane), b1{};
          int64_t u = 0;
          for (; u + 2 <= n_taps; u += 2) {
            const Vec<T> w0 = load(weights + taps[u] * rs + col - offs[u]);
            const Vec<T> w1 = load(weights + taps[u + 1] * rs + col - offs[u + 1]);
            a0 += w0 * load(x0 - offs[u]);
            b0 += w0 * load(x0 + rs - offs[u]);
            a1 += w1 * load(x0 - offs[u + 1]);
            b1 += w1 * load(x0 + rs - offs[u + 1]);
          }
          if (u < n_taps) {
            const Vec<T> w0 = load(weights + taps[u] * rs + col - offs[u]);
            a0 += w0 * load(x0 - offs[u]);
            b0 += w0 * load(x0 + rs - offs[u]);
          }
          store(y0, a0 + a1);
          store(y0 + plane, b0 + b1);
        }
      for (; c < d; ++c)
        for (int64_t col = 0; col < extent; col += lanes<T>) {
          Vec<T> acc = load(row + c * plane + col);
          for (int64_t u = 0; u < n_taps; ++u)
            acc += load(weights + taps[u] * rs + col - offs[u]) * load(x + c * rs + col - offs[u]);
          store(row + c * plane + col, acc);
        }
    }
}

template <typename T, int64_t DC>
ACMIX_INLINE void forward_images(const Map<T>& q, const Map<T>& k, const Map<T>& v, const int64_t* prow,
                                 const int64_t* pcol, T* out, T* lse, const Geometry& g, int64_t begin, int64_t end) {
  std::vector<T> kp(g.padded()), vp(g.padded());
  RowBuffer<T> qs(g.d, g), probs(g.taps(), g), os(g.d, g), inv(1, g);
  std::vector<int64_t> taps(g.taps());
  for (int64_t img = begin; img < end; ++img) {
    pad_image(k, img, prow, pcol, g, kp.data());
    pad_image(v, img, prow, pcol, g, vp.data());
    for (int64_t i = 0; i < g.ho; ++i) {
      g.row_taps(i, taps.data());
      load_row(q, img, i * g.stride, g.stride, g, qs.data());
      row_dots<T, DC>(qs.data(), kp.data(), taps.data(), g, probs.data());
      for (int64_t j = 0; j < g.wov; j += lanes<T>) {  // max-subtracted exponentials over the taps, lane by lane
        Vec<T> top = load(probs.data() + j);
        for (int64_t t = 1; t < g.taps(); ++t) top = vmax<T>(top, load(probs.data() + t * g.rs + j));
        Vec<T> total{};
        for (int64_t t = 0; t < g.taps(); ++t) {
          const Vec<T> e = vexp<T>(load(probs.data() + t * g.rs + j) - top);
          store(probs.data() + t * g.rs + j, e);
          total += e;
        }
        store(inv.data() + j, T(1) / total);
        const Vec<T> stat = top + vlog<T>(total);
        for (int64_t l = 0; l < lanes<T> && j + l < g.wo; ++l) lse[(img * g.ho + i) * g.wo + j + l] = stat[l];
      }
      // the weighted sum of the values over the unnormalised exponentials, then one division per output value
      // (D per pixel) instead of one per probability (K*K per pixel)
      row_mix<T, DC>(probs.data(), vp.data(), taps.data(), g, os.data());
      for (int64_t c = 0; c < g.d; ++c) {
        T* row = os.data() + c * g.rs;
        for (int64_t j = 0; j < g.wov; j += lanes<T>) store(row + j, load(row + j) * load(inv.data() + j));
        std::memcpy(out + ((img * g.d + c) * g.ho + i) * g.wo, row, g.wo * sizeof(T));
      }
    }
  }
}

template <typename T, int64_t DC>
ACMIX_INLINE void backward_images(const Map<T>& grad_out, const Map<T>& q, const Map<T>& k, const Map<T>& v,
                                  const T* lse, const int64_t* prow, const int64_t* pcol, T* grad_q, T* grad_k,
                                  T* grad_v, const Geometry& g, int64_t begin, int64_t end) {
  const int64_t d = DC > 0 ? DC : g.d, plane = g.plane(), taps = g.taps(), wov = g.wov, rs = g.rs;
  std::vector<T> kp(g.padded()), vp(g.padded()), gkp(g.padded()), gvp(g.padded());
  RowBuffer<T> qs(d, g), gos(d, g), probs(taps, g), grad_l(taps, g), gqs(d, g);
  std::vector<int64_t> offsets(taps);
  for (int64_t img = begin; img < end; ++img) {
    pad_image(k, img, prow, pcol, g, kp.data());
    pad_image(v, img, prow, pcol, g, vp.data());
    std::fill(gkp.begin(), gkp.end(), T(0));
    std::fill(gvp.begin(), gvp.end(), T(0));
    for (int64_t i = 0; i < g.ho; ++i) {
      g.row_taps(i, offsets.data());
      load_row(q, img, i * g.stride, g.stride, g, qs.data());
      load_row(grad_out, img, i, 1, g, gos.data());
      // recompute P from the logits and the saved log-sum-exp; padding lanes get P = 1 and dO = 0, so zero
      // gradients
      row_dots<T, DC>(qs.data(), kp.data(), offsets.data(), g, probs.data());
      for (int64_t j = 0; j < wov; j += lanes<T>) {
        Vec<T> m{};
        for (int64_t l = 0; l < lanes<T> && j + l < g.wo; ++l) m[l] = lse[(img * g.ho + i) * g.wo + j + l];
        for (int64_t t = 0; t < taps; ++t) store(probs.data() + t * rs + j, vexp<T>(load(probs.data() + t * rs + j) - m));
      }
      // dP_t = <dO, v_t>;  dL_t = P_t (dP_t - sum_s P_s dP_s)
      row_dots<T, DC>(gos.data(), vp.data(), offsets.data(), g, grad_l.data());
      for (int64_t j = 0; j < wov; j += lanes<T>) {
        Vec<T> weighted{};
        for (int64_t t = 0; t < taps; ++t) weighted += load(probs.data() + t * rs + j) * load(grad_l.data() + t * rs + j);
        for (int64_t t = 0; t < taps; ++t)
          store(grad_l.data() + t * rs + j,
                load(probs.data() + t * rs + j) * (load(grad_l.data() + t * rs + j) - weighted));
      }
      // dq_j = sum_t dL_t k_t (each output pixel owns its query)
      row_mix<T, DC>(grad_l.data(), kp.data(), offsets.data(), g, gqs.data());
      T* gq = grad_q + g.grad_image(img);
      for (int64_t c = 0; c < d; ++c) {
        T* dst = gq + (c * g.h + i * g.stride) * g.w;
        store_run(gqs.data() + c * rs, g.stride, g.wo, dst, q.scale);
      }
      // dk_t += dL_t q, dv_t += P_t dO, into the padded maps
      row_scatter<T, DC>(grad_l.data(), qs.data(), i, g, gkp.data());
      row_scatter<T, DC>(probs.data(), gos.data(), i, g, gvp.data());
    }
    fold_image(gkp.data(), img, prow, pcol, g, grad_k);
    fold_image(gvp.data(), img, prow, pcol, g, grad_v);
  }
}

// The loops are compiled twice, for AVX2+FMA and for baseline x86-64 (see the prelude's ACMIX_AVX2, has_avx2)

// Calls f(std::integral_constant<int64_t, D>) for the common head dims and f(<0>) otherwise: with D a
// compile-time constant the channel loops unroll.
template <typename F>
void with_head_dim(int64_t d, F&& f) {
  switch (d) {
    case 8: f(std::integral_constant<int64_t, 8>{}); break;
    case 16: f(std::integral_constant<int64_t, 16>{}); break;
    case 32: f(std::integral_constant<int64_t, 32>{}); break;
    case 64: f(std::integral_constant<int64_t, 64>{}); break;
    case 128: f(std::integral_constant<int64_t, 128>{}); break;
    default: f(std::integral_constant<int64_t, 0>{});
  }
}

template <typename T, int64_t DC>
ACMIX_AVX2 void forward_avx2(const Map<T>& q, const Map<T>& k, const Map<T>& v, const int64_t* prow,
    const int64_t* pcol, T* out, T* lse, const Geometry& g, int64_t begin, int64_t end) {
  forward_images<T, DC>(q, k, v, prow, pcol, out, lse, g, begin, end);
}

template <typename T, int64_t DC>
void forward_base(const Map<T>& q, const Map<T>& k, const Map<T>& v, const int64_t* prow,
    const int64_t* pcol, T* out, T* lse, const Geometry& g, int64_t begin, int64_t end) {
  forward_images<T, DC>(q, k, v, prow, pcol, out, lse, g, begin, end);
}

template <typename T, int64_t DC>
ACMIX_AVX2 void backward_avx2(const Map<T>& grad_out, const Map<T>& q, const Map<T>& k, const Map<T>& v,
    const T* lse, const int64_t* prow, const int64_t* pcol, T* grad_q, T* grad_k, T* grad_v, const Geometry& g,
    int64_t begin, int64_t end) {
  backward_images<T, DC>(grad_out, q, k, v, lse, prow, pcol, grad_q, grad_k, grad_v, g, begin, end);
}

template <typename T, int64_t DC>
void backward_base(const Map<T>& grad_out, const Map<T>& q, const Map<T>& k, const Map<T>& v,
    const T* lse, const int64_t* prow, const int64_t* pcol, T* grad_q, T* grad_k, T* grad_v, const Geometry& g,
    int64_t begin, int64_t end) {
  backward_images<T, DC>(grad_out, q, k, v, lse, prow, pcol, grad_q, grad_k, grad_v, g, begin, end);
}

void check(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.dim() == 5, name,
              " must be a 5-D CPU tensor of dtype ", like.scalar_type());
}

void check_index(const at::Tensor& t, int64_t size, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong && t.is_contiguous() && t.dim() == 1 && t.size(0) == size, name,
              " must be a contiguous int64 vector of ", size, " padded-to-source indices");
}

Geometry checked_geometry(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::optional<at::Tensor>& key_bias, const at::Tensor& prow, const at::Tensor& pcol,
                          int64_t kernel_size, int64_t dilation, int64_t stride) {
  check(q, q, "q"); check(k, q, "k"); check(v, q, "v");
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k, v shapes differ");
  TORCH_CHECK(!key_bias || (key_bias->is_contiguous() && key_bias->scalar_type() == q.scalar_type() &&
                            key_bias->sizes() == q.sizes().slice(2)),
              "key_bias must be a contiguous (D, H, W) tensor of the dtype of q");
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1 && dilation >= 1 && stride >= 1, "bad window geometry");
  const Geometry g(q, kernel_size, dilation, stride, q.scalar_type() == at::kDouble ? 4 : 8);
  check_index(prow, g.hp, "prow");
  check_index(pcol, g.wp, "pcol");
  return g;
}

}  // namespace

// q, k, v: (B, G, D, H, W) (batch, heads), any strides; key_bias: (D, H, W) or None; prow (H + 2 pad), pcol
// (W + 2 pad): source index of every position of the reflection-padded axes, pad = dilation * (K-1) / 2.
// Attention of the queries scale * q over the keys k - key_bias -> out (B, G, D, Ho, Wo), lse (B, G, Ho, Wo): the
// log-sum-exp of each pixel's logits, from which backward recomputes the softmax
std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const std::optional<at::Tensor>& key_bias, const at::Tensor& prow,
                                const at::Tensor& pcol, int64_t kernel_size, int64_t dilation, int64_t stride,
                                double scale) {
  const Geometry g = checked_geometry(q, k, v, key_bias, prow, pcol, kernel_size, dilation, stride);
  auto out = at::empty({q.size(0), q.size(1), g.d, g.ho, g.wo}, q.options());
  auto lse = at::empty({q.size(0), q.size(1), g.ho, g.wo}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "acmix_local_attention_forward", [&] {
    const auto qm = map_of<scalar_t>(q, scale), km = map_of<scalar_t>(k, 1.0, key_bias.value_or(at::Tensor())),
               vm = map_of<scalar_t>(v);
    with_head_dim(g.d, [&](auto dc) {
      // one task = one image (batch * head): its padded keys and values are built once
      at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
        auto run = has_avx2() ? forward_avx2<scalar_t, dc()> : forward_base<scalar_t, dc()>;
        run(qm, km, vm, prow.data_ptr<int64_t>(), pcol.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
            lse.data_ptr<scalar_t>(), g, begin, end);
      });
    });
  });
  return {out, lse};
}

// grad_out: (B, G, D, Ho, Wo), q, k, v: (B, G, D, H, W), any strides; lse (B, G, Ho, Wo) from forward; key_bias,
// scale as in forward -> [dq | dk | dv] one contiguous (B, 3*G*D, H, W) tensor, the layout of a fused q | k | v
// input (the key bias's gradient is -dk summed over B, G)
std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const std::optional<at::Tensor>& key_bias,
                                 const at::Tensor& lse, const at::Tensor& prow, const at::Tensor& pcol,
                                 int64_t kernel_size, int64_t dilation, int64_t stride, double scale) {
  const Geometry g = checked_geometry(q, k, v, key_bias, prow, pcol, kernel_size, dilation, stride);
  check(grad_out, q, "grad_out");
  TORCH_CHECK(grad_out.size(0) == q.size(0) && grad_out.size(1) == q.size(1) && grad_out.size(2) == g.d &&
              grad_out.size(3) == g.ho && grad_out.size(4) == g.wo, "grad_out shape");
  TORCH_CHECK(lse.is_contiguous() && lse.scalar_type() == q.scalar_type() && lse.numel() == g.n * g.ho * g.wo,
              "lse must be a contiguous (B, G, Ho, Wo) tensor of the dtype of q");
  // allocated as the 4-D (B, 3*G*D, H, W) q | k | v map, not a view of a 6-D tensor: autograd can add another
  // gradient of that map into a tensor it holds the only reference to, never into a view
  const int64_t part = q.size(1) * g.d;
  auto grad = at::empty({q.size(0), 3 * part, g.h, g.w}, q.options());
  // fold_image writes all of dk and dv; every strided query pixel's dq is written, the others (stride > 1) get no
  // gradient
  if (stride > 1) grad.narrow(1, 0, part).zero_();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "acmix_local_attention_backward", [&] {
    const auto gm = map_of<scalar_t>(grad_out), qm = map_of<scalar_t>(q, scale),
               km = map_of<scalar_t>(k, 1.0, key_bias.value_or(at::Tensor())), vm = map_of<scalar_t>(v);
    with_head_dim(g.d, [&](auto dc) {
      // one task = one image: overlapping windows scatter into the same key/value pixels of that image only
      at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
        auto run = has_avx2() ? backward_avx2<scalar_t, dc()> : backward_base<scalar_t, dc()>;
        run(gm, qm, km, vm, lse.data_ptr<scalar_t>(), prow.data_ptr<int64_t>(), pcol.data_ptr<int64_t>(),
            grad.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>() + g.grad_part(),
            grad.data_ptr<scalar_t>() + 2 * g.grad_part(), g, begin, end);
      });
    });
  });
  return {grad};
}
"""

class _NoCudaRuntimeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith('No CUDA runtime is found')


def import_cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension``, imported without the warning it logs at import on machines with a CUDA
    toolkit but no GPU ("No CUDA runtime is found, using CUDA_HOME=..."), irrelevant to CPU builds.  The filter
    sits on torch's logger only during the first import; later imports (ours, mmengine's environment report)
    find the module loaded and log nothing."""
    logger = logging.getLogger('torch.utils.cpp_extension')
    quiet = _NoCudaRuntimeFilter()
    logger.addFilter(quiet)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        logger.removeFilter(quiet)
    return cpp_extension


# Every kernel source is compiled with this prelude: ATen's tensor and per-operator headers and torch's op
# registration only, and the AVX2 target attribute and CPU check that all kernels use.  torch/extension.h
# (pybind11 and the whole C++ frontend) made each build ~4x slower.
_PRELUDE = r"""
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

// float32 loops are compiled twice, for AVX2+FMA (functions marked ACMIX_AVX2) and for baseline x86-64, and
// has_avx2() picks one at run time; ACMIX_AVX512 (has_avx512()) adds AVX-512VL, whose 32 vector registers a
// loop may use with 256-bit vectors (larger register tiles, no 512-bit clock penalty).  The environment variable
// ACMIX_CPU_ISA=avx2 or =baseline caps the choice (so that one machine can test every clone).
#define ACMIX_AVX2 __attribute__((target("avx2,fma")))
#define ACMIX_AVX512 __attribute__((target("avx2,fma,avx512f,avx512vl")))
inline int isa_cap() {  // 2: AVX-512VL, 1: AVX2, 0: baseline
  static const int cap = [] {
    const char* value = std::getenv("ACMIX_CPU_ISA");
    const std::string isa = value ? value : "avx512";
    TORCH_CHECK(isa == "avx512" || isa == "avx2" || isa == "baseline",
                "ACMIX_CPU_ISA must be avx512, avx2 or baseline, got '", isa, "'");
    return isa == "avx512" ? 2 : isa == "avx2" ? 1 : 0;
  }();
  return cap;
}
inline bool has_avx2() {
  static const bool yes = isa_cap() >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
inline bool has_avx512() {
  static const bool yes = isa_cap() >= 2 && has_avx2() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512vl");
  return yes;
}
"""

_locks: dict[str, threading.Lock] = {}  # one per extension, so that two kernels can build at the same time
_built: dict[str, SimpleNamespace | None] = {}


def _write_source(name: str, text: str) -> str:
    """``<torch extensions root>/<name>/<name>.cpp`` with ``text``; rewritten (atomically) only when it differs,
    so an unchanged source keeps its timestamp and ninja does not recompile it."""
    folder = os.path.join(import_cpp_extension().get_default_build_root(), name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{name}.cpp')
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except FileNotFoundError:
        pass
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def build_extension(name: str, source: str, what: str,
                    functions: tuple[str, ...] = ('forward', 'backward')) -> SimpleNamespace | None:
    """Build (first call on a machine) or load a cached C++ extension of free functions over tensors.

    ``source`` defines ``functions`` (free functions over ``at::Tensor``; by default ``forward`` and ``backward``);
    they are registered as the torch ops ``torch.ops.<name>_<hash>.<function>`` and compiled by
    ``torch.utils.cpp_extension.load`` (OpenMP, C++20) into torch's extension cache, once per machine and source
    (about 10-20 s each on one core).  ``<hash>`` is a digest of all that is compiled (the shared prelude, the
    source and the registered functions), so processes running different
    versions of a kernel (a benchmark of the previous commit, a long-lived process) never rebuild or load each
    other's build.  A failed
    build (no compiler, headers or OpenMP) must not break the model: it warns once, naming ``what`` and the
    error, and returns None so the caller takes its PyTorch path (slower, same results).

    Returns:
        a namespace with one op per name of ``functions``, or None.
    """
    with _locks.setdefault(name, threading.Lock()):  # setdefault is atomic under the GIL
        if name not in _built:
            defs = ''.join(f'  m.def("{f}", &{f});\n' for f in functions)
            build = f'{name}_{hashlib.sha1(f"{_PRELUDE}{source}{defs}".encode()).hexdigest()[:12]}'
            text = f'{_PRELUDE}\n{source}\nTORCH_LIBRARY({build}, m) {{\n{defs}}}\n'
            try:
                import_cpp_extension().load(
                    name=build, sources=[_write_source(build, text)], is_python_module=False,
                    extra_cflags=['-O3', '-std=c++20', '-fopenmp'], extra_ldflags=['-fopenmp'])
                ops = getattr(torch.ops, build)
                _built[name] = SimpleNamespace(**{f: getattr(ops, f) for f in functions})
            except Exception as exc:  # noqa: BLE001  (any build failure means: use the PyTorch path)
                warnings.warn(f'acmix: building the C++ {what} kernel failed, falling back to the PyTorch path '
                              f'(slower, same results): {exc}', RuntimeWarning, stacklevel=3)
                _built[name] = None
        return _built[name]


def load() -> SimpleNamespace | None:
    """The local-attention extension (see ``build_extension``), or None if it cannot be built.

    Returns:
        A namespace with ``forward(q, k, v, prow, pcol, K, dilation, stride) -> [out, lse]`` and
        ``backward(grad_out, q, k, v, lse, prow, pcol, K, dilation, stride) -> [dq, dk, dv]`` (shapes in
        ``_SOURCE``).
    """
    return build_extension('acmix_local_attention_cpu', _SOURCE, 'local-attention')
