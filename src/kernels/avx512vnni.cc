// AVX-512 VNNI backend ("avx512vnni"). Compiled with -mavx512{f,bw,vl,vnni} -mavx2 -mfma
// (CMakeLists.txt); only called after dispatch.cc checked the CPU.
//
// One zmm is exactly one 64-byte group of the packed layout: 16 output rows x 4 k. vpdpbusd
// multiplies u8 by s8, so the activations enter as u8 = xq + 128 (xq ^ 0x80) and the result is
// corrected with 128 * row_sum[r]:  sum (xq + 128) * q  -  128 * sum q  =  sum xq * q.
// vpdpbusd (not the saturating vpdpbusds) wraps modulo 2^32, and the true sum fits int32 for
// k < 2^17 (127 * 127 * k < 2^31), so the wrapped difference is exactly the true sum even where
// the biased intermediate (up to 255 * 127 * k) would not fit.
// quantize_rows reuses the AVX2 code; gemm_f32 is an AVX-512 FMA register tile.
// The register tiles rely on the fixed-trip loops being fully unrolled (arrays of zmm held in
// registers); `#pragma GCC unroll` (also honoured by clang) makes that independent of -O2/-O3.
#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "kernels/backends.h"
#include "kernels/kernels.h"

namespace selfcond::kernels {
namespace {

constexpr int kGroupBytes = kRowBlock * kKGroup;  // 64
// GCC 12's plain _mm512_slli_epi32 / _mm512_cvtepi32_ps expand through _mm512_undefined_*()
// and trip -Wuninitialized (GCC bug 105593); the all-lanes maskz forms are the same instruction.
constexpr __mmask16 kAll = 0xFFFF;

// The biased (u8) activations of one call, converted once per call and thread (a few hundred
// KiB at most: see kMaxScratchBytes) so the inner loop can broadcast them straight from memory.
constexpr size_t kMaxScratchBytes = size_t{1} << 20;

void ToBiasedU8(const int8_t* xq, size_t count, uint8_t* out) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  size_t i = 0;
  for (; i + 64 <= count; i += 64) {
    _mm512_storeu_si512(out + i, _mm512_xor_si512(_mm512_loadu_si512(xq + i), bias));
  }
  for (; i < count; ++i) out[i] = static_cast<uint8_t>(xq[i] ^ 0x80);
}

// A per-thread growable buffer. Plain malloc instead of std::vector: see backends.h on why this
// file instantiates no std templates.
struct Scratch {
  uint8_t* data = nullptr;
  size_t size = 0;
  ~Scratch() { std::free(data); }
  uint8_t* Get(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      data = static_cast<uint8_t*>(std::malloc(bytes));
      size = data ? bytes : 0;
    }
    return data;
  }
};

inline __m512i Broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// sum over k of q for the 16 rows of one block (used when the caller has no row_sum).
inline __m512i BlockRowSum(const int8_t* wb, int kg) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i s = _mm512_setzero_si512();
  for (int g = 0; g < kg; ++g) {
    s = _mm512_dpbusd_epi32(s, ones, _mm512_loadu_si512(wb + static_cast<size_t>(g) * kGroupBytes));
  }
  return s;
}

inline __m512i RowSumTimes128(const PackedI8& w, int b, const int8_t* wb, int kg) {
  const __m512i rs =
      w.row_sum ? _mm512_loadu_si512(w.row_sum + b * kRowBlock) : BlockRowSum(wb, kg);
  return _mm512_maskz_slli_epi32(kAll, rs, 7);
}

// y[lo:hi) = (acc - 128 * row_sum) * (xs * ws) + bias over one 16-row block of one token.
inline void StoreBlock(__m512i acc, __m512i rs128, float xs, const float* ws, const float* bias,
                       float* y, __mmask16 mask) {
  const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(xs), _mm512_loadu_ps(ws));
  __m512 v = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(kAll, _mm512_sub_epi32(acc, rs128)), scale);
  if (mask == kAll) {
    if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias));
    _mm512_storeu_ps(y, v);
  } else {
    // Masked loads/stores never touch the lanes outside [lo, hi) (fault suppression), so a
    // ragged end of y / bias is safe.
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias));
    _mm512_mask_storeu_ps(y, mask, v);
  }
}

