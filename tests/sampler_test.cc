// Sampler against a plain reference: sort every logit by (logit desc, id asc), softmax in that
// order, cut at top-k / top-p, walk the uniform draw down the sorted list. The Sampler sorts only
// as far as its walk goes; the tokens must be the same, seed for seed.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"

namespace selfcond {
namespace {

// PCG32 seeded like pcg32_srandom_r(seed, 54) and the 53-bit uniform of generate.h's contract.
class ReferenceSampler {
 public:
  explicit ReferenceSampler(const SamplingOptions& o) : o_(o) {
    inc_ = (54u << 1) | 1u;
    Next();
    state_ += o.seed;
    Next();
  }
  int32_t Sample(const std::vector<float>& l) {
    const int V = static_cast<int>(l.size());
    std::vector<int32_t> idx(V);
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(),
              [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    int n = o_.top_k > 0 && o_.top_k < V ? o_.top_k : V;
    std::vector<double> p(n);
    double sum = 0;
    for (int i = 0; i < n; ++i)
      sum += (p[i] = std::exp((l[idx[i]] - static_cast<double>(l[idx[0]])) / o_.temperature));
    if (o_.top_p < 1) {
      double cum = 0;
      int keep = n;
      for (int i = 0; i < n; ++i) {
        cum += p[i] / sum;
        if (cum >= o_.top_p) {
          keep = i + 1;
          break;
        }
      }
      n = keep;
      sum = 0;
      for (int i = 0; i < n; ++i) sum += p[i];
    }
    const uint64_t hi = Next(), lo = Next();
    double r = static_cast<double>(((hi << 21) ^ lo) & ((1ULL << 53) - 1)) / 9007199254740992.0;
    r *= sum;
    for (int i = 0; i < n; ++i) {
      r -= p[i];
      if (r < 0) return idx[i];
    }
    return idx[n - 1];
  }

 private:
  uint32_t Next() {
    const uint64_t old = state_;
    state_ = old * 6364136223846793005ULL + inc_;
    const uint32_t x = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
    const uint32_t rot = static_cast<uint32_t>(old >> 59u);
    return (x >> rot) | (x << ((-rot) & 31));
  }
  SamplingOptions o_;
  uint64_t state_ = 0, inc_ = 0;
};

TEST(SamplerTest, SameTokensAsAFullSortSeedForSeed) {
  std::mt19937 gen(7);
  int compared = 0;
  for (int vocab : {50, 1000, 50257}) {
    for (float spread : {0.5f, 3.0f, 12.0f}) {  // flat to peaked distributions
      for (bool ties : {false, true}) {
        for (double top_p : {1.0, 0.9}) {
          for (int top_k : {0, 40}) {
            SamplingOptions o;
            o.temperature = spread > 5 ? 0.7f : 1.0f;
            o.top_p = static_cast<float>(top_p);
            o.top_k = top_k;
            o.seed = gen();
            Sampler s(o);
            ReferenceSampler ref(o);
            std::normal_distribution<float> logit(0.0f, spread);
            for (int step = 0; step < (vocab > 10000 ? 4 : 20); ++step) {
              std::vector<float> l(vocab);
              for (float& x : l) x = ties ? std::round(logit(gen)) : logit(gen);
              ASSERT_EQ(s.Sample(l), ref.Sample(l))
                  << "vocab " << vocab << " spread " << spread << " ties " << ties << " top_p "
                  << top_p << " top_k " << top_k << " step " << step;
              ++compared;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(compared, 400);
}

}  // namespace
}  // namespace selfcond
