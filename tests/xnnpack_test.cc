// XNNPACK as the GEMM engine (src/kernels/xnnpack.h) against a double-precision reference that
// uses the same int8 weights, and the pack-once contract: sessions' operators reuse the model's
// packed weights and never repack.
#include "kernels/xnnpack.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "formats/safetensors.h"
#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "tools/convert.h"

namespace selfcond::kernels::xnn {
namespace {

struct Matrix {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> row_sum;
  std::vector<float> bias;
  PackedI8 view;
};

Matrix MakeMatrix(std::mt19937& rng, int n, int k) {
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(n) * k);
  for (float& v : w) v = dist(rng);
  Matrix m;
  const int n_pad = PaddedRows(n);
  m.q.resize(static_cast<size_t>(n_pad) * k + kExtraBytes);
  m.scale.resize(n_pad);
  m.row_sum.resize(n_pad);
  QuantizePackWeights(w.data(), n, k, m.q.data(), m.scale.data(), m.row_sum.data());
  m.bias.resize(n);
  for (float& b : m.bias) b = dist(rng);
  m.view = {m.q.data(), m.scale.data(), m.row_sum.data(), n, k, n_pad};
  return m;
}

// y = x . dequant(W)^T + b in double.
std::vector<double> Reference(const Matrix& w, const std::vector<float>& x, int m) {
  const int n = w.view.n, k = w.view.k;
  std::vector<double> y(static_cast<size_t>(m) * n);
  for (int i = 0; i < m; ++i) {
    for (int r = 0; r < n; ++r) {
      double acc = w.bias[r];
      for (int c = 0; c < k; ++c) {
        acc += static_cast<double>(x[static_cast<size_t>(i) * k + c]) *
               w.view.q[PackedIndex(r, c, k)] * w.view.scale[r];
      }
      y[static_cast<size_t>(i) * n + r] = acc;
    }
  }
  return y;
}

// One linear layer packed alone, with a session's operators over it.
struct OneLayer {
  std::unique_ptr<PackedWeights> packed;
  std::unique_ptr<Operators> ops;
  int id = -1;
};
absl::StatusOr<OneLayer> PackOne(const LinearSpec& spec) {
  OneLayer one;
  auto packed = PackedWeights::Create();
  if (!packed.ok()) return packed.status();
  one.packed = std::move(*packed);
  auto id = one.packed->Add(spec);
  if (!id.ok()) return id.status();
  one.id = *id;
  one.packed->Finalize();
  auto ops = Operators::Create(*one.packed);
  if (!ops.ok()) return ops.status();
  one.ops = std::move(*ops);
  return one;
}

TEST(XnnpackTest, MatchesDoubleReferenceWithAnOutlierChannel) {
  ASSERT_TRUE(Available());
  std::mt19937 rng(7);
  for (auto [n, k] : {std::pair{96, 64}, std::pair{40, 200}, std::pair{768, 768}}) {
    Matrix w = MakeMatrix(rng, n, k);
    LinearSpec spec;
    spec.q8 = &w.view;
    spec.bias = w.bias.data();
    spec.n = n;
    spec.k = k;
    auto one = PackOne(spec);
    ASSERT_TRUE(one.ok()) << one.status();
    for (int m : {1, 5, 33}) {
      std::normal_distribution<float> act(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(m) * k + kExtraBytes / sizeof(float));
      for (float& v : x) v = act(rng);
      for (int i = 0; i < m; ++i) x[static_cast<size_t>(i) * k + 3] *= 20.0f;  // GPT-2-like outlier
      std::vector<float> y(static_cast<size_t>(m) * n, NAN);
      ASSERT_TRUE(one->ops->Run(one->id, x.data(), m, y.data(), nullptr).ok());
      const std::vector<double> ref = Reference(w, x, m);
      double max_abs = 0, max_err = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_TRUE(std::isfinite(y[i])) << i;
        max_abs = std::max(max_abs, std::fabs(ref[i]));
        max_err = std::max(max_err, std::fabs(ref[i] - y[i]));
      }
      // Asymmetric per-row activation quantization: ~1.7e-2 of max|y| measured on GPT-2 shapes.
      EXPECT_LT(max_err / max_abs, 3e-2) << "n=" << n << " k=" << k << " m=" << m;
    }
  }
}

