#include "model/units.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace selfcond {

const char* SiteKindName(SiteKind kind) {
  switch (kind) {
    case SiteKind::kCAttn:
      return "attn.c_attn";
    case SiteKind::kAttnCProj:
      return "attn.c_proj";
    case SiteKind::kCFc:
      return "mlp.c_fc";
    case SiteKind::kMlpCProj:
      return "mlp.c_proj";
  }
  return "?";
}

UnitSpace::UnitSpace(const GPT2Config& c) : n_layer_(static_cast<int>(c.n_layer)) {
  for (int l = 0; l < n_layer_; ++l) {
    for (int k = 0; k < kSiteKinds; ++k) {
      int size = 0;
      switch (static_cast<SiteKind>(k)) {
        case SiteKind::kCAttn:
          size = 3 * c.n_embd;
          break;
        case SiteKind::kAttnCProj:
          size = c.n_embd;
          break;
        case SiteKind::kCFc:
          size = c.n_inner;
          break;
        case SiteKind::kMlpCProj:
          size = c.n_embd;
          break;
      }
      site_size_.push_back(size);
      site_offset_.push_back(total_);
      total_ += size;
    }
  }
}

std::string UnitSpace::SiteName(int site) const {
  return absl::StrCat("transformer.h.", site_layer(site), ".", SiteKindName(site_kind(site)), ":0");
}

absl::StatusOr<int> UnitSpace::ParseSiteName(const std::string& name) const {
  absl::string_view s = name;
  absl::ConsumePrefix(&s, "transformer.");
  absl::ConsumeSuffix(&s, ":0");
  if (!absl::ConsumePrefix(&s, "h.")) {
    return absl::InvalidArgumentError(absl::StrCat("unknown layer name '", name, "'"));
  }
  size_t dot = s.find('.');
  int layer = 0;
  if (dot == absl::string_view::npos || !absl::SimpleAtoi(s.substr(0, dot), &layer)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown layer name '", name, "'"));
  }
  absl::string_view kind = s.substr(dot + 1);
  for (int k = 0; k < kSiteKinds; ++k) {
    if (kind == SiteKindName(static_cast<SiteKind>(k))) {
      if (layer < 0 || layer >= n_layer_) {
        return absl::InvalidArgumentError(absl::StrCat("layer name '", name, "': block ", layer,
                                                       " does not exist (model has ", n_layer_,
                                                       ")"));
      }
      return site_index(layer, static_cast<SiteKind>(k));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown layer name '", name, "'"));
}

std::pair<int, int> UnitSpace::SiteAndUnit(int64_t unit_id) const {
  auto it = std::upper_bound(site_offset_.begin(), site_offset_.end(), unit_id);
  int site = static_cast<int>(it - site_offset_.begin()) - 1;
  return {site, static_cast<int>(unit_id - site_offset_[site])};
}

bool Forcing::empty() const {
  for (const auto& s : per_site)
    if (!s.empty()) return false;
  return true;
}

}  // namespace selfcond
