// numpy's legacy random generator (numpy.random.RandomState), as far as ml-selfcond uses it:
// RandomState(seed).choice(n, k, replace=False), which ml-selfcond's ConceptDataset calls to
// draw at most num_per_concept sentences per class (seed 1234).
//
// numpy's algorithm (numpy/random/mtrand.pyx, distributions.c; the same from numpy 1.17 to 2.x):
// RandomState(seed) seeds MT19937 with init_genrand(seed) (= std::mt19937(seed));
// choice(n, k, replace=False) without p is permutation(n)[:k]; permutation shuffles arange(n)
// with Fisher-Yates from the end: for i = n-1 down to 1, j = random_interval(i), swap a[i], a[j];
// random_interval(max) draws 32-bit outputs masked to the smallest all-ones mask >= max and
// rejects values > max (64-bit draws when max > 2^32-1, never needed here).
#ifndef SELFCOND_UTIL_NUMPY_RANDOM_H_
#define SELFCOND_UTIL_NUMPY_RANDOM_H_

#include <cstdint>
#include <random>
#include <vector>

namespace selfcond {

class NumpyRandomState {
 public:
  explicit NumpyRandomState(uint32_t seed) : mt_(seed) {}
  // numpy's random_interval: uniform in [0, max].
  uint32_t Interval(uint32_t max);
  // RandomState.permutation(n).
  std::vector<int64_t> Permutation(int64_t n);
  // RandomState.choice(n, k, replace=False): k distinct indices in [0, n), in numpy's order.
  // Requires 0 <= k <= n < 2^32.
  std::vector<int64_t> ChoiceWithoutReplacement(int64_t n, int64_t k);

 private:
  std::mt19937 mt_;
};

}  // namespace selfcond

#endif  // SELFCOND_UTIL_NUMPY_RANDOM_H_
