// Expert tables: the result of ranking one concept on one model (every unit's AP and forcing
// values), their file formats, the check that a table belongs to a model, and the Forcing built
// from the top experts of one or more tables.
//
// Formats (spec with examples: docs/experts.md):
//   - native: JSON {"format": "selfcond-experts", "version": 1, ..., "units": {columns}}
//     (columnar, so the browser reads it with JSON.parse into arrays)
//   - ml-selfcond's expertise.csv: header "ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group"
#ifndef SELFCOND_EXPERTS_EXPERT_TABLE_H_
#define SELFCOND_EXPERTS_EXPERT_TABLE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/units.h"

namespace selfcond {

class Model;

struct ExpertUnit {
  int site = 0;  // layer * kinds + kind (the UnitSpace site numbering of the table's arch)
  int unit = 0;  // output channel within the site
  float ap = 0;
  float on_p50 = 0;
  float on_p90 = 0;
  float off_mean = 0;
};

struct ExpertTable {
  std::string concept;
  std::string group;
  std::string model_hash;  // model file content hash (64 hex); empty for CSV imports
  std::string model_name;
  std::string precision;  // forward precision used to rank ("int8" | "f32"); may be empty
  // The unit space the table was ranked on; 0 = unknown (a CSV with missing units). The
  // architecture is always known (from the layer names of a CSV).
  Arch arch = Arch::kGpt2;
  int n_layer = 0;
  int n_embd = 0;
  int n_inner = 0;
  int q_dim = 0;            // Llama family: n_head * head_dim
  int kv_dim = 0;           // Llama family: n_head_kv * head_dim
  int64_t total_units = 0;  // units ranked (>= units.size() when only the top N are stored)
  // Ranking data, for provenance (0 when unknown).
  int num_positive = 0;
  int num_negative = 0;
  int num_truncated = 0;  // sentences cut to the model's context length
  // Ranked in a compatibility mode: "" (selfcond's own method) or "ml-selfcond" (`rank --compat
  // ml-selfcond`: a seeded subset of at most compat_per_class sentences per class, each padded
  // with EOS to compat_seq_len tokens and pooled over all of them; longer ones dropped, counted
  // in num_dropped; num_positive / num_negative count the sentences ranked).
  std::string compat;
  int compat_seq_len = 0;
  int compat_per_class = 0;
  int compat_seed = 0;
  int num_dropped = 0;
  // Sorted by AP descending; ties by (site, unit) ascending so the order is deterministic.
  std::vector<ExpertUnit> units;  // (units.size())

