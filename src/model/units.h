// Units: the neurons self-conditioning reads (capture) and writes (forcing).
//
// A "site" is the output of one linear layer of one block; a unit is one output channel of a
// site. The sites of a block, by architecture (the paper's four for GPT-2; every linear layer's
// output for the Llama family):
//   GPT-2 (4)   attn.c_attn (3d), attn.c_proj (d), mlp.c_fc (d_ff, BEFORE GELU), mlp.c_proj (d)
//               named as in apple/ml-selfcond: "transformer.h.{i}.attn.c_attn:0"
//   Llama (7)   self_attn.q_proj (n_head * head_dim), self_attn.k_proj and self_attn.v_proj
//               (n_head_kv * head_dim), self_attn.o_proj (d), mlp.gate_proj (d_ff, BEFORE SiLU),
//               mlp.up_proj (d_ff, before the product), mlp.down_proj (d)
//               named by Hugging Face module names: "model.layers.{i}.mlp.down_proj"
// Sites are numbered block-major: site = layer * kinds + kind, and units are numbered globally
// in that order (see UnitSpace), so a response vector over all units is one flat float array.
#ifndef SELFCOND_UNITS_H_
#define SELFCOND_UNITS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/model_file.h"

namespace selfcond {

// GPT-2's site kinds.
enum class SiteKind : int { kCAttn = 0, kAttnCProj = 1, kCFc = 2, kMlpCProj = 3 };
inline constexpr int kSiteKinds = 4;  // GPT-2
// The Llama family's site kinds.
enum class LlamaSite : int {
  kQ = 0,
  kK = 1,
  kV = 2,
  kO = 3,
  kGate = 4,
  kUp = 5,
  kDown = 6,
};
inline constexpr int kLlamaSiteKinds = 7;

// "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj" (GPT-2)
const char* SiteKindName(SiteKind kind);
// The site kind's name within a block: GPT-2's above, or "self_attn.q_proj" ... "mlp.down_proj".
const char* SiteKindName(Arch arch, int kind);

// The names and sizes of a model's sites, from its architecture and dimensions: enough to name
// and check units without the model (an expert table carries one).
struct UnitLayout {
  Arch arch = Arch::kGpt2;
  int n_layer = 0;
  int n_embd = 0;
  int n_inner = 0;
  int q_dim = 0;   // Llama family: n_head * head_dim (GPT-2: unused)
  int kv_dim = 0;  // Llama family: n_head_kv * head_dim

  static UnitLayout Of(const ModelConfig& config);
  int kinds() const { return arch == Arch::kGpt2 ? kSiteKinds : kLlamaSiteKinds; }
  int num_sites() const { return n_layer * kinds(); }
  int site_layer(int site) const { return site / kinds(); }
  int site_kind(int site) const { return site % kinds(); }
  int site_size(int site) const;  // units of a site (by its kind)
  int64_t units_per_layer() const;
  int64_t num_units() const { return n_layer * units_per_layer(); }
  bool known() const;  // every dimension the sizes need is set
  bool operator==(const UnitLayout& o) const;
  bool operator!=(const UnitLayout& o) const { return !(*this == o); }
  // "transformer.h.3.mlp.c_fc:0" (GPT-2) or "model.layers.3.mlp.down_proj" (Llama family).
  std::string SiteName(int site) const;
};

// The site index and architecture of a layer name, with no model at hand. Accepts GPT-2's names
// with or without "transformer." and ":0", and the Llama family's with or without "model." and
// ":0". Layers up to max_layers - 1.
struct ParsedSite {
  Arch arch;
  int site;  // layer * kinds + kind for that architecture
};
absl::StatusOr<ParsedSite> ParseSiteName(std::string_view name, int max_layers = 1024);

// The flat index space of all units of a model.
class UnitSpace {
 public:
  explicit UnitSpace(const ModelConfig& config) : UnitSpace(UnitLayout::Of(config)) {}
  explicit UnitSpace(const UnitLayout& layout);

  const UnitLayout& layout() const { return layout_; }
  int num_sites() const { return static_cast<int>(site_offset_.size()); }
  int64_t num_units() const { return total_; }
  int site_index(int layer, SiteKind kind) const {
    return layer * kSiteKinds + static_cast<int>(kind);
  }
  int site_index(int layer, LlamaSite kind) const {
    return layer * kLlamaSiteKinds + static_cast<int>(kind);
  }
  int site_size(int site) const { return site_size_[site]; }
  int64_t site_offset(int site) const { return site_offset_[site]; }
  int site_layer(int site) const { return layout_.site_layer(site); }

  std::string SiteName(int site) const { return layout_.SiteName(site); }
  // Inverse of SiteName for this model's architecture (and block count).
  absl::StatusOr<int> ParseSiteName(const std::string& name) const;
  // Global unit id <-> (site, unit).
  int64_t UnitId(int site, int unit) const { return site_offset_[site] + unit; }
  std::pair<int, int> SiteAndUnit(int64_t unit_id) const;

 private:
  UnitLayout layout_;
  std::vector<int> site_size_;
  std::vector<int64_t> site_offset_;
  int64_t total_ = 0;
};

// Forcing: for each site, the units to overwrite and their values (applied to the linear
// layer's output, after the bias, before the activation / residual, at every position or only
// the last).
struct Forcing {
  struct Unit {
    int unit;
    float value;
  };
  std::vector<std::vector<Unit>> per_site;  // (num_sites) lists; empty = no forcing
  bool only_last_token = false;
  bool empty() const;
  int64_t num_units() const;  // units forced (over every site)
};

}  // namespace selfcond

#endif  // SELFCOND_UNITS_H_
