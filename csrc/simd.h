// Small SIMD toolkit shared by the CPU kernels: W-lane float vectors (GCC/Clang vector extensions,
// lowered to whatever the target has), loads/stores that widen any admitted dtype to float, a
// vectorised exp, the dtype dispatch, and the run-time choice of vector width (by_width).
// Everything computes in float32.
#pragma once
#include <ATen/Dispatch.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace rbr_fast {

template <int W>
struct Lanes {
  typedef float f __attribute__((vector_size(4 * W)));
  typedef int32_t i __attribute__((vector_size(4 * W)));
  typedef uint32_t u __attribute__((vector_size(4 * W)));
  typedef uint16_t h __attribute__((vector_size(2 * W)));
  typedef uint8_t b __attribute__((vector_size(W)));
};
template <int W>
using fvec = typename Lanes<W>::f;
template <int W>
using ivec = typename Lanes<W>::i;
// the kernels that stay 8 wide
using f32x8 = fvec<8>;
using i32x8 = ivec<8>;

// ---------------------------------------------------------------------------------------- width
// Wheels target x86-64-v3 (8 float lanes). Where the CPU has AVX-512, by_width runs a kernel body
// at 16 lanes instead, compiled for AVX-512 by a target attribute on one function (`wide`) that
// inlines the whole body (flatten): nothing else in the binary uses AVX-512, so the same wheel
// runs on CPUs without it. 16 lanes halve the instructions per element, which is what bounds the
// exp-heavy log-prob scans (yes_no_logprobs 1.57x faster at 16 lanes than at 8 on a Zen 4).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RBR_WIDE 1
#define RBR_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")))

inline bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return ok;
}

template <typename F>
RBR_AVX512 __attribute__((flatten)) void wide(F& body) {
  body(std::integral_constant<int, 16>{});
}

RBR_AVX512 inline fvec<16> half16_to_float(const c10::Half* p) {
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  fvec<16> v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

RBR_AVX512 inline ivec<16> bytes16_to_lanes(const void* p) {
  const __m512i wide = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  ivec<16> v;
  std::memcpy(&v, &wide, sizeof v);
  return v != 0;
}

RBR_AVX512 inline void float_to_half16(c10::Half* p, fvec<16> v) {
  __m512 f;
  std::memcpy(&f, &v, sizeof f);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
}
#else
#define RBR_WIDE 0
#endif

// The lanes by_width runs kernels at: 16 on an AVX-512 CPU, else 8. Settable (simd_lanes in the
// module) so that the tests run both widths on one machine.
inline int& lanes_setting() {
#if RBR_WIDE
  static int lanes = cpu_has_avx512() ? 16 : 8;
#else
  static int lanes = 8;
#endif
  return lanes;
}

// body(std::integral_constant<int, W>{}) at W = lanes_setting(). Call it inside a parallel task,
// around the whole loop, so that one call covers many rows.
template <typename F>
void by_width(F&& body) {
#if RBR_WIDE
  if (lanes_setting() == 16) return wide(body);
#endif
  body(std::integral_constant<int, 8>{});
}

// ------------------------------------------------------------------------------------- chunking
// body(t, w) over [0, n) in chunks of W: whole chunks get w as a compile-time W (the loads, stores
// and mask reads below then compile to single instructions), the one short chunk an int. With a
// run-time w in the hot loop GCC turns the partial copies into calls to memcpy.
template <int W, typename F>
inline void for_chunks(int64_t begin, int64_t end, F&& body) {
  int64_t t = begin;
  for (; t + W <= end; t += W) body(t, std::integral_constant<int, W>{});
  if (t < end) body(t, static_cast<int>(end - t));
}

// The same, last chunk first (the short one, if any, leads).
template <int W, typename F>
inline void for_chunks_backward(int64_t n, F&& body) {
  const int64_t whole = n / W * W;
  if (whole < n) body(whole, static_cast<int>(n - whole));
  for (int64_t t = whole - W; t >= 0; t -= W) body(t, std::integral_constant<int, W>{});
}

// ---------------------------------------------------------------------------------- loads/stores

// n (<= W) consecutive elements as float lanes, zero-filled past n.
template <int W, typename scalar_t>
inline fvec<W> load(const scalar_t* p, int n) {
  fvec<W> v = {};
  if (n == W) {
    if constexpr (std::is_same<scalar_t, float>::value) {
      std::memcpy(&v, p, sizeof v);
      return v;
    }
    if constexpr (std::is_same<scalar_t, c10::BFloat16>::value) {
      // bf16 is the top half of a float: widen the 16-bit patterns and shift them up
      typename Lanes<W>::h h;
      std::memcpy(&h, p, sizeof h);
      return (fvec<W>)(__builtin_convertvector(h, typename Lanes<W>::u) << 16);
    }
#if defined(__F16C__)
    if constexpr (std::is_same<scalar_t, c10::Half>::value && W == 8) {
      const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      std::memcpy(&v, &f, sizeof v);
      return v;
    }
#endif
#if RBR_WIDE
    if constexpr (std::is_same<scalar_t, c10::Half>::value && W == 16) return half16_to_float(p);
#endif
  }
  for (int i = 0; i < n; ++i) v[i] = static_cast<float>(p[i]);
  return v;
}

// n (<= W) mask bytes as lanes of -1 (valid) / 0, zero-filled past n.
template <int W>
inline ivec<W> load_mask(const bool* p, int n) {
  typename Lanes<W>::b b = {};
  std::memcpy(&b, p, n == W ? W : n);  // a fixed size when full: one load, not a call
#if defined(__AVX2__)
  // GCC widens a byte vector to 32-bit lanes one element at a time: say the one instruction
  if constexpr (W == 8) {
    const __m256i wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&b)));
    return reinterpret_cast<const ivec<W>&>(wide) != 0;
  }
