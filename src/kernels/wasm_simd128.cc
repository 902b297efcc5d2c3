// WebAssembly SIMD128 backend ("wasm_simd128"). The whole WASM build is compiled with -msimd128
// (every engine the demo targets has SIMD128: Chrome 91+, Firefox 89+, Safari 16.4+, Node 16+).
//
// int8 GEMM over the packed layout (n_pad/16, k/4, 16, 4): one 64-byte group holds 4 consecutive
// k of 16 output rows. SIMD128 has no int8 dot product (relaxed-SIMD's is not in this
// toolchain), so the int8 values are sign-extended to int16 on load and multiplied with
//   i32x4.dot_i16x8_s(w16, x16):  w16 = load8x8_s(8 bytes = 2 rows x 4 k)
//                                 x16 = the token's 4 k bytes, sign-extended, repeated twice
// giving (row0: k0k1, row0: k2k3, row1: k0k1, row1: k2k3) partial sums per instruction; a final
// pairwise add folds them into one int32 per row. |q|, |xq| <= 127, so every int32 sum is exact
// for k < 2^17 and the float epilogue float(acc) * (xscale * scale) + bias is evaluated in the
// same order as scalar.cc (no FMA in SIMD128): results are bit-identical to the scalar backend.
// (Measured, Node 20: 768x3072 GEMV ~0.09 ms vs ~1.7 ms scalar; see wasm/README.md.)
//
// Decode (m = 1) runs the full 16-row block per k group (8 accumulators, x extended once per
// group). Prefill (m > 1) splits the block into four 4-row quarters and runs 4 tokens at a time
// (2 accumulators per token + 2 weight vectors: fits the 16 xmm registers V8 maps v128 to), so
// each weight load is reused 4 times while the block (k * 16 bytes) stays in cache.
#include <wasm_simd128.h>

#include <cstring>

#include "kernels/backends.h"
#include "kernels/kernels.h"

