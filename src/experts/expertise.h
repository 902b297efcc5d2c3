// Expertise: how well each unit's max-pooled response separates a concept's positive sentences
// from its negative ones (Suau et al. 2022, apple/ml-selfcond selfcond/expertise.py), plus the
// values used to force a unit (on_p50, on_p90) and its typical "off" response (off_mean).
//
// Statistics, per unit, over its responses r[s] (one per sentence s, label y[s] in {0, 1}):
//   ap       scikit-learn's average_precision_score(y, r): sort r descending, every distinct value
//            is one threshold (tied scores share it), AP = sum_n (R_n - R_{n-1}) * P_n with
//            P_n = TP_n / (TP_n + FP_n), R_n = TP_n / #positives, R_0 = 0.
//   on_p50   numpy.percentile(r[y == 1], 50)  (default "linear" interpolation)
//   on_p90   numpy.percentile(r[y == 1], 90)
//   off_mean mean(r[y == 0])
// All are computed in double and stored as float (ml-selfcond stores float32 too).
#ifndef SELFCOND_EXPERTS_EXPERTISE_H_
#define SELFCOND_EXPERTS_EXPERTISE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace selfcond {

class ThreadPool;

struct ExpertiseResult {
  std::vector<float> ap;        // (num_units)
  std::vector<float> on_p50;    // (num_units)
  std::vector<float> on_p90;    // (num_units)
  std::vector<float> off_mean;  // (num_units)
};

// responses: (num_sentences, num_units) row-major; labels: (num_sentences), 1 = positive,
// 0 = negative. Needs at least one sentence of each class; refuses NaN responses (scikit-learn
// refuses them too). +-inf are ordered like any other value. Units are split in chunks over the
// pool (null: the calling thread only); results do not depend on the thread count.
absl::StatusOr<ExpertiseResult> ComputeExpertise(absl::Span<const float> responses,
                                                 int64_t num_sentences, int64_t num_units,
                                                 absl::Span<const uint8_t> labels,
                                                 ThreadPool* pool);

// One unit's AP, scikit-learn semantics (see above). Returns 0 when there is no positive (where
// scikit-learn warns and, in recent versions, also returns 0). scores must not contain NaN.
double AveragePrecision(absl::Span<const float> scores, absl::Span<const uint8_t> labels);

// numpy.percentile(values, q) with linear interpolation, q in [0, 100]; values need not be
// sorted. NaN when values is empty.
double Percentile(absl::Span<const float> values, double q);

// The same on values already sorted ascending.
double PercentileSorted(absl::Span<const float> sorted, double q);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_EXPERTISE_H_