#endif
#if RBR_WIDE
  if constexpr (W == 16) return bytes16_to_lanes(&b);
#endif
  return __builtin_convertvector(b, ivec<W>) != 0;
}

template <int W, typename scalar_t>
inline void store(scalar_t* p, fvec<W> v, int n) {
  if (n == W) {
    if constexpr (std::is_same<scalar_t, float>::value) {
      std::memcpy(p, &v, sizeof v);
      return;
    }
    if constexpr (std::is_same<scalar_t, c10::BFloat16>::value) {
      // round to nearest even on the bit pattern, as c10::BFloat16 does; NaN stays a quiet NaN
      using u = typename Lanes<W>::u;
      const u bits = (u)v;
      const u rounded = (bits + (0x7fffu + ((bits >> 16) & 1u))) >> 16;
      const auto h = __builtin_convertvector(v != v ? u{} + 0x7fc0u : rounded, typename Lanes<W>::h);
      std::memcpy(p, &h, sizeof h);
      return;
    }
#if defined(__F16C__)
    if constexpr (std::is_same<scalar_t, c10::Half>::value && W == 8) {
      __m256 f;
      std::memcpy(&f, &v, sizeof f);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
      return;
    }
#endif
#if RBR_WIDE
    if constexpr (std::is_same<scalar_t, c10::Half>::value && W == 16) return float_to_half16(p, v);
#endif
  }
  for (int i = 0; i < n; ++i) p[i] = static_cast<scalar_t>(v[i]);
}

// --------------------------------------------------------------------------------------- arithmetic

template <int W>
inline fvec<W> splat(float x) {
  return fvec<W>{} + x;
}

// x where the lane of m is -1, 0 where it is 0. A bitwise and: GCC 12 expands `m ? x : 0` with
// a 16-lane integer m lane by lane, with a branch per lane.
template <int W>
inline fvec<W> keep(ivec<W> m, fvec<W> x) {
  return (fvec<W>)((ivec<W>)x & m);
}

template <int S, int W, int... I>
inline fvec<W> shift_in(fvec<W> x, fvec<W> fill, std::integer_sequence<int, I...>) {
#if defined(__clang__)
  return __builtin_shufflevector(x, fill, (I + S)...);
#else
  return __builtin_shuffle(x, fill, ivec<W>{(I + S)...});
#endif
}

template <int W, int... I>
inline fvec<W> lane0(fvec<W> x, std::integer_sequence<int, I...>) {
#if defined(__clang__)
  return __builtin_shufflevector(x, x, (I * 0)...);
#else
  return __builtin_shuffle(x, ivec<W>{(I * 0)...});
#endif
}

// Lane 0 of x in every lane (one broadcast, in registers).
template <int W>
inline fvec<W> lane0(fvec<W> x) {
  return lane0<W>(x, std::make_integer_sequence<int, W>{});
}

// Lane i of x moved down to lane i - S; the top S lanes take fill's lanes 0..S-1 (one permute).
template <int S, int W>
inline fvec<W> shift_in(fvec<W> x, fvec<W> fill) {
  return shift_in<S, W>(x, fill, std::make_integer_sequence<int, W>{});
}

// -1 in lanes holding NaN or +-inf.
template <int W>
inline ivec<W> nonfinite(fvec<W> x) {
  const fvec<W> d = x - x;  // NaN for NaN and +-inf, 0 otherwise; a float compare is 8-wide on plain AVX
  return d != d;
}

// exp(x) for x <= 0 (arguments are shifted by a running max), within 2 ulp.
// Below -87.3 the result is 0, so -inf logits contribute exactly nothing.
template <int W>
inline fvec<W> exp_nonpos(fvec<W> x) {
  using f = fvec<W>;
  const f xc = x < -87.3f ? f{} - 87.3f : x;
  const f magic = f{} + 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const f n = (xc * 1.44269504088896341f + magic) - magic;
  f r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  // degree-5 fit of exp on [-ln2/2, ln2/2] (relative error 1.6e-7 evaluated in float32)
  f p = 8.31253268e-3f * r + 4.18901108e-2f;
  p = p * r + 1.66671142e-1f;
  p = p * r + 4.99992311e-1f;
  p = p * r * r + r + 1.0f;
  const ivec<W> bits = (__builtin_convertvector(n, ivec<W>) + 127) << 23;
  const f e = p * (f)bits;
  return x < -87.3f ? f{} : e;
}

template <int W>
inline float hmax(fvec<W> x) {
  float m = x[0];
  for (int i = 1; i < W; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

template <int W>
inline float hsum(fvec<W> x) {
  float s = 0.f;
  for (int i = 0; i < W; ++i) s += x[i];
  return s;
}

// The per-token dtypes the Python layer admits (float64 is rejected there).
#define RBR_DISPATCH(T, NAME, ...)                          \
  AT_DISPATCH_SWITCH(T, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                                  AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                                  AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

}  // namespace rbr_fast