inline __mmask16 RangeMask(int lo, int hi) {
  return static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

// Decode: one token, one block, four accumulators over interleaved k groups so the vpdpbusd
// latency chains overlap.
inline __m512i DotBlockM1(const int8_t* wb, int kg, const uint8_t* xu) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  int g = 0;
  for (; g + 4 <= kg; g += 4) {
    const int8_t* p = wb + static_cast<size_t>(g) * kGroupBytes;
    a0 = _mm512_dpbusd_epi32(a0, Broadcast4(xu + g * 4), _mm512_loadu_si512(p));
    a1 = _mm512_dpbusd_epi32(a1, Broadcast4(xu + g * 4 + 4), _mm512_loadu_si512(p + 64));
    a2 = _mm512_dpbusd_epi32(a2, Broadcast4(xu + g * 4 + 8), _mm512_loadu_si512(p + 128));
    a3 = _mm512_dpbusd_epi32(a3, Broadcast4(xu + g * 4 + 12), _mm512_loadu_si512(p + 192));
  }
  for (; g < kg; ++g) {
    a0 = _mm512_dpbusd_epi32(a0, Broadcast4(xu + g * 4),
                             _mm512_loadu_si512(wb + static_cast<size_t>(g) * kGroupBytes));
  }
  return _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
}

// Prefill register tile: NB consecutive blocks (16 * NB rows) x MT tokens; every weight zmm is
// used MT times and every broadcast NB times.
template <int NB, int MT>
inline void Tile(const PackedI8& w, int b0, int kg, const uint8_t* xu, size_t ldx,
                 const float* xscale, const float* bias, float* y, int ldy, int n_begin,
                 int n_end) {
  __m512i acc[NB][MT];
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) acc[j][t] = _mm512_setzero_si512();
  const int8_t* wb = w.q + static_cast<size_t>(b0) * kg * kGroupBytes;
  const size_t bstride = static_cast<size_t>(kg) * kGroupBytes;
  for (int g = 0; g < kg; ++g) {
    __m512i wv[NB];
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      wv[j] = _mm512_loadu_si512(wb + j * bstride + static_cast<size_t>(g) * kGroupBytes);
    }
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      const __m512i xv = Broadcast4(xu + t * ldx + g * 4);
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) acc[j][t] = _mm512_dpbusd_epi32(acc[j][t], xv, wv[j]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) {
    const int b = b0 + j;
    const int r0 = b * kRowBlock;
    const int lo = n_begin > r0 ? n_begin - r0 : 0;
    const int hi = n_end < r0 + kRowBlock ? n_end - r0 : kRowBlock;
    const __mmask16 mask = RangeMask(lo, hi);
    const __m512i rs128 = RowSumTimes128(w, b, wb + j * bstride, kg);
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) {
      StoreBlock(acc[j][t], rs128, xscale[t], w.scale + r0, bias ? bias + r0 : nullptr,
                 y + static_cast<size_t>(t) * ldy + r0, mask);
    }
  }
}

template <int NB>
void TileRows(const PackedI8& w, int b0, int kg, const uint8_t* xu, size_t ldx, const float* xscale,
              int m, const float* bias, float* y, int ldy, int n_begin, int n_end) {
  constexpr int kMT = 8;
  int i = 0;
  for (; i + kMT <= m; i += kMT) {
    Tile<NB, kMT>(w, b0, kg, xu + i * ldx, ldx, xscale + i, bias, y + i * static_cast<size_t>(ldy),
                  ldy, n_begin, n_end);
  }
  const uint8_t* xr = xu + i * ldx;
  float* yr = y + i * static_cast<size_t>(ldy);
  switch (m - i) {
#define SELFCOND_TILE_CASE(T)                                                   \
  case T:                                                                       \
    Tile<NB, T>(w, b0, kg, xr, ldx, xscale + i, bias, yr, ldy, n_begin, n_end); \
    break;
    SELFCOND_TILE_CASE(1)
    SELFCOND_TILE_CASE(2)
    SELFCOND_TILE_CASE(3)
    SELFCOND_TILE_CASE(4)
    SELFCOND_TILE_CASE(5)
    SELFCOND_TILE_CASE(6)
    SELFCOND_TILE_CASE(7)
#undef SELFCOND_TILE_CASE
    default:
      break;
  }
}

