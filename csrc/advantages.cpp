// CPU kernels for the advantage ops: GAE, masked whitening, KL reward shaping, fused PPO path.
// Semantics are defined by rbr_fast/ops/advantages/reference.py; inputs arrive validated and contiguous.
#include "advantages.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>  // the binding's tensor casters (not all of torch/extension.h)

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "buffers.h"
#include "simd.h"

namespace rbr_fast {
namespace {

enum Kl : int64_t { K1 = 0, K2 = 1, K3 = 2 };

// Per-row results a whole-batch reduction needs afterwards.
struct RowStats {
  std::vector<double> sum, sumsq, kl;
  std::vector<int64_t> count, end;  // end: one past the row's last valid position
  explicit RowStats(int64_t B) : sum(B, 0.0), sumsq(B, 0.0), kl(B, 0.0), count(B, 0), end(B, 0) {}
};

template <int W>
inline fvec<W> kl_lanes(fvec<W> lp, fvec<W> ref, int64_t est) {
  const fvec<W> d = lp - ref;
  if (est == K1) return d;
  if (est == K2) return 0.5f * d * d;
  // k3 = expm1(y) - y, y = ref - lp: a series where the two cancel (|y| < 1/2; its first dropped
  // term is 1e-6 of the sum there), else exp(y) as the square of h = exp(-|y| / 2) or of 1 / h
  // (exp_nonpos takes x <= 0 only; halving keeps 1 / h finite wherever exp(y) is)
  using f = fvec<W>;
  const f y = -d, ay = y < 0.f ? d : y;
  f s = y * (1.f / 5040) + 1.f / 720;
  s = (((s * y + 1.f / 120) * y + 1.f / 24) * y + 1.f / 6) * y + 0.5f;
  const f h = exp_nonpos<W>(-0.5f * ay), g = y < 0.f ? h : 1.f / h;
  const f big = g * g - 1.f - y;
  return ay < 0.5f ? s * y * y : big;
}

// Whether x is NaN/inf at a valid position. Only called for rows whose advantages came out
// non-finite: any NaN/inf input at a valid position reaches that position's advantage, so the hot
// loop checks the output instead of every input.
template <typename scalar_t>
bool nonfinite_at_valid(const scalar_t* x, const bool* mask, int64_t T) {
  for (int64_t t = 0; t < T; ++t)
    if (mask[t] && !std::isfinite(static_cast<float>(x[t]))) return true;
  return false;
}

// The last valid position of a row (-1 if none), 8 mask bytes at a time: rows often end in long padding.
inline int64_t last_valid(const bool* mask, int64_t T) {
  int64_t t = T;
  for (uint64_t word; t >= 8 && (std::memcpy(&word, mask + t - 8, 8), word == 0);) t -= 8;
  while (t > 0 && !mask[t - 1]) --t;
  return t - 1;
}

// KL-shaped rewards of one row, a chunk at a time in any order: -kl_coef * kl(lp, ref) at valid
// positions, plus the score at the last valid one, 0 elsewhere; it sums the KL. The shape_rewards op
// stores the chunks; the fused PPO path feeds them straight into the GAE scan. NaN/inf inputs are not
// checked here: they reach the row's outputs, and only such rows are rescanned (shaped_flags).
template <int W, typename scalar_t>
struct RowShaper {
  using f = fvec<W>;
  const scalar_t *lp, *rf;
  const bool* mask;
  float coef, score;
  int64_t est, last;  // last: the row's last valid position, which gets the score
  f kl_acc = {};
  ivec<W> lane;

  RowShaper(const scalar_t* lp_, const scalar_t* rf_, double score_, const bool* mask_, int64_t T, float coef_,
            int64_t est_)
      : lp(lp_), rf(rf_), mask(mask_), coef(coef_), score(static_cast<float>(score_)), est(est_),
        last(last_valid(mask_, T)) {
    for (int i = 0; i < W; ++i) lane[i] = i;
  }

