#include "experts/expertise.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

// The expected AP values below are worked out by hand from scikit-learn's definition
// (sklearn.metrics.average_precision_score, binary case):
//   sort scores descending; each DISTINCT score is one threshold t_n; at t_n,
//   TP_n / FP_n = positives / negatives with score >= t_n, P_n = TP_n / (TP_n + FP_n),
//   R_n = TP_n / #positives; AP = sum_n (R_n - R_{n-1}) * P_n, R_0 = 0.
// The "labels" of tied scores therefore enter together (no optimistic/pessimistic tie order).

TEST(AveragePrecisionTest, SklearnDocExample) {
  // sklearn docs: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333...
  // t=0.8: P=1, R=1/2 -> 1/2; t=0.4: R unchanged; t=0.35: P=2/3, R=1 -> +1/2*2/3.
  EXPECT_NEAR(AveragePrecision({0.1f, 0.4f, 0.35f, 0.8f}, {0, 0, 1, 1}), 5.0 / 6.0, 1e-12);
}

TEST(AveragePrecisionTest, TiedScoresShareOneThreshold) {
  // scores [0.5, 0.5, 0.3, 0.3, 0.9], labels [1, 0, 1, 0, 1]:
  // t=0.9: TP1 FP0 P=1   R=1/3 -> 1/3
  // t=0.5: TP2 FP1 P=2/3 R=2/3 -> 1/3 * 2/3 = 2/9
  // t=0.3: TP3 FP2 P=3/5 R=1   -> 1/3 * 3/5 = 1/5          AP = 34/45
  // (taking the positive of each tie first would give 11/12 instead.)
  EXPECT_NEAR(AveragePrecision({0.5f, 0.5f, 0.3f, 0.3f, 0.9f}, {1, 0, 1, 0, 1}), 34.0 / 45.0,
              1e-12);
}

TEST(AveragePrecisionTest, AllEqualScores) {
  // One threshold: P = #pos / n, R = 1 -> AP = 2/5.
  EXPECT_NEAR(AveragePrecision({0.2f, 0.2f, 0.2f, 0.2f, 0.2f}, {1, 0, 0, 1, 0}), 0.4, 1e-12);
}

TEST(AveragePrecisionTest, SinglePositive) {
  // t=0.9: TP0 FP1 P=0 R=0; t=0.5: TP1 FP2 P=1/3 R=1 -> 1/3; t=0.1: R unchanged.
  EXPECT_NEAR(AveragePrecision({0.9f, 0.1f, 0.5f, 0.5f}, {0, 0, 1, 0}), 1.0 / 3.0, 1e-12);
  // Ranked first: AP 1.
  EXPECT_NEAR(AveragePrecision({0.9f, 0.1f, 0.5f, 0.5f}, {1, 0, 0, 0}), 1.0, 1e-12);
}

TEST(AveragePrecisionTest, PositivesLast) {
  // Desc: 4,3,2 negatives (P=0), 1 pos: P=1/4 R=1/2 -> 1/8; 0 pos: P=2/5 R=1 -> 1/5.
  EXPECT_NEAR(AveragePrecision({0, 1, 2, 3, 4}, {1, 1, 0, 0, 0}), 1.0 / 8 + 1.0 / 5, 1e-12);
}

TEST(AveragePrecisionTest, InfinitiesAndNegatives) {
  const float inf = std::numeric_limits<float>::infinity();
  // Desc: inf(1): P=1 R=1/2 -> 1/2; 2(0), -1(0): R unchanged; -inf(1): P=2/4 R=1 -> 1/4.
  EXPECT_NEAR(AveragePrecision({-inf, -1, 2, inf}, {1, 0, 0, 1}), 0.75, 1e-12);
}

TEST(AveragePrecisionTest, NegativeZeroTiesWithZero) {
  // numpy compares -0.0 == 0.0, so they are one threshold: P = 1/2, R = 1 -> 0.5 (ordering +0
  // above -0 would give 1.0).
  EXPECT_NEAR(AveragePrecision({-0.0f, 0.0f}, {0, 1}), 0.5, 1e-12);
}

TEST(AveragePrecisionTest, NoPositivesIsZero) {
  EXPECT_EQ(AveragePrecision({1, 2, 3}, {0, 0, 0}), 0.0);
}