  UnitLayout layout() const;
  // The unit's layer name: "transformer.h.3.mlp.c_fc:0" (GPT-2, as ml-selfcond names it) or
  // "model.layers.3.mlp.down_proj" (Llama family).
  std::string layer_name(const ExpertUnit& u) const { return layout().SiteName(u.site); }
  int layer_of(const ExpertUnit& u) const { return layout().site_layer(u.site); }
};

// Sorts units by (ap desc, site asc, unit asc). NaN APs sort last.
void SortUnits(std::vector<ExpertUnit>* units);

// Builds a table from per-unit statistics over a whole unit space ((space.num_units()) each).
// top_n > 0 keeps only the best top_n units.
ExpertTable MakeExpertTable(const ModelConfig& config, absl::Span<const float> ap,
                            absl::Span<const float> on_p50, absl::Span<const float> on_p90,
                            absl::Span<const float> off_mean, int64_t top_n = 0);

// ---- native format --------------------------------------------------------------------------
std::string SerializeExpertTable(const ExpertTable& table);
absl::StatusOr<ExpertTable> ParseExpertTable(std::string_view text);

// ---- ml-selfcond expertise.csv --------------------------------------------------------------
// One CSV field as pandas' to_csv writes it (QUOTE_MINIMAL: quoted when it holds a comma, a
// quote or a line break; quotes doubled).
std::string CsvField(std::string_view s);
// Writes ml-selfcond's layout: rows grouped by layer name in lexicographic order ("h.10" sorts
// before "h.2", as Python's sorted() does), units ascending, uuid = row index. Llama-family
// layers are named "model.layers.3.mlp.down_proj:0" (the module's name, with ml-selfcond's
// ":0" output suffix). Only the units
// present in the table are written; uuid is then the row index the unit would have in the full
// table when the unit space is known (else the written row index). Floats are written with the
// shortest text that round-trips a float32 (as pandas writes float32 columns).
std::string ExportExpertiseCsv(const ExpertTable& table);
// ml-selfcond's expertise_info.json (ExpertiseResult.export_extra_info_json, written beside
// expertise.csv by ExpertiseResult.save; ExpertiseResult.load reads both from one directory):
// concept, group, max_ap, layer_names (sorted as strings), total_neurons and neurons_at_ap (for
// thresholds numpy.linspace(0.5, 1.0, 501) formatted "%0.5f": the units with ap > threshold).
// Indented by 4 like json.dump(indent=4). A table holding only its top N units counts those.
// With csv_text (the expertise.csv it goes with), a "selfcond" object is added that
// ml-selfcond ignores: the CSV's SHA-256, the model's hash and name, the precision and the
// dataset counts, so that selfcond loads its own CSV as hashed (LoadExpertTable).
std::string ExportExpertiseInfoJson(const ExpertTable& table, std::string_view csv_text = {});
// Applies the "selfcond" object of an expertise_info.json to a table imported from csv_text:
// the model hash and provenance when its csv_sha256 is the CSV's; a FailedPrecondition when the
// sidecar belongs to another CSV (a mixed pair: nothing is taken from it); OK and nothing when
// it is ml-selfcond's own.
absl::Status ApplyExpertiseInfo(std::string_view csv_text, std::string_view info_text,
                                ExpertTable* table);
// Reads an expertise.csv (columns found by header name, any order; on_p50/on_p90/off_mean may
// be absent, as in ml-selfcond tables computed without forcing values: they read as 0).
// concept/group come from the first row. The architecture comes from the layer names (GPT-2's
// or the Llama family's, not mixed). When every unit of a unit space is present, its
// dimensions are inferred, else left 0. model_hash stays empty.
absl::StatusOr<ExpertTable> ImportExpertiseCsv(std::string_view text);

// Either format, detected from the first non-space byte ('{' = native).
absl::StatusOr<ExpertTable> ParseAnyExpertTable(std::string_view text);
// A table file. An expertise.csv picks up the model hash from the expertise_info.json beside it
// when that one was written with it by selfcond (ApplyExpertiseInfo; a mismatched sidecar is
// ignored with a warning on stderr).
absl::StatusOr<ExpertTable> LoadExpertTable(const std::string& path);
absl::Status SaveExpertTable(const ExpertTable& table, const std::string& path);  // native

// ---- compatibility and forcing --------------------------------------------------------------
// OK when the table was ranked on this model: equal hashes when the table has one; otherwise the
// unit space must match (n_layer/n_embd/n_inner when known, total unit count) and every unit
// must exist in the model. Errors say which.
// A table without a model hash (an imported ml-selfcond expertise.csv, or a JSON table with the
// hash removed) cannot be proven to come from this model: any model of the same shape would
// accept it, and its units would force meaningless values. It is refused unless the caller
// allows it explicitly (allow_unhashed: the CLI's --allow-unhashed, the C API's
// selfcond_experts_params.allow_unhashed).
absl::Status CheckCompatible(const ExpertTable& table, const Model& model,
                             bool allow_unhashed = false);
// The same against a config and hash (no Model needed; what CheckCompatible calls).
absl::Status CheckCompatibleWith(const ExpertTable& table, const ModelConfig& config,
                                 std::string_view model_hash, std::string_view model_name,
                                 bool allow_unhashed = false);

enum class ForcingValue { kOnP50, kOnP90, kOffMean, kZero };
absl::StatusOr<ForcingValue> ParseForcingValue(std::string_view s);  // on_p50|on_p90|off_mean|zero
const char* ForcingValueName(ForcingValue v);                        // "on_p50", ...

// Which k of a table's units to force: by default its top k by AP. The other choices are
// ml-selfcond's controls and ablations (scripts/generate_seq.py --metric, --top-n, --per-layer and
// force_units_hooks' use_layers), with the same meaning:
//   metric  rank the units by another statistic (descending): on_p50, on_p90, off_mean, or gap
//           (on_p50 - off_mean, how far forcing moves the unit from its usual value);
//   offset  a rank window: the units ranked offset..offset+k-1 (ml-selfcond's top_n = n is
//           offset (n-1)*k);
//   random  k units drawn uniformly without replacement from the eligible units (seeded): the
//           control that must NOT condition;
//   layers  only units of these blocks (a layer filter; per-layer forcing is one layer at a time).
struct UnitChoice {
  enum class Metric { kAp, kOnP50, kOnP90, kOffMean, kGap };
  Metric metric = Metric::kAp;
  int64_t offset = 0;
  bool random = false;
  uint64_t seed = 0;
  std::vector<int> layers;  // empty: every layer
  std::vector<int> sites;   // empty: every linear layer (UnitLayout site numbers)
  bool is_default() const {
    return metric == Metric::kAp && offset == 0 && !random && layers.empty() && sites.empty();
  }
};
absl::StatusOr<UnitChoice::Metric> ParseUnitMetric(std::string_view s);  // ap|on_p50|...|gap
const char* UnitMetricName(UnitChoice::Metric m);
// "ap", "random(seed 3)", "ap ranks 50..99, layers 0,2": a short description for reports.
std::string DescribeUnitChoice(const UnitChoice& c, int64_t k);

// Indices into table.units of the k chosen units, in rank order (random: in draw order). The
// default choice takes min(k, units) units, as before; any other choice fails with OUT_OF_RANGE
// when fewer than k units are eligible. Deterministic for a seed on every platform.
absl::StatusOr<std::vector<int64_t>> SelectUnits(const ExpertTable& table, int64_t k,
                                                 const UnitChoice& choice);

struct ForcingSource {
  ForcingSource(const ExpertTable* t = nullptr, int64_t k = 0, UnitChoice c = {})
      : table(t), top_k(k), choice(std::move(c)) {}
  const ExpertTable* table = nullptr;
  int64_t top_k = 0;  // how many units (fewer if the table is shorter, for the default choice)
  UnitChoice choice;  // which ones (default: the top_k by AP)
};

// Combines the top experts of several concepts into one Forcing over `space`. A unit chosen by
// more than one table is forced to the MEAN of their values (order-independent; a unit that is
// an expert for two concepts gets a compromise). Fails if a unit is outside the space.
absl::StatusOr<Forcing> BuildForcing(absl::Span<const ForcingSource> sources, ForcingValue value,
                                     bool only_last_token, const UnitSpace& space);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_EXPERT_TABLE_H_
