// CPU kernels for the advantage ops: GAE, masked whitening, KL reward shaping, fused PPO path.
// Semantics are defined by rbr_fast/ops/advantages/reference.py; inputs arrive validated and contiguous.
#include "advantages.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>  // the binding's tensor casters (not all of torch/extension.h)

#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace rbr_fast {
namespace {

enum Kl : int64_t { K1 = 0, K2 = 1, K3 = 2 };

inline float kl_of(float lp, float ref, int64_t est) {
  const float d = lp - ref;
  if (est == K1) return d;
  if (est == K2) return 0.5f * d * d;
  return std::expm1(-d) + d;  // k3 = r - 1 - log r, r = exp(ref - lp)
}

// Per-row results a whole-batch reduction needs afterwards.
struct RowStats {
  std::vector<double> sum, sumsq, kl;
  std::vector<int64_t> count;
  explicit RowStats(int64_t B) : sum(B, 0.0), sumsq(B, 0.0), kl(B, 0.0), count(B, 0) {}
};

constexpr int kLanes = 8;
constexpr int kTile = 64;  // time steps staged per pass: 5 buffers x 64 x 32 B stay in L1

// In-register 8x8 transpose: x[r][c] -> x[c][r] (three rounds of two-input shuffles).
inline void transpose8(f32x8 (&x)[8]) {
  f32x8 t[8], u[8];
  for (int p = 0; p < 8; p += 2) {
    t[p] = RBR_SHUF(x[p], x[p + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[p + 1] = RBR_SHUF(x[p], x[p + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int p = 0; p < 8; p += 4)
    for (int q = 0; q < 2; ++q) {
      u[p + 2 * q] = RBR_SHUF(t[p + q], t[p + q + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[p + 2 * q + 1] = RBR_SHUF(t[p + q], t[p + q + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int c = 0; c < 4; ++c) {
    x[c] = RBR_SHUF(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    x[c + 4] = RBR_SHUF(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}


inline f32x8 kl8(f32x8 lp, f32x8 ref, int64_t est) {
  const f32x8 d = lp - ref;
  if (est == K1) return d;
  if (est == K2) return 0.5f * d * d;
  f32x8 k;
  for (int i = 0; i < 8; ++i) k[i] = kl_of(lp[i], ref[i], K3);
  return k;
}

// Prefetch the cache lines of n elements at p (for writing when `write`).
template <typename E>
inline void prefetch_span(const E* p, int64_t n, bool write) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t i = 0; i < n * static_cast<int64_t>(sizeof(E)); i += 64) {
    if (write)
      __builtin_prefetch(c + i, 1, 1);
    else
      __builtin_prefetch(c + i, 0, 1);
  }
}

// Which inputs of one row are non-finite at valid positions (bit 0: rewards, bit 1: values).
// Only called for rows whose advantages came out non-finite: any NaN/inf input at a valid position
// reaches that position's advantage, so the hot loop checks the output instead of every input.
template <typename rew_t, typename scalar_t>
int32_t row_flags(const rew_t* rew, const scalar_t* val, const bool* mask, int64_t T) {
  int32_t word = 0;
  for (int64_t t = 0; t < T; ++t)
    if (mask[t])
      word |= !std::isfinite(static_cast<float>(rew[t])) | (!std::isfinite(static_cast<float>(val[t])) << 1);
  return word;
}

// KL-shaped rewards of one row: -kl_coef * kl(lp, ref) at valid positions, plus the score at the
// last valid one, 0 elsewhere. Returns the flags of lp (bit 0) and ref (bit 1); adds the row's
// KL sum to *klsum. One sequential pass: the shape_rewards op, and the first half of the fused path.
template <typename scalar_t, typename out_t>
int32_t shape_row(const scalar_t* lp, const scalar_t* rf, double score, const bool* mask, out_t* out, int64_t T,
                  float coef, int64_t est, double* klsum) {
  int64_t last = T - 1;  // the row's last valid position gets its score
  while (last >= 0 && !mask[last]) --last;
  i32x8 bad = {};
  f32x8 kl_acc = {};
  for (int64_t t = 0; t < T; t += 8) {
    const int w = static_cast<int>(std::min<int64_t>(8, T - t));
    const i32x8 m = load_mask8(mask + t, w);
    const f32x8 l = load8(lp + t, w), r = load8(rf + t, w);
    const f32x8 kl = m ? kl8(l, r, est) : f32x8{};
    f32x8 rew = -coef * kl;
    if (last >= t && last < t + 8) rew[last - t] += static_cast<float>(score);
    store8(out + t, rew, w);
    kl_acc += kl;
    bad |= m & ((nonfinite8(l) & 1) | (nonfinite8(r) & 2));
  }
  if (klsum) *klsum += hsum8(kl_acc);
  int32_t word = 0;
  for (int i = 0; i < 8; ++i) word |= bad[i];
  return word;
}

// Backward GAE over one group of up to kLanes rows (row k starts at offset k*T; lanes past `rows`
// run on masked-out zeros). When Shaped, the per-token reward is -kl_coef*kl(lp, ref) plus the
// row's score at its last valid position, computed on the fly (the fused PPO path); otherwise it
// is read from `rew`. Masked positions carry the state through.
//
// One row alone is a latency-bound chain. Instead each time tile is read row by row in 8-step
// vectors, transposed in registers to [t][lane] (8 independent rows in SIMD lanes), scanned
// backward on whole vectors, and transposed back for contiguous row writes.
template <typename rew_t, typename scalar_t, bool Stats>
void gae_group(const rew_t* rew, const scalar_t* val, const bool* mask, scalar_t* adv, scalar_t* ret, int rows,
               int64_t T, float gamma, float gl, int32_t* flags, double* sum, double* sumsq, int64_t* count) {
  alignas(32) f32x8 rb[kTile], vb[kTile], ab[kTile], qb[kTile], mb[kTile];  // mb: lanes of -1/0 bits
  const f32x8 zero = {};
  f32x8 next_v = zero, last = zero;
  f32x8 poison = zero;  // NaN in the lanes whose advantage went non-finite at a valid position
  double s1[kLanes] = {}, s2[kLanes] = {};
  int64_t n[kLanes] = {};
  for (int64_t t1 = T; t1 > 0; t1 -= kTile) {
    const int64_t t0 = std::max<int64_t>(0, t1 - kTile);
    const int len = static_cast<int>(t1 - t0), blocks = (len + 7) / 8;
    // 5 x 8 row streams walking backwards exceed what the hardware prefetchers track, so
    // once the rows outgrow L2 every tile would wait on memory: fetch the next tile by hand.
    if (t0 > 0) {
      const int64_t p0 = std::max<int64_t>(0, t0 - kTile);
      for (int k = 0; k < rows; ++k) {
        prefetch_span(val + k * T + p0, t0 - p0, false), prefetch_span(rew + k * T + p0, t0 - p0, false);
        prefetch_span(mask + k * T + p0, t0 - p0, false);
        prefetch_span(adv + k * T + p0, t0 - p0, true), prefetch_span(ret + k * T + p0, t0 - p0, true);
      }
    }
    for (int jb = 0; jb < blocks; ++jb) {
      const int w = std::min(8, len - 8 * jb);
      f32x8 r[8], v[8], m[8];
      for (int k = 0; k < kLanes; ++k) {
        const int64_t o = k * T + t0 + 8 * jb;
        const int wk = k < rows ? w : 0;  // lanes past `rows`: zeros, masked out
        const i32x8 mk = load_mask8(mask + o, wk);
        v[k] = load8(val + o, wk);
        r[k] = load8(rew + o, wk);
        m[k] = reinterpret_cast<const f32x8&>(mk);
      }
      transpose8(r), transpose8(v), transpose8(m);
      for (int c = 0; c < 8; ++c) rb[8 * jb + c] = r[c], vb[8 * jb + c] = v[c], mb[8 * jb + c] = m[c];
    }
    f32x8 ts1 = zero, ts2 = zero;
    i32x8 tn = {};
    // padded steps past len are masked out in every lane, so they leave the state unchanged
    for (int j = 8 * blocks - 1; j >= 0; --j) {
      const i32x8 m = reinterpret_cast<const i32x8&>(mb[j]);
      const f32x8 r = rb[j], v = vb[j];
      const f32x8 a = r + gamma * next_v - v + gl * last;
      last = m ? a : last;
      next_v = m ? v : next_v;
      ab[j] = m ? a : zero;
      qb[j] = m ? a + v : zero;
      poison += ab[j] * 0.f;  // 0 for finite values, NaN for NaN/inf
      if constexpr (Stats) {
        ts1 += ab[j];
        ts2 += ab[j] * ab[j];
        tn -= m;
      }
    }
    for (int jb = 0; jb < blocks; ++jb) {
      const int w = std::min(8, len - 8 * jb);
      f32x8 a[8], q[8];
      for (int c = 0; c < 8; ++c) a[c] = ab[8 * jb + c], q[c] = qb[8 * jb + c];
      transpose8(a), transpose8(q);
      for (int k = 0; k < rows; ++k) {
        const int64_t o = k * T + t0 + 8 * jb;
        store8(adv + o, a[k], w), store8(ret + o, q[k], w);
      }
    }
    // per-tile float partials are exact enough (<= 64 terms); the batch total is in double
    for (int k = 0; k < rows; ++k) s1[k] += ts1[k], s2[k] += ts2[k], n[k] += tn[k];
  }
  for (int k = 0; k < rows; ++k) {
    flags[k] = poison[k] == poison[k] ? 0 : row_flags(rew + k * T, val + k * T, mask + k * T, T);
    if constexpr (Stats) sum[k] = s1[k], sumsq[k] = s2[k], count[k] = n[k];
  }
}

// Runs gae_group over all rows, groups of kLanes rows split across threads. When Shaped (the fused
// PPO path), `rew` and `ref` are the policy and reference log-probs: each group's KL-shaped rewards
// are first written row by row into a float scratch of kLanes x T that stays in L2 (sequential
// streams the prefetchers follow; the rewards never reach DRAM), then scanned from there.
template <typename scalar_t, bool Shaped>
void gae_rows(const scalar_t* rew, const scalar_t* ref, const double* score, const scalar_t* val, const bool* mask,
              scalar_t* adv, scalar_t* ret, int64_t B, int64_t T, float gamma, float lam, float kl_coef, int64_t est,
              int32_t* flags, RowStats* st) {
  const int64_t groups = (B + kLanes - 1) / kLanes;
  const int64_t grain = std::max<int64_t>(1, 65536 / (kLanes * T));  // ~64k elements per task
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    std::vector<float> scratch(Shaped ? kLanes * T : 0);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t b = g * kLanes, o = b * T;
      const int rows = static_cast<int>(std::min<int64_t>(kLanes, B - b));
      if constexpr (Shaped) {
        int32_t shaped[kLanes];
        for (int k = 0; k < rows; ++k)
          shaped[k] = shape_row(rew + o + k * T, ref + o + k * T, score[b + k], mask + o + k * T,
                                scratch.data() + k * T, T, kl_coef, est, &st->kl[b + k]);
        // with the moments of the advantages (for whitening) and the valid count
        gae_group<float, scalar_t, true>(scratch.data(), val + o, mask + o, adv + o, ret + o, rows, T, gamma,
                                         gamma * lam, flags + b, &st->sum[b], &st->sumsq[b], &st->count[b]);
        // bits: lp, ref (from shaping), values (bit 1 of the scan's flags); a bad reward is one of these
        for (int k = 0; k < rows; ++k) flags[b + k] = shaped[k] | ((flags[b + k] & 2) << 1);
      } else {
        gae_group<scalar_t, scalar_t, false>(rew + o, val + o, mask + o, adv + o, ret + o, rows, T, gamma,
                                             gamma * lam, flags + b, nullptr, nullptr, nullptr);
      }
    }
  });
}

// mean and 1/sqrt(unbiased var + eps) of the valid entries from per-row sums (double).
std::pair<double, double> combine_moments(const RowStats& st, double eps, int64_t* total) {
  double s1 = 0, s2 = 0;
  int64_t n = 0;
  for (size_t b = 0; b < st.sum.size(); ++b) s1 += st.sum[b], s2 += st.sumsq[b], n += st.count[b];
  *total = n;
  const double mean = n > 0 ? s1 / n : 0.0;
  const double var = n > 1 ? std::max(0.0, (s2 - s1 * mean) / (n - 1)) : 0.0;
  return {mean, 1.0 / std::sqrt(var + eps)};
}

// y = (x - mean) * scale (+ mean) at valid positions, 0 elsewhere; y may alias x.
template <typename scalar_t>
void apply_whiten(const scalar_t* x, scalar_t* y, const bool* mask, int64_t numel, double mean, double scale,
                  bool shift_mean) {
  const float fm = static_cast<float>(mean), fs = static_cast<float>(scale), back = shift_mean ? 0.f : fm;
  const int64_t blocks = (numel + 7) / 8;
  at::parallel_for(0, blocks, 1 << 13, [&](int64_t b0, int64_t b1) {
    for (int64_t i = b0 * 8; i < std::min(numel, b1 * 8); i += 8) {
      const int w = static_cast<int>(std::min<int64_t>(8, numel - i));
      const i32x8 m = load_mask8(mask + i, w);
      store8(y + i, m ? (load8(x + i, w) - fm) * fs + back : f32x8{}, w);
    }
  });
}

at::Tensor int64_scalar(int64_t v) { return at::scalar_tensor(v, at::kLong); }

}  // namespace

std::vector<at::Tensor> gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma,
                            double lam, const std::optional<at::Tensor>& adv_out,
                            const std::optional<at::Tensor>& ret_out) {
  const int64_t B = mask.size(0), T = mask.size(1);
  const auto out_dtype = at::promote_types(rewards.scalar_type(), values.scalar_type());
  // one dtype per kernel instance: a mixed pair is cast once (rare; both are usually the same)
  const auto r = rewards.to(out_dtype), v = values.to(out_dtype);
  auto adv = adv_out ? *adv_out : at::empty_like(v), ret = ret_out ? *ret_out : at::empty_like(v);
  auto flags = at::empty({B}, mask.options().dtype(at::kInt));
  RBR_DISPATCH(out_dtype, "rbr_fast_gae", [&] {
    gae_rows<scalar_t, false>(r.data_ptr<scalar_t>(), nullptr, nullptr, v.data_ptr<scalar_t>(), mask.data_ptr<bool>(),
                              adv.data_ptr<scalar_t>(), ret.data_ptr<scalar_t>(), B, T, gamma, lam, 0.f, 0,
                              flags.data_ptr<int32_t>(), nullptr);
  });
  return {adv, ret, flags};
}

std::vector<at::Tensor> masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean, double eps) {
  const int64_t B = mask.size(0), T = mask.size(1);
  auto out = at::empty_like(x);
  auto flags = at::empty({B}, mask.options().dtype(at::kInt));
  RowStats st(B);
  int64_t n = 0;
  RBR_DISPATCH(x.scalar_type(), "rbr_fast_masked_whiten", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const bool* mp = mask.data_ptr<bool>();
    int32_t* fp = flags.data_ptr<int32_t>();
    at::parallel_for(0, B, std::max<int64_t>(1, 65536 / T), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* xr = xp + b * T;
        const bool* mr = mp + b * T;
        double s1 = 0, s2 = 0;
        int64_t n = 0;
        i32x8 bad = {};
        for (int64_t t0 = 0; t0 < T; t0 += kTile) {  // float partials per tile, double across tiles
          f32x8 p1 = {}, p2 = {};
          i32x8 pn = {};
          for (int64_t t = t0; t < std::min(T, t0 + kTile); t += 8) {
            const int w = static_cast<int>(std::min<int64_t>(8, T - t));
            const i32x8 m = load_mask8(mr + t, w);
            const f32x8 x = load8(xr + t, w), xm = m ? x : f32x8{};
            p1 += xm, p2 += xm * xm, pn -= m;
            bad |= m & nonfinite8(x);
          }
          for (int i = 0; i < 8; ++i) s1 += p1[i], s2 += p2[i], n += pn[i];
        }
        int32_t word = 0;
        for (int i = 0; i < 8; ++i) word |= bad[i] & 1;
        st.sum[b] = s1, st.sumsq[b] = s2, st.count[b] = n, fp[b] = word;
      }
    });
    const auto [mean, scale] = combine_moments(st, eps, &n);
    apply_whiten(xp, out.data_ptr<scalar_t>(), mp, B * T, mean, scale, shift_mean);
  });
  return {out, int64_scalar(n), flags};
}

std::vector<at::Tensor> shape_rewards(const at::Tensor& scores, const at::Tensor& logprobs,
                                      const at::Tensor& ref_logprobs, const at::Tensor& mask, double kl_coef,
                                      int64_t kl_estimator) {
  const int64_t B = mask.size(0), T = mask.size(1);
  const auto out_dtype = at::promote_types(logprobs.scalar_type(), ref_logprobs.scalar_type());
  const auto lp = logprobs.to(out_dtype), rf = ref_logprobs.to(out_dtype);
  const auto sc = scores.to(at::kDouble);
  auto out = at::empty_like(lp);
  auto flags = at::empty({B}, mask.options().dtype(at::kInt));
  RBR_DISPATCH(out_dtype, "rbr_fast_shape_rewards", [&] {
    const scalar_t *lpp = lp.data_ptr<scalar_t>(), *rfp = rf.data_ptr<scalar_t>();
    const bool* mp = mask.data_ptr<bool>();
    const double* sp = sc.data_ptr<double>();
    scalar_t* op = out.data_ptr<scalar_t>();
    int32_t* fp = flags.data_ptr<int32_t>();
    const float coef = static_cast<float>(kl_coef);
    at::parallel_for(0, B, std::max<int64_t>(1, 65536 / T), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        fp[b] = shape_row(lpp + b * T, rfp + b * T, sp[b], mp + b * T, op + b * T, T, coef, kl_estimator, nullptr);
    });
  });
  return {out, flags};
}

