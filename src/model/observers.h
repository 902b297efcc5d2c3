// The observers the library uses (Session::Observer): what ranking, the unit explorer and the
// steering vector watch while sentences run.
#ifndef SELFCOND_MODEL_OBSERVERS_H_
#define SELFCOND_MODEL_OBSERVERS_H_

#include <algorithm>
#include <cstdint>

#include "model/model.h"
#include "model/units.h"

namespace selfcond {

// Max-pools every unit's response: out (UnitSpace(config).num_units()) receives
// max(previous, response) at every position; the caller initializes it (to -inf).
class MaxPoolObserver : public Session::Observer {
 public:
  MaxPoolObserver(const UnitSpace& space, float* out) : space_(space), out_(out) {}
  void OnSite(int site, const float* y, int m, int ld, int /*pos*/) override {
    float* mx = out_ + space_.site_offset(site);
    const int size = space_.site_size(site);
    for (int i = 0; i < m; ++i) {
      const float* row = y + static_cast<size_t>(i) * ld;
      for (int j = 0; j < size; ++j) mx[j] = std::max(mx[j], row[j]);
    }
  }

 private:
  const UnitSpace& space_;
  float* out_;
};

// One unit's response at every position: trace[pos] (n_ctx floats).
class UnitTraceObserver : public Session::Observer {
 public:
  UnitTraceObserver(int site, int unit, float* trace) : site_(site), unit_(unit), trace_(trace) {}
  void OnSite(int site, const float* y, int m, int ld, int pos) override {
    if (site != site_) return;
    for (int i = 0; i < m; ++i) trace_[pos + i] = y[static_cast<size_t>(i) * ld + unit_];
  }

 private:
  int site_, unit_;
  float* trace_;
};

// The sum over positions of the residual stream after block `layer`: sum (n_embd), zeroed by the
// caller.
class ResidualSumObserver : public Session::Observer {
 public:
  ResidualSumObserver(int layer, int n_embd, double* sum) : layer_(layer), d_(n_embd), sum_(sum) {}
  void OnResidual(int layer, const float* x, int n, int /*pos*/) override {
    if (layer != layer_) return;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < d_; ++j) sum_[j] += x[static_cast<size_t>(i) * d_ + j];
    }
  }

 private:
  int layer_, d_;
  double* sum_;
};

}  // namespace selfcond

#endif  // SELFCOND_MODEL_OBSERVERS_H_
