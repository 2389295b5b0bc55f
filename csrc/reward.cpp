// One pass per row: copy the P inputs into the feature row, append the J conjunctions (each a
// product over at most L literals of earlier features), then one dot product with the row's
// response-type weights. Rows are independent, so they are split across threads.
#include "reward.h"

#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>  // the binding's tensor casters (not all of torch/extension.h)

#include <cmath>

namespace rbr_fast {

std::vector<at::Tensor> rbr_reward(const at::Tensor& x, const at::Tensor& lit_idx, const at::Tensor& lit_neg,
                                   const at::Tensor& weights, const at::Tensor& rtype, const at::Tensor& bias) {
  const int64_t N = x.size(0), P = x.size(1), J = lit_idx.size(0), L = lit_idx.size(1), F = P + J;
  auto feats = at::empty({N, F}, x.options());
  auto reward = at::empty({N}, x.options());
  auto flags = at::empty({N}, x.options().dtype(at::kInt));
  const float* xp = x.data_ptr<float>();
  const int32_t* idx = lit_idx.data_ptr<int32_t>();
  const bool* neg = lit_neg.data_ptr<bool>();
  const float* w = weights.data_ptr<float>();
  const int64_t* rt = rtype.data_ptr<int64_t>();
  const float* b = bias.data_ptr<float>();
  float* fp = feats.data_ptr<float>();
  float* rp = reward.data_ptr<float>();
  int32_t* flp = flags.data_ptr<int32_t>();
  at::parallel_for(0, N, 1024, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      float* f = fp + n * F;
      int32_t flag = 0;
      for (int64_t p = 0; p < P; ++p) {
        const float v = xp[n * P + p];
        flag |= !std::isfinite(v) ? 1 : 0;
        flag |= (v < 0.f || v > 1.f) ? 2 : 0;
        f[p] = v;
      }
      for (int64_t j = 0; j < J; ++j) {
        float prod = 1.f;
        for (int64_t l = 0; l < L; ++l) {
          const int32_t i = idx[j * L + l];
          if (i < 0) continue;
          prod *= neg[j * L + l] ? 1.f - f[i] : f[i];
        }
        f[P + j] = prod;
      }
      const float* wr = w + rt[n] * F;
      float acc = 0.f;
      for (int64_t k = 0; k < F; ++k) acc += f[k] * wr[k];
      rp[n] = acc + b[rt[n]];
      flp[n] = flag;
    }
  });
  return {reward, feats, flags};
}

void bind_reward(pybind11::module_& m) {
  m.def("rbr_reward", &rbr_reward);
}

}  // namespace rbr_fast
