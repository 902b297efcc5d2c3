#include "experts/expert_table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "experts/dataset.h"  // FindInvalidUtf8
#include "model/model.h"
#include "util/csv.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/sha256.h"

namespace selfcond {
namespace {

constexpr char kFormatName[] = "selfcond-experts";
constexpr int kFormatVersion = 1;      // GPT-2 tables
constexpr int kFormatVersionArch = 2;  // other architectures: unit_space names its arch
// Bounds that no real GPT-2 reaches; they keep hostile files from asking for absurd sizes.
constexpr int kMaxLayers = 1024;
constexpr int kMaxSiteSize = 1 << 24;

// Shortest decimal text that reads back as the same float32 (what numpy/pandas print for a
// float32). Non-finite values are returned as nullopt-like empty strings; callers decide.
std::string FloatText(float f) {
  char buf[32];
  for (int p = 1; p <= 9; ++p) {
    std::snprintf(buf, sizeof(buf), "%.*g", p, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) break;
  }
  return buf;
}

float Nan() { return std::numeric_limits<float>::quiet_NaN(); }

// Debian's Abseil has its own string_view type (not std::string_view): convert at the calls.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view SV(absl::string_view s) { return std::string_view(s.data(), s.size()); }

bool SpaceKnown(const ExpertTable& t) { return t.layout().known(); }

int64_t SpaceUnits(const ExpertTable& t) { return t.layout().num_units(); }

// Checks what both importers must guarantee: sane sites/units, no duplicates, consistency with
// the unit space when it is known. Sorts the units.
absl::Status ValidateAndSort(ExpertTable* t) {
  if (t->n_layer < 0 || t->n_embd < 0 || t->n_inner < 0 || t->n_layer > kMaxLayers ||
      t->n_embd > kMaxSiteSize / 3 || t->n_inner > kMaxSiteSize || t->q_dim < 0 || t->kv_dim < 0 ||
      t->q_dim > kMaxSiteSize || t->kv_dim > kMaxSiteSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert table: implausible unit space (n_layer ", t->n_layer, ", n_embd ", t->n_embd,
        ", n_inner ", t->n_inner, ", q_dim ", t->q_dim, ", kv_dim ", t->kv_dim, ")"));
  }
  const UnitLayout layout = t->layout();
  bool known = SpaceKnown(*t);
  if (known && t->total_units != SpaceUnits(*t)) {
    return absl::InvalidArgumentError(absl::StrCat("expert table: total_units ", t->total_units,
                                                   " does not match the unit space (",
                                                   SpaceUnits(*t), " units)"));
  }
  if (static_cast<int64_t>(t->units.size()) > t->total_units) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert table: ", t->units.size(), " units listed but total_units is ", t->total_units));
  }
  for (size_t i = 0; i < t->units.size(); ++i) {
    const ExpertUnit& u = t->units[i];
    if (u.site < 0 || u.site >= kMaxLayers * layout.kinds() || u.unit < 0 ||
        u.unit >= kMaxSiteSize) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert table: unit entry ", i, " has invalid site ", u.site, " / unit ", u.unit));
    }
    if (known) {
      if (layout.site_layer(u.site) >= t->n_layer) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert table: unit entry ", i, " is in ", layout.SiteName(u.site),
                         " but the table has ", t->n_layer, " layers"));
      }
      int size = layout.site_size(u.site);
      if (u.unit >= size) {
        return absl::InvalidArgumentError(absl::StrCat("expert table: unit entry ", i, ": unit ",
                                                       u.unit, " of ", layout.SiteName(u.site),
                                                       " is out of range (size ", size, ")"));
      }
    }
  }
  std::vector<std::pair<int, int>> ids;
  ids.reserve(t->units.size());
  for (const auto& u : t->units) ids.emplace_back(u.site, u.unit);
  std::sort(ids.begin(), ids.end());
  auto dup = std::adjacent_find(ids.begin(), ids.end());
  if (dup != ids.end()) {
    return absl::InvalidArgumentError(absl::StrCat("expert table: unit ", dup->second, " of ",
                                                   layout.SiteName(dup->first),
                                                   " is listed twice"));
  }
  SortUnits(&t->units);
  return absl::OkStatus();
}

// ---- CSV ------------------------------------------------------------------------------------

// Column names and counts of an expertise.csv header: at most this many columns.
constexpr size_t kMaxCsvColumns = 64;

absl::StatusOr<float> CsvFloat(const std::string& s, std::string_view col, size_t row) {
  absl::string_view v = absl::StripAsciiWhitespace(s);
  if (v.empty()) return Nan();  // pandas writes NaN as an empty field
  double d;
  if (!absl::SimpleAtod(v, &d)) {
    return absl::InvalidArgumentError(absl::StrCat("expertise.csv row ", row, ": column ", AV(col),
                                                   " is not a number: '", s, "'"));
  }
  // A value a float cannot hold (or "inf") would become infinite, which no table can write back
  // (JSON has no infinity; it would return as NaN, and sort elsewhere).
  if (!(std::fabs(d) <= std::numeric_limits<float>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("expertise.csv row ", row, ": column ", AV(col),
                                                   " is not a finite float: '", s, "'"));
  }
  return static_cast<float>(d);
}

// ---- JSON helpers -----------------------------------------------------------------------------

absl::StatusOr<const json::Value*> Column(const json::Value& units, std::string_view name,
                                          bool required, size_t* count) {
  const json::Value* v = units.Find(name);
  if (v == nullptr) {
    if (!required) return nullptr;
    return absl::InvalidArgumentError(
        absl::StrCat("expert table: missing column \"units.", std::string(name), "\""));
  }
  if (!v->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert table: \"units.", std::string(name), "\" is not an array"));
  }
  if (*count == static_cast<size_t>(-1)) *count = v->items().size();
  if (v->items().size() != *count) {
    return absl::InvalidArgumentError(absl::StrCat("expert table: column \"units.",
                                                   std::string(name), "\" has ", v->items().size(),
                                                   " entries, expected ", *count));
  }
  return v;
}