TEST(XnnpackTest, SessionsShareTheModelsPackedWeights) {
  ASSERT_TRUE(Available());
  std::mt19937 rng(11);
  Matrix a = MakeMatrix(rng, 64, 32), b = MakeMatrix(rng, 48, 64);
  auto packed = PackedWeights::Create();
  ASSERT_TRUE(packed.ok());
  for (Matrix* w : {&a, &b}) {
    LinearSpec spec;
    spec.q8 = &w->view;
    spec.bias = w->bias.data();
    spec.n = w->view.n;
    spec.k = w->view.k;
    ASSERT_TRUE((*packed)->Add(spec).ok());
  }
  (*packed)->Finalize();
  const size_t bytes = (*packed)->packed_bytes();
  EXPECT_GE(bytes, 64u * 32 + 48u * 64);
  // After Finalize nothing more can be packed.
  LinearSpec again;
  again.q8 = &a.view;
  again.n = 64;
  again.k = 32;
  EXPECT_FALSE((*packed)->Add(again).ok());
  // Two sessions' operators: same outputs, and no new packed bytes.
  auto s1 = Operators::Create(**packed);
  auto s2 = Operators::Create(**packed);
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_EQ((*packed)->packed_bytes(), bytes);
  std::vector<float> x(3 * 64 + kExtraBytes / sizeof(float), 0.25f);
  for (size_t i = 0; i < x.size(); i += 7) x[i] = -1.5f;
  std::vector<float> y1(3 * 48), y2(3 * 48);
  ASSERT_TRUE((*s1)->Run(1, x.data(), 3, y1.data(), nullptr).ok());
  ASSERT_TRUE((*s2)->Run(1, x.data(), 3, y2.data(), nullptr).ok());
  EXPECT_EQ(y1, y2);
  const std::vector<double> ref = Reference(b, x, 3);
  for (size_t i = 0; i < y1.size(); ++i) EXPECT_NEAR(y1[i], ref[i], 0.05) << i;
}

// Runs m random activation rows through a packed layer and returns max |y - ref| / max |ref|,
// ref = x . W^T + bias in double with W(r, c) = weight(r, c).
template <typename Weight>
double RelErrorVsDouble(OneLayer& one, std::mt19937& rng, int m, int n, int k,
                        const std::vector<float>& bias, Weight weight) {
  std::normal_distribution<float> act(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m) * k + kExtraBytes / sizeof(float));
  for (float& v : x) v = act(rng);
  std::vector<float> y(static_cast<size_t>(m) * n);
  EXPECT_TRUE(one.ops->Run(one.id, x.data(), m, y.data(), nullptr).ok());
  double max_abs = 0, max_err = 0;
  for (int i = 0; i < m; ++i) {
    for (int r = 0; r < n; ++r) {
      double acc = bias[r];
      for (int c = 0; c < k; ++c) {
        acc += static_cast<double>(x[static_cast<size_t>(i) * k + c]) * weight(r, c);
      }
      max_abs = std::max(max_abs, std::fabs(acc));
      max_err = std::max(max_err, std::fabs(acc - y[static_cast<size_t>(i) * n + r]));
    }
  }
  return max_err / max_abs;
}