void GemmI8Vnni(const PackedI8& w, const int8_t* xq, const float* xscale, int m, const float* bias,
                float* y, int ldy, int n_begin, int n_end) {
  if (m <= 0 || n_begin >= n_end) return;
  const int k = w.k;
  const int kg = k / kKGroup;
  const size_t ldx = static_cast<size_t>(k);
  const int b_begin = n_begin / kRowBlock;
  const int b_end = (n_end + kRowBlock - 1) / kRowBlock;

  // Token chunks bound the scratch; the weights are re-read once per chunk.
  const size_t fit = ldx == 0 ? 8 : kMaxScratchBytes / ldx;
  const int chunk = fit < 8 ? 8 : (fit > static_cast<size_t>(m) ? m : static_cast<int>(fit));
  thread_local Scratch scratch;
  for (int i0 = 0; i0 < m; i0 += chunk) {
    const int mc = m - i0 < chunk ? m - i0 : chunk;
    const size_t bytes = static_cast<size_t>(mc) * ldx;
    uint8_t* xu = scratch.Get(bytes);
    if (xu == nullptr) {  // out of memory: the AVX2 kernel needs no scratch
      Avx2Backend()->gemm_i8(w, xq + i0 * ldx, xscale + i0, m - i0, bias,
                             y + static_cast<size_t>(i0) * ldy, ldy, n_begin, n_end);
      return;
    }
    ToBiasedU8(xq + i0 * ldx, bytes, xu);
    const float* xs = xscale + i0;
    float* yc = y + static_cast<size_t>(i0) * ldy;

    if (mc == 1) {
      for (int b = b_begin; b < b_end; ++b) {
        const int r0 = b * kRowBlock;
        const int8_t* wb = w.q + static_cast<size_t>(b) * kg * kGroupBytes;
        const int lo = n_begin > r0 ? n_begin - r0 : 0;
        const int hi = n_end < r0 + kRowBlock ? n_end - r0 : kRowBlock;
        StoreBlock(DotBlockM1(wb, kg, xu), RowSumTimes128(w, b, wb, kg), xs[0], w.scale + r0,
                   bias ? bias + r0 : nullptr, yc + r0, RangeMask(lo, hi));
      }
      continue;
    }
    int b = b_begin;
    for (; b + 2 <= b_end; b += 2) {
      TileRows<2>(w, b, kg, xu, ldx, xs, mc, bias, yc, ldy, n_begin, n_end);
    }
    if (b < b_end) TileRows<1>(w, b, kg, xu, ldx, xs, mc, bias, yc, ldy, n_begin, n_end);
  }
}

void QuantizeRowsVnni(const float* x, int m, int k, int8_t* xq, float* xscale) {
  Avx2Backend()->quantize_rows(x, m, k, xq, xscale);
}

// ---- f32: 4 weight rows x MT tokens of zmm accumulators -------------------------------------

