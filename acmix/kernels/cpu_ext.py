"""C++ CPU kernel for local attention, compiled on first use (``build_extension``).

The kernel works on a channels-last per-head layout, (N, H, W, D) contiguous, so that every window tap is
one contiguous ``D``-vector: the logits are ``K*K`` dot products of length D, the output ``K*K`` axpys.
Forward keeps the ``K*K`` logits of one pixel in a small buffer and stores only the softmax probabilities
(N, K*K, Ho, Wo) for backward, never the (N, D, K*K, Ho, Wo) windows.  The build lands in the default
``TORCH_EXTENSIONS_DIR`` cache, so only the first use on a machine pays the compile (10-20 s).  The loops are
compiled for AVX2+FMA and for baseline x86-64, and a CPU check picks one at run time.  If the build fails,
``load()`` warns once and returns None and callers use the pure-PyTorch path.
"""
from __future__ import annotations

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
#include <limits>
#include <type_traits>
#include <vector>

namespace {

struct Geometry {
  int64_t n, h, w, d, ho, wo, k, stride;
  int64_t taps() const { return k * k; }
  int64_t pixel(int64_t img, int64_t r, int64_t c) const { return ((img * h + r) * w + c) * d; }  // (N,H,W,D)
  int64_t out_pixel(int64_t img, int64_t i, int64_t j) const { return ((img * ho + i) * wo + j) * d; }
  int64_t prob(int64_t img, int64_t t, int64_t i, int64_t j) const { return ((img * k * k + t) * ho + i) * wo + j; }
};

template <typename T>
inline __attribute__((always_inline)) T dot(const T* a, const T* b, int64_t d) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

template <typename T>
inline __attribute__((always_inline)) void axpy(T alpha, const T* x, T* y, int64_t d) {
#pragma omp simd
  for (int64_t c = 0; c < d; ++c) y[c] += alpha * x[c];
}

// The kernels' loops are compiled twice, for AVX2+FMA and for baseline x86-64; a CPU check picks one at run time
#define ACMIX_AVX2 __attribute__((target("avx2,fma")))
bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

// Calls f(std::integral_constant<int64_t, D>) for the common head dims and f(<0>) otherwise: with D a
// compile-time constant the length-D dot/axpy loops unroll into a few SIMD instructions, which matters
// because at D = 16 their loop overhead would cost as much as the arithmetic.
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

template <typename T, int64_t DC>  // DC: the head dim when known at compile time, else 0
inline __attribute__((always_inline)) void forward_range(const T* q, const T* k, const T* v, const int64_t* rows,
    const int64_t* cols, T* out, T* probs, const Geometry& g, int64_t begin, int64_t end) {
  const int64_t d = DC > 0 ? DC : g.d;
  // one task = one output row of one image; rows are independent in forward
  std::vector<T> logit(g.taps());
  for (int64_t task = begin; task < end; ++task) {
    const int64_t img = task / g.ho, i = task % g.ho;
    const int64_t* row = rows + i * g.k;
    for (int64_t j = 0; j < g.wo; ++j) {
      const int64_t* col = cols + j * g.k;
      const T* qp = q + g.pixel(img, i * g.stride, j * g.stride);
      T top = -std::numeric_limits<T>::infinity();
      for (int64_t a = 0; a < g.k; ++a)
        for (int64_t b = 0; b < g.k; ++b) {
          const T l = dot(qp, k + g.pixel(img, row[a], col[b]), d);
          logit[a * g.k + b] = l;
          top = std::max(top, l);
        }
      T total = 0;
      for (auto& l : logit) total += (l = std::exp(l - top));  // max-subtracted softmax
      const T inv = T(1) / total;
      T* op = out + g.out_pixel(img, i, j);
      std::fill(op, op + d, T(0));
      for (int64_t a = 0; a < g.k; ++a)
        for (int64_t b = 0; b < g.k; ++b) {
          const int64_t t = a * g.k + b;
          const T p = logit[t] * inv;
          probs[g.prob(img, t, i, j)] = p;
          axpy(p, v + g.pixel(img, row[a], col[b]), op, d);
        }
    }
  }
}

template <typename T, int64_t DC>  // DC: the head dim when known at compile time, else 0
ACMIX_AVX2 void forward_range_avx2(const T* q, const T* k, const T* v, const int64_t* rows,
    const int64_t* cols, T* out, T* probs, const Geometry& g, int64_t begin, int64_t end) {
  forward_range<T, DC>(q, k, v, rows, cols, out, probs, g, begin, end);
}

template <typename T, int64_t DC>  // DC: the head dim when known at compile time, else 0
void forward_range_base(const T* q, const T* k, const T* v, const int64_t* rows,
    const int64_t* cols, T* out, T* probs, const Geometry& g, int64_t begin, int64_t end) {
  forward_range<T, DC>(q, k, v, rows, cols, out, probs, g, begin, end);
}

template <typename T, int64_t DC>  // DC: the head dim when known at compile time, else 0
void forward_kernel(const T* q, const T* k, const T* v, const int64_t* rows, const int64_t* cols,
                    T* out, T* probs, const Geometry g) {
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    if (has_avx2()) forward_range_avx2<T, DC>(q, k, v, rows, cols, out, probs, g, begin, end);
    else forward_range_base<T, DC>(q, k, v, rows, cols, out, probs, g, begin, end);
  });
}

