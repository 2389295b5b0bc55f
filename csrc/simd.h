// Small SIMD toolkit shared by the CPU kernels: 8-lane float vectors (GCC/Clang vector extensions,
// lowered to whatever the -march target has), loads/stores that widen any admitted dtype to float,
// a vectorised exp, and the dtype dispatch. Everything computes in float32.
#pragma once
#include <ATen/Dispatch.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__SSE4_1__) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace rbr_fast {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint8_t u8x8 __attribute__((vector_size(8)));

#if defined(__clang__)
#define RBR_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define RBR_SHUF(a, b, ...) __builtin_shuffle(a, b, i32x8{__VA_ARGS__})
#endif

// n (<= 8) consecutive elements as float lanes, zero-filled past n.
template <typename scalar_t>
inline f32x8 load8(const scalar_t* p, int n) {
  f32x8 v = {};
  if (n == 8) {
    if constexpr (std::is_same<scalar_t, float>::value) {
      std::memcpy(&v, p, sizeof v);
      return v;
    }
#if defined(__AVX2__)
    if constexpr (std::is_same<scalar_t, c10::BFloat16>::value) {
      // bf16 is the top half of a float: widen the 16-bit patterns and shift them up
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return (f32x8)_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    }
#endif
#if defined(__F16C__)
    if constexpr (std::is_same<scalar_t, c10::Half>::value) {
      const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      std::memcpy(&v, &f, sizeof v);
      return v;
    }
#endif
  }
  for (int i = 0; i < n; ++i) v[i] = static_cast<float>(p[i]);
  return v;
}

// n (<= 8) mask bytes as lanes of -1 (valid) / 0, zero-filled past n.
inline i32x8 load_mask8(const bool* p, int n) {
  int64_t bits = 0;
  if (n == 8)
    std::memcpy(&bits, p, 8);  // fixed size: one load, not a call
  else
    std::memcpy(&bits, p, n);
#if defined(__AVX2__)
  const __m256i wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bits));
  return reinterpret_cast<const i32x8&>(wide) != 0;
#elif defined(__SSE4_1__)
  // without AVX2 the generic widening below is done byte by byte; two 4-lane widenings are not
  const __m128i b = _mm_cvtsi64_si128(bits), zero = _mm_setzero_si128();
  const __m128i lo = _mm_cmpgt_epi32(_mm_cvtepu8_epi32(b), zero);
  const __m128i hi = _mm_cmpgt_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(b, 4)), zero);
  i32x8 m;
  std::memcpy(&m, &lo, 16), std::memcpy(reinterpret_cast<char*>(&m) + 16, &hi, 16);
  return m;
#else
  u8x8 b;
  std::memcpy(&b, &bits, 8);
  return -__builtin_convertvector(b, i32x8);
#endif
}

template <typename scalar_t>
inline void store8(scalar_t* p, f32x8 v, int n) {
  if (n == 8) {
    if constexpr (std::is_same<scalar_t, float>::value) {
      std::memcpy(p, &v, sizeof v);
      return;
    }
#if defined(__AVX2__)
    if constexpr (std::is_same<scalar_t, c10::BFloat16>::value) {
      // round to nearest even on the bit pattern, as c10::BFloat16 does; NaN stays a quiet NaN
      const u32x8 bits = (u32x8)v;
      const u32x8 rounded = (bits + (0x7fffu + ((bits >> 16) & 1u))) >> 16;
      const __m256i out = (__m256i)(v != v ? u32x8{} + 0x7fc0u : rounded);
      const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(out), _mm256_extracti128_si256(out, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
      return;
    }
#endif
#if defined(__F16C__)
    if constexpr (std::is_same<scalar_t, c10::Half>::value) {
      __m256 f;
      std::memcpy(&f, &v, sizeof f);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
      return;
    }
#endif
  }
  for (int i = 0; i < n; ++i) p[i] = static_cast<scalar_t>(v[i]);
}

// -1 in lanes holding NaN or +-inf.
inline i32x8 nonfinite8(f32x8 x) {
  const f32x8 d = x - x;  // NaN for NaN and +-inf, 0 otherwise; a float compare is 8-wide on plain AVX
  return d != d;
}

// exp(x) for x <= 0 (arguments are shifted by a running max), within 2 ulp.
// Below -87.3 the result is 0, so -inf logits contribute exactly nothing.
inline f32x8 exp8_nonpos(f32x8 x) {
  const f32x8 xc = x < -87.3f ? f32x8{} - 87.3f : x;
  const f32x8 magic = f32x8{} + 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const f32x8 n = (xc * 1.44269504088896341f + magic) - magic;
  f32x8 r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  // degree-5 fit of exp on [-ln2/2, ln2/2] (relative error 1.6e-7 evaluated in float32)
  f32x8 p = 8.31253268e-3f * r + 4.18901108e-2f;
  p = p * r + 1.66671142e-1f;
  p = p * r + 4.99992311e-1f;
  p = p * r * r + r + 1.0f;
  const i32x8 bits = (__builtin_convertvector(n, i32x8) + 127) << 23;
  const f32x8 e = p * reinterpret_cast<const f32x8&>(bits);
  return x < -87.3f ? f32x8{} : e;
}

inline float hmax8(f32x8 x) {
  float m = x[0];
  for (int i = 1; i < 8; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

inline float hsum8(f32x8 x) {
  float s = 0.f;
  for (int i = 0; i < 8; ++i) s += x[i];
  return s;
}

// The per-token dtypes the Python layer admits (float64 is rejected there).
#define RBR_DISPATCH(T, NAME, ...)                          \
  AT_DISPATCH_SWITCH(T, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                                  AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                                  AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

}  // namespace rbr_fast