// A direct O(n^2) transcription of the definition, independent of the sort-based code.
double BruteForceAp(const std::vector<float>& s, const std::vector<uint8_t>& y) {
  std::vector<float> thr = s;
  std::sort(thr.begin(), thr.end(), std::greater<float>());
  thr.erase(std::unique(thr.begin(), thr.end()), thr.end());
  int npos = 0;
  for (uint8_t l : y) npos += l;
  double ap = 0, prev_r = 0;
  for (float t : thr) {
    int tp = 0, fp = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] >= t) (y[i] ? tp : fp)++;
    }
    double p = static_cast<double>(tp) / (tp + fp), r = static_cast<double>(tp) / npos;
    ap += (r - prev_r) * p;
    prev_r = r;
  }
  return ap;
}

TEST(AveragePrecisionTest, MatchesBruteForceOnTieHeavyRandomData) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    int n = 2 + static_cast<int>(rng() % 40);
    std::vector<float> s(n);
    std::vector<uint8_t> y(n);
    int levels = 1 + static_cast<int>(rng() % 6);  // few distinct values: many ties
    for (int i = 0; i < n; ++i) {
      s[i] = static_cast<float>(static_cast<int>(rng() % levels)) - 2.0f;
      y[i] = rng() % 3 == 0;
    }
    y[rng() % n] = 1;
    EXPECT_NEAR(AveragePrecision(s, y), BruteForceAp(s, y), 1e-12) << "trial " << trial;
  }
}

TEST(PercentileTest, MatchesNumpyLinear) {
  // numpy.percentile(a, q): sort, virtual index i = q/100 * (n-1), linear between the
  // neighbours: np.percentile([1,2,3,4], 50) = 2.5, ([1,2,3,4], 90) = 3 + 0.7 = 3.7.
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_NEAR(Percentile({4, 1, 3, 2}, 90), 3.7, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile({3, 1, 2}, 50), 2.0);  // odd count: the middle value
  EXPECT_DOUBLE_EQ(Percentile({5}, 90), 5.0);
  EXPECT_NEAR(Percentile({0, 10}, 90), 9.0, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile({0, 10}, 0), 0.0);
  EXPECT_DOUBLE_EQ(Percentile({0, 10}, 100), 10.0);
  // 13 values 0..12 (football_small has 13 positives): index 0.9 * 12 = 10.8 -> 10.8.
  std::vector<float> v(13);
  for (int i = 0; i < 13; ++i) v[i] = static_cast<float>(12 - i);
  EXPECT_NEAR(Percentile(v, 90), 10.8, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 6.0);
  EXPECT_TRUE(std::isnan(Percentile({}, 50)));
}

TEST(ComputeExpertiseTest, PerUnitStatisticsAndThreadIndependence) {
  std::mt19937 rng(11);
  const int64_t S = 37, U = 150;  // U not a multiple of the chunk size
  std::vector<float> resp(S * U);
  std::vector<uint8_t> labels(S);
  for (int64_t s = 0; s < S; ++s) labels[s] = s % 3 == 0;
  std::normal_distribution<float> nd;
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t u = 0; u < U; ++u) {
      float v = nd(rng) + (labels[s] ? 0.01f * static_cast<float>(u) : 0.0f);
      if (u % 7 == 0) v = std::round(v);  // ties
      resp[s * U + u] = v;
    }
  }
  auto single = ComputeExpertise(resp, S, U, labels, nullptr);
  ASSERT_TRUE(single.ok()) << single.status();
  ThreadPool pool(2);
  auto multi = ComputeExpertise(resp, S, U, labels, &pool);
  ASSERT_TRUE(multi.ok()) << multi.status();
  for (int64_t u = 0; u < U; ++u) {
    std::vector<float> col(S), pos;
    double neg_sum = 0;
    int n_neg = 0;
    for (int64_t s = 0; s < S; ++s) {
      col[s] = resp[s * U + u];
      if (labels[s]) {
        pos.push_back(col[s]);
      } else {
        neg_sum += col[s];
        ++n_neg;
      }
    }
    std::vector<uint8_t> y(labels.begin(), labels.end());
    EXPECT_NEAR(single->ap[u], BruteForceAp(col, y), 1e-6) << u;
    EXPECT_NEAR(single->on_p50[u], Percentile(pos, 50), 1e-6) << u;
    EXPECT_NEAR(single->on_p90[u], Percentile(pos, 90), 1e-6) << u;
    EXPECT_NEAR(single->off_mean[u], neg_sum / n_neg, 1e-5) << u;
    EXPECT_EQ(single->ap[u], multi->ap[u]);
    EXPECT_EQ(single->on_p50[u], multi->on_p50[u]);
    EXPECT_EQ(single->on_p90[u], multi->on_p90[u]);
    EXPECT_EQ(single->off_mean[u], multi->off_mean[u]);
  }
}