// Lanes 0..3 = (sum a, sum b, sum c, sum d) of four zmm. Stays in zmm and uses the all-lanes
// maskz forms: GCC 12's 512->256 casts and plain shuffles trip the -Wuninitialized bug above.
inline __m512 HSum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Per 128-bit lane: (a0+a2, b0+b2, a1+a3, b1+b3), then (a, b, c, d) partial sums.
  const __m512 ab =
      _mm512_add_ps(_mm512_maskz_unpacklo_ps(kAll, a, b), _mm512_maskz_unpackhi_ps(kAll, a, b));
  const __m512 cd =
      _mm512_add_ps(_mm512_maskz_unpacklo_ps(kAll, c, d), _mm512_maskz_unpackhi_ps(kAll, c, d));
  __m512 v = _mm512_add_ps(_mm512_maskz_shuffle_ps(kAll, ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_maskz_shuffle_ps(kAll, ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  // Add the four 128-bit lanes.
  v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(kAll, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(kAll, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
}

// y[t][0:rows) = x[t] . w[0:rows)^T + bias for MT tokens; rows <= 4 (missing rows read row 0
// and are not stored, so every load stays inside w).
template <int MT>
inline void RowsF32(const float* w0, int rows, int k, const float* x, size_t ldx, const float* bias,
                    float* y, int ldy) {
  __m512 acc[MT][4];
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) acc[t][j] = _mm512_setzero_ps();
  }
  const size_t ks = static_cast<size_t>(k);
  const float* wr[4] = {w0, w0 + (rows > 1 ? ks : 0), w0 + (rows > 2 ? 2 * ks : 0),
                        w0 + (rows > 3 ? 3 * ks : 0)};
  int c = 0;
  for (; c + 16 <= k; c += 16) {
    __m512 xv[MT];
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) xv[t] = _mm512_loadu_ps(x + t * ldx + c);
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) {
      const __m512 wv = _mm512_loadu_ps(wr[j] + c);
#pragma GCC unroll 8
      for (int t = 0; t < MT; ++t) acc[t][j] = _mm512_fmadd_ps(wv, xv[t], acc[t][j]);
    }
  }
  if (c < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - c)) - 1u);
    __m512 xv[MT];
#pragma GCC unroll 8
    for (int t = 0; t < MT; ++t) xv[t] = _mm512_maskz_loadu_ps(mask, x + t * ldx + c);
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) {
      const __m512 wv = _mm512_maskz_loadu_ps(mask, wr[j] + c);
#pragma GCC unroll 8
      for (int t = 0; t < MT; ++t) acc[t][j] = _mm512_fmadd_ps(wv, xv[t], acc[t][j]);
    }
  }
  const __mmask16 rmask = static_cast<__mmask16>((1u << rows) - 1u);
  const __m512 vb = bias ? _mm512_maskz_loadu_ps(rmask, bias) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
    const __m512 v = _mm512_add_ps(HSum4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]), vb);
    _mm512_mask_storeu_ps(y + static_cast<size_t>(t) * ldy, rmask, v);
  }
}

void GemmF32Avx512(const MatF32& w, const float* x, int m, const float* bias, float* y, int ldy,
                   int n_begin, int n_end) {
  if (m <= 0 || n_begin >= n_end) return;
  const int k = w.k;
  const size_t ldx = static_cast<size_t>(k);
  constexpr int kMT = 6;  // 24 accumulators + 6 activation vectors + 1 weight vector <= 32 zmm
  for (int r = n_begin; r < n_end; r += 4) {
    const int rows = n_end - r < 4 ? n_end - r : 4;
    const float* w0 = w.w + static_cast<size_t>(r) * k;
    const float* b = bias ? bias + r : nullptr;
    float* yr = y + r;
    int i = 0;
    for (; i + kMT <= m; i += kMT) {
      RowsF32<kMT>(w0, rows, k, x + i * ldx, ldx, b, yr + i * static_cast<size_t>(ldy), ldy);
    }
    const float* xr = x + i * ldx;
    float* yi = yr + i * static_cast<size_t>(ldy);
    switch (m - i) {
      case 5:
        RowsF32<5>(w0, rows, k, xr, ldx, b, yi, ldy);
        break;
      case 4:
        RowsF32<4>(w0, rows, k, xr, ldx, b, yi, ldy);
        break;
      case 3:
        RowsF32<3>(w0, rows, k, xr, ldx, b, yi, ldy);
        break;
      case 2:
        RowsF32<2>(w0, rows, k, xr, ldx, b, yi, ldy);
        break;
      case 1:
        RowsF32<1>(w0, rows, k, xr, ldx, b, yi, ldy);
        break;
      default:
        break;
    }
  }
}

constexpr Backend kVnni = {"avx512vnni", QuantizeRowsVnni, GemmI8Vnni, GemmF32Avx512};

}  // namespace

const Backend* Avx512VnniBackend() { return &kVnni; }

}  // namespace selfcond::kernels
