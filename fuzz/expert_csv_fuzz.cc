// libFuzzer target for ml-selfcond's expertise.csv reader alone, under a memory limit (issue 22:
// a CSV must be parsed with a budget proportional to its size). tests/run.sh runs it with
// -malloc_limit_mb and -rss_limit_mb far below what an unbounded reader takes on inputs of
// libFuzzer's sizes; a parsed table must round-trip through the CSV writer, and the sidecar
// reader (expertise_info.json) must accept or refuse its pair without crashing.
//
//   ./expert_csv_fuzz -max_total_time=30 -malloc_limit_mb=64 -rss_limit_mb=512
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "experts/expert_table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto t = selfcond::ImportExpertiseCsv(text);
  if (t.ok()) {
    const std::string csv = selfcond::ExportExpertiseCsv(*t);
    auto back = selfcond::ImportExpertiseCsv(csv);
    if (!back.ok() || back->units.size() != t->units.size()) std::abort();
    const std::string info = selfcond::ExportExpertiseInfoJson(*t, csv);
    if (!selfcond::ApplyExpertiseInfo(csv, info, &*back).ok()) std::abort();
  }
  // The same bytes as an expertise_info.json next to a small CSV.
  selfcond::ExpertTable u;
  (void)selfcond::ApplyExpertiseInfo("ap,layer,unit\n0.5,h.0.mlp.c_fc,1\n", text, &u);
  return 0;
}
