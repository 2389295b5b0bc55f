// CPU kernels for the log-prob ops: each row of the logits is read once (online max / sum of
// exponentials), never copied or upcast into a [N, V] float32 buffer. Rows are independent and
// split across threads.
#include "logprobs.h"

#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>  // the binding's tensor casters (not all of torch/extension.h)

#include <cmath>
#include <limits>

#include "simd.h"

namespace rbr_fast {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The n (< W) tail elements at p as lanes, the rest -inf (no mass, never the max).
// Once per row, so lane by lane (a vector compare-select here crashes GCC 12 under x86-64-v3).
template <int W, typename scalar_t>
inline fvec<W> load_tail(const scalar_t* p, int n) {
  fvec<W> v = fvec<W>{} - kInf;
  for (int i = 0; i < n; ++i) v[i] = static_cast<float>(p[i]);
  return v;
}

// One pass over a row with z = inv * x: per-lane running max m, sum s of exp(z - m) and, when
// Entropy, sum d of exp(z - m) * z (0 for -inf entries). Blocks of kBlock vectors are max-reduced
// from registers first, so the running sums are rescaled once per block, not per element.
// NaN and +inf are not checked here: they turn the sum into NaN, which row_result reports.
constexpr int kBlock = 8;  // tree_sum assumes 8

// A tree, not a chain of dependent adds.
template <int W>
inline fvec<W> tree_sum(const fvec<W>* v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

template <int W, typename scalar_t, bool Entropy>
struct RowScan {
  using f = fvec<W>;
  f m = f{} - kInf, s = {}, d = {};

  void block(const f* z) {
    f bm = z[0];
    for (int i = 1; i < kBlock; ++i) bm = z[i] > bm ? z[i] : bm;
    const f mn = bm > m ? bm : m;
    const f shift = mn == -kInf ? f{} : mn;  // lanes with only -inf so far: nothing to scale
    const f scale = exp_nonpos<W>(m - shift);
    s *= scale;
    if constexpr (Entropy) d *= scale;
    f e[kBlock], ez[kBlock];
    for (int i = 0; i < kBlock; ++i) {
      e[i] = exp_nonpos<W>(z[i] - shift);
      if constexpr (Entropy) ez[i] = e[i] > 0.f ? e[i] * z[i] : f{};
    }
    s += tree_sum<W>(e);
    if constexpr (Entropy) d += tree_sum<W>(ez);
    m = mn;
  }

  void run(const scalar_t* x, int64_t V, float inv) {
    f z[kBlock];
    int64_t j = 0;
    for (; j + W * kBlock <= V; j += W * kBlock) {
      for (int i = 0; i < kBlock; ++i) z[i] = load<W>(x + j + W * i, W) * inv;
      block(z);
    }
    if (j < V) {  // the tail, padded with -inf (no mass) to a whole block
      for (int i = 0; i < kBlock; ++i, j += W)
        z[i] = j < V ? load_tail<W>(x + j, static_cast<int>(std::min<int64_t>(W, V - j))) * inv : f{} - kInf;
      block(z);
    }
  }

  // (max, sum exp(z - max), sum exp(z - max) * z); bad when the row held NaN/+inf or only -inf.
  void result(float* mx, float* sum, float* dot, bool* bad) const {
    const float M = hmax<W>(m);
    const f w = exp_nonpos<W>(m - (M == -kInf ? 0.f : M));
    *mx = M;
    *sum = hsum<W>(s * w);
    if constexpr (Entropy) *dot = hsum<W>(d * w);
    *bad = !std::isfinite(*sum) || !std::isfinite(M);
  }
};

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
      by_width([&](auto lanes) {
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* x = base + r * V;
          RowScan<decltype(lanes)::value, scalar_t, false> scan;
          scan.run(x, V, 1.f);
          float m, s;
          bool bad;
          scan.result(&m, &s, nullptr, &bad);
          fl[r] = bad;
          o[r] = m + std::log(s);
          oy[r] = ids_lse(x, yes, ky), on[r] = ids_lse(x, no, kn);
        }
      });
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
      by_width([&](auto lanes) {
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* x = base + r * V;
          RowScan<decltype(lanes)::value, scalar_t, true> scan;
          scan.run(x, V, inv);
          float m, s, d;
          bool bad;
          scan.result(&m, &s, &d, &bad);
          const float l = m + std::log(s);
          fl[r] = bad;
          ls[r] = l;
          en[r] = l - d / s;
          // a label outside [0, V) is never read: the op raises on it after this kernel
          const bool keep = lab[r] != ignore_index && lab[r] >= 0 && lab[r] < V;
          lp[r] = keep ? static_cast<float>(x[lab[r]]) * inv - l : 0.f;
        }
      });
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
      by_width([&](auto lanes) {
        constexpr int W = decltype(lanes)::value;
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* x = base + r * V;
          scalar_t* y = obase + r * V;
          const float gi = lab[r] == ignore_index ? 0.f : g[r] * inv, l = ls[r];
          // d logp / d x_j = inv * (onehot_j - softmax_j)
          int64_t j = 0;
          for (; j + W <= V; j += W) store<W>(y + j, -gi * exp_nonpos<W>(load<W>(x + j, W) * inv - l), W);
          if (j < V) {
            const int w = static_cast<int>(V - j);
            store<W>(y + j, -gi * exp_nonpos<W>(load_tail<W>(x + j, w) * inv - l), w);
          }
          if (lab[r] != ignore_index) y[lab[r]] = static_cast<scalar_t>(static_cast<float>(y[lab[r]]) + gi);
        }
      });
    });
  });
  return out;
}

void bind_logprobs(pybind11::module_& m) {
  m.def("yes_no_lse", &yes_no_lse);
  m.def("label_logprobs", &label_logprobs);
  m.def("label_logprobs_backward", &label_logprobs_backward);
}

}  // namespace rbr_fast