std::vector<at::Tensor> ppo_advantages(const at::Tensor& scores, const at::Tensor& logprobs,
                                       const at::Tensor& ref_logprobs, const at::Tensor& values,
                                       const at::Tensor& mask, double kl_coef, int64_t kl_estimator, double gamma,
                                       double lam, bool whiten, double eps, const std::optional<at::Tensor>& adv_out,
                                       const std::optional<at::Tensor>& ret_out) {
  const int64_t B = mask.size(0), T = mask.size(1);
  const auto out_dtype =
      at::promote_types(at::promote_types(logprobs.scalar_type(), ref_logprobs.scalar_type()), values.scalar_type());
  const auto lp = logprobs.to(out_dtype), rf = ref_logprobs.to(out_dtype), v = values.to(out_dtype);
  const auto sc = scores.to(at::kDouble);
  auto adv = adv_out ? *adv_out : at::empty_like(v), ret = ret_out ? *ret_out : at::empty_like(v);
  auto flags = at::empty({B}, mask.options().dtype(at::kInt));
  RowStats st(B);
  int64_t n = 0;
  RBR_DISPATCH(out_dtype, "rbr_fast_ppo_advantages", [&] {
    scalar_t* ap = adv.data_ptr<scalar_t>();
    gae_rows<scalar_t, true>(lp.data_ptr<scalar_t>(), rf.data_ptr<scalar_t>(), sc.data_ptr<double>(),
                             v.data_ptr<scalar_t>(), mask.data_ptr<bool>(), ap, ret.data_ptr<scalar_t>(), B, T, gamma,
                             lam, kl_coef, kl_estimator, flags.data_ptr<int32_t>(), &st);
    const auto [mean, scale] = combine_moments(st, eps, &n);
    if (whiten) apply_whiten(ap, ap, mask.data_ptr<bool>(), B * T, mean, scale, true);
  });
  auto kl = at::from_blob(st.kl.data(), {B}, at::kDouble).to(at::kFloat);
  return {adv, ret, kl, int64_scalar(n), flags};
}

void bind_advantages(pybind11::module_& m) {
  // adv_out/ret_out: caller-owned outputs (contiguous, the promoted dtype), so a training loop that
  // reuses them pays no page faults for fresh multi-MiB buffers
  m.def("gae", &gae, pybind11::arg("rewards"), pybind11::arg("values"), pybind11::arg("mask"), pybind11::arg("gamma"),
        pybind11::arg("lam"), pybind11::arg("adv_out") = pybind11::none(), pybind11::arg("ret_out") = pybind11::none());
  m.def("masked_whiten", &masked_whiten);
  m.def("shape_rewards", &shape_rewards);
  m.def("ppo_advantages", &ppo_advantages, pybind11::arg("scores"), pybind11::arg("logprobs"),
        pybind11::arg("ref_logprobs"), pybind11::arg("values"), pybind11::arg("mask"), pybind11::arg("kl_coef"),
        pybind11::arg("kl_estimator"), pybind11::arg("gamma"), pybind11::arg("lam"), pybind11::arg("whiten"),
        pybind11::arg("eps"), pybind11::arg("adv_out") = pybind11::none(), pybind11::arg("ret_out") = pybind11::none());
}

}  // namespace rbr_fast