absl::StatusOr<int> JsonInt(const json::Value& v, std::string_view what, int64_t lo, int64_t hi) {
  if (!v.is_number() || !std::isfinite(v.as_number()) ||
      v.as_number() != std::floor(v.as_number()) || v.as_number() < static_cast<double>(lo) ||
      v.as_number() > static_cast<double>(hi)) {
    return absl::InvalidArgumentError(absl::StrCat("expert table: ", std::string(what),
                                                   " must be an integer in [", lo, ", ", hi, "]"));
  }
  return static_cast<int>(v.as_number());
}

std::string JsonFloat(float f) { return std::isfinite(f) ? FloatText(f) : "null"; }

// ml-selfcond's layer names end in ":0"; GPT-2's names already do.
std::string CsvLayerName(const UnitLayout& layout, int site) {
  std::string name = layout.SiteName(site);
  if (layout.arch != Arch::kGpt2) name += ":0";
  return name;
}

}  // namespace

std::string CsvField(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

UnitLayout ExpertTable::layout() const {
  UnitLayout l;
  l.arch = arch;
  l.n_layer = n_layer;
  l.n_embd = n_embd;
  l.n_inner = n_inner;
  l.q_dim = q_dim;
  l.kv_dim = kv_dim;
  return l;
}

void SortUnits(std::vector<ExpertUnit>* units) {
  std::sort(units->begin(), units->end(), [](const ExpertUnit& a, const ExpertUnit& b) {
    bool an = std::isnan(a.ap), bn = std::isnan(b.ap);
    if (an != bn) return bn;
    if (!an && a.ap != b.ap) return a.ap > b.ap;
    if (a.site != b.site) return a.site < b.site;
    return a.unit < b.unit;
  });
}

ExpertTable MakeExpertTable(const ModelConfig& config, absl::Span<const float> ap,
                            absl::Span<const float> on_p50, absl::Span<const float> on_p90,
                            absl::Span<const float> off_mean, int64_t top_n) {
  UnitSpace space(config);
  ExpertTable t;
  const UnitLayout layout = UnitLayout::Of(config);
  t.arch = layout.arch;
  t.n_layer = layout.n_layer;
  t.n_embd = layout.n_embd;
  t.n_inner = layout.n_inner;
  t.q_dim = layout.q_dim;
  t.kv_dim = layout.kv_dim;
  t.total_units = space.num_units();
  t.units.reserve(space.num_units());
  for (int s = 0; s < space.num_sites(); ++s) {
    for (int u = 0; u < space.site_size(s); ++u) {
      int64_t id = space.UnitId(s, u);
      auto at = [&](absl::Span<const float> v) {
        return id < static_cast<int64_t>(v.size()) ? v[id] : Nan();
      };
      t.units.push_back({s, u, at(ap), at(on_p50), at(on_p90), at(off_mean)});
    }
  }
  SortUnits(&t.units);
  if (top_n > 0 && static_cast<int64_t>(t.units.size()) > top_n) t.units.resize(top_n);
  return t;
}

// ---- native format --------------------------------------------------------------------------

std::string SerializeExpertTable(const ExpertTable& t) {
  std::string out;
  out.reserve(64 + t.units.size() * 48);
  const bool gpt2 = t.arch == Arch::kGpt2;
  absl::StrAppend(&out, "{\"format\":", json::Quote(kFormatName),
                  ",\"version\":", gpt2 ? kFormatVersion : kFormatVersionArch,
                  ",\n\"concept\":", json::Quote(t.concept), ",\"group\":", json::Quote(t.group),
                  ",\n\"model_name\":", json::Quote(t.model_name),
                  ",\"model_hash\":", json::Quote(t.model_hash),
                  ",\"precision\":", json::Quote(t.precision));
  // GPT-2 tables stay exactly what version 1 wrote; others name their arch and head sizes.
  absl::StrAppend(&out, ",\n\"unit_space\":{");
  if (!gpt2) absl::StrAppend(&out, "\"arch\":", json::Quote(ArchName(t.arch)), ",");
  absl::StrAppend(&out, "\"n_layer\":", t.n_layer, ",\"n_embd\":", t.n_embd,
                  ",\"n_inner\":", t.n_inner);
  if (!gpt2) absl::StrAppend(&out, ",\"q_dim\":", t.q_dim, ",\"kv_dim\":", t.kv_dim);
  absl::StrAppend(&out, ",\"total_units\":", t.total_units, "}");
  absl::StrAppend(&out, ",\n\"dataset\":{\"num_positive\":", t.num_positive,
                  ",\"num_negative\":", t.num_negative, ",\"num_truncated\":", t.num_truncated);
  // Only in compatibility-mode tables, so default tables read as before.
  if (!t.compat.empty()) absl::StrAppend(&out, ",\"num_dropped\":", t.num_dropped);
  out += "}";
  if (!t.compat.empty()) {
    absl::StrAppend(&out, ",\n\"ranking\":{\"compat\":", json::Quote(t.compat),
                    ",\"seq_len\":", t.compat_seq_len, ",\"per_class\":", t.compat_per_class,
                    ",\"seed\":", t.compat_seed, "}");
  }
  absl::StrAppend(&out, ",\n\"units\":{\"count\":", t.units.size());
  auto int_col = [&](const char* name, auto get) {
    absl::StrAppend(&out, ",\n\"", name, "\":[");
    for (size_t i = 0; i < t.units.size(); ++i) {
      if (i) out += ',';
      absl::StrAppend(&out, get(t.units[i]));
    }
    out += ']';
  };
  auto float_col = [&](const char* name, float ExpertUnit::*field) {
    absl::StrAppend(&out, ",\n\"", name, "\":[");
    for (size_t i = 0; i < t.units.size(); ++i) {
      if (i) out += ',';
      out += JsonFloat(t.units[i].*field);
    }
    out += ']';
  };
  int_col("site", [](const ExpertUnit& u) { return u.site; });
  int_col("unit", [](const ExpertUnit& u) { return u.unit; });
  float_col("ap", &ExpertUnit::ap);
  float_col("on_p50", &ExpertUnit::on_p50);
  float_col("on_p90", &ExpertUnit::on_p90);
  float_col("off_mean", &ExpertUnit::off_mean);
  out += "}}\n";
  return out;
}

namespace {

// The document's format and version.
absl::StatusOr<int64_t> TableVersion(const json::Value& doc) {
  auto format = doc.GetString("format");
  if (!format.ok() || *format != kFormatName) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert table: \"format\" must be \"", kFormatName, "\" (not a selfcond expert table)"));
  }
  auto version = doc.GetInt("version");
  if (!version.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("expert table: ", version.status().message()));
  }
  if (*version != kFormatVersion && *version != kFormatVersionArch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert table: version ", *version, " is not supported (this build reads versions ",
        kFormatVersion, " and ", kFormatVersionArch, ")"));
  }
  return version;
}