  // The chunk at t; All: every lane is valid (known from the mask already, so it is not read again).
  template <typename Width, bool All>
  f operator()(int64_t t, Width w, std::bool_constant<All>) {
    f kl = kl_lanes<W>(load<W>(lp + t, w), load<W>(rf + t, w), est);
    if constexpr (!All) kl = keep<W>(load_mask<W>(mask + t, w), kl);
    kl_acc += kl;
    f r = -coef * kl;
    // a lane compare in the one chunk that holds the score, not r[last - t] +=: indexing a vector by a
    // variable sends it to memory
    if (static_cast<uint64_t>(last - t) < static_cast<uint64_t>(W))
      r += keep<W>(lane == static_cast<int>(last - t), splat<W>(score));
    return r;
  }

  double kl_sum() const { return hsum<W>(kl_acc); }
};

// Whether any of a row's outputs came out NaN/inf: fed chunk by chunk, read once at the row's end
// (what decides whether the row's inputs are rescanned for the culprit).
template <int W>
struct Poison {
  fvec<W> acc = {};  // NaN in the lanes where an output was NaN/inf
  void add(fvec<W> x) { acc += x * 0.f; }  // 0 for finite values, NaN for NaN/inf
  bool clean() const {
    bool finite = true;
    for (int i = 0; i < W; ++i) finite &= acc[i] == acc[i];
    return finite;
  }
};

// A row's score is checked in float32, the precision it is used in, whatever the row's mask.
inline int32_t bad_score(double score) { return !std::isfinite(static_cast<float>(score)); }

// Flag bits of a shaped row whose outputs came out non-finite: lp (bit 0) and ref (bit 1) NaN/inf at a
// valid position. Finite inputs can still overflow (k3 of a huge gap), which is not flagged.
template <typename scalar_t>
int32_t shaped_flags(const scalar_t* lp, const scalar_t* rf, const bool* mask, int64_t T) {
  return nonfinite_at_valid(lp, mask, T) | nonfinite_at_valid(rf, mask, T) << 1;
}

// `end` rounded up to whole chunks of W, at most T.
template <int W>
inline int64_t whole_chunks(int64_t end, int64_t T) {
  return std::min(T, (end + W - 1) / W * W);
}

// What a chunk of n (<= W) mask bytes holds: none valid, all W valid, or a mix (or a short tail).
enum class Span { None, All, Mixed };

template <int W>
inline Span span_of(const bool* mask, int n) {
  static_assert(W % 8 == 0, "whole 8-byte words");
  uint64_t word[W / 8] = {};
  std::memcpy(word, mask, n == W ? W : n);
  uint64_t any = 0, ones = n == W;
  for (uint64_t x : word) any |= x, ones &= x == 0x0101010101010101ull;  // a bool byte is 0 or 1
  return any == 0 ? Span::None : ones ? Span::All : Span::Mixed;
}

// Backward GAE along a row, W time steps per vector, with the semantics of reference.py: at a valid
// t, a_t = r_t + gamma * v' - v_t + gamma * lam * a', where v' and a' are those of the next valid
// position (0 past the end); masked positions get 0 and carry both through.
//
// Rows are read and written in whole contiguous vectors, last chunk first (streams the hardware
// prefetchers follow; an earlier 8-row transposed scan was bound by its shuffles and strided accesses). In a
// chunk of W valid steps a_t = sum_{j >= t} c^(j - t) * delta_j + c^(W - t) * a' with c = gamma *
// lam: a suffix scan of log2(W) shift-and-fma steps, then one fma with the carry, so the serial
// dependence between chunks is one fma. All-masked chunks are zeros; mixed chunks (a row's end,
// a hole's edges: a few per row) take the scalar loop.
template <int W>
struct GaeScan {
  using f = fvec<W>;
  float gamma, c;
  f cpow;   // lane i: c^(W - i), the carry's weight
  f cs[4];  // c^1, c^2, c^4, c^8: the scan's steps

