// The float loops of the forward passes (model layer): dot products, norms, activations and the
// float16 KV cache's conversions. Small loops written so the compiler vectorizes them
// (independent partial sums instead of one serial reduction; branch-free activations). GCC
// compiles each twice, for x86-64-v3 (AVX2+FMA) and baseline, and picks at load time
// (target_clones); elsewhere they are plain code. Built with -ffp-contract=off: native and WASM
// then compute bit-identical activations.
#include "model/float_ops.h"

#include <cmath>
#include <cstring>

#if defined(__x86_64__) && !defined(SELFCOND_WASM)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace selfcond::ops {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SELFCOND_WASM)
#define SC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SC_MULTIVERSION
#endif

namespace {

// Dot's arithmetic, inlined into each caller (and each target clone of it).
inline __attribute__((always_inline)) float DotBody(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  }
  float s = 0;
  for (; j < n; ++j) s += a[j] * b[j];
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// y(kN) += a[t] x_t for t in order, y held in a local array across the rows (every model
// selfcond runs has 64-float heads).
template <int kN>
inline __attribute__((always_inline)) void AxpyRowsFixed(const float* a, const float* x, size_t ldx,
                                                         int rows, float* y) {
  float acc[kN];
  for (int j = 0; j < kN; ++j) acc[j] = y[j];
  for (int t = 0; t < rows; ++t) {
    const float* xt = x + static_cast<size_t>(t) * ldx;
    const float at = a[t];
    for (int j = 0; j < kN; ++j) acc[j] += at * xt[j];
  }
  for (int j = 0; j < kN; ++j) y[j] = acc[j];
}

}  // namespace

SC_MULTIVERSION float Dot(const float* a, const float* b, int n) { return DotBody(a, b, n); }

SC_MULTIVERSION void Axpy(float a, const float* x, float* y, int n) {
  for (int j = 0; j < n; ++j) y[j] += a * x[j];
}

SC_MULTIVERSION void DotRows(const float* q, const float* k, size_t ldk, int rows, int n,
                             float scale, float* out) {
  if (n == 64) {  // every model's head size: a constant trip count the compiler unrolls
    for (int t = 0; t < rows; ++t) {
      out[t] = DotBody(q, k + static_cast<size_t>(t) * ldk, 64) * scale;
    }
    return;
  }
  for (int t = 0; t < rows; ++t) out[t] = DotBody(q, k + static_cast<size_t>(t) * ldk, n) * scale;
}

SC_MULTIVERSION void AxpyRows(const float* a, const float* x, size_t ldx, int rows, float* y,
                              int n) {
  int j = 0;
  for (; j + 64 <= n; j += 64) AxpyRowsFixed<64>(a, x + j, ldx, rows, y + j);
  for (; j < n; ++j) {
    float s = y[j];
    for (int t = 0; t < rows; ++t) s += a[t] * x[static_cast<size_t>(t) * ldx + j];
    y[j] = s;
  }
}

namespace {

// IEEE half <-> float for the fp16 KV cache. To half: round to nearest even, saturating at the
// largest finite half (65504) so no key or value becomes infinite. From half: shift the
// exponent and mantissa into place and rescale by 2^112, exact for normal and subnormal halves
// (the cache never holds inf or NaN) and branch-free, so the loops below vectorize.
inline uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x477fe000u) return static_cast<uint16_t>(sign | 0x7bffu);  // >= 65520: saturate
  if (x < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    float a;
    std::memcpy(&a, &x, 4);
    // Adding 0.5 aligns the value's bits so the FPU rounds it to a multiple of 2^-24.
    const float r = a + 0.5f;
    uint32_t rb;
    std::memcpy(&rb, &r, 4);
    return static_cast<uint16_t>(sign | (rb - 0x3f000000u));
  }
  const uint32_t mant_odd = (x >> 13) & 1u;
  x += 0xc8000fffu + mant_odd;  // rebias the exponent (-112 << 23) and round to nearest even
  return static_cast<uint16_t>(sign | (x >> 13));
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t bits = (static_cast<uint32_t>(h & 0x7fffu) << 13);
  float f;
  std::memcpy(&f, &bits, 4);
  f *= 5.192296858534828e+33f;  // 2^112
  uint32_t out;
  std::memcpy(&out, &f, 4);
  out |= static_cast<uint32_t>(h & 0x8000u) << 16;  // the sign bit, branch-free
  std::memcpy(&f, &out, 4);
  return f;
}

}  // namespace

