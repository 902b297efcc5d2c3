// The attention loops over a cache (ops::DotRows, ops::AxpyRows) against the per-position
// Dot / Axpy calls they replaced (bit for bit: native and WASM must keep producing the same
// activations) and against a double-precision sum (within float rounding).
#include "model/float_ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace selfcond {
namespace {

TEST(FloatOpsTest, DotRowsAndAxpyRowsMatchThePerPositionLoops) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (int n : {1, 7, 8, 9, 63, 64, 65, 128, 130}) {
    for (int rows : {0, 1, 3, 17, 100}) {
      const size_t ld = static_cast<size_t>(n) + 5;  // rows of a cache holding other heads too
      std::vector<float> q(n), k(rows * ld + n), a(rows);
      for (float& v : q) v = u(rng);
      for (float& v : k) v = u(rng);
      for (float& v : a) v = u(rng);
      const float scale = 0.125f;

      std::vector<float> got(rows, -1.0f);
      ops::DotRows(q.data(), k.data(), ld, rows, n, scale, got.data());
      for (int t = 0; t < rows; ++t) {
        const float* kt = k.data() + t * ld;
        ASSERT_EQ(got[t], ops::Dot(q.data(), kt, n) * scale) << "n " << n << " row " << t;
        double ref = 0, mag = 0;
        for (int j = 0; j < n; ++j) {
          ref += static_cast<double>(q[j]) * kt[j];
          mag += std::fabs(static_cast<double>(q[j]) * kt[j]);
        }
        EXPECT_NEAR(got[t], ref * scale, 1e-5 * mag * scale + 1e-30) << "n " << n;
      }

      std::vector<float> y(n, 0.5f), want(n, 0.5f);
      ops::AxpyRows(a.data(), k.data(), ld, rows, y.data(), n);
      for (int t = 0; t < rows; ++t) ops::Axpy(a[t], k.data() + t * ld, want.data(), n);
      for (int j = 0; j < n; ++j) {
        ASSERT_EQ(y[j], want[j]) << "n " << n << " rows " << rows << " column " << j;
        double ref = 0.5, mag = 0.5;
        for (int t = 0; t < rows; ++t) {
          ref += static_cast<double>(a[t]) * k[t * ld + j];
          mag += std::fabs(static_cast<double>(a[t]) * k[t * ld + j]);
        }
        EXPECT_NEAR(y[j], ref, 1e-5 * mag) << "n " << n << " rows " << rows;
      }
    }
  }
}

}  // namespace
}  // namespace selfcond