// 4-bit weights (converter layout, DType::kI4) against the same double reference on the
// dequantized int4 weights: checks the nibble order and zero point XNNPACK expects.
TEST(XnnpackTest, Int4MatchesDoubleReference) {
  ASSERT_TRUE(Available());
  std::mt19937 rng(3);
  const int n = 72, k = 96;
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(n) * k), bias(n);
  for (float& v : w) v = dist(rng);
  for (float& v : bias) v = dist(rng);
  std::vector<uint8_t> q(static_cast<size_t>(n) * k / 2 + kExtraBytes);
  std::vector<float> scale(n);
  QuantizeInt4(w.data(), n, k, q.data(), scale.data());
  LinearSpec spec;
  spec.q4 = q.data();
  spec.q4_scale = scale.data();
  spec.bias = bias.data();
  spec.n = n;
  spec.k = k;
  auto one = PackOne(spec);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_LT(RelErrorVsDouble(*one, rng, 4, n, k, bias,
                             [&](int r, int c) {
                               const uint8_t byte = q[static_cast<size_t>(r) * (k / 2) + c / 2];
                               const int nib = c % 2 == 0 ? (byte & 15) : (byte >> 4);
                               return static_cast<double>(nib - 8) * scale[r];
                             }),
            3e-2);
}

// Blockwise 4-bit (what `convert --weights int4` writes: XNNPACK's qb4w, one bfloat16 scale per
// 32 columns) against a double reference on the dequantized weights, for a decode row and a
// prefill batch. The matrix has blocks 30x larger than the rest (GPT-2's outlier columns), where
// per-channel scales lose the small weights: blockwise must dequantize much closer to the float
// weights than per-channel on it.
TEST(XnnpackTest, BlockwiseInt4MatchesDoubleReferenceAndBeatsPerChannel) {
  ASSERT_TRUE(Available());
  std::mt19937 rng(5);
  const int n = 80, k = 192, block = kInt4Block;
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(n) * k), bias(n);
  for (size_t i = 0; i < w.size(); ++i) w[i] = dist(rng) * ((i % k) / block == 2 ? 30.0f : 1.0f);
  for (float& v : bias) v = dist(rng);
  std::vector<uint8_t> q(static_cast<size_t>(n) * k / 2 + kExtraBytes);
  std::vector<uint16_t> bscale(static_cast<size_t>(n) * (k / block));
  QuantizeInt4Blocks(w.data(), n, k, block, q.data(), bscale.data());
  auto deq = [&](int r, int c) {
    const uint8_t byte = q[static_cast<size_t>(r) * (k / 2) + c / 2];
    const int nib = c % 2 == 0 ? (byte & 15) : (byte >> 4);
    return static_cast<double>(nib - 8) *
           BF16ToFloat(bscale[static_cast<size_t>(r) * (k / block) + c / block]);
  };
  // Quantization error against the float weights, blockwise vs per-channel, on the small blocks.
  std::vector<uint8_t> qc(static_cast<size_t>(n) * k / 2);
  std::vector<float> cscale(n);
  QuantizeInt4(w.data(), n, k, qc.data(), cscale.data());
  double err_block = 0, err_channel = 0;
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < k; ++c) {
      if (c / block == 2) continue;
      const double ref = w[static_cast<size_t>(r) * k + c];
      const uint8_t byte = qc[static_cast<size_t>(r) * (k / 2) + c / 2];
      const int nib = c % 2 == 0 ? (byte & 15) : (byte >> 4);
      err_block += (deq(r, c) - ref) * (deq(r, c) - ref);
      err_channel += ((nib - 8) * cscale[r] - ref) * ((nib - 8) * cscale[r] - ref);
    }
  }
  EXPECT_LT(err_block * 20, err_channel);
  LinearSpec spec;
  spec.q4 = q.data();
  spec.q4_bscale = bscale.data();
  spec.q4_block = block;
  spec.bias = bias.data();
  spec.n = n;
  spec.k = k;
  auto one = PackOne(spec);
  ASSERT_TRUE(one.ok()) << one.status();
  for (int m : {1, 5}) {
    EXPECT_LT(RelErrorVsDouble(*one, rng, m, n, k, bias, deq), 3e-2) << "m = " << m;
  }
  // A block XNNPACK cannot run is refused before XNNPACK sees it.
  spec.q4_block = 48;
  EXPECT_FALSE(PackOne(spec).ok());
}

}  // namespace
}  // namespace selfcond::kernels::xnn