void ToHalf(const float* x, uint16_t* y, int n) {
  for (int j = 0; j < n; ++j) y[j] = FloatToHalf(x[j]);
}

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SELFCOND_WASM)
// With F16C the conversion is one instruction per 8 values (GCC vectorizes the portable loops
// below only 4 wide). Same 8 partial sums, same final order, no FMA: the same arithmetic.
__attribute__((target("avx2,f16c"))) float DotHalfF16c(const float* a, const uint16_t* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 bh = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j)));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + j), bh));
  }
  float s = 0;
  for (; j < n; ++j) s += a[j] * HalfToFloat(b[j]);
  alignas(32) float l[8];
  _mm256_store_ps(l, acc);
  return s + ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

__attribute__((target("avx2,f16c"))) void AxpyHalfF16c(float a, const uint16_t* x, float* y,
                                                       int n) {
  const __m256 va = _mm256_set1_ps(a);
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 xh = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + j)));
    _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_loadu_ps(y + j), _mm256_mul_ps(va, xh)));
  }
  for (; j < n; ++j) y[j] += a * HalfToFloat(x[j]);
}

bool HasF16c() {
  // CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports has no "f16c").
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
  }();
  return ok;
}
#endif

SC_MULTIVERSION float DotHalfPortable(const float* a, const uint16_t* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * HalfToFloat(b[j + l]);
  }
  float s = 0;
  for (; j < n; ++j) s += a[j] * HalfToFloat(b[j]);
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

SC_MULTIVERSION void AxpyHalfPortable(float a, const uint16_t* x, float* y, int n) {
  for (int j = 0; j < n; ++j) y[j] += a * HalfToFloat(x[j]);
}

}  // namespace

float DotHalf(const float* a, const uint16_t* b, int n) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SELFCOND_WASM)
  if (HasF16c()) return DotHalfF16c(a, b, n);
#endif
  return DotHalfPortable(a, b, n);
}

void AxpyHalf(float a, const uint16_t* x, float* y, int n) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SELFCOND_WASM)
  if (HasF16c()) return AxpyHalfF16c(a, x, y, n);
#endif
  AxpyHalfPortable(a, x, y, n);
}

SC_MULTIVERSION void LayerNorm(const float* x, const float* w, const float* b, int d, float eps,
                               float* out) {
  float mean = 0;
  for (int i = 0; i < d; ++i) mean += x[i];
  mean /= d;
  float var = 0;
  for (int i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= d;
  const float inv = 1.0f / std::sqrt(var + eps);
  for (int i = 0; i < d; ++i) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

namespace {

// tanh as Eigen's rational approximation (|error| < 1e-6 on [-9, 9], exactly +-1 beyond):
// std::tanh was 5% of decode time and does not vectorize.
inline float FastTanh(float x) {
  const float c = 7.90531110763549805f;
  x = x < c ? x : c;  // written as selects (not std::min/max) so the loop vectorizes
  x = x > -c ? x : -c;
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

}  // namespace

// GPT-2's "gelu_new" (tanh approximation), as in Hugging Face, in place over n values.
SC_MULTIVERSION void GeluInPlace(float* x, size_t n) {
  constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + FastTanh(kC * (v + 0.044715f * v * v * v)));
  }
}

SC_MULTIVERSION void AddInPlace(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

SC_MULTIVERSION void RmsNorm(const float* x, const float* w, int d, float eps, float* out) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += x[j + l] * x[j + l];
  }
  float ss = 0;
  for (; j < d; ++j) ss += x[j] * x[j];
  ss += ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
  for (int i = 0; i < d; ++i) out[i] = w[i] * (x[i] * inv);
}

SC_MULTIVERSION void SiluMul(const float* gate, const float* up, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace selfcond::ops
