// The scalar reference backend: plain loops, the definition of correct for every other backend
// (tests/kernels_test.cc compares them all against this file), plus the scalar pack helpers.
#include <algorithm>
#include <cstring>

#include "kernels/backends.h"
#include "kernels/kernels.h"

namespace selfcond::kernels {
namespace {

void QuantizeRowsScalar(const float* x, int m, int k, int8_t* xq, float* xscale) {
  for (int i = 0; i < m; ++i) {
    const float* row = x + static_cast<size_t>(i) * k;
    int8_t* out = xq + static_cast<size_t>(i) * k;
    float amax = 0.0f;
    for (int c = 0; c < k; ++c) amax = AbsMaxStep(amax, row[c]);
    const float scale = ScaleFromAbsMax(amax);
    xscale[i] = scale;
    if (scale == 0.0f) {
      std::memset(out, 0, k);
      continue;
    }
    for (int c = 0; c < k; ++c) out[c] = QuantizeOne(row[c], scale);
  }
}

void GemmI8Scalar(const PackedI8& w, const int8_t* xq, const float* xscale, int m,
                  const float* bias, float* y, int ldy, int n_begin, int n_end) {
  const int k = w.k;
  for (int i = 0; i < m; ++i) {
    const int8_t* xrow = xq + static_cast<size_t>(i) * k;
    float* yrow = y + static_cast<size_t>(i) * ldy;
    for (int r = n_begin; r < n_end; ++r) {
      int32_t acc = 0;
      for (int c = 0; c < k; ++c) {
        acc += static_cast<int32_t>(w.q[PackedIndex(r, c, k)]) * static_cast<int32_t>(xrow[c]);
      }
      // The documented final scaling: float(acc) * (xscale * scale) + bias (SIMD backends may
      // fuse the multiply-add, hence "equal up to float rounding").
      const float v = static_cast<float>(acc) * (xscale[i] * w.scale[r]);
      yrow[r] = bias ? v + bias[r] : v;
    }
  }
}

void GemmF32Scalar(const MatF32& w, const float* x, int m, const float* bias, float* y, int ldy,
                   int n_begin, int n_end) {
  const int k = w.k;
  for (int i = 0; i < m; ++i) {
    const float* xrow = x + static_cast<size_t>(i) * k;
    float* yrow = y + static_cast<size_t>(i) * ldy;
    for (int r = n_begin; r < n_end; ++r) {
      const float* wrow = w.w + static_cast<size_t>(r) * k;
      float acc = 0.0f;
      for (int c = 0; c < k; ++c) acc += xrow[c] * wrow[c];
      yrow[r] = bias ? acc + bias[r] : acc;
    }
  }
}

constexpr Backend kScalar = {"scalar", QuantizeRowsScalar, GemmI8Scalar, GemmF32Scalar};

}  // namespace

const Backend& ScalarBackend() { return kScalar; }
const Backend* ScalarBackendPtr() { return &kScalar; }

void QuantizePackWeights(const float* w, int n, int k, int8_t* q, float* scale, int32_t* row_sum) {
  const int n_pad = PaddedRows(n);
  for (int r = 0; r < n_pad; ++r) {
    float s = 0.0f;
    if (r < n) {
      const float* row = w + static_cast<size_t>(r) * k;
      float amax = 0.0f;
      for (int c = 0; c < k; ++c) amax = AbsMaxStep(amax, row[c]);
      s = ScaleFromAbsMax(amax);
    }
    scale[r] = s;
    int32_t sum = 0;
    for (int c = 0; c < k; ++c) {
      const int8_t v = s == 0.0f ? 0 : QuantizeOne(w[static_cast<size_t>(r) * k + c], s);
      q[PackedIndex(r, c, k)] = v;
      sum += v;
    }
    row_sum[r] = sum;
  }
}

void ComputeRowSums(const int8_t* q, int n_pad, int k, int32_t* row_sum) {
  for (int r = 0; r < n_pad; ++r) {
    int32_t sum = 0;
    for (int c = 0; c < k; ++c) sum += q[PackedIndex(r, c, k)];
    row_sum[r] = sum;
  }
}

void UnpackRow(const PackedI8& w, int r, float* out) {
  const float s = w.scale[r];
  for (int c = 0; c < w.k; ++c) out[c] = static_cast<float>(w.q[PackedIndex(r, c, w.k)]) * s;
}

}  // namespace selfcond::kernels
