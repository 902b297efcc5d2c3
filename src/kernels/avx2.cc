// AVX2 + FMA backend ("avx2"). Compiled with -mavx2 -mfma (CMakeLists.txt); only called after
// dispatch.cc checked the CPU.
//
// int8 GEMM over the packed layout (n_pad/16, k/4, 16, 4): one 64-byte group holds 4 consecutive
// k of 16 output rows, i.e. two ymm of (8 rows x 4 k). For each token the 4 activation bytes of
// that k group are broadcast to every 32-bit lane, and
//   maddubs(abs(x), sign(w, x))  -> int16 pairs (|x| * sign(x) * w; |.| <= 2 * 127 * 127 < 2^15)
//   madd(., ones)                -> int32 per row (the 4-k dot product), added to the accumulator.
// Since q and xq are in [-127, 127] nothing saturates: the int32 sum is exact.
// A register tile of up to 4 tokens x 16 rows reuses every weight load 4 times, and a 16-row
// block (k * 16 bytes) stays in L1/L2 while all m tokens pass over it, so prefill streams the
// weights from DRAM once.
#include <immintrin.h>

#include <cstring>

#include "kernels/backends.h"
#include "kernels/kernels.h"

namespace selfcond::kernels {
namespace {

inline float HMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

void QuantizeRowsAvx2(const float* x, int m, int k, int8_t* xq, float* xscale) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  for (int i = 0; i < m; ++i) {
    const float* row = x + static_cast<size_t>(i) * k;
    int8_t* out = xq + static_cast<size_t>(i) * k;
    // max_ps(a, b) returns b when either is NaN: with the running max as b, NaN is ignored,
    // exactly like AbsMaxStep. max is exact, so the order of the reduction does not matter.
    __m256 vmax = _mm256_setzero_ps();
    int c = 0;
    for (; c + 8 <= k; c += 8) {
      const __m256 a = _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(row + c));
      vmax = _mm256_max_ps(a, vmax);
    }
    float amax = HMax(vmax);
    for (; c < k; ++c) amax = AbsMaxStep(amax, row[c]);
    const float scale = ScaleFromAbsMax(amax);
    xscale[i] = scale;
    if (scale == 0.0f) {
      std::memset(out, 0, k);
      continue;
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256 lo = _mm256_set1_ps(-127.0f);
    const __m256 hi = _mm256_set1_ps(127.0f);
    c = 0;
    for (; c + 8 <= k; c += 8) {
      __m256 v = _mm256_div_ps(_mm256_loadu_ps(row + c), vscale);
      v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> 0
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      const __m256i q32 = _mm256_cvtps_epi32(v);  // MXCSR default: round half to even
      const __m128i q16 =
          _mm_packs_epi32(_mm256_castsi256_si128(q32), _mm256_extracti128_si256(q32, 1));
      const __m128i q8 = _mm_packs_epi16(q16, q16);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + c), q8);
    }
    for (; c < k; ++c) out[c] = QuantizeOne(row[c], scale);
  }
}

// Stores 16 results of one row block for one token: y[r0 + j] = acc_j * (xs * ws_j) + b_j for
// the rows of [lo, hi) (relative to r0; the full block is [0, 16)).
inline void StoreBlock(__m256i acc0, __m256i acc1, float xs, const float* ws, const float* bias,
                       float* y, int lo, int hi) {
  const __m256 vxs = _mm256_set1_ps(xs);
  __m256 y0 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc0), _mm256_mul_ps(vxs, _mm256_loadu_ps(ws)));
  __m256 y1 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc1), _mm256_mul_ps(vxs, _mm256_loadu_ps(ws + 8)));
  if (lo == 0 && hi == kRowBlock) {
    if (bias) {
      y0 = _mm256_add_ps(y0, _mm256_loadu_ps(bias));
      y1 = _mm256_add_ps(y1, _mm256_loadu_ps(bias + 8));
    }
    _mm256_storeu_ps(y, y0);
    _mm256_storeu_ps(y + 8, y1);
    return;
  }
  // A partial block (the ragged end of n, or a range not aligned to 16): bias and y only have
  // [lo, hi) valid, so go through a buffer.
  alignas(32) float tmp[kRowBlock];
  _mm256_store_ps(tmp, y0);
  _mm256_store_ps(tmp + 8, y1);
  for (int j = lo; j < hi; ++j) y[j] = bias ? tmp[j] + bias[j] : tmp[j];
}