  GaeScan(float gamma_, float lam) : gamma(gamma_), c(gamma_ * lam) {
    double p = 1.0;
    for (int i = W - 1; i >= 0; --i) p *= c, cpow[i] = static_cast<float>(p);
    double q = c;
    for (int k = 0; k < 4; ++k, q *= q) cs[k] = splat<W>(static_cast<float>(q));
  }

  f suffix_scan(f x) const {
    const f zero = {};
    x += cs[0] * shift_in<1, W>(x, zero);
    x += cs[1] * shift_in<2, W>(x, zero);
    x += cs[2] * shift_in<4, W>(x, zero);
    if constexpr (W == 16) x += cs[3] * shift_in<8, W>(x, zero);
    return x;
  }

  // One row whose valid positions all lie before `end`; rewards(t, w, all) gives the rewards of a chunk
  // as lanes (loaded, or shaped on the fly; all: std::true_type when every lane is valid). Its count of
  // valid positions goes to `count` (if given) and, when Stats, the sum and sum of squares of its
  // advantages to `sum` and `sumsq` (for whitening). Returns whether every advantage came out finite.
  template <bool Stats, typename Rewards, typename scalar_t>
  bool row(Rewards& rewards, const scalar_t* val, const bool* mask, scalar_t* adv, scalar_t* ret, int64_t T,
           int64_t end, double* sum, double* sumsq, int64_t* count) const {
    // the padding after the last valid chunk (half of a typical batch) is zeros, stored without a scan
    const int64_t live = whole_chunks<W>(end, T);
    std::memset(adv + live, 0, (T - live) * sizeof(scalar_t));
    std::memset(ret + live, 0, (T - live) * sizeof(scalar_t));
    f next_v = {}, last = {};  // the carries, in every lane: a scalar would go through memory each chunk
    Poison<W> poison;  // of the advantages at valid positions
    f p1 = {}, p2 = {};
    double s1 = 0, s2 = 0;
    int64_t n = 0;
    int64_t k = 0;  // chunks since the stats were last flushed
    for_chunks_backward<W>(live, [&](int64_t t0, auto w) {
      const Span span = span_of<W>(mask + t0, w);
      f a = {}, q = {};
      if (span == Span::All) {
        const f v = load<W>(val + t0, W), r = rewards(t0, w, std::true_type{});
        a = suffix_scan(r + gamma * shift_in<1, W>(v, next_v) - v) + cpow * last;
        q = a + v;
        last = lane0<W>(a), next_v = lane0<W>(v), n += W;
      } else if (span == Span::Mixed) {
        float as[W] = {}, qs[W] = {}, rs[W];  // arrays, not lanes: a vector indexed by a variable lives in memory
        const f r = rewards(t0, w, std::false_type{});
        std::memcpy(rs, &r, sizeof rs);
        float l = last[0], nv = next_v[0];
        for (int i = w - 1; i >= 0; --i) {
          if (!mask[t0 + i]) continue;
          const float v = static_cast<float>(val[t0 + i]);
          l = rs[i] + gamma * nv - v + c * l;
          nv = v, as[i] = l, qs[i] = l + v, ++n;
        }
        std::memcpy(&a, as, sizeof a), std::memcpy(&q, qs, sizeof q);
        last = splat<W>(l), next_v = splat<W>(nv);
      }
      store<W>(adv + t0, a, w), store<W>(ret + t0, q, w);
      if (span == Span::None) return;
      poison.add(a);
      if constexpr (Stats) {
        p1 += a, p2 += a * a;
        if (++k == 16) s1 += hsum<W>(p1), s2 += hsum<W>(p2), p1 = p2 = f{}, k = 0;  // <= 16 terms per float lane
      }
    });
    if constexpr (Stats) *sum = s1 + hsum<W>(p1), *sumsq = s2 + hsum<W>(p2);
    if (count) *count = n;
    return poison.clean();
  }
};

// GAE over all rows, split across threads. When Shaped (the fused PPO path), `rew` and `ref` are
// the policy and reference log-probs, and each chunk's KL-shaped rewards go straight into the scan;
// Stats: the per-row moments for whitening.
template <typename scalar_t, bool Shaped, bool Stats>
void gae_rows(const scalar_t* rew, const scalar_t* ref, const double* score, const scalar_t* val, const bool* mask,
              scalar_t* adv, scalar_t* ret, int64_t B, int64_t T, float gamma, float lam, float kl_coef, int64_t est,
              int32_t* flags, RowStats* st) {
  const int64_t grain = std::max<int64_t>(1, 65536 / T);  // ~64k elements per task
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    by_width([&](auto lanes) {
      constexpr int W = decltype(lanes)::value;
      const GaeScan<W> scan(gamma, lam);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t o = b * T;
        if constexpr (Shaped) {
          RowShaper<W, scalar_t> shaper(rew + o, ref + o, score[b], mask + o, T, kl_coef, est);
          const bool finite =
              scan.template row<Stats>(shaper, val + o, mask + o, adv + o, ret + o, T, shaper.last + 1, &st->sum[b],
                                       &st->sumsq[b], &st->count[b]);
          st->kl[b] = shaper.kl_sum(), st->end[b] = shaper.last + 1;
          // bits: lp, ref, values, score; a non-finite advantage comes from one of them
          flags[b] = (finite ? 0
                             : shaped_flags(rew + o, ref + o, mask + o, T) |
                                   nonfinite_at_valid(val + o, mask + o, T) << 2) |
                     bad_score(score[b]) << 3;
        } else {
          auto loaded = [&](int64_t t, auto w, auto) { return load<W>(rew + o + t, w); };
          const bool finite = scan.template row<false>(loaded, val + o, mask + o, adv + o, ret + o, T,
                                                       last_valid(mask + o, T) + 1, nullptr, nullptr, nullptr);
          flags[b] = finite ? 0
                            : nonfinite_at_valid(rew + o, mask + o, T) | nonfinite_at_valid(val + o, mask + o, T) << 1;
        }
      }
    });
  });
}