template <typename T, int64_t DC>
inline __attribute__((always_inline)) void backward_range(const T* grad_out, const T* q, const T* k, const T* v,
    const T* probs, const int64_t* rows, const int64_t* cols, T* grad_q, T* grad_k, T* grad_v, const Geometry& g,
    int64_t begin, int64_t end) {
  const int64_t d = DC > 0 ? DC : g.d;
  // overlapping windows scatter into the same key/value pixels, so a task owns a whole image
  // (N = batch*heads is normally at least the thread count) and no two threads write one pixel
  std::vector<T> grad_p(g.taps());
  for (int64_t img = begin; img < end; ++img)
    for (int64_t i = 0; i < g.ho; ++i) {
      const int64_t* row = rows + i * g.k;
      for (int64_t j = 0; j < g.wo; ++j) {
        const int64_t* col = cols + j * g.k;
        const T* gop = grad_out + g.out_pixel(img, i, j);
        const int64_t qoff = g.pixel(img, i * g.stride, j * g.stride);
        // dP_t = <dO, v_t>;  dL_t = P_t (dP_t - sum_s P_s dP_s)
        T weighted = 0;
        for (int64_t a = 0; a < g.k; ++a)
          for (int64_t b = 0; b < g.k; ++b) {
            const int64_t t = a * g.k + b;
            grad_p[t] = dot(gop, v + g.pixel(img, row[a], col[b]), d);
            weighted += probs[g.prob(img, t, i, j)] * grad_p[t];
          }
        for (int64_t a = 0; a < g.k; ++a)
          for (int64_t b = 0; b < g.k; ++b) {
            const int64_t t = a * g.k + b;
            const int64_t src = g.pixel(img, row[a], col[b]);
            const T p = probs[g.prob(img, t, i, j)];
            const T dl = p * (grad_p[t] - weighted);
            axpy(dl, k + src, grad_q + qoff, d);
            axpy(dl, q + qoff, grad_k + src, d);
            axpy(p, gop, grad_v + src, d);
          }
      }
    }
}

template <typename T, int64_t DC>
ACMIX_AVX2 void backward_range_avx2(const T* grad_out, const T* q, const T* k, const T* v, const T* probs,
    const int64_t* rows, const int64_t* cols, T* grad_q, T* grad_k, T* grad_v, const Geometry& g, int64_t begin,
    int64_t end) {
  backward_range<T, DC>(grad_out, q, k, v, probs, rows, cols, grad_q, grad_k, grad_v, g, begin, end);
}

template <typename T, int64_t DC>
void backward_range_base(const T* grad_out, const T* q, const T* k, const T* v, const T* probs,
    const int64_t* rows, const int64_t* cols, T* grad_q, T* grad_k, T* grad_v, const Geometry& g, int64_t begin,
    int64_t end) {
  backward_range<T, DC>(grad_out, q, k, v, probs, rows, cols, grad_q, grad_k, grad_v, g, begin, end);
}

template <typename T, int64_t DC>
void backward_kernel(const T* grad_out, const T* q, const T* k, const T* v, const T* probs,
                     const int64_t* rows, const int64_t* cols, T* grad_q, T* grad_k, T* grad_v,
                     const Geometry g) {
  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    if (has_avx2())
      backward_range_avx2<T, DC>(grad_out, q, k, v, probs, rows, cols, grad_q, grad_k, grad_v, g, begin, end);
    else
      backward_range_base<T, DC>(grad_out, q, k, v, probs, rows, cols, grad_q, grad_k, grad_v, g, begin, end);
  });
}

Geometry geometry(const at::Tensor& q, const at::Tensor& rows, const at::Tensor& cols, int64_t stride) {
  return {q.size(0), q.size(1), q.size(2), q.size(3), rows.size(0), cols.size(0), rows.size(1), stride};
}

void check(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == like.scalar_type() &&
              t.dim() == 4, name, " must be a contiguous 4-D CPU tensor of dtype ", like.scalar_type());
}

}  // namespace

