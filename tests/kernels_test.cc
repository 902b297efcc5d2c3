// Every available backend against the scalar reference (src/kernels/scalar.cc), plus checks of
// the scalar reference itself against plain float math.
#include "kernels/kernels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace selfcond::kernels {
namespace {

// A packed matrix together with the buffers it views.
struct Packed {
  std::vector<int8_t> q;         // (n_pad / 16, k / 4, 16, 4)
  std::vector<float> scale;      // (n_pad)
  std::vector<int32_t> row_sum;  // (n_pad)
  PackedI8 view;
};

Packed Pack(const std::vector<float>& w, int n, int k) {
  Packed p;
  const int n_pad = PaddedRows(n);
  p.q.assign(static_cast<size_t>(n_pad) * k, 99);  // garbage: every byte must be written
  p.scale.assign(n_pad, -1.0f);
  p.row_sum.assign(n_pad, -1);
  QuantizePackWeights(w.data(), n, k, p.q.data(), p.scale.data(), p.row_sum.data());
  p.view = {p.q.data(), p.scale.data(), p.row_sum.data(), n, k, n_pad};
  return p;
}

std::vector<float> RandomMatrix(std::mt19937& rng, int rows, int cols, float amp) {
  std::normal_distribution<float> dist(0.0f, amp);
  std::vector<float> v(static_cast<size_t>(rows) * cols);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<const Backend*> NonScalar() {
  std::vector<const Backend*> out;
  for (const Backend* b : AvailableBackends()) {
    if (std::string(b->name) != "scalar") out.push_back(b);
  }
  return out;
}

TEST(KernelsTest, ScalarBackendIsAvailableAndLast) {
  const auto all = AvailableBackends();
  ASSERT_FALSE(all.empty());
  EXPECT_STREQ(all.back()->name, "scalar");
  EXPECT_EQ(&ScalarBackend(), all.back());
  EXPECT_EQ(BackendByName("scalar"), &ScalarBackend());
  EXPECT_EQ(BackendByName("no-such-backend"), nullptr);
  for (const Backend* b : all) EXPECT_EQ(BackendByName(b->name), b);
  // DefaultBackend is one of the available ones (the best unless SELFCOND_BACKEND says else).
  const Backend& def = DefaultBackend();
  EXPECT_NE(std::find(all.begin(), all.end(), &def), all.end());
  const char* env = std::getenv("SELFCOND_BACKEND");
  if (env == nullptr || BackendByName(env) == nullptr) {
    EXPECT_EQ(&def, all.front());
  }
}

TEST(KernelsTest, PackedIndexMatchesLayout) {
  // (n_pad / 16, k / 4, 16, 4) with k = 8: block 1 starts after 2 groups of 64 bytes.
  EXPECT_EQ(PackedIndex(0, 0, 8), 0u);
  EXPECT_EQ(PackedIndex(0, 3, 8), 3u);
  EXPECT_EQ(PackedIndex(0, 4, 8), 64u);
  EXPECT_EQ(PackedIndex(1, 0, 8), 4u);
  EXPECT_EQ(PackedIndex(15, 7, 8), 64u + 15 * 4 + 3);
  EXPECT_EQ(PackedIndex(16, 0, 8), 128u);
  EXPECT_EQ(PaddedRows(1), 16);
  EXPECT_EQ(PaddedRows(16), 16);
  EXPECT_EQ(PaddedRows(17), 32);
}

TEST(KernelsTest, QuantizePackWeightsRoundTrips) {
  std::mt19937 rng(1);
  for (int n : {1, 5, 16, 17, 40}) {
    for (int k : {4, 8, 64, 100}) {
      std::vector<float> w = RandomMatrix(rng, n, k, 0.5f);
      if (n > 2) std::fill(w.begin() + 2 * k, w.begin() + 3 * k, 0.0f);  // an all-zero row
      Packed p = Pack(w, n, k);
      const int n_pad = PaddedRows(n);
      std::vector<float> row(k);
      for (int r = 0; r < n_pad; ++r) {
        float amax = 0.0f;
        int32_t sum = 0;
        for (int c = 0; c < k; ++c) {
          const int8_t q = p.q[PackedIndex(r, c, k)];
          EXPECT_GE(q, -127);
          sum += q;
          if (r < n) amax = std::max(amax, std::fabs(w[static_cast<size_t>(r) * k + c]));
          if (r >= n) {
            EXPECT_EQ(q, 0) << "padding row " << r;
          }
        }
        EXPECT_EQ(p.row_sum[r], sum);
        EXPECT_FLOAT_EQ(p.scale[r], amax / 127.0f) << "row " << r;
        if (r >= n) continue;
        UnpackRow(p.view, r, row.data());
        for (int c = 0; c < k; ++c) {
          const float x = w[static_cast<size_t>(r) * k + c];
          EXPECT_EQ(row[c], p.q[PackedIndex(r, c, k)] * p.scale[r]);
          EXPECT_LE(std::fabs(row[c] - x), p.scale[r] * 0.5f * (1.0f + 1e-5f) + 1e-30f)
              << "r=" << r << " c=" << c;
        }
        // The largest weight maps to exactly +-127.
        if (amax > 0) {
          int max_q = 0;
          for (int c = 0; c < k; ++c)
            max_q = std::max(max_q, std::abs(int{p.q[PackedIndex(r, c, k)]}));
          EXPECT_EQ(max_q, 127);
        }
      }
      std::vector<int32_t> sums(n_pad, -5);
      ComputeRowSums(p.q.data(), n_pad, k, sums.data());
      EXPECT_EQ(sums, p.row_sum);
    }
  }
}

TEST(KernelsTest, QuantizeRowsRoundsHalfToEven) {
  // max = 127 -> scale 1, so q = nearbyint(x): halves go to the even neighbour.
  const std::vector<float> x = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 3.49f};
  for (const Backend* b : AvailableBackends()) {
    std::vector<int8_t> q(x.size());
    float s = 0;
    b->quantize_rows(x.data(), 1, static_cast<int>(x.size()), q.data(), &s);
    EXPECT_EQ(s, 1.0f) << b->name;
    EXPECT_EQ(q, (std::vector<int8_t>{127, 0, 2, 2, 0, -2, -2, 3})) << b->name;
  }
}

TEST(KernelsTest, QuantizeRowsMatchesScalarBitForBit) {
  std::mt19937 rng(2);
  for (int k : {1, 3, 4, 7, 8, 9, 31, 64, 100, 768, 3072}) {
    for (int m : {1, 2, 5}) {
      std::vector<float> x = RandomMatrix(rng, m, k, 3.0f);
      if (m > 1) std::fill(x.begin() + k, x.begin() + 2 * k, 0.0f);  // an all-zero row
      std::vector<int8_t> ref_q(static_cast<size_t>(m) * k);
      std::vector<float> ref_s(m);
      ScalarBackend().quantize_rows(x.data(), m, k, ref_q.data(), ref_s.data());
      // The reference itself: scale = max|x| / 127, |x - q * scale| <= scale / 2.
      for (int i = 0; i < m; ++i) {
        float amax = 0;
        for (int c = 0; c < k; ++c) amax = std::max(amax, std::fabs(x[i * k + c]));
        EXPECT_EQ(ref_s[i], amax / 127.0f);
        for (int c = 0; c < k; ++c) {
          EXPECT_LE(std::fabs(ref_q[i * k + c] * ref_s[i] - x[i * k + c]),
                    ref_s[i] * 0.5f * (1 + 1e-5f));
        }
      }
      for (const Backend* b : NonScalar()) {
        std::vector<int8_t> q(ref_q.size(), 77);
        std::vector<float> s(m, -1);
        b->quantize_rows(x.data(), m, k, q.data(), s.data());
        EXPECT_EQ(q, ref_q) << b->name << " m=" << m << " k=" << k;
        EXPECT_EQ(std::memcmp(s.data(), ref_s.data(), m * sizeof(float)), 0) << b->name;
      }
    }
  }
}

TEST(KernelsTest, QuantizeRowsHandlesNonFiniteAndTinyInputs) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int k = 19;  // exercises both the vector body and the tail
  std::vector<float> x(4 * k, 1.0f);
  x[0] = nan;  // row 0: NaN -> 0, the rest scaled normally
  x[5] = 2.0f;
  x[k + 3] = inf;  // row 1: inf -> FLT_MAX scale, +127
  x[k + 17] = -inf;
  for (int c = 0; c < k; ++c) x[2 * k + c] = nan;     // row 2: all NaN -> scale 0
  for (int c = 0; c < k; ++c) x[3 * k + c] = 1e-44f;  // row 3: scale underflows -> 0
  std::vector<int8_t> ref_q(x.size());
  std::vector<float> ref_s(4);
  ScalarBackend().quantize_rows(x.data(), 4, k, ref_q.data(), ref_s.data());
  EXPECT_EQ(ref_q[0], 0);
  EXPECT_EQ(ref_q[5], 127);
  EXPECT_NEAR(ref_q[1], 63.5, 0.5);  // 1 / (2 / 127)
  EXPECT_EQ(ref_s[1], FLT_MAX / 127.0f);
  EXPECT_EQ(ref_q[k + 3], 127);
  EXPECT_EQ(ref_q[k + 17], -127);
  EXPECT_EQ(ref_q[k + 0], 0);
  EXPECT_EQ(ref_s[2], 0.0f);
  EXPECT_EQ(ref_s[3], 0.0f);
  for (int c = 0; c < 2 * k; ++c) EXPECT_EQ(ref_q[2 * k + c], 0);
  for (const Backend* b : NonScalar()) {
    std::vector<int8_t> q(x.size());
    std::vector<float> s(4);
    b->quantize_rows(x.data(), 4, k, q.data(), s.data());
    EXPECT_EQ(q, ref_q) << b->name;
    EXPECT_EQ(std::memcmp(s.data(), ref_s.data(), sizeof(float) * 4), 0) << b->name;
  }
}