// The top-level strings: concept, group, model name and hash (64 hex digits), precision.
absl::Status ParseTableStrings(const json::Value& doc, ExpertTable* t) {
  for (auto [key, dst] : {std::pair<const char*, std::string*>{"concept", &t->concept},
                          {"group", &t->group},
                          {"model_name", &t->model_name},
                          {"model_hash", &t->model_hash},
                          {"precision", &t->precision}}) {
    const json::Value* v = doc.Find(key);
    if (v == nullptr || v->is_null()) continue;
    if (!v->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert table: \"", key, "\" is not a string"));
    }
    *dst = v->as_string();
  }
  if (!t->model_hash.empty()) {
    bool hex = t->model_hash.size() == 64;
    for (char c : t->model_hash) hex = hex && absl::ascii_isxdigit(static_cast<unsigned char>(c));
    if (!hex) {
      return absl::InvalidArgumentError("expert table: \"model_hash\" is not 64 hex digits");
    }
    t->model_hash = absl::AsciiStrToLower(t->model_hash);
  }
  return absl::OkStatus();
}

// unit_space (architecture, shape, total units), dataset counts and ranking settings.
absl::Status ParseTableShape(const json::Value& doc, int64_t version, ExpertTable* t) {
  const json::Value* space = doc.Find("unit_space");
  if (space == nullptr || !space->is_object()) {
    return absl::InvalidArgumentError("expert table: missing object \"unit_space\"");
  }
  struct IntField {
    const json::Value* obj;
    const char* key;
    int64_t hi;
    int* dst;
  };
  if (const json::Value* a = space->Find("arch"); a != nullptr) {
    if (!a->is_string() || (a->as_string() != "llama" && a->as_string() != "gpt2")) {
      return absl::InvalidArgumentError(
          "expert table: \"unit_space.arch\" must be \"gpt2\" or \"llama\"");
    }
    t->arch = a->as_string() == "llama" ? Arch::kLlama : Arch::kGpt2;
  }
  if ((version == kFormatVersion) != (t->arch == Arch::kGpt2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert table: version ", version, " does not go with architecture ", ArchName(t->arch)));
  }
  std::vector<IntField> ints = {{space, "n_layer", kMaxLayers, &t->n_layer},
                                {space, "n_embd", kMaxSiteSize / 3, &t->n_embd},
                                {space, "n_inner", kMaxSiteSize, &t->n_inner}};
  if (t->arch != Arch::kGpt2) {
    ints.push_back({space, "q_dim", kMaxSiteSize, &t->q_dim});
    ints.push_back({space, "kv_dim", kMaxSiteSize, &t->kv_dim});
  }
  if (const json::Value* dataset = doc.Find("dataset");
      dataset != nullptr && dataset->is_object()) {
    ints.push_back({dataset, "num_positive", INT32_MAX, &t->num_positive});
    ints.push_back({dataset, "num_negative", INT32_MAX, &t->num_negative});
    ints.push_back({dataset, "num_truncated", INT32_MAX, &t->num_truncated});
    ints.push_back({dataset, "num_dropped", INT32_MAX, &t->num_dropped});
  }
  if (const json::Value* ranking = doc.Find("ranking"); ranking != nullptr) {
    if (!ranking->is_object()) {
      return absl::InvalidArgumentError("expert table: \"ranking\" is not an object");
    }
    if (const json::Value* c = ranking->Find("compat"); c != nullptr && !c->is_null()) {
      if (!c->is_string()) {
        return absl::InvalidArgumentError("expert table: \"ranking.compat\" is not a string");
      }
      t->compat = c->as_string();
    }
    ints.push_back({ranking, "seq_len", INT32_MAX, &t->compat_seq_len});
    ints.push_back({ranking, "per_class", INT32_MAX, &t->compat_per_class});
    ints.push_back({ranking, "seed", INT32_MAX, &t->compat_seed});
  }
  for (const IntField& f : ints) {
    const json::Value* v = f.obj->Find(f.key);
    if (v == nullptr) continue;
    auto i = JsonInt(*v, f.key, 0, f.hi);
    if (!i.ok()) return i.status();
    *f.dst = *i;
  }
  const json::Value* total = space->Find("total_units");
  if (total == nullptr || !total->is_number() || !(total->as_number() >= 0) ||
      total->as_number() > 1e12 || total->as_number() != std::floor(total->as_number())) {
    return absl::InvalidArgumentError(
        "expert table: \"unit_space.total_units\" must be a non-negative integer");
  }
  t->total_units = static_cast<int64_t>(total->as_number());
  return absl::OkStatus();
}

// One statistic of unit i: a number in float range, or null (NaN); a missing column: NaN.
absl::Status UnitStat(const json::Value* col, const char* name, size_t i, float* dst) {
  if (col == nullptr) {
    *dst = Nan();
    return absl::OkStatus();
  }
  const json::Value& v = col->items()[i];
  if (v.is_null()) {
    *dst = Nan();
  } else if (v.is_number() && std::fabs(v.as_number()) <= std::numeric_limits<float>::max()) {
    *dst = static_cast<float>(v.as_number());
  } else if (v.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert table: units.", name, "[", i, "] is out of float range"));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("expert table: units.", name, "[", i, "] is not a number"));
  }
  return absl::OkStatus();
}

// The units' columns (site, unit, ap required; on_p50, on_p90, off_mean optional), all of one
// length (units.count when given).
absl::Status ParseTableUnits(const json::Value& doc, ExpertTable* t) {
  const json::Value* units = doc.Find("units");
  if (units == nullptr || !units->is_object()) {
    return absl::InvalidArgumentError("expert table: missing object \"units\"");
  }
  size_t n = static_cast<size_t>(-1);
  auto site = Column(*units, "site", true, &n);
  if (!site.ok()) return site.status();
  if (const json::Value* count = units->Find("count"); count != nullptr) {
    if (!count->is_number() || count->as_number() != static_cast<double>(n)) {
      return absl::InvalidArgumentError(absl::StrCat("expert table: \"units.count\" is ",
                                                     count->Dump(), " but the columns have ", n,
                                                     " entries"));
    }
  }
  auto unit = Column(*units, "unit", true, &n);
  if (!unit.ok()) return unit.status();
  const char* names[] = {"ap", "on_p50", "on_p90", "off_mean"};
  const json::Value* cols[4];
  for (int c = 0; c < 4; ++c) {
    auto col = Column(*units, names[c], c == 0, &n);
    if (!col.ok()) return col.status();
    cols[c] = *col;
  }
  t->units.resize(n);
  for (size_t i = 0; i < n; ++i) {
    ExpertUnit& u = t->units[i];
    auto s = JsonInt((*site)->items()[i], absl::StrCat("units.site[", i, "]"), 0,
                     kMaxLayers * t->layout().kinds() - 1);
    if (!s.ok()) return s.status();
    auto k = JsonInt((*unit)->items()[i], absl::StrCat("units.unit[", i, "]"), 0, kMaxSiteSize - 1);
    if (!k.ok()) return k.status();
    u.site = *s;
    u.unit = *k;
    float* dst[] = {&u.ap, &u.on_p50, &u.on_p90, &u.off_mean};
    for (int c = 0; c < 4; ++c) {
      if (auto st = UnitStat(cols[c], names[c], i, dst[c]); !st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ExpertTable> ParseExpertTable(std::string_view text) {
  auto doc = json::Parse(text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert table is not valid JSON: ", doc.status().message()));
  }
  if (!doc->is_object()) return absl::InvalidArgumentError("expert table: not a JSON object");
  auto version = TableVersion(*doc);
  if (!version.ok()) return version.status();
  ExpertTable t;
  if (auto st = ParseTableStrings(*doc, &t); !st.ok()) return st;
  if (auto st = ParseTableShape(*doc, *version, &t); !st.ok()) return st;
  if (auto st = ParseTableUnits(*doc, &t); !st.ok()) return st;
  if (auto st = ValidateAndSort(&t); !st.ok()) return st;
  return t;
}

// ---- CSV --------------------------------------------------------------------------------------

std::string ExportExpertiseCsv(const ExpertTable& t) {
  // Rows in ml-selfcond order: layer names sorted as strings, then unit.
  std::vector<const ExpertUnit*> rows;
  rows.reserve(t.units.size());
  for (const auto& u : t.units) rows.push_back(&u);
  int max_site = 0;
  for (const auto& u : t.units) max_site = std::max(max_site, u.site);
  const UnitLayout layout = t.layout();
  const bool space_ok = SpaceKnown(t) && max_site < layout.num_sites();
  int num_sites = space_ok ? layout.num_sites() : max_site + 1;
  std::vector<std::string> names(num_sites);
  for (int s = 0; s < num_sites; ++s) names[s] = CsvLayerName(layout, s);
  std::vector<int> site_order(num_sites);  // rank of each site in string order
  {
    std::vector<int> sites(num_sites);
    for (int s = 0; s < num_sites; ++s) sites[s] = s;
    std::sort(sites.begin(), sites.end(), [&](int a, int b) { return names[a] < names[b]; });
    for (int r = 0; r < num_sites; ++r) site_order[sites[r]] = r;
  }
  std::sort(rows.begin(), rows.end(), [&](const ExpertUnit* a, const ExpertUnit* b) {
    if (a->site != b->site) return site_order[a->site] < site_order[b->site];
    return a->unit < b->unit;
  });
  // uuid: the row index in ml-selfcond's full table when the unit space is known.
  std::vector<int64_t> uuid_base;
  if (space_ok) {
    uuid_base.resize(num_sites);
    std::vector<int> by_rank(num_sites);
    for (int s = 0; s < num_sites; ++s) by_rank[site_order[s]] = s;
    int64_t acc = 0;
    for (int r = 0; r < num_sites; ++r) {
      uuid_base[by_rank[r]] = acc;
      acc += layout.site_size(by_rank[r]);
    }
  }
  std::string concept = CsvField(t.concept), group = CsvField(t.group);
  std::string out = "ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group\n";
  out.reserve(out.size() + rows.size() * (80 + concept.size() + group.size()));
  auto f = [](float v) { return std::isnan(v) ? std::string() : FloatText(v); };
  for (size_t i = 0; i < rows.size(); ++i) {
    const ExpertUnit& u = *rows[i];
    int64_t uuid = uuid_base.empty() ? static_cast<int64_t>(i) : uuid_base[u.site] + u.unit;
    absl::StrAppend(&out, f(u.ap), ",", f(u.off_mean), ",", f(u.on_p50), ",", f(u.on_p90), ",",
                    names[u.site], ",", u.unit, ",", uuid, ",", concept, ",", group, "\n");
  }
  return out;
}

std::string CsvSha256(std::string_view csv) {
  const auto d = Sha256::Hash(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(csv.data()), csv.size()));
  return HexLower(d);
}

std::string ExportExpertiseInfoJson(const ExpertTable& t, std::string_view csv_text) {
  // Layer names: the unit space's sites (or those present), sorted as strings.
  int max_site = 0;
  for (const auto& u : t.units) max_site = std::max(max_site, u.site);
  const UnitLayout layout = t.layout();
  const bool space_ok = SpaceKnown(t) && max_site < layout.num_sites();
  std::vector<std::string> names;
  if (space_ok) {
    for (int s = 0; s < layout.num_sites(); ++s) names.push_back(CsvLayerName(layout, s));
  } else {
    std::vector<bool> present(max_site + 1, false);
    for (const auto& u : t.units) present[u.site] = true;
    for (int s = 0; s <= max_site; ++s)
      if (present[s]) names.push_back(CsvLayerName(layout, s));
  }
  std::sort(names.begin(), names.end());
  float max_ap = std::numeric_limits<float>::quiet_NaN();
  for (const auto& u : t.units) {
    if (!std::isnan(u.ap) && !(u.ap <= max_ap)) max_ap = u.ap;
  }
  const int64_t total = t.total_units > 0 ? t.total_units : static_cast<int64_t>(t.units.size());
  std::string out = absl::StrCat(
      "{\n    \"concept\": ", json::Quote(t.concept), ",\n    \"group\": ", json::Quote(t.group),
      ",\n    \"max_ap\": ", std::isnan(max_ap) ? "NaN" : FloatText(max_ap),
      ",\n    \"layer_names\": [");
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", "\n        ", json::Quote(names[i]));
  }
  absl::StrAppend(&out, names.empty() ? "]" : "\n    ]", ",\n    \"total_neurons\": ", total,
                  ",\n    \"neurons_at_ap\": {");
  // numpy.linspace(0.5, 1.0, 501): i * step + start, the last one exactly stop.
  std::vector<double> aps;
  aps.reserve(t.units.size());
  for (const auto& u : t.units)
    if (!std::isnan(u.ap)) aps.push_back(u.ap);
  std::sort(aps.begin(), aps.end());
  const double step = (1.0 - 0.5) / 500;
  for (int i = 0; i <= 500; ++i) {
    const double thr = i == 500 ? 1.0 : i * step + 0.5;
    const int64_t above =
        static_cast<int64_t>(aps.end() - std::upper_bound(aps.begin(), aps.end(), thr));
    char key[32];
    std::snprintf(key, sizeof(key), "%0.5f", thr);
    absl::StrAppend(&out, i ? "," : "", "\n        \"", key, "\": ", above);
  }
  out += "\n    }";
  // selfcond's own fields, ignored by ml-selfcond: what the CSV cannot say (the model it was
  // ranked on), tied to that exact CSV by its hash so a reader never pairs it with another.
  if (!csv_text.empty()) {
    absl::StrAppend(
        &out, ",\n    \"selfcond\": {\n        \"csv_sha256\": ", json::Quote(CsvSha256(csv_text)),
        ",\n        \"model_hash\": ", json::Quote(t.model_hash),
        ",\n        \"model_name\": ", json::Quote(t.model_name),
        ",\n        \"precision\": ", json::Quote(t.precision),
        ",\n        \"num_positive\": ", t.num_positive,
        ",\n        \"num_negative\": ", t.num_negative, "\n    }");
  }
  out += "\n}";
  return out;
}

// ml-selfcond's expertise.csv, read as pandas would: the header, then each row's columns in
// order with the check of each cell beside it. Kept whole (~120 lines): the row loop is the format.
absl::StatusOr<ExpertTable> ImportExpertiseCsv(std::string_view text) {
  CsvReader reader(text);
  std::vector<std::string> header;
  auto got = reader.Next(&header, kMaxCsvColumns);
  if (!got.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("expertise.csv: ", got.status().message()));
  }
  if (!*got) return absl::InvalidArgumentError("expertise.csv: empty file");
  auto col = [&](std::string_view name) -> int {
    for (size_t i = 0; i < header.size(); ++i)
      if (absl::StripAsciiWhitespace(header[i]) == AV(name)) return static_cast<int>(i);
    return -1;
  };
  int c_ap = col("ap"), c_layer = col("layer"), c_unit = col("unit");
  int c_off = col("off_mean"), c_p50 = col("on_p50"), c_p90 = col("on_p90");
  int c_concept = col("concept"), c_group = col("group");
  for (auto [c, name] :
       {std::pair<int, const char*>{c_ap, "ap"}, {c_layer, "layer"}, {c_unit, "unit"}}) {
    if (c < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("expertise.csv: no column \"", name,
                       "\" in the header (expected ap,off_mean,on_p50,on_p90,layer,unit,...)"));
    }
  }
  ExpertTable t;
  std::vector<std::string> row;
  for (size_t r = 1;; ++r) {
    auto more = reader.Next(&row, header.size());
    if (!more.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("expertise.csv: ", more.status().message()));
    }
    if (!*more) break;
    if (row.size() != header.size()) {
      return absl::InvalidArgumentError(absl::StrCat("expertise.csv row ", r, " has ", row.size(),
                                                     " fields, the header has ", header.size()));
    }
    ExpertUnit u;
    auto site = ParseSiteName(SV(absl::StripAsciiWhitespace(row[c_layer])), kMaxLayers);
    if (!site.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expertise.csv row ", r, ": ", site.status().message()));
    }
    if (r == 1) t.arch = site->arch;
    if (site->arch != t.arch) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expertise.csv row ", r, ": layer '", row[c_layer], "' is a ", ArchName(site->arch),
          " layer but row 1's is a ", ArchName(t.arch), " layer"));
    }
    u.site = site->site;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(row[c_unit]), &u.unit) || u.unit < 0 ||
        u.unit >= kMaxSiteSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("expertise.csv row ", r, ": bad unit index '", row[c_unit], "'"));
    }
    struct {
      int c;
      const char* name;
      float* dst;
    } floats[] = {{c_ap, "ap", &u.ap},
                  {c_off, "off_mean", &u.off_mean},
                  {c_p50, "on_p50", &u.on_p50},
                  {c_p90, "on_p90", &u.on_p90}};
    for (auto& fl : floats) {
      if (fl.c < 0) {
        *fl.dst = Nan();
        continue;
      }
      auto v = CsvFloat(row[fl.c], fl.name, r);
      if (!v.ok()) return v.status();
      *fl.dst = *v;
    }
    if (r == 1) {
      if (c_concept >= 0) t.concept = row[c_concept];
      if (c_group >= 0) t.group = row[c_group];
      // Names end up in JSON tables and UI text: they must be valid UTF-8.
      if (FindInvalidUtf8(t.concept) >= 0 || FindInvalidUtf8(t.group) >= 0) {
        return absl::InvalidArgumentError("expertise.csv row 1: concept/group is not valid UTF-8");
      }
    }
    t.units.push_back(u);
  }
  t.total_units = static_cast<int64_t>(t.units.size());

  // Infer the unit space when the table is complete: every site of layers 0..L-1 present with
  // units 0..size-1 and the architecture's size relations (GPT-2: c_attn = 3d, the projections
  // = d; Llama: k = v, o = down = d, gate = up).
  if (!t.units.empty()) {
    std::map<int, std::pair<int, int>> per_site;  // site -> (count, max unit + 1)
    for (const auto& u : t.units) {
      auto& e = per_site[u.site];
      e.first++;
      e.second = std::max(e.second, u.unit + 1);
    }
    UnitLayout guess;
    guess.arch = t.arch;
    const int kinds = guess.kinds();
    guess.n_layer = per_site.rbegin()->first / kinds + 1;
    bool complete = static_cast<int>(per_site.size()) == guess.n_layer * kinds;
    auto size0 = [&](int kind) { return complete ? per_site[kind].second : 0; };
    if (t.arch == Arch::kGpt2) {
      guess.n_embd = size0(static_cast<int>(SiteKind::kAttnCProj));
      guess.n_inner = size0(static_cast<int>(SiteKind::kCFc));
    } else {
      guess.n_embd = size0(static_cast<int>(LlamaSite::kO));
      guess.n_inner = size0(static_cast<int>(LlamaSite::kGate));
      guess.q_dim = size0(static_cast<int>(LlamaSite::kQ));
      guess.kv_dim = size0(static_cast<int>(LlamaSite::kK));
    }
    for (const auto& [s, e] : per_site) {
      if (!complete) break;
      if (e.first != e.second || e.second != guess.site_size(s)) complete = false;
    }
    if (complete && guess.known()) {
      t.n_layer = guess.n_layer;
      t.n_embd = guess.n_embd;
      t.n_inner = guess.n_inner;
      t.q_dim = guess.q_dim;
      t.kv_dim = guess.kv_dim;
    }
  }
  absl::Status st = ValidateAndSort(&t);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("expertise.csv: ", st.message()));
  return t;
}