// One 16-row block (weights wb, (k/4, 16, 4)) times MT tokens.
template <int MT>
inline void BlockI8(const int8_t* wb, int kg, const int8_t* xq, size_t ldx, const float* xscale,
                    const float* ws, const float* bias, float* y, int ldy, int lo, int hi) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc0[MT], acc1[MT];
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) acc0[t] = acc1[t] = _mm256_setzero_si256();
  for (int g = 0; g < kg; ++g) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + g * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + g * 64 + 32));
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      int32_t x4;
      std::memcpy(&x4, xq + t * ldx + g * 4, 4);
      const __m256i xv = _mm256_set1_epi32(x4);
      const __m256i xa = _mm256_abs_epi8(xv);
      const __m256i p0 = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(w0, xv));
      const __m256i p1 = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(w1, xv));
      acc0[t] = _mm256_add_epi32(acc0[t], _mm256_madd_epi16(p0, ones));
      acc1[t] = _mm256_add_epi32(acc1[t], _mm256_madd_epi16(p1, ones));
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
    StoreBlock(acc0[t], acc1[t], xscale[t], ws, bias, y + static_cast<size_t>(t) * ldy, lo, hi);
  }
}

// Decode (one token): two independent k halves per block would not help the store path; instead
// unroll over k groups with two accumulator pairs so the add chains overlap.
inline void BlockI8M1(const int8_t* wb, int kg, const int8_t* xq, float xs, const float* ws,
                      const float* bias, float* y, int lo, int hi) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;
  int g = 0;
  for (; g + 2 <= kg; g += 2) {
    const __m256i* wp = reinterpret_cast<const __m256i*>(wb + g * 64);
    int32_t x4[2];
    std::memcpy(x4, xq + g * 4, 8);
    const __m256i xv0 = _mm256_set1_epi32(x4[0]);
    const __m256i xv1 = _mm256_set1_epi32(x4[1]);
    const __m256i xa0 = _mm256_abs_epi8(xv0);
    const __m256i xa1 = _mm256_abs_epi8(xv1);
    const __m256i p0 = _mm256_maddubs_epi16(xa0, _mm256_sign_epi8(_mm256_loadu_si256(wp), xv0));
    const __m256i p1 = _mm256_maddubs_epi16(xa0, _mm256_sign_epi8(_mm256_loadu_si256(wp + 1), xv0));
    const __m256i p2 = _mm256_maddubs_epi16(xa1, _mm256_sign_epi8(_mm256_loadu_si256(wp + 2), xv1));
    const __m256i p3 = _mm256_maddubs_epi16(xa1, _mm256_sign_epi8(_mm256_loadu_si256(wp + 3), xv1));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p0, ones));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p1, ones));
    b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(p2, ones));
    b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(p3, ones));
  }
  if (g < kg) {
    const __m256i* wp = reinterpret_cast<const __m256i*>(wb + g * 64);
    int32_t x4;
    std::memcpy(&x4, xq + g * 4, 4);
    const __m256i xv = _mm256_set1_epi32(x4);
    const __m256i xa = _mm256_abs_epi8(xv);
    const __m256i p0 = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(_mm256_loadu_si256(wp), xv));
    const __m256i p1 = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(_mm256_loadu_si256(wp + 1), xv));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p0, ones));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p1, ones));
  }
  StoreBlock(_mm256_add_epi32(a0, b0), _mm256_add_epi32(a1, b1), xs, ws, bias, y, lo, hi);
}

void GemmI8Avx2(const PackedI8& w, const int8_t* xq, const float* xscale, int m, const float* bias,
                float* y, int ldy, int n_begin, int n_end) {
  if (m <= 0 || n_begin >= n_end) return;
  const int k = w.k;
  const int kg = k / kKGroup;
  const size_t ldx = static_cast<size_t>(k);
  for (int b = n_begin / kRowBlock; b * kRowBlock < n_end; ++b) {
    const int r0 = b * kRowBlock;
    const int lo = n_begin > r0 ? n_begin - r0 : 0;
    const int hi = n_end < r0 + kRowBlock ? n_end - r0 : kRowBlock;
    const int8_t* wb = w.q + static_cast<size_t>(b) * kg * 64;
    const float* ws = w.scale + r0;
    const float* bb = bias ? bias + r0 : nullptr;
    float* yb = y + r0;
    if (m == 1) {
      BlockI8M1(wb, kg, xq, xscale[0], ws, bb, yb, lo, hi);
      continue;
    }
    int i = 0;
    for (; i + 4 <= m; i += 4) {
      BlockI8<4>(wb, kg, xq + i * ldx, ldx, xscale + i, ws, bb, yb + static_cast<size_t>(i) * ldy,
                 ldy, lo, hi);
    }
    const int rest = m - i;
    const int8_t* xr = xq + i * ldx;
    float* yr = yb + static_cast<size_t>(i) * ldy;
    if (rest == 3) BlockI8<3>(wb, kg, xr, ldx, xscale + i, ws, bb, yr, ldy, lo, hi);
    if (rest == 2) BlockI8<2>(wb, kg, xr, ldx, xscale + i, ws, bb, yr, ldy, lo, hi);
    if (rest == 1) BlockI8<1>(wb, kg, xr, ldx, xscale + i, ws, bb, yr, ldy, lo, hi);
  }
}

