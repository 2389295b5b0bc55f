// CPU kernels for the log-prob ops: each row of the logits is read twice (max, then the sum of
// exponentials; a row of a 50k vocabulary stays in L2 between the two), never copied or upcast
// into a [N, V] float32 buffer. Rows are independent and split across threads.
#include "logprobs.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "simd.h"

namespace rbr_fast {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const i32x8 kLane = {0, 1, 2, 3, 4, 5, 6, 7};

// The n (< 8) tail elements at p as lanes, the rest -inf (no mass, never the max).
template <typename scalar_t>
inline f32x8 load_tail(const scalar_t* p, int n) {
  return kLane < n ? load8(p, n) : f32x8{} - kInf;
}

// Max of inv * x over a row (inv > 0) and whether the row holds NaN or +inf.
template <typename scalar_t>
inline float row_max(const scalar_t* x, int64_t V, float inv, bool* bad) {
  f32x8 m = f32x8{} - kInf;
  i32x8 b = {};
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) {
    const f32x8 z = load8(x + j, 8);
    b |= (z != z) | (z == kInf);
    m = z > m ? z : m;
  }
  if (j < V) {
    const f32x8 z = load_tail(x + j, static_cast<int>(V - j));
    b |= (z != z) | (z == kInf);
    m = z > m ? z : m;
  }
  int32_t any = 0;
  for (int i = 0; i < 8; ++i) any |= b[i];
  *bad = any != 0;
  return hmax8(m) * inv;
}

// sum_j exp(inv*x_j - m) and, when Entropy, sum_j exp(inv*x_j - m) * inv*x_j (0 for -inf entries).
template <typename scalar_t, bool Entropy>
inline void row_sums(const scalar_t* x, int64_t V, float inv, float m, float* sum, float* dot) {
  f32x8 s = {}, d = {};
  auto step = [&](f32x8 raw) {
    const f32x8 z = raw * inv;
    const f32x8 e = exp8_nonpos(z - m);
    s += e;
    if constexpr (Entropy) d += e > 0.f ? e * z : f32x8{};
  };
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) step(load8(x + j, 8));
  if (j < V) step(load_tail(x + j, static_cast<int>(V - j)));
  *sum = hsum8(s);
  if constexpr (Entropy) *dot = hsum8(d);
}

// logsumexp of the row's entries at ids (few of them: scalar).
template <typename scalar_t>
inline float ids_lse(const scalar_t* x, const int64_t* ids, int64_t k) {
  float m = -kInf;
  for (int64_t i = 0; i < k; ++i) m = std::max(m, static_cast<float>(x[ids[i]]));
  if (m == -kInf) return -kInf;
  float s = 0.f;
  for (int64_t i = 0; i < k; ++i) s += std::exp(static_cast<float>(x[ids[i]]) - m);
  return m + std::log(s);
}

// Rows per task: enough work to amortise a task (~64k elements), at least one row.
inline int64_t row_grain(int64_t V) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(V, 1)); }

at::Tensor f32_rows(const at::Tensor& like) { return at::empty({like.size(0)}, like.options().dtype(at::kFloat)); }

}  // namespace