absl::StatusOr<ExpertTable> ParseAnyExpertTable(std::string_view text) {
  // A UTF-8 byte order mark (spreadsheets write one before a CSV) is skipped.
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  size_t i = 0;
  while (i < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[i]))) ++i;
  if (i < text.size() && text[i] == '{') return ParseExpertTable(text);
  // Anything else must be an expertise.csv: its first line a header naming the columns. Other
  // files (a JSON array, binary data) are refused here, before any parsing.
  const size_t eol = std::min(text.find('\n', i), std::min(text.size(), i + 4096));
  const std::string_view first = text.substr(i, eol - i);
  const bool header =
      first.find("ap") != std::string_view::npos && first.find("layer") != std::string_view::npos &&
      first.find("unit") != std::string_view::npos && first.find('\0') == std::string_view::npos;
  if (!header) {
    std::string start;
    for (char c : text.substr(i, 16)) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u < 0x7F) {
        start += c;
      } else {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "\\x%02X", u);
        start += hex;
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "not an expert table: expected selfcond's JSON table (starting with '{') or an "
        "ml-selfcond expertise.csv (a header line naming the ap, layer and unit columns); the "
        "file starts with \"",
        start, "\""));
  }
  return ImportExpertiseCsv(text);
}

absl::Status ApplyExpertiseInfo(std::string_view csv_text, std::string_view info_text,
                                ExpertTable* t) {
  auto doc = json::Parse(info_text);
  if (!doc.ok() || !doc->is_object()) return absl::OkStatus();  // ml-selfcond's, or not ours
  const json::Value* sc = doc->Find("selfcond");
  if (sc == nullptr || !sc->is_object()) return absl::OkStatus();  // written by ml-selfcond
  const json::Value* sha = sc->Find("csv_sha256");
  if (sha == nullptr || !sha->is_string() || sha->as_string() != CsvSha256(csv_text)) {
    return absl::FailedPreconditionError(
        "expertise_info.json beside it was written for another expertise.csv (its csv_sha256 "
        "does not match): the pair is mixed, so the table's model is unknown");
  }
  const json::Value* hash = sc->Find("model_hash");
  if (hash != nullptr && hash->is_string() && hash->as_string().size() == 64) {
    t->model_hash = absl::AsciiStrToLower(std::string(hash->as_string()));
  }
  for (auto [key, dst] : {std::pair<const char*, std::string*>{"model_name", &t->model_name},
                          {"precision", &t->precision}}) {
    if (const json::Value* v = sc->Find(key); v != nullptr && v->is_string()) {
      *dst = std::string(v->as_string());
    }
  }
  for (auto [key, dst] : {std::pair<const char*, int*>{"num_positive", &t->num_positive},
                          {"num_negative", &t->num_negative}}) {
    if (const json::Value* v = sc->Find(key);
        v != nullptr && v->is_number() && v->as_number() >= 0 && v->as_number() < 2e9) {
      *dst = static_cast<int>(v->as_number());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ExpertTable> LoadExpertTable(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  auto t = ParseAnyExpertTable(*text);
  if (!t.ok())
    return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  if (t->model_hash.empty()) {
    // An expertise.csv: selfcond's own has the model's hash in expertise_info.json beside it.
    const size_t slash = path.find_last_of('/');
    const std::string info =
        (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) +
        "expertise_info.json";
    if (auto info_text = ReadFile(info); info_text.ok()) {
      if (auto st = ApplyExpertiseInfo(*text, *info_text, &*t); !st.ok()) {
        std::fprintf(stderr, "warning: %s: %s\n", path.c_str(), std::string(st.message()).c_str());
      }
    }
  }
  return t;
}

absl::Status SaveExpertTable(const ExpertTable& table, const std::string& path) {
  return WriteFile(path, SerializeExpertTable(table));
}

// ---- compatibility and forcing ----------------------------------------------------------------

absl::Status CheckCompatible(const ExpertTable& table, const Model& model, bool allow_unhashed) {
  return CheckCompatibleWith(table, model.config(), model.hash_hex(), model.name(), allow_unhashed);
}

absl::Status CheckCompatibleWith(const ExpertTable& t, const ModelConfig& config,
                                 std::string_view model_hash, std::string_view model_name,
                                 bool allow_unhashed) {
  std::string what = absl::StrCat("expert table for concept '", t.concept, "'");
  if (t.model_hash.empty() && !allow_unhashed) {
    return absl::FailedPreconditionError(absl::StrCat(
        what,
        " has no model_hash (an imported ml-selfcond expertise.csv?), so nothing shows it was "
        "ranked on this model ('",
        std::string(model_name),
        "'); rank the concept on this model, or allow unhashed tables explicitly "
        "(allow_unhashed: selfcond_experts_params.allow_unhashed in the C API, allow_unhashed=True "
        "in Python, --allow-unhashed in the CLI)"));
  }
  if (!t.model_hash.empty() && !absl::EqualsIgnoreCase(t.model_hash, AV(model_hash))) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " was ranked on another model: '", t.model_name, "' (sha256 ",
                     t.model_hash, "), this model is '", std::string(model_name), "' (sha256 ",
                     std::string(model_hash), "); rank the concept again on this model"));
  }
  UnitSpace space(config);
  if (t.arch != config.arch) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " is for a ", ArchName(t.arch), " model; this model is ", ArchName(config.arch)));
  }
  if (SpaceKnown(t) && t.layout() != space.layout()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " is for a model with n_layer ", t.n_layer, ", n_embd ", t.n_embd, ", n_inner ",
        t.n_inner,
        (t.arch == Arch::kGpt2 ? "" : absl::StrCat(", q_dim ", t.q_dim, ", kv_dim ", t.kv_dim)),
        "; this model has ", config.n_layer, ", ", config.n_embd, ", ", config.n_inner,
        (t.arch == Arch::kGpt2 ? "" : absl::StrCat(", ", config.q_dim(), ", ", config.kv_dim()))));
  }
  if (t.model_hash.empty() && t.total_units != space.num_units()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " covers ", t.total_units, " units; this model has ", space.num_units()));
  }
  for (const auto& u : t.units) {
    if (u.site >= space.num_sites()) {
      return absl::FailedPreconditionError(absl::StrCat(what, " names ", t.layer_name(u),
                                                        ", which this model (", config.n_layer,
                                                        " layers) does not have"));
    }
    if (u.unit >= space.site_size(u.site)) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " names unit ", u.unit, " of ", t.layer_name(u), ", which has ",
                       space.site_size(u.site), " units in this model"));
    }
  }
  return absl::OkStatus();
}