// ---- f32 ----------------------------------------------------------------------------------

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// Horizontal sums of 4 vectors at once -> (sum a, sum b, sum c, sum d).
inline __m128 HSum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 ab = _mm256_hadd_ps(a, b);
  const __m256 cd = _mm256_hadd_ps(c, d);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

inline __m256i TailMask(int rem) {  // rem in [1, 7]: the first rem lanes set
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), idx);
}

// 4 weight rows x MT tokens: 4*MT accumulators, each weight vector reused MT times.
template <int MT>
inline void RowsF32x4(const float* w0, int k, const float* x, size_t ldx, const float* bias,
                      float* y, int ldy) {
  __m256 acc[MT][4];
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t)
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) acc[t][j] = _mm256_setzero_ps();
  const float* wr[4] = {w0, w0 + k, w0 + 2 * static_cast<size_t>(k),
                        w0 + 3 * static_cast<size_t>(k)};
  int c = 0;
  for (; c + 8 <= k; c += 8) {
    __m256 xv[MT];
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) xv[t] = _mm256_loadu_ps(x + t * ldx + c);
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) {
      const __m256 wv = _mm256_loadu_ps(wr[j] + c);
#pragma GCC unroll 8
      for (int t = 0; t < MT; ++t) acc[t][j] = _mm256_fmadd_ps(wv, xv[t], acc[t][j]);
    }
  }
  if (c < k) {
    const __m256i mask = TailMask(k - c);
    __m256 xv[MT];
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) xv[t] = _mm256_maskload_ps(x + t * ldx + c, mask);
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) {
      const __m256 wv = _mm256_maskload_ps(wr[j] + c, mask);
#pragma GCC unroll 8
      for (int t = 0; t < MT; ++t) acc[t][j] = _mm256_fmadd_ps(wv, xv[t], acc[t][j]);
    }
  }
  const __m128 vb = bias ? _mm_loadu_ps(bias) : _mm_setzero_ps();
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
    const __m128 s = HSum4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
    _mm_storeu_ps(y + static_cast<size_t>(t) * ldy, _mm_add_ps(s, vb));
  }
}

// One weight row x one token (the ragged rows).
inline float DotF32(const float* a, const float* b, int k) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  int c = 0;
  for (; c + 16 <= k; c += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), acc1);
  }
  for (; c + 8 <= k; c += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc0);
  }
  if (c < k) {
    const __m256i mask = TailMask(k - c);
    acc1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + c, mask), _mm256_maskload_ps(b + c, mask), acc1);
  }
  return HSum(_mm256_add_ps(acc0, acc1));
}

void GemmF32Avx2(const MatF32& w, const float* x, int m, const float* bias, float* y, int ldy,
                 int n_begin, int n_end) {
  if (m <= 0 || n_begin >= n_end) return;
  const int k = w.k;
  const size_t ldx = static_cast<size_t>(k);
  int r = n_begin;
  for (; r + 4 <= n_end; r += 4) {
    const float* w0 = w.w + static_cast<size_t>(r) * k;
    const float* b = bias ? bias + r : nullptr;
    int i = 0;
    for (; i + 3 <= m; i += 3)
      RowsF32x4<3>(w0, k, x + i * ldx, ldx, b, y + i * static_cast<size_t>(ldy) + r, ldy);
    if (m - i == 2)
      RowsF32x4<2>(w0, k, x + i * ldx, ldx, b, y + i * static_cast<size_t>(ldy) + r, ldy);
    if (m - i == 1)
      RowsF32x4<1>(w0, k, x + i * ldx, ldx, b, y + i * static_cast<size_t>(ldy) + r, ldy);
  }
  for (; r < n_end; ++r) {
    const float* wr = w.w + static_cast<size_t>(r) * k;
    for (int i = 0; i < m; ++i) {
      const float v = DotF32(wr, x + i * ldx, k);
      y[i * static_cast<size_t>(ldy) + r] = bias ? v + bias[r] : v;
    }
  }
}

constexpr Backend kAvx2 = {"avx2", QuantizeRowsAvx2, GemmI8Avx2, GemmF32Avx2};
}  // namespace

const Backend* Avx2Backend() { return &kAvx2; }

}  // namespace selfcond::kernels