namespace selfcond::kernels {
namespace {

// ---- quantization ---------------------------------------------------------------------------

// Largest lane. pmax(a, b) = a < b ? b : a: exact, so the reduction order does not matter.
inline float HMax(v128_t v) {
  v = wasm_f32x4_pmax(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_pmax(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

void QuantizeRowsWasm(const float* x, int m, int k, int8_t* xq, float* xscale) {
  for (int i = 0; i < m; ++i) {
    const float* row = x + static_cast<size_t>(i) * k;
    int8_t* out = xq + static_cast<size_t>(i) * k;
    // pmax(vmax, a) = vmax < a ? a : vmax keeps vmax when a is NaN, exactly like AbsMaxStep
    // (f32x4.max would propagate the NaN instead).
    v128_t vmax = wasm_f32x4_splat(0.0f);
    int c = 0;
    for (; c + 4 <= k; c += 4)
      vmax = wasm_f32x4_pmax(vmax, wasm_f32x4_abs(wasm_v128_load(row + c)));
    float amax = HMax(vmax);
    for (; c < k; ++c) amax = AbsMaxStep(amax, row[c]);
    const float scale = ScaleFromAbsMax(amax);
    xscale[i] = scale;
    if (scale == 0.0f) {
      std::memset(out, 0, k);
      continue;
    }
    const v128_t vscale = wasm_f32x4_splat(scale);
    const v128_t lo = wasm_f32x4_splat(-127.0f);
    const v128_t hi = wasm_f32x4_splat(127.0f);
    // x / scale (correctly rounded, as in QuantizeOne), NaN -> 0, clamp, round half to even
    // (f32x4.nearest), then an exact conversion: the value is already an integer in range.
    auto q4 = [&](const float* p) {
      v128_t v = wasm_f32x4_div(wasm_v128_load(p), vscale);
      v = wasm_v128_and(v, wasm_f32x4_eq(v, v));
      v = wasm_f32x4_pmin(wasm_f32x4_pmax(v, lo), hi);
      return wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_nearest(v));
    };
    c = 0;
    for (; c + 16 <= k; c += 16) {
      const v128_t a = wasm_i16x8_narrow_i32x4(q4(row + c), q4(row + c + 4));
      const v128_t b = wasm_i16x8_narrow_i32x4(q4(row + c + 8), q4(row + c + 12));
      wasm_v128_store(out + c, wasm_i8x16_narrow_i16x8(a, b));
    }
    for (; c < k; ++c) out[c] = QuantizeOne(row[c], scale);
  }
}

// ---- int8 GEMM ------------------------------------------------------------------------------

// acc_a = (r0: k01, r0: k23, r1: k01, r1: k23), acc_b likewise for rows r2, r3 -> (r0..r3).
inline v128_t FoldPairs(v128_t acc_a, v128_t acc_b) {
  return wasm_i32x4_add(wasm_i32x4_shuffle(acc_a, acc_b, 0, 2, 4, 6),
                        wasm_i32x4_shuffle(acc_a, acc_b, 1, 3, 5, 7));
}

// The token's 4 k bytes at p as int16 (x0 x1 x2 x3 x0 x1 x2 x3).
inline v128_t LoadX4(const int8_t* p) {
  return wasm_i16x8_extend_low_i8x16(wasm_v128_load32_splat(p));
}

// Stores 4 results: y[j] = float(acc_j) * (xs * ws[j]) + bias[j] for the rows j of [lo, hi)
// (relative to y; lo = 0 and hi = 4 is the whole quarter).
inline void Store4(v128_t acc, float xs, const float* ws, const float* bias, float* y, int lo,
                   int hi) {
  v128_t v = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc),
                            wasm_f32x4_mul(wasm_f32x4_splat(xs), wasm_v128_load(ws)));
  if (lo == 0 && hi == 4) {
    if (bias) v = wasm_f32x4_add(v, wasm_v128_load(bias));
    wasm_v128_store(y, v);
    return;
  }
  // The ragged end of n or a range not aligned to 16: bias and y are only valid in [lo, hi).
  alignas(16) float tmp[4];
  wasm_v128_store(tmp, v);
  for (int j = lo; j < hi; ++j) y[j] = bias ? tmp[j] + bias[j] : tmp[j];
}

// m = 1: one whole 16-row block (weights wb, (k/4, 16, 4)).
inline void BlockI8M1(const int8_t* wb, int kg, const int8_t* xq, float xs, const float* ws,
                      const float* bias, float* y, int lo, int hi) {
  v128_t acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = wasm_i32x4_splat(0);
  for (int g = 0; g < kg; ++g) {
    const v128_t xv = LoadX4(xq + g * 4);
    const int8_t* wg = wb + static_cast<size_t>(g) * 64;
    for (int j = 0; j < 8; ++j) {
      acc[j] = wasm_i32x4_add(acc[j], wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(wg + j * 8), xv));
    }
  }
  for (int qr = 0; qr < 4; ++qr) {
    const int qlo = lo > qr * 4 ? lo - qr * 4 : 0;
    const int qhi = hi < qr * 4 + 4 ? hi - qr * 4 : 4;
    if (qlo >= qhi) continue;
    Store4(FoldPairs(acc[2 * qr], acc[2 * qr + 1]), xs, ws + qr * 4, bias ? bias + qr * 4 : nullptr,
           y + qr * 4, qlo, qhi);
  }
}

// m > 1: rows [4 qr, 4 qr + 4) of a block times MT tokens (xq rows ldx apart, y rows ldy apart).
template <int MT>
inline void QuarterI8(const int8_t* wb, int kg, int qr, const int8_t* xq, size_t ldx,
                      const float* xscale, const float* ws, const float* bias, float* y, size_t ldy,
                      int qlo, int qhi) {
  v128_t acc_a[MT], acc_b[MT];
  for (int t = 0; t < MT; ++t) acc_a[t] = acc_b[t] = wasm_i32x4_splat(0);
  const int8_t* wq = wb + qr * 16;
  for (int g = 0; g < kg; ++g) {
    const v128_t w01 = wasm_i16x8_load8x8(wq + static_cast<size_t>(g) * 64);
    const v128_t w23 = wasm_i16x8_load8x8(wq + static_cast<size_t>(g) * 64 + 8);
    for (int t = 0; t < MT; ++t) {
      const v128_t xv = LoadX4(xq + t * ldx + g * 4);
      acc_a[t] = wasm_i32x4_add(acc_a[t], wasm_i32x4_dot_i16x8(w01, xv));
      acc_b[t] = wasm_i32x4_add(acc_b[t], wasm_i32x4_dot_i16x8(w23, xv));
    }
  }
  for (int t = 0; t < MT; ++t) {
    Store4(FoldPairs(acc_a[t], acc_b[t]), xscale[t], ws + qr * 4, bias ? bias + qr * 4 : nullptr,
           y + t * ldy + qr * 4, qlo, qhi);
  }
}

void GemmI8Wasm(const PackedI8& w, const int8_t* xq, const float* xscale, int m, const float* bias,
                float* y, int ldy, int n_begin, int n_end) {
  if (m <= 0 || n_begin >= n_end) return;
  const int k = w.k;
  const int kg = k / kKGroup;
  const size_t ldx = static_cast<size_t>(k);
  const size_t ldys = static_cast<size_t>(ldy);
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
    for (int qr = 0; qr < 4; ++qr) {
      const int qlo = lo > qr * 4 ? lo - qr * 4 : 0;
      const int qhi = hi < qr * 4 + 4 ? hi - qr * 4 : 4;
      if (qlo >= qhi) continue;  // quarter outside [n_begin, n_end) (or in the zero padding)
      int i = 0;
      for (; i + 4 <= m; i += 4) {
        QuarterI8<4>(wb, kg, qr, xq + i * ldx, ldx, xscale + i, ws, bb, yb + i * ldys, ldys, qlo,
                     qhi);
      }
      const int8_t* xr = xq + i * ldx;
      float* yr = yb + i * ldys;
      switch (m - i) {
        case 3:
          QuarterI8<3>(wb, kg, qr, xr, ldx, xscale + i, ws, bb, yr, ldys, qlo, qhi);
          break;
        case 2:
          QuarterI8<2>(wb, kg, qr, xr, ldx, xscale + i, ws, bb, yr, ldys, qlo, qhi);
          break;
        case 1:
          QuarterI8<1>(wb, kg, qr, xr, ldx, xscale + i, ws, bb, yr, ldys, qlo, qhi);
          break;
        default:
          break;
      }
    }
  }
}