// The per-row scores as doubles (any float dtype), without a tensor op: a call's fixed cost matters at
// small batches.
std::vector<double> scores_of(const at::Tensor& scores) {
  std::vector<double> out(scores.size(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "rbr_fast_scores", [&] {
    const scalar_t* p = scores.data_ptr<scalar_t>();
    for (size_t b = 0; b < out.size(); ++b) out[b] = static_cast<double>(p[b]);
  });
  return out;
}

// The per-row flag words as a tensor, or None when no row is flagged (the common case: the Python
// layer then has nothing to read back).
std::optional<at::Tensor> flagged(const std::vector<int32_t>& flags) {
  for (const int32_t word : flags)
    if (word) return at::tensor(at::ArrayRef<int32_t>(flags), at::kInt);
  return std::nullopt;
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

// y = (x - mean) * scale (+ mean) at valid positions, 0 elsewhere; y may alias x. Positions from a
// row's end on are masked: zeroed when zero_tail, else left as they are (zeros already).
template <typename scalar_t>
void apply_whiten(const scalar_t* x, scalar_t* y, const bool* mask, int64_t B, int64_t T, const RowStats& st,
                  double mean, double scale, bool shift_mean, bool zero_tail) {
  const float fm = static_cast<float>(mean), fs = static_cast<float>(scale), back = shift_mean ? 0.f : fm;
  at::parallel_for(0, B, std::max<int64_t>(1, 65536 / T), [&](int64_t b0, int64_t b1) {
    by_width([&](auto lanes) {
      constexpr int W = decltype(lanes)::value;
      // last row first: when x was just written by a pass over the same rows (the fused PPO path), the
      // rows it wrote last are still in this core's cache
      for (int64_t b = b1 - 1; b >= b0; --b) {
        const int64_t o = b * T;
        int64_t stop = st.end[b];
        if (st.count[b] == stop) {  // every position before the row's end is valid: no mask to read
          for_chunks<W>(0, stop, [&](int64_t t, auto w) {
            store<W>(y + o + t, (load<W>(x + o + t, w) - fm) * fs + back, w);
          });
        } else {
          stop = whole_chunks<W>(stop, T);  // whole chunks: no scalar tail
          for_chunks<W>(0, stop, [&](int64_t t, auto w) {
            const ivec<W> m = load_mask<W>(mask + o + t, w);
            store<W>(y + o + t, keep<W>(m, (load<W>(x + o + t, w) - fm) * fs + back), w);
          });
        }
        if (zero_tail) std::memset(y + o + stop, 0, (T - stop) * sizeof(scalar_t));
      }
    });
  });
}

}  // namespace

GaeResult gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma, double lam,
              const std::optional<at::Tensor>& adv_out, const std::optional<at::Tensor>& ret_out) {
  const int64_t B = mask.size(0), T = mask.size(1);
  const auto out_dtype = at::promote_types(rewards.scalar_type(), values.scalar_type());
  // one dtype per kernel instance: a mixed pair is cast once (rare; both are usually the same)
  const auto r = rewards.to(out_dtype), v = values.to(out_dtype);
  auto adv = adv_out ? *adv_out : reusable_like(Slot::GaeAdvantages, v);
  auto ret = ret_out ? *ret_out : reusable_like(Slot::GaeReturns, v);
  std::vector<int32_t> flags(B);
  RBR_DISPATCH(out_dtype, "rbr_fast_gae", [&] {
    gae_rows<scalar_t, false, false>(r.data_ptr<scalar_t>(), nullptr, nullptr, v.data_ptr<scalar_t>(),
                                     mask.data_ptr<bool>(), adv.data_ptr<scalar_t>(), ret.data_ptr<scalar_t>(), B, T,
                                     gamma, lam, 0.f, 0, flags.data(), nullptr);
  });
  return {adv, ret, flagged(flags)};
}

