// libFuzzer target for the expert table readers (experts/expert_table.h): the native JSON format
// and ml-selfcond's expertise.csv. Any bytes must parse or fail cleanly; a parsed table must
// survive a write/read round trip in both formats with the same units, and the compatibility
// check and BuildForcing must not crash on it.
//
//   ./expert_table_fuzz -max_total_time=30
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "experts/expert_table.h"

namespace {

bool SameFloat(float a, float b) {
  // Non-finite values travel as null / empty fields and come back as NaN.
  if (!std::isfinite(a)) return std::isnan(b);
  return a == b;
}

void RoundTrip(const selfcond::ExpertTable& t) {
  auto back = selfcond::ParseExpertTable(selfcond::SerializeExpertTable(t));
  if (!back.ok() || back->units.size() != t.units.size()) std::abort();
  for (size_t i = 0; i < t.units.size(); ++i) {
    const auto &a = t.units[i], &b = back->units[i];
    if (a.site != b.site || a.unit != b.unit || !SameFloat(a.on_p50, b.on_p50)) std::abort();
  }
  auto csv = selfcond::ImportExpertiseCsv(selfcond::ExportExpertiseCsv(t));
  if (!csv.ok() || csv->units.size() != t.units.size()) std::abort();

  // A small model's unit space: compatibility must answer, forcing must not crash.
  selfcond::ModelConfig c;
  c.n_layer = 2;
  c.n_embd = 4;
  c.n_head = 2;
  c.n_ctx = 8;
  c.vocab_size = 4;
  c.n_inner = 8;
  (void)selfcond::CheckCompatibleWith(t, c, "", "fuzz");
  selfcond::UnitSpace space(c);
  selfcond::ForcingSource src{&t, 5};
  (void)selfcond::BuildForcing({&src, 1}, selfcond::ForcingValue::kOnP90, false, space);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto native = selfcond::ParseExpertTable(text);
  if (native.ok()) RoundTrip(*native);
  auto csv = selfcond::ImportExpertiseCsv(text);
  if (csv.ok()) RoundTrip(*csv);
  return 0;
}
