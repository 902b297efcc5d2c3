#include "util/numpy_random.h"

#include <numeric>
#include <utility>

namespace selfcond {

uint32_t NumpyRandomState::Interval(uint32_t max) {
  if (max == 0) return 0;
  uint32_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  uint32_t value;
  while ((value = static_cast<uint32_t>(mt_()) & mask) > max) {
  }
  return value;
}

std::vector<int64_t> NumpyRandomState::Permutation(int64_t n) {
  std::vector<int64_t> a(static_cast<size_t>(n));
  std::iota(a.begin(), a.end(), int64_t{0});
  for (int64_t i = n - 1; i >= 1; --i) {
    const uint32_t j = Interval(static_cast<uint32_t>(i));
    std::swap(a[static_cast<size_t>(i)], a[j]);
  }
  return a;
}

std::vector<int64_t> NumpyRandomState::ChoiceWithoutReplacement(int64_t n, int64_t k) {
  std::vector<int64_t> p = Permutation(n);
  p.resize(static_cast<size_t>(k));
  return p;
}

}  // namespace selfcond