WhitenResult masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean, double eps) {
  const int64_t B = mask.size(0), T = mask.size(1);
  auto out = reusable_like(Slot::Whitened, x);
  std::vector<int32_t> flags(B);
  RowStats st(B);
  int64_t n = 0;
  RBR_DISPATCH(x.scalar_type(), "rbr_fast_masked_whiten", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const bool* mp = mask.data_ptr<bool>();
    at::parallel_for(0, B, std::max<int64_t>(1, 65536 / T), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* xr = xp + b * T;
        const bool* mr = mp + b * T;
        const int64_t end = last_valid(mr, T) + 1;
        double s1 = 0, s2 = 0;
        int64_t n = 0;
        i32x8 bad = {};
        constexpr int64_t kTile = 64;
        for (int64_t t0 = 0; t0 < end; t0 += kTile) {  // float partials per tile, double across tiles
          f32x8 p1 = {}, p2 = {};
          i32x8 pn = {};
          for_chunks<8>(t0, std::min(end, t0 + kTile), [&](int64_t t, auto w) {
            const i32x8 m = load_mask<8>(mr + t, w);
            const f32x8 x = load<8>(xr + t, w), xm = m ? x : f32x8{};
            p1 += xm, p2 += xm * xm, pn -= m;
            bad |= m & nonfinite<8>(x);
          });
          for (int i = 0; i < 8; ++i) s1 += p1[i], s2 += p2[i], n += pn[i];
        }
        int32_t word = 0;
        for (int i = 0; i < 8; ++i) word |= bad[i] & 1;
        st.sum[b] = s1, st.sumsq[b] = s2, st.count[b] = n, st.end[b] = end, flags[b] = word;
      }
    });
    const auto [mean, scale] = combine_moments(st, eps, &n);
    apply_whiten(xp, out.data_ptr<scalar_t>(), mp, B, T, st, mean, scale, shift_mean, true);
  });
  return {out, n, flagged(flags)};
}