std::vector<at::Tensor> yes_no_lse(const at::Tensor& logits, const at::Tensor& yes_ids, const at::Tensor& no_ids) {
  const int64_t N = logits.size(0), V = logits.size(1), ky = yes_ids.numel(), kn = no_ids.numel();
  auto lse = f32_rows(logits), lse_yes = f32_rows(logits), lse_no = f32_rows(logits);
  auto flags = at::empty({N}, logits.options().dtype(at::kInt));
  const int64_t *yes = yes_ids.data_ptr<int64_t>(), *no = no_ids.data_ptr<int64_t>();
  RBR_DISPATCH(logits.scalar_type(), "rbr_fast_yes_no_lse", [&] {
    const scalar_t* base = logits.data_ptr<scalar_t>();
    float *o = lse.data_ptr<float>(), *oy = lse_yes.data_ptr<float>(), *on = lse_no.data_ptr<float>();
    int32_t* fl = flags.data_ptr<int32_t>();
    at::parallel_for(0, N, row_grain(V), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* x = base + r * V;
        bool bad;
        const float m = row_max(x, V, 1.f, &bad);
        float s = 0.f;
        if (!bad && m != -kInf) row_sums<scalar_t, false>(x, V, 1.f, m, &s, nullptr);
        fl[r] = bad || m == -kInf;
        o[r] = m == -kInf ? -kInf : m + std::log(s);
        oy[r] = ids_lse(x, yes, ky), on[r] = ids_lse(x, no, kn);
      }
    });
  });
  return {lse, lse_yes, lse_no, flags};
}

std::vector<at::Tensor> label_logprobs(const at::Tensor& logits, const at::Tensor& labels, double inv_temp,
                                       int64_t ignore_index) {
  const int64_t N = logits.size(0), V = logits.size(1);
  auto logp = f32_rows(logits), lse = f32_rows(logits), entropy = f32_rows(logits);
  auto flags = at::empty({N}, logits.options().dtype(at::kInt));
  const int64_t* lab = labels.data_ptr<int64_t>();
  const float inv = static_cast<float>(inv_temp);
  RBR_DISPATCH(logits.scalar_type(), "rbr_fast_label_logprobs", [&] {
    const scalar_t* base = logits.data_ptr<scalar_t>();
    float *lp = logp.data_ptr<float>(), *ls = lse.data_ptr<float>(), *en = entropy.data_ptr<float>();
    int32_t* fl = flags.data_ptr<int32_t>();
    at::parallel_for(0, N, row_grain(V), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* x = base + r * V;
        bool bad;
        const float m = row_max(x, V, inv, &bad);
        float s = 1.f, d = 0.f;
        if (!bad && m != -kInf) row_sums<scalar_t, true>(x, V, inv, m, &s, &d);
        const float l = m + std::log(s);
        fl[r] = bad || m == -kInf;
        ls[r] = l;
        en[r] = l - d / s;
        lp[r] = lab[r] == ignore_index ? 0.f : static_cast<float>(x[lab[r]]) * inv - l;
      }
    });
  });
  return {logp, lse, entropy, flags};
}

at::Tensor label_logprobs_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                   const at::Tensor& lse, double inv_temp, int64_t ignore_index) {
  const int64_t N = logits.size(0), V = logits.size(1);
  auto out = at::empty_like(logits);
  const int64_t* lab = labels.data_ptr<int64_t>();
  const float* ls = lse.data_ptr<float>();
  const auto g32 = grad.to(at::kFloat);
  const float* g = g32.data_ptr<float>();
  const float inv = static_cast<float>(inv_temp);
  RBR_DISPATCH(logits.scalar_type(), "rbr_fast_label_logprobs_backward", [&] {
    const scalar_t* base = logits.data_ptr<scalar_t>();
    scalar_t* obase = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, row_grain(V), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* x = base + r * V;
        scalar_t* y = obase + r * V;
        const float gi = lab[r] == ignore_index ? 0.f : g[r] * inv, l = ls[r];
        // d logp / d x_j = inv * (onehot_j - softmax_j)
        int64_t j = 0;
        for (; j + 8 <= V; j += 8) store8(y + j, -gi * exp8_nonpos(load8(x + j, 8) * inv - l), 8);
        if (j < V) {
          const int w = static_cast<int>(V - j);
          store8(y + j, -gi * exp8_nonpos(load_tail(x + j, w) * inv - l), w);
        }
        if (lab[r] != ignore_index) y[lab[r]] = static_cast<scalar_t>(static_cast<float>(y[lab[r]]) + gi);
      }
    });
  });
  return out;
}

}  // namespace rbr_fast
