// With a handful of rows (one token per sequence while sampling) a linear layer is a matrix-vector
// product: every weight is read once from DRAM and used M times, so the time is the weight bytes over
// memory bandwidth. BLAS GEMM paths tile for large M and reach a third of that here; this kernel
// streams each weight row once per block of 8 input rows (the x rows stay in L1) and keeps the 8
// row accumulators in registers. Threads split the weight rows.
#include "decode.h"

#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>  // the binding's tensor casters (not all of torch/extension.h)

#include "simd.h"

namespace rbr_fast {

template <int MB>
static inline void rows_dot(const float* x, const float* w, int64_t K, float* out, int64_t ldo, float b) {
  f32x8 acc[MB] = {};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const f32x8 wv = load<8>(w + k, 8);
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) acc[m] += wv * load<8>(x + m * K + k, 8);
  }
  if (k < K) {
    const int r = static_cast<int>(K - k);
    const f32x8 wv = load<8>(w + k, r);
    for (int m = 0; m < MB; ++m) acc[m] += wv * load<8>(x + m * K + k, r);
  }
  for (int m = 0; m < MB; ++m) out[m * ldo] = hsum<8>(acc[m]) + b;
}

using RowsDot = void (*)(const float*, const float*, int64_t, float*, int64_t, float);
static constexpr RowsDot kRowsDot[8] = {rows_dot<1>, rows_dot<2>, rows_dot<3>, rows_dot<4>,
                                        rows_dot<5>, rows_dot<6>, rows_dot<7>, rows_dot<8>};

at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto out = at::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  // ~64 KiB of weights per task: enough to amortise the scheduling, small enough to balance threads
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / (4 * std::max<int64_t>(K, 1)));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float b = bp ? bp[n] : 0.f;
      for (int64_t m0 = 0; m0 < M; m0 += 8) {
        const int mb = static_cast<int>(std::min<int64_t>(8, M - m0));
        kRowsDot[mb - 1](xp + m0 * K, wp + n * K, K, op + m0 * N + n, N, b);
      }
    }
  });
  return out;
}

void bind_decode(pybind11::module_& m) {
  m.def("skinny_linear", &skinny_linear);
}

}  // namespace rbr_fast