ShapeResult shape_rewards(const at::Tensor& scores, const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                          const at::Tensor& mask, double kl_coef, int64_t kl_estimator) {
  const int64_t B = mask.size(0), T = mask.size(1);
  const auto out_dtype = at::promote_types(logprobs.scalar_type(), ref_logprobs.scalar_type());
  const auto lp = logprobs.to(out_dtype), rf = ref_logprobs.to(out_dtype);
  const auto sc = scores_of(scores);
  auto out = reusable_like(Slot::ShapedRewards, lp);
  std::vector<int32_t> flags(B);
  RBR_DISPATCH(out_dtype, "rbr_fast_shape_rewards", [&] {
    const scalar_t *lpp = lp.data_ptr<scalar_t>(), *rfp = rf.data_ptr<scalar_t>();
    const bool* mp = mask.data_ptr<bool>();
    const double* sp = sc.data();
    scalar_t* op = out.data_ptr<scalar_t>();
    const float coef = static_cast<float>(kl_coef);
    at::parallel_for(0, B, std::max<int64_t>(1, 65536 / T), [&](int64_t b0, int64_t b1) {
      by_width([&](auto lanes) {
        constexpr int W = decltype(lanes)::value;
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t o = b * T;
          RowShaper<W, scalar_t> shaper(lpp + o, rfp + o, sp[b], mp + o, T, coef, kl_estimator);
          Poison<W> poison;
          for_chunks<W>(0, T, [&](int64_t t, auto w) {
            const fvec<W> r = shaper(t, w, std::false_type{});
            poison.add(r);
            store<W>(op + o + t, r, w);
          });
          // bits: lp, ref, score
          flags[b] = (poison.clean() ? 0 : shaped_flags(lpp + o, rfp + o, mp + o, T)) | bad_score(sp[b]) << 2;
        }
      });
    });
  });
  return {out, flagged(flags)};
}

PpoResult ppo_advantages(const at::Tensor& scores, const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                         const at::Tensor& values, const at::Tensor& mask, double kl_coef, int64_t kl_estimator,
                         double gamma, double lam, bool whiten, double eps, const std::optional<at::Tensor>& adv_out,
                         const std::optional<at::Tensor>& ret_out) {
  const int64_t B = mask.size(0), T = mask.size(1);
  const auto out_dtype =
      at::promote_types(at::promote_types(logprobs.scalar_type(), ref_logprobs.scalar_type()), values.scalar_type());
  const auto lp = logprobs.to(out_dtype), rf = ref_logprobs.to(out_dtype), v = values.to(out_dtype);
  const auto sc = scores_of(scores);
  auto adv = adv_out ? *adv_out : reusable_like(Slot::PpoAdvantages, v);
  auto ret = ret_out ? *ret_out : reusable_like(Slot::PpoReturns, v);
  std::vector<int32_t> flags(B);
  RowStats st(B);
  int64_t n = 0;
  RBR_DISPATCH(out_dtype, "rbr_fast_ppo_advantages", [&] {
    scalar_t* ap = adv.data_ptr<scalar_t>();
    const auto run = [&](auto stats) {
      gae_rows<scalar_t, true, decltype(stats)::value>(
          lp.data_ptr<scalar_t>(), rf.data_ptr<scalar_t>(), sc.data(), v.data_ptr<scalar_t>(),
          mask.data_ptr<bool>(), ap, ret.data_ptr<scalar_t>(), B, T, gamma, lam, kl_coef, kl_estimator, flags.data(),
          &st);
    };
    if (whiten) run(std::true_type{});
    else run(std::false_type{});
    const auto [mean, scale] = combine_moments(st, eps, &n);
    if (whiten) apply_whiten(ap, ap, mask.data_ptr<bool>(), B, T, st, mean, scale, true, false);
  });
  auto kl = at::empty({B}, at::kFloat);
  std::copy(st.kl.begin(), st.kl.end(), kl.data_ptr<float>());
  return {adv, ret, kl, n, flagged(flags)};
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