// Compares backend b's gemm_i8 with the scalar one on one shape and one output range.
void CheckGemmI8(const Backend* b, std::mt19937& rng, int m, int n, int k, int n_begin, int n_end,
                 int ldy, bool with_bias, bool null_row_sum) {
  SCOPED_TRACE(::testing::Message() << b->name << " m=" << m << " n=" << n << " k=" << k
                                    << " range=[" << n_begin << "," << n_end << ") ldy=" << ldy
                                    << " bias=" << with_bias << " null_row_sum=" << null_row_sum);
  Packed p = Pack(RandomMatrix(rng, n, k, 0.1f), n, k);
  const std::vector<float> x = RandomMatrix(rng, m, k, 1.0f);
  const std::vector<float> bias = RandomMatrix(rng, 1, n, 1.0f);
  std::vector<int8_t> xq(static_cast<size_t>(m) * k);
  std::vector<float> xs(m);
  ScalarBackend().quantize_rows(x.data(), m, k, xq.data(), xs.data());
  const float* bp = with_bias ? bias.data() : nullptr;
  const float kSentinel = -12345.0f;
  std::vector<float> ref(static_cast<size_t>(m) * ldy, kSentinel);
  std::vector<float> got(ref.size(), kSentinel);
  ScalarBackend().gemm_i8(p.view, xq.data(), xs.data(), m, bp, ref.data(), ldy, n_begin, n_end);
  PackedI8 view = p.view;
  if (null_row_sum) view.row_sum = nullptr;
  b->gemm_i8(view, xq.data(), xs.data(), m, bp, got.data(), ldy, n_begin, n_end);
  int bad = 0;
  for (int i = 0; i < m; ++i) {
    for (int r = 0; r < ldy; ++r) {
      const size_t at = static_cast<size_t>(i) * ldy + r;
      if (r < n_begin || r >= n_end) {
        // Outside the range nothing may be written.
        if (got[at] != kSentinel && ++bad < 5) ADD_FAILURE() << "wrote y[" << i << "][" << r << "]";
        continue;
      }
      // The int32 sum is exact and every backend scales as float(acc) * (xs * ws) + bias with
      // no fused multiply-add (kernel files build with -ffp-contract=off): results must be
      // bit-identical, so the output never depends on the batch size or the tile a row fell in.
      if (!(got[at] == ref[at]) && ++bad < 5) {
        ADD_FAILURE() << "y[" << i << "][" << r << "] = " << got[at] << ", scalar " << ref[at];
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(KernelsTest, GemmI8MatchesScalarOnManyShapes) {
  std::mt19937 rng(3);
  for (const Backend* b : NonScalar()) {
    for (int k : {4, 8, 64, 768, 3072}) {
      for (int m : {1, 2, 3, 5, 17, 128}) {
        // Keep the scalar reference cheap for the big shapes.
        const std::vector<int> ns =
            k * m >= 768 * 17 ? std::vector<int>{33} : std::vector<int>{1, 16, 17, 50};
        for (int n : ns) {
          CheckGemmI8(b, rng, m, n, k, 0, n, n, true, false);
        }
      }
    }
  }
}

TEST(KernelsTest, GemmI8SubRangesStridesNullBiasAndRowSum) {
  std::mt19937 rng(4);
  for (const Backend* b : NonScalar()) {
    for (int m : {1, 3, 9}) {
      const int n = 70, k = 36;
      CheckGemmI8(b, rng, m, n, k, 16, 48, n, true, false);  // an interior thread's range
      CheckGemmI8(b, rng, m, n, k, 64, 70, n, true, false);  // the ragged last range
      CheckGemmI8(b, rng, m, n, k, 0, 16, n + 7, false, false);
      CheckGemmI8(b, rng, m, n, k, 5, 37, n + 3, true, false);  // not 16-aligned: still correct
      CheckGemmI8(b, rng, m, n, k, 0, n, n + 32, false, true);  // no row_sum given
      CheckGemmI8(b, rng, m, n, k, 20, 20, n, true, false);     // empty range
    }
  }
}

TEST(KernelsTest, GemmI8ExtremeValuesDoNotSaturate) {
  // All weights and activations at +-127 with k = 3072: every int16 pair sum is 2 * 127^2 and
  // the int32 total 127^2 * 3072; a saturating or overflowing kernel would be off.
  const int n = 32, k = 3072, m = 3;
  std::vector<float> w(static_cast<size_t>(n) * k), x(static_cast<size_t>(m) * k);
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < k; ++c) w[r * k + c] = ((r + c / 2) % 3 == 0) ? -1.0f : 1.0f;
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < k; ++c) x[i * k + c] = (i == 1 && c % 2) ? -1.0f : 1.0f;
  Packed p = Pack(w, n, k);
  std::vector<int8_t> xq(x.size());
  std::vector<float> xs(m);
  ScalarBackend().quantize_rows(x.data(), m, k, xq.data(), xs.data());
  for (int i = 0; i < m; ++i) EXPECT_EQ(xs[i], 1.0f / 127.0f);
  for (const Backend* b : AvailableBackends()) {
    std::vector<float> y(static_cast<size_t>(m) * n);
    b->gemm_i8(p.view, xq.data(), xs.data(), m, nullptr, y.data(), n, 0, n);
    for (int i = 0; i < m; ++i) {
      for (int r = 0; r < n; ++r) {
        double expect = 0;
        for (int c = 0; c < k; ++c) expect += double{w[r * k + c]} * x[i * k + c];
        // q = +-127 exactly, scales 1/127: y = the exact +-1 dot product up to float rounding.
        EXPECT_NEAR(y[i * n + r], expect, 1e-5 * k) << b->name << " i=" << i << " r=" << r;
      }
    }
  }
}

TEST(KernelsTest, GemmI8BiasedSumsWrapExactly) {
  // u8 x s8 kernels (avx512vnni) compute sum (xq + 128) * q and subtract 128 * row_sum. With q =
  // 127 everywhere and xq = +-127 alternating, the true sum is 0 but the biased one is
  // 128 * 127 * k, > 2^31 even in each of the 4 partial accumulators of the decode path for
  // k = 540000: it must wrap modulo 2^32 (vpdpbusd), not saturate (vpdpbusds).
  const int n = 16, k = 540000;
  std::vector<float> w(static_cast<size_t>(n) * k, 1.0f);
  for (int r = 1; r < n; ++r) w[static_cast<size_t>(r) * k + r] = -1.0f;  // rows differ a bit
  Packed p = Pack(w, n, k);
  for (int m : {1, 2}) {
    std::vector<float> x(static_cast<size_t>(m) * k);
    for (size_t c = 0; c < x.size(); ++c) x[c] = (c % 2) ? -1.0f : 1.0f;
    std::vector<int8_t> xq(x.size());
    std::vector<float> xs(m);
    ScalarBackend().quantize_rows(x.data(), m, k, xq.data(), xs.data());
    std::vector<float> ref(static_cast<size_t>(m) * n);
    ScalarBackend().gemm_i8(p.view, xq.data(), xs.data(), m, nullptr, ref.data(), n, 0, n);
    EXPECT_EQ(ref[0], 0.0f);
    EXPECT_NEAR(ref[1], 2.0f, 1e-5f);  // row 1 flips the sign of its x[1] = -1 term
    EXPECT_NEAR(ref[2], -2.0f, 1e-5f);
    for (const Backend* b : NonScalar()) {
      std::vector<float> y(ref.size());
      b->gemm_i8(p.view, xq.data(), xs.data(), m, nullptr, y.data(), n, 0, n);
      for (size_t j = 0; j < y.size(); ++j) {
        EXPECT_NEAR(y[j], ref[j], 1e-5f) << b->name << " m=" << m << " j=" << j;
      }
    }
  }
}

TEST(KernelsTest, GemmI8ApproximatesFloatMatmul) {
  // Sanity of the whole int8 scheme: dequantized gemm vs float64 matmul on smooth data.
  std::mt19937 rng(5);
  const int m = 4, n = 40, k = 256;
  const std::vector<float> w = RandomMatrix(rng, n, k, 0.05f);
  const std::vector<float> x = RandomMatrix(rng, m, k, 1.0f);
  const std::vector<float> bias = RandomMatrix(rng, 1, n, 0.1f);
  Packed p = Pack(w, n, k);
  for (const Backend* b : AvailableBackends()) {
    std::vector<int8_t> xq(x.size());
    std::vector<float> xs(m), y(static_cast<size_t>(m) * n);
    b->quantize_rows(x.data(), m, k, xq.data(), xs.data());
    b->gemm_i8(p.view, xq.data(), xs.data(), m, bias.data(), y.data(), n, 0, n);
    double err2 = 0, ref2 = 0;
    for (int i = 0; i < m; ++i) {
      for (int r = 0; r < n; ++r) {
        double ref = bias[r];
        for (int c = 0; c < k; ++c) ref += double{x[i * k + c]} * w[r * k + c];
        err2 += (y[i * n + r] - ref) * (y[i * n + r] - ref);
        ref2 += ref * ref;
      }
    }
    // Two 8-bit roundings of Gaussian data give ~1-2% relative RMS error.
    EXPECT_LT(std::sqrt(err2 / ref2), 0.03) << b->name;
    EXPECT_GT(std::sqrt(err2 / ref2), 0.0) << b->name;  // it really was quantized
  }
}

void CheckGemmF32(const Backend* b, std::mt19937& rng, int m, int n, int k, int n_begin, int n_end,
                  int ldy, bool with_bias) {
  SCOPED_TRACE(::testing::Message() << b->name << " m=" << m << " n=" << n << " k=" << k
                                    << " range=[" << n_begin << "," << n_end << ") ldy=" << ldy);
  const std::vector<float> w = RandomMatrix(rng, n, k, 0.1f);
  const std::vector<float> x = RandomMatrix(rng, m, k, 1.0f);
  const std::vector<float> bias = RandomMatrix(rng, 1, n, 1.0f);
  const MatF32 mat{w.data(), n, k};
  const float* bp = with_bias ? bias.data() : nullptr;
  const float kSentinel = -12345.0f;
  std::vector<float> ref(static_cast<size_t>(m) * ldy, kSentinel), got(ref.size(), kSentinel);
  ScalarBackend().gemm_f32(mat, x.data(), m, bp, ref.data(), ldy, n_begin, n_end);
  b->gemm_f32(mat, x.data(), m, bp, got.data(), ldy, n_begin, n_end);
  int bad = 0;
  for (int i = 0; i < m; ++i) {
    for (int r = 0; r < ldy; ++r) {
      const size_t at = static_cast<size_t>(i) * ldy + r;
      if (r < n_begin || r >= n_end) {
        if (got[at] != kSentinel && ++bad < 5) ADD_FAILURE() << "wrote y[" << i << "][" << r << "]";
        continue;
      }
      // Summation order differs: bound by the magnitude of the terms, not of the result.
      double mag = with_bias ? std::fabs(bias[r]) : 0.0;
      for (int c = 0; c < k; ++c) mag += std::fabs(double{x[i * k + c]} * w[r * k + c]);
      if (!(std::fabs(got[at] - ref[at]) <= 1e-4 * mag + 1e-30) && ++bad < 5) {
        ADD_FAILURE() << "y[" << i << "][" << r << "] = " << got[at] << ", scalar " << ref[at];
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(KernelsTest, GemmF32MatchesScalar) {
  std::mt19937 rng(6);
  for (const Backend* b : NonScalar()) {
    for (int k : {1, 4, 7, 8, 64, 100, 768}) {
      for (int m : {1, 2, 3, 5, 17}) {
        for (int n : {1, 3, 4, 17, 50}) CheckGemmF32(b, rng, m, n, k, 0, n, n, true);
      }
    }
    CheckGemmF32(b, rng, 128, 20, 3072, 0, 20, 20, true);
    CheckGemmF32(b, rng, 3, 70, 40, 16, 48, 70, false);
    CheckGemmF32(b, rng, 5, 70, 40, 5, 67, 75, true);
    CheckGemmF32(b, rng, 2, 70, 40, 30, 30, 70, true);
  }
}

TEST(KernelsTest, ScalarGemmF32MatchesDoubleMatmul) {
  std::mt19937 rng(7);
  const int m = 3, n = 9, k = 50;
  const std::vector<float> w = RandomMatrix(rng, n, k, 1.0f);
  const std::vector<float> x = RandomMatrix(rng, m, k, 1.0f);
  std::vector<float> y(m * n);
  ScalarBackend().gemm_f32({w.data(), n, k}, x.data(), m, nullptr, y.data(), n, 0, n);
  for (int i = 0; i < m; ++i) {
    for (int r = 0; r < n; ++r) {
      double ref = 0, mag = 0;
      for (int c = 0; c < k; ++c) {
        ref += double{x[i * k + c]} * w[r * k + c];
        mag += std::fabs(double{x[i * k + c]} * w[r * k + c]);
      }
      EXPECT_NEAR(y[i * n + r], ref, 1e-5 * mag);
    }
  }
}

}  // namespace
}  // namespace selfcond::kernels
