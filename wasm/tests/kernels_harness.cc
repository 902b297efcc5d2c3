// Node harness for the WASM SIMD128 kernels: compares WasmSimd128Backend with ScalarBackend (the
// reference, src/kernels/scalar.cc) on random shapes, then times the hot shapes.
//
// Built by wasm/build.sh (target selfcond_wasm_kernels_harness) into one .js (SINGLE_FILE) and
// run by wasm/tests/kernels.test.mjs, which asserts on the output. One JSON object per line:
//   {"kind":"backends",...}            what dispatch.cc reports in this build
//   {"kind":"quantize"|"gemm_i8"|"gemm_f32", shape..., "mismatches":N, "outside_writes":N, ...}
//   {"kind":"timing", ...}             only with --bench (printed, never asserted)
//   {"kind":"done","cases":N}
// quantize_rows and gemm_i8 must be bit-identical to scalar (same integer sums, same float
// epilogue order, no FMA in SIMD128); gemm_f32 sums in another order, so it gets a tolerance
// bound by the magnitude of the terms.
#include <emscripten.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/backends.h"
#include "kernels/kernels.h"

namespace selfcond::kernels {
namespace {

int g_cases = 0;

struct Packed {
  std::vector<int8_t> q;         // (n_pad / 16, k / 4, 16, 4)
  std::vector<float> scale;      // (n_pad)
  std::vector<int32_t> row_sum;  // (n_pad)
  PackedI8 view;
};

Packed Pack(const std::vector<float>& w, int n, int k) {
  Packed p;
  const int n_pad = PaddedRows(n);
  p.q.assign(static_cast<size_t>(n_pad) * k, 0);
  p.scale.assign(n_pad, 0.0f);
  p.row_sum.assign(n_pad, 0);
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

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

void CheckQuantize(const Backend& b, const std::vector<float>& x, int m, int k, const char* what) {
  std::vector<int8_t> ref_q(static_cast<size_t>(m) * k), got_q(ref_q.size(), 77);
  std::vector<float> ref_s(m), got_s(m, -1.0f);
  ScalarBackend().quantize_rows(x.data(), m, k, ref_q.data(), ref_s.data());
  b.quantize_rows(x.data(), m, k, got_q.data(), got_s.data());
  int mismatches = 0;
  for (size_t j = 0; j < ref_q.size(); ++j) mismatches += ref_q[j] != got_q[j];
  for (int i = 0; i < m; ++i) mismatches += !SameBits(ref_s[i], got_s[i]);
  std::printf("{\"kind\":\"quantize\",\"data\":\"%s\",\"m\":%d,\"k\":%d,\"mismatches\":%d}\n", what,
              m, k, mismatches);
  ++g_cases;
}

void CheckGemmI8(const Backend& b, std::mt19937& rng, int m, int n, int k, int n_begin, int n_end,
                 int ldy, bool with_bias) {
  Packed p = Pack(RandomMatrix(rng, n, k, 0.1f), n, k);
  const std::vector<float> x = RandomMatrix(rng, m, k, 1.0f);
  const std::vector<float> bias = RandomMatrix(rng, 1, n, 1.0f);
  std::vector<int8_t> xq(static_cast<size_t>(m) * k);
  std::vector<float> xs(m);
  ScalarBackend().quantize_rows(x.data(), m, k, xq.data(), xs.data());
  const float* bp = with_bias ? bias.data() : nullptr;
  const float kSentinel = -12345.0f;
  std::vector<float> ref(static_cast<size_t>(m) * ldy, kSentinel), got(ref.size(), kSentinel);
  ScalarBackend().gemm_i8(p.view, xq.data(), xs.data(), m, bp, ref.data(), ldy, n_begin, n_end);
  b.gemm_i8(p.view, xq.data(), xs.data(), m, bp, got.data(), ldy, n_begin, n_end);
  int mismatches = 0, outside = 0;
  float max_diff = 0.0f;
  for (int i = 0; i < m; ++i) {
    for (int r = 0; r < ldy; ++r) {
      const size_t at = static_cast<size_t>(i) * ldy + r;
      if (r < n_begin || r >= n_end) {
        outside += got[at] != kSentinel;
        continue;
      }
      if (!SameBits(got[at], ref[at])) {
        ++mismatches;
        const float d = std::fabs(got[at] - ref[at]);
        if (!(d <= max_diff)) max_diff = d;  // NaN shows up as NaN
      }
    }
  }
  std::printf(
      "{\"kind\":\"gemm_i8\",\"m\":%d,\"n\":%d,\"k\":%d,\"range\":[%d,%d],\"ldy\":%d,"
      "\"bias\":%s,\"mismatches\":%d,\"outside_writes\":%d,\"max_abs_diff\":%g}\n",
      m, n, k, n_begin, n_end, ldy, with_bias ? "true" : "false", mismatches, outside, max_diff);
  ++g_cases;
}

void CheckGemmF32(const Backend& b, std::mt19937& rng, int m, int n, int k, int n_begin, int n_end,
                  int ldy, bool with_bias) {
  const std::vector<float> w = RandomMatrix(rng, n, k, 0.1f);
  const std::vector<float> x = RandomMatrix(rng, m, k, 1.0f);
  const std::vector<float> bias = RandomMatrix(rng, 1, n, 1.0f);
  const MatF32 mat{w.data(), n, k};
  const float* bp = with_bias ? bias.data() : nullptr;
  const float kSentinel = -12345.0f;
  std::vector<float> ref(static_cast<size_t>(m) * ldy, kSentinel), got(ref.size(), kSentinel);
  ScalarBackend().gemm_f32(mat, x.data(), m, bp, ref.data(), ldy, n_begin, n_end);
  b.gemm_f32(mat, x.data(), m, bp, got.data(), ldy, n_begin, n_end);
  int mismatches = 0, outside = 0;
  double worst = 0.0;  // max |got - ref| / magnitude of the terms
  for (int i = 0; i < m; ++i) {
    for (int r = 0; r < ldy; ++r) {
      const size_t at = static_cast<size_t>(i) * ldy + r;
      if (r < n_begin || r >= n_end) {
        outside += got[at] != kSentinel;
        continue;
      }
      double mag = with_bias ? std::fabs(bias[r]) : 0.0;
      for (int c = 0; c < k; ++c) {
        mag += std::fabs(double{x[static_cast<size_t>(i) * k + c]} *
                         w[static_cast<size_t>(r) * k + c]);
      }
      const double rel = std::fabs(double{got[at]} - ref[at]) / (mag + 1e-30);
      if (!(rel <= 1e-5)) ++mismatches;
      if (!(rel <= worst)) worst = rel;
    }
  }
  std::printf(
      "{\"kind\":\"gemm_f32\",\"m\":%d,\"n\":%d,\"k\":%d,\"range\":[%d,%d],\"ldy\":%d,"
      "\"bias\":%s,\"mismatches\":%d,\"outside_writes\":%d,\"worst_rel_err\":%g}\n",
      m, n, k, n_begin, n_end, ldy, with_bias ? "true" : "false", mismatches, outside, worst);
  ++g_cases;
}

void RunChecks(const Backend& b) {
  std::mt19937 rng(20240601);
  // quantize_rows: vector body + tails, an all-zero row, non-finite and tiny values.
  for (int k : {1, 3, 4, 7, 15, 16, 17, 31, 64, 100, 768, 3072}) {
    for (int m : {1, 2, 5}) {
      std::vector<float> x = RandomMatrix(rng, m, k, 3.0f);
      if (m > 1) std::fill(x.begin() + k, x.begin() + 2 * k, 0.0f);
      CheckQuantize(b, x, m, k, "normal");
    }
  }
  {
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const int k = 37;
    std::vector<float> x(5 * k, 1.0f);
    x[0] = nan;
    x[5] = 2.0f;
    x[20] = -0.5f * 2.0f / 127.0f;  // exactly -0.5 after scaling: rounds to -0 (half to even)
    x[k + 3] = inf;
    x[k + 30] = -inf;
    for (int c = 0; c < k; ++c) x[2 * k + c] = nan;
    for (int c = 0; c < k; ++c) x[3 * k + c] = 1e-44f;  // scale underflows to 0
    for (int c = 0; c < k; ++c) x[4 * k + c] = (c % 2 ? 1.5f : 2.5f) * (c % 3 ? 1 : -1);
    x[4 * k] = 127.0f;  // scale 1: exact halves
    CheckQuantize(b, x, 5, k, "special");
  }
  // gemm_i8 / gemm_f32 on many shapes: n not a multiple of 16, m around the 4-token tile.
  for (int k : {4, 8, 12, 64, 100, 768}) {
    for (int m : {1, 2, 3, 4, 5, 8, 17}) {
      for (int n : {1, 15, 16, 17, 50}) CheckGemmI8(b, rng, m, n, k, 0, n, n, true);
    }
  }
  CheckGemmI8(b, rng, 1, 3072, 768, 0, 3072, 3072, true);
  CheckGemmI8(b, rng, 1, 768, 3072, 0, 768, 768, true);
  CheckGemmI8(b, rng, 33, 200, 256, 0, 200, 200, true);
  for (int m : {1, 3, 9}) {
    const int n = 70, k = 36;
    CheckGemmI8(b, rng, m, n, k, 16, 48, n, true);      // an interior thread's range
    CheckGemmI8(b, rng, m, n, k, 64, 70, n, true);      // the ragged last range
    CheckGemmI8(b, rng, m, n, k, 0, 16, n + 7, false);  // row stride > n, no bias
    CheckGemmI8(b, rng, m, n, k, 5, 37, n + 3, true);   // not 16-aligned
    CheckGemmI8(b, rng, m, n, k, 2, 3, n, true);        // one row
    CheckGemmI8(b, rng, m, n, k, 20, 20, n, true);      // empty range
  }
  for (int k : {1, 3, 4, 7, 8, 64, 100, 768}) {
    for (int m : {1, 2, 3, 5, 17}) {
      for (int n : {1, 3, 4, 17, 50}) CheckGemmF32(b, rng, m, n, k, 0, n, n, true);
    }
  }
  for (int m : {1, 4}) {
    CheckGemmF32(b, rng, m, 70, 36, 16, 48, 70, true);
    CheckGemmF32(b, rng, m, 70, 36, 5, 38, 73, false);
    CheckGemmF32(b, rng, m, 70, 36, 69, 70, 70, true);
    CheckGemmF32(b, rng, m, 70, 36, 9, 9, 70, true);
  }
}

// Median of `reps` timed calls, in ms.
template <typename F>
double TimeMs(int reps, F&& f) {
  f();  // warm-up (and tier-up of the wasm code)
  std::vector<double> t(reps);
  for (int r = 0; r < reps; ++r) {
    const double t0 = emscripten_get_now();
    f();
    t[r] = emscripten_get_now() - t0;
  }
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

void Bench(const Backend& b) {
  std::mt19937 rng(7);
  struct Shape {
    int m, n, k;
  };
  for (Shape s : {Shape{1, 3072, 768}, Shape{1, 768, 3072}, Shape{64, 3072, 768}}) {
    Packed p = Pack(RandomMatrix(rng, s.n, s.k, 0.1f), s.n, s.k);
    const std::vector<float> w = RandomMatrix(rng, s.n, s.k, 0.1f);
    const MatF32 mat{w.data(), s.n, s.k};
    const std::vector<float> x = RandomMatrix(rng, s.m, s.k, 1.0f);
    const std::vector<float> bias = RandomMatrix(rng, 1, s.n, 1.0f);
    std::vector<int8_t> xq(static_cast<size_t>(s.m) * s.k);
    std::vector<float> xs(s.m), y(static_cast<size_t>(s.m) * s.n);
    for (const Backend* be : {&b, &ScalarBackend()}) {
      const bool slow = be == &ScalarBackend();
      const int reps = slow ? (s.m > 1 ? 3 : 15) : (s.m > 1 ? 15 : 200);
      const double tq =
          TimeMs(reps, [&] { be->quantize_rows(x.data(), s.m, s.k, xq.data(), xs.data()); });
      const double ti8 = TimeMs(reps, [&] {
        be->gemm_i8(p.view, xq.data(), xs.data(), s.m, bias.data(), y.data(), s.n, 0, s.n);
      });
      const double tf32 = TimeMs(
          reps, [&] { be->gemm_f32(mat, x.data(), s.m, bias.data(), y.data(), s.n, 0, s.n); });
      std::printf(
          "{\"kind\":\"timing\",\"backend\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,"
          "\"quantize_ms\":%.4f,\"gemm_i8_ms\":%.4f,\"gemm_f32_ms\":%.4f}\n",
          be->name, s.m, s.n, s.k, tq, ti8, tf32);
    }
  }
}

}  // namespace
}  // namespace selfcond::kernels

int main(int argc, char** argv) {
  using namespace selfcond::kernels;
  std::string names;
  for (const Backend* b : AvailableBackends()) {
    names += std::string(names.empty() ? "" : ",") + "\"" + b->name + "\"";
  }
  std::printf("{\"kind\":\"backends\",\"available\":[%s],\"default\":\"%s\"}\n", names.c_str(),
              DefaultBackend().name);
  const Backend& wasm = *WasmSimd128Backend();
  RunChecks(wasm);
  bool bench = false;
  for (int i = 1; i < argc; ++i) bench |= std::strcmp(argv[i], "--bench") == 0;
  if (bench) Bench(wasm);
  std::printf("{\"kind\":\"done\",\"cases\":%d}\n", g_cases);
  return 0;
}