const char* ForcingValueName(ForcingValue v) {
  switch (v) {
    case ForcingValue::kOnP50:
      return "on_p50";
    case ForcingValue::kOnP90:
      return "on_p90";
    case ForcingValue::kOffMean:
      return "off_mean";
    case ForcingValue::kZero:
      return "zero";
  }
  return "?";
}

absl::StatusOr<ForcingValue> ParseForcingValue(std::string_view s) {
  for (ForcingValue v :
       {ForcingValue::kOnP50, ForcingValue::kOnP90, ForcingValue::kOffMean, ForcingValue::kZero}) {
    if (s == ForcingValueName(v)) return v;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown forcing value '", std::string(s),
                                                 "' (expected on_p50, on_p90, off_mean or zero)"));
}

absl::StatusOr<UnitChoice::Metric> ParseUnitMetric(std::string_view s) {
  using M = UnitChoice::Metric;
  for (M m : {M::kAp, M::kOnP50, M::kOnP90, M::kOffMean, M::kGap}) {
    if (s == UnitMetricName(m)) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown unit metric '", std::string(s),
                                                 "' (want ap, on_p50, on_p90, off_mean or gap)"));
}

const char* UnitMetricName(UnitChoice::Metric m) {
  switch (m) {
    case UnitChoice::Metric::kAp:
      return "ap";
    case UnitChoice::Metric::kOnP50:
      return "on_p50";
    case UnitChoice::Metric::kOnP90:
      return "on_p90";
    case UnitChoice::Metric::kOffMean:
      return "off_mean";
    case UnitChoice::Metric::kGap:
      return "gap";
  }
  return "?";
}