// q, k, v: (N, H, W, D); rows: (Ho, K); cols: (Wo, K) -> out (N, Ho, Wo, D), probs (N, K*K, Ho, Wo)
std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& rows, const at::Tensor& cols, int64_t stride) {
  check(q, q, "q"); check(k, q, "k"); check(v, q, "v");
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k, v shapes differ");
  TORCH_CHECK(rows.scalar_type() == at::kLong && cols.scalar_type() == at::kLong && rows.is_contiguous() &&
              cols.is_contiguous(), "rows/cols must be contiguous int64");
  const Geometry g = geometry(q, rows, cols, stride);
  auto out = at::empty({g.n, g.ho, g.wo, g.d}, q.options());
  auto probs = at::empty({g.n, g.taps(), g.ho, g.wo}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "acmix_local_attention_forward", [&] {
    with_head_dim(g.d, [&](auto dc) {
      forward_kernel<scalar_t, dc()>(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                     rows.data_ptr<int64_t>(), cols.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
                                     probs.data_ptr<scalar_t>(), g);
    });
  });
  return {out, probs};
}

// grad_out: (N, Ho, Wo, D); q, k, v: (N, H, W, D); probs: (N, K*K, Ho, Wo) -> dq, dk, dv (N, H, W, D)
std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const at::Tensor& probs, const at::Tensor& rows,
                                 const at::Tensor& cols, int64_t stride) {
  check(grad_out, q, "grad_out"); check(q, q, "q"); check(k, q, "k"); check(v, q, "v"); check(probs, q, "probs");
  const Geometry g = geometry(q, rows, cols, stride);
  auto grad_q = at::zeros_like(q), grad_k = at::zeros_like(k), grad_v = at::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "acmix_local_attention_backward", [&] {
    with_head_dim(g.d, [&](auto dc) {
      backward_kernel<scalar_t, dc()>(grad_out.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                                      v.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(), rows.data_ptr<int64_t>(),
                                      cols.data_ptr<int64_t>(), grad_q.data_ptr<scalar_t>(),
                                      grad_k.data_ptr<scalar_t>(), grad_v.data_ptr<scalar_t>(), g);
    });
  });
  return {grad_q, grad_k, grad_v};
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
# registration only.  torch/extension.h (pybind11 and the whole C++ frontend) made each build ~4x slower.
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


def build_extension(name: str, source: str, what: str) -> SimpleNamespace | None:
    """Build (first call on a machine) or load a cached C++ extension with ``forward``/``backward`` functions.

    ``source`` defines ``forward`` and ``backward`` (free functions over ``at::Tensor``); they are registered as
    the torch ops ``torch.ops.<name>.forward`` / ``.backward`` and compiled by ``torch.utils.cpp_extension.load``
    (OpenMP, C++20) into torch's extension cache, once per machine (about 10-20 s each on one core).  A failed
    build (no compiler, headers or OpenMP) must not break the model: it warns once, naming ``what`` and the
    error, and returns None so the caller takes its PyTorch path (slower, same results).

    Returns:
        a namespace with the ``forward`` and ``backward`` ops, or None.
    """
    with _locks.setdefault(name, threading.Lock()):  # setdefault is atomic under the GIL
        if name not in _built:
            text = (f'{_PRELUDE}\n{source}\n'
                    f'TORCH_LIBRARY({name}, m) {{\n  m.def("forward", &forward);\n  m.def("backward", &backward);\n}}\n')
            try:
                import_cpp_extension().load(
                    name=name, sources=[_write_source(name, text)], is_python_module=False,
                    extra_cflags=['-O3', '-std=c++20', '-fopenmp'], extra_ldflags=['-fopenmp'])
                ops = getattr(torch.ops, name)
                _built[name] = SimpleNamespace(forward=ops.forward, backward=ops.backward)
            except Exception as exc:  # noqa: BLE001  (any build failure means: use the PyTorch path)
                warnings.warn(f'acmix: building the C++ {what} kernel failed, falling back to the PyTorch path '
                              f'(slower, same results): {exc}', RuntimeWarning, stacklevel=3)
                _built[name] = None
        return _built[name]


def load() -> SimpleNamespace | None:
    """The local-attention extension (see ``build_extension``), or None if it cannot be built.

    Returns:
        A module with ``forward(q, k, v, rows, cols, stride) -> [out, probs]`` and
        ``backward(grad_out, q, k, v, probs, rows, cols, stride) -> [dq, dk, dv]`` (layouts in ``_SOURCE``).
    """
    return build_extension('acmix_local_attention_cpu', _SOURCE, 'local-attention')
