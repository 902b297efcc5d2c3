// Units: the neurons self-conditioning reads (capture) and writes (forcing).
//
// A "site" is the output of one linear layer of one block, exactly the four layers the paper
// uses; a unit is one output channel of a site. Names follow apple/ml-selfcond:
//   layer name  "transformer.h.{i}.attn.c_attn:0"  (and .attn.c_proj:0, .mlp.c_fc:0, .mlp.c_proj:0)
//   unit        index within that layer's output (c_attn: 0..3d-1, c_fc: 0..d_ff-1 BEFORE GELU)
// Sites are numbered block-major: site = layer * 4 + kind, and units are numbered globally
// in that order (see UnitSpace), so a response vector over all units is one flat float array.
#ifndef SELFCOND_UNITS_H_
#define SELFCOND_UNITS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/model_file.h"

namespace selfcond {

enum class SiteKind : int { kCAttn = 0, kAttnCProj = 1, kCFc = 2, kMlpCProj = 3 };
inline constexpr int kSiteKinds = 4;

// "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"
const char* SiteKindName(SiteKind kind);

// The flat index space of all units of a model.
class UnitSpace {
 public:
  explicit UnitSpace(const GPT2Config& config);

  int num_sites() const { return static_cast<int>(site_offset_.size()); }
  int64_t num_units() const { return total_; }
  int site_index(int layer, SiteKind kind) const {
    return layer * kSiteKinds + static_cast<int>(kind);
  }
  int site_size(int site) const { return site_size_[site]; }
  int64_t site_offset(int site) const { return site_offset_[site]; }
  int site_layer(int site) const { return site / kSiteKinds; }
  SiteKind site_kind(int site) const { return static_cast<SiteKind>(site % kSiteKinds); }

  // "transformer.h.3.mlp.c_fc:0"
  std::string SiteName(int site) const;
  // Inverse of SiteName; accepts with or without the "transformer." prefix and the ":0" suffix.
  absl::StatusOr<int> ParseSiteName(const std::string& name) const;
  // Global unit id <-> (site, unit).
  int64_t UnitId(int site, int unit) const { return site_offset_[site] + unit; }
  std::pair<int, int> SiteAndUnit(int64_t unit_id) const;

 private:
  int n_layer_;
  std::vector<int> site_size_;
  std::vector<int64_t> site_offset_;
  int64_t total_ = 0;
};

// Forcing: for each site, the units to overwrite and their values (applied to the linear
// layer's output, after the bias, before GELU/residual, at every position or only the last).
struct Forcing {
  struct Unit {
    int unit;
    float value;
  };
  std::vector<std::vector<Unit>> per_site;  // (num_sites) lists; empty = no forcing
  bool only_last_token = false;
  bool empty() const;
};

}  // namespace selfcond

#endif  // SELFCOND_UNITS_H_