std::string DescribeUnitChoice(const UnitChoice& c, int64_t k) {
  std::string s = c.random ? absl::StrCat("random (seed ", c.seed, ")")
                           : absl::StrCat("top by ", UnitMetricName(c.metric));
  if (!c.random && c.offset > 0) {
    absl::StrAppend(&s, ", ranks ", c.offset, "..", c.offset + std::max<int64_t>(k, 1) - 1);
  }
  if (!c.layers.empty()) {
    absl::StrAppend(&s, c.layers.size() == 1 ? ", layer " : ", layers ");
    for (size_t i = 0; i < c.layers.size(); ++i) absl::StrAppend(&s, i ? "," : "", c.layers[i]);
  }
  if (!c.sites.empty()) {
    absl::StrAppend(&s, c.sites.size() == 1 ? ", site " : ", sites ");
    for (size_t i = 0; i < c.sites.size(); ++i) absl::StrAppend(&s, i ? "," : "", c.sites[i]);
  }
  return s;
}

absl::StatusOr<std::vector<int64_t>> SelectUnits(const ExpertTable& table, int64_t k,
                                                 const UnitChoice& choice) {
  if (k < 0) return absl::InvalidArgumentError(absl::StrCat("k must be >= 0, got ", k));
  if (choice.offset < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank offset must be >= 0, got ", choice.offset));
  }
  const int64_t n = static_cast<int64_t>(table.units.size());
  std::vector<int64_t> out;
  if (choice.is_default()) {
    for (int64_t j = 0; j < std::min(k, n); ++j) out.push_back(j);
    return out;
  }
  for (int layer : choice.layers) {
    if (layer < 0 || (table.n_layer > 0 && layer >= table.n_layer)) {
      return absl::OutOfRangeError(
          absl::StrCat("layer ", layer, " does not exist (the table's model has ", table.n_layer,
                       " blocks, 0..", table.n_layer - 1, ")"));
    }
  }
  std::vector<int64_t> eligible;
  for (int64_t j = 0; j < n; ++j) {
    const int layer = table.layer_of(table.units[j]);
    const int site = table.units[j].site;
    if ((choice.layers.empty() ||
         std::find(choice.layers.begin(), choice.layers.end(), layer) != choice.layers.end()) &&
        (choice.sites.empty() ||
         std::find(choice.sites.begin(), choice.sites.end(), site) != choice.sites.end())) {
      eligible.push_back(j);
    }
  }
  const int64_t need = choice.random ? k : choice.offset + k;
  if (static_cast<int64_t>(eligible.size()) < need) {
    return absl::OutOfRangeError(absl::StrCat(
        "concept '", table.concept, "': ", DescribeUnitChoice(choice, k), " needs ", need,
        " units but only ", eligible.size(), " of the table's ", n, " are eligible"));
  }
  if (choice.random) {
    // A partial Fisher-Yates shuffle with a fixed generator (std::mt19937_64 is specified by the
    // standard, so the same seed draws the same units everywhere).
    std::mt19937_64 rng(choice.seed);
    for (int64_t i = 0; i < k; ++i) {
      const uint64_t span = static_cast<uint64_t>(eligible.size() - i);
      const int64_t j = i + static_cast<int64_t>(rng() % span);
      std::swap(eligible[i], eligible[j]);
      out.push_back(eligible[i]);
    }
    return out;
  }
  if (choice.metric != UnitChoice::Metric::kAp) {
    auto value = [&](int64_t j) -> double {
      const ExpertUnit& u = table.units[j];
      switch (choice.metric) {
        case UnitChoice::Metric::kOnP50:
          return u.on_p50;
        case UnitChoice::Metric::kOnP90:
          return u.on_p90;
        case UnitChoice::Metric::kOffMean:
          return u.off_mean;
        case UnitChoice::Metric::kGap:
          return static_cast<double>(u.on_p50) - u.off_mean;
        case UnitChoice::Metric::kAp:
          break;
      }
      return u.ap;
    };
    // Descending; NaN last; ties keep the table's (AP) order.
    std::stable_sort(eligible.begin(), eligible.end(), [&](int64_t a, int64_t b) {
      const double va = value(a), vb = value(b);
      if (std::isnan(vb)) return !std::isnan(va);
      return va > vb;
    });
  }
  out.assign(eligible.begin() + choice.offset, eligible.begin() + choice.offset + k);
  return out;
}

