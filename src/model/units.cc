#include "model/units.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace selfcond {
namespace {

constexpr const char* kGpt2Kinds[kSiteKinds] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                "mlp.c_proj"};
constexpr const char* kLlamaKinds[kLlamaSiteKinds] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

}  // namespace

const char* SiteKindName(SiteKind kind) {
  return SiteKindName(Arch::kGpt2, static_cast<int>(kind));
}

const char* SiteKindName(Arch arch, int kind) {
  if (arch == Arch::kGpt2) return kind >= 0 && kind < kSiteKinds ? kGpt2Kinds[kind] : "?";
  return kind >= 0 && kind < kLlamaSiteKinds ? kLlamaKinds[kind] : "?";
}

UnitLayout UnitLayout::Of(const ModelConfig& c) {
  UnitLayout l;
  l.arch = c.arch;
  l.n_layer = static_cast<int>(c.n_layer);
  l.n_embd = static_cast<int>(c.n_embd);
  l.n_inner = static_cast<int>(c.n_inner);
  if (c.arch != Arch::kGpt2) {
    l.q_dim = c.q_dim();
    l.kv_dim = c.kv_dim();
  }
  return l;
}

int UnitLayout::site_size(int site) const {
  const int k = site_kind(site);
  if (arch == Arch::kGpt2) {
    switch (static_cast<SiteKind>(k)) {
      case SiteKind::kCAttn:
        return 3 * n_embd;
      case SiteKind::kCFc:
        return n_inner;
      default:
        return n_embd;
    }
  }
  switch (static_cast<LlamaSite>(k)) {
    case LlamaSite::kQ:
      return q_dim;
    case LlamaSite::kK:
    case LlamaSite::kV:
      return kv_dim;
    case LlamaSite::kGate:
    case LlamaSite::kUp:
      return n_inner;
    default:
      return n_embd;
  }
}

int64_t UnitLayout::units_per_layer() const {
  if (arch == Arch::kGpt2) return 5LL * n_embd + n_inner;
  return static_cast<int64_t>(q_dim) + 2LL * kv_dim + 2LL * n_embd + 2LL * n_inner;
}

bool UnitLayout::known() const {
  if (n_layer <= 0 || n_embd <= 0 || n_inner <= 0) return false;
  return arch == Arch::kGpt2 || (q_dim > 0 && kv_dim > 0);
}

bool UnitLayout::operator==(const UnitLayout& o) const {
  return arch == o.arch && n_layer == o.n_layer && n_embd == o.n_embd && n_inner == o.n_inner &&
         (arch == Arch::kGpt2 || (q_dim == o.q_dim && kv_dim == o.kv_dim));
}

std::string UnitLayout::SiteName(int site) const {
  if (arch == Arch::kGpt2) {
    return absl::StrCat("transformer.h.", site_layer(site), ".",
                        SiteKindName(arch, site_kind(site)), ":0");
  }
  return absl::StrCat("model.layers.", site_layer(site), ".", SiteKindName(arch, site_kind(site)));
}

absl::StatusOr<ParsedSite> ParseSiteName(std::string_view name, int max_layers) {
  absl::string_view s(name.data(), name.size());
  absl::ConsumeSuffix(&s, ":0");
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown layer name '", std::string(name),
        "' (expected transformer.h.<i>.<attn.c_attn|attn.c_proj|mlp.c_fc|mlp.c_proj>:0 for GPT-2, "
        "model.layers.<i>.<self_attn.q_proj|k_proj|v_proj|o_proj|mlp.gate_proj|up_proj|"
        "down_proj> for the Llama family)"));
  };
  Arch arch;
  if (absl::ConsumePrefix(&s, "transformer.h.") || absl::ConsumePrefix(&s, "h.")) {
    arch = Arch::kGpt2;
  } else if (absl::ConsumePrefix(&s, "model.layers.") || absl::ConsumePrefix(&s, "layers.")) {
    arch = Arch::kLlama;
  } else {
    return bad();
  }
  size_t digits = 0;
  while (digits < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
  if (digits == 0 || digits > 7 || digits >= s.size() || s[digits] != '.') return bad();
  int layer = 0;
  for (size_t i = 0; i < digits; ++i) layer = layer * 10 + (s[i] - '0');
  if (layer >= max_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer name '", std::string(name), "': block ",
                                                   layer, " does not exist (model has ", max_layers,
                                                   ")"));
  }
  const absl::string_view kind = s.substr(digits + 1);
  const int kinds = arch == Arch::kGpt2 ? kSiteKinds : kLlamaSiteKinds;
  for (int k = 0; k < kinds; ++k) {
    if (kind == SiteKindName(arch, k)) return ParsedSite{arch, layer * kinds + k};
  }
  return bad();
}

UnitSpace::UnitSpace(const UnitLayout& layout) : layout_(layout) {
  for (int s = 0; s < layout.num_sites(); ++s) {
    const int size = layout.site_size(s);
    site_size_.push_back(size);
    site_offset_.push_back(total_);
    total_ += size;
  }
}

absl::StatusOr<int> UnitSpace::ParseSiteName(const std::string& name) const {
  auto p = selfcond::ParseSiteName(name, layout_.n_layer);
  if (!p.ok()) return p.status();
  if (p->arch != layout_.arch) {
    return absl::InvalidArgumentError(absl::StrCat("layer name '", name, "' is a ",
                                                   ArchName(p->arch), " layer; this model is ",
                                                   ArchName(layout_.arch)));
  }
  return p->site;
}

std::pair<int, int> UnitSpace::SiteAndUnit(int64_t unit_id) const {
  auto it = std::upper_bound(site_offset_.begin(), site_offset_.end(), unit_id);
  int site = static_cast<int>(it - site_offset_.begin()) - 1;
  return {site, static_cast<int>(unit_id - site_offset_[site])};
}

int64_t Forcing::num_units() const {
  int64_t n = 0;
  for (const auto& s : per_site) n += static_cast<int64_t>(s.size());
  return n;
}

bool Forcing::empty() const {
  for (const auto& s : per_site)
    if (!s.empty()) return false;
  return true;
}

}  // namespace selfcond