// ---- f32 GEMM -------------------------------------------------------------------------------

// (sum a0, sum a1, sum a2, sum a3).
inline v128_t HSum4(v128_t a0, v128_t a1, v128_t a2, v128_t a3) {
  const v128_t t0 = wasm_f32x4_add(wasm_i32x4_shuffle(a0, a1, 0, 1, 4, 5),
                                   wasm_i32x4_shuffle(a0, a1, 2, 3, 6, 7));
  const v128_t t1 = wasm_f32x4_add(wasm_i32x4_shuffle(a2, a3, 0, 1, 4, 5),
                                   wasm_i32x4_shuffle(a2, a3, 2, 3, 6, 7));
  return wasm_f32x4_add(wasm_i32x4_shuffle(t0, t1, 0, 2, 4, 6),
                        wasm_i32x4_shuffle(t0, t1, 1, 3, 5, 7));
}

// 4 weight rows (w0, k floats apart) x MT tokens: 4 * MT accumulators.
template <int MT>
inline void RowsF32x4(const float* w0, int k, const float* x, size_t ldx, const float* bias,
                      float* y, size_t ldy) {
  v128_t acc[MT][4];
  for (int t = 0; t < MT; ++t)
    for (int j = 0; j < 4; ++j) acc[t][j] = wasm_f32x4_splat(0.0f);
  const size_t ks = static_cast<size_t>(k);
  const float* wr[4] = {w0, w0 + ks, w0 + 2 * ks, w0 + 3 * ks};
  int c = 0;
  for (; c + 4 <= k; c += 4) {
    v128_t xv[MT];
    for (int t = 0; t < MT; ++t) xv[t] = wasm_v128_load(x + t * ldx + c);
    for (int j = 0; j < 4; ++j) {
      const v128_t wv = wasm_v128_load(wr[j] + c);
      for (int t = 0; t < MT; ++t) acc[t][j] = wasm_f32x4_add(acc[t][j], wasm_f32x4_mul(wv, xv[t]));
    }
  }
  const v128_t vb = bias ? wasm_v128_load(bias) : wasm_f32x4_splat(0.0f);
  for (int t = 0; t < MT; ++t) {
    alignas(16) float s[4];
    wasm_v128_store(s, HSum4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
    for (int cc = c; cc < k; ++cc) {  // k % 4 tail (k need not be a multiple of 4 here)
      for (int j = 0; j < 4; ++j) s[j] += x[t * ldx + cc] * wr[j][cc];
    }
    wasm_v128_store(y + t * ldy, wasm_f32x4_add(wasm_v128_load(s), vb));
  }
}

// One weight row x one token (the ragged rows).
inline float DotF32(const float* a, const float* b, int k) {
  v128_t acc0 = wasm_f32x4_splat(0.0f), acc1 = acc0;
  int c = 0;
  for (; c + 8 <= k; c += 8) {
    acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_v128_load(a + c), wasm_v128_load(b + c)));
    acc1 =
        wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_v128_load(a + c + 4), wasm_v128_load(b + c + 4)));
  }
  for (; c + 4 <= k; c += 4) {
    acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_v128_load(a + c), wasm_v128_load(b + c)));
  }
  const v128_t s = wasm_f32x4_add(acc0, acc1);
  float sum = (wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 1)) +
              (wasm_f32x4_extract_lane(s, 2) + wasm_f32x4_extract_lane(s, 3));
  for (; c < k; ++c) sum += a[c] * b[c];
  return sum;
}

void GemmF32Wasm(const MatF32& w, const float* x, int m, const float* bias, float* y, int ldy,
                 int n_begin, int n_end) {
  if (m <= 0 || n_begin >= n_end) return;
  const int k = w.k;
  const size_t ldx = static_cast<size_t>(k);
  const size_t ldys = static_cast<size_t>(ldy);
  int r = n_begin;
  for (; r + 4 <= n_end; r += 4) {
    const float* w0 = w.w + static_cast<size_t>(r) * k;
    const float* b = bias ? bias + r : nullptr;
    int i = 0;
    for (; i + 2 <= m; i += 2) RowsF32x4<2>(w0, k, x + i * ldx, ldx, b, y + i * ldys + r, ldys);
    if (i < m) RowsF32x4<1>(w0, k, x + i * ldx, ldx, b, y + i * ldys + r, ldys);
  }
  for (; r < n_end; ++r) {
    const float* wr = w.w + static_cast<size_t>(r) * k;
    for (int i = 0; i < m; ++i) {
      const float v = DotF32(wr, x + i * ldx, k);
      y[i * ldys + r] = bias ? v + bias[r] : v;
    }
  }
}

constexpr Backend kWasmSimd128 = {"wasm_simd128", QuantizeRowsWasm, GemmI8Wasm, GemmF32Wasm};

}  // namespace

const Backend* WasmSimd128Backend() { return &kWasmSimd128; }

}  // namespace selfcond::kernels