absl::StatusOr<Forcing> BuildForcing(absl::Span<const ForcingSource> sources, ForcingValue value,
                                     bool only_last_token, const UnitSpace& space) {
  // (site, unit) -> (sum of values, count): averaged below when several tables pick a unit.
  std::map<std::pair<int, int>, std::pair<double, int>> chosen;
  for (size_t i = 0; i < sources.size(); ++i) {
    const ForcingSource& src = sources[i];
    if (src.table == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("forcing source ", i, " has no table"));
    }
    if (src.top_k < 0) {
      return absl::InvalidArgumentError(absl::StrCat("forcing source ", i, ": negative top_k"));
    }
    const ExpertTable& t = *src.table;
    auto picked = SelectUnits(t, src.top_k, src.choice);
    if (!picked.ok()) return picked.status();
    for (int64_t j : *picked) {
      const ExpertUnit& u = t.units[j];
      if (u.site < 0 || u.site >= space.num_sites() || u.unit < 0 ||
          u.unit >= space.site_size(u.site)) {
        return absl::InvalidArgumentError(absl::StrCat("concept '", t.concept, "': unit ", u.unit,
                                                       " of ", t.layer_name(u),
                                                       " does not exist in this model"));
      }
      float v = 0;
      switch (value) {
        case ForcingValue::kOnP50:
          v = u.on_p50;
          break;
        case ForcingValue::kOnP90:
          v = u.on_p90;
          break;
        case ForcingValue::kOffMean:
          v = u.off_mean;
          break;
        case ForcingValue::kZero:
          v = 0;
          break;
      }
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("concept '", t.concept, "': unit ", u.unit, " of ", t.layer_name(u),
                         " has no finite forcing value (the table lacks that column?)"));
      }
      auto& e = chosen[{u.site, u.unit}];
      e.first += v;
      e.second += 1;
    }
  }
  Forcing f;
  f.per_site.resize(space.num_sites());
  f.only_last_token = only_last_token;
  for (const auto& [key, e] : chosen) {  // map order: site, then unit ascending
    f.per_site[key.first].push_back({key.second, static_cast<float>(e.first / e.second)});
  }
  return f;
}

}  // namespace selfcond