TEST(ComputeExpertiseTest, SignsZerosAndInfinitiesMatchTheSortPath) {
  // ComputeExpertise radix-sorts the float bit patterns; AveragePrecision / Percentile use
  // std::sort on floats. Many sentences (> 256) and values of every sign class exercise all
  // radix passes, -0.0 == +0.0 ties and infinities.
  const float inf = std::numeric_limits<float>::infinity();
  const float vals[] = {-inf, -2.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 3.0f, 3.0000002f, 1e30f, inf};
  std::mt19937 rng(5);
  const int64_t S = 600, U = 9;
  std::vector<float> resp(S * U);
  std::vector<uint8_t> labels(S);
  for (int64_t s = 0; s < S; ++s) labels[s] = rng() % 4 == 0;
  for (auto& v : resp) v = vals[rng() % 10];
  auto r = ComputeExpertise(resp, S, U, labels, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  for (int64_t u = 0; u < U; ++u) {
    std::vector<float> col(S), pos;
    for (int64_t s = 0; s < S; ++s) {
      col[s] = resp[s * U + u];
      if (labels[s]) pos.push_back(col[s]);
    }
    EXPECT_NEAR(r->ap[u], AveragePrecision(col, labels), 1e-6) << u;
    EXPECT_NEAR(r->ap[u], BruteForceAp(col, labels), 1e-6) << u;
    // (inf - inf in numpy's interpolation formula gives NaN; both paths must agree on it.)
    auto same = [](float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); };
    EXPECT_PRED2(same, r->on_p50[u], static_cast<float>(Percentile(pos, 50))) << u;
    EXPECT_PRED2(same, r->on_p90[u], static_cast<float>(Percentile(pos, 90))) << u;
  }
}

TEST(ComputeExpertiseTest, ExactSmallCase) {
  // 2 units, 4 sentences: unit 0 = the SklearnDocExample, unit 1 constant.
  std::vector<float> resp = {0.1f, 1, 0.4f, 1, 0.35f, 1, 0.8f, 1};
  std::vector<uint8_t> labels = {0, 0, 1, 1};
  auto r = ComputeExpertise(resp, 4, 2, labels, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->ap[0], 5.0 / 6.0, 1e-7);
  EXPECT_NEAR(r->on_p50[0], (0.35 + 0.8) / 2, 1e-7);
  EXPECT_NEAR(r->on_p90[0], 0.35 + 0.9 * (0.8 - 0.35), 1e-7);
  EXPECT_NEAR(r->off_mean[0], 0.25, 1e-7);
  EXPECT_NEAR(r->ap[1], 0.5, 1e-7);
  EXPECT_EQ(r->on_p50[1], 1.0f);
  EXPECT_EQ(r->off_mean[1], 1.0f);
}

TEST(ComputeExpertiseTest, Errors) {
  std::vector<float> resp = {1, 2, 3, 4};
  EXPECT_FALSE(ComputeExpertise(resp, 4, 1, std::vector<uint8_t>{1, 1, 1, 1}, nullptr).ok());
  EXPECT_FALSE(ComputeExpertise(resp, 4, 1, std::vector<uint8_t>{0, 0, 0, 0}, nullptr).ok());
  EXPECT_FALSE(ComputeExpertise(resp, 4, 1, std::vector<uint8_t>{0, 1, 0}, nullptr).ok());
  EXPECT_FALSE(ComputeExpertise(resp, 3, 1, std::vector<uint8_t>{0, 1, 0}, nullptr).ok());
  EXPECT_FALSE(ComputeExpertise(resp, 4, 1, std::vector<uint8_t>{0, 2, 0, 1}, nullptr).ok());
  resp[2] = std::nanf("");
  auto r = ComputeExpertise(resp, 2, 2, std::vector<uint8_t>{0, 1}, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unit 0 to sentence 1 is NaN"), std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace selfcond
