// libFuzzer target for the concept dataset readers (experts/dataset.h): any bytes must parse or
// fail cleanly, and whatever parses must satisfy the dataset invariants (both classes non-empty,
// every sentence non-empty valid UTF-8, max_sentences honoured).
//
//   ./dataset_fuzz -max_total_time=30
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "experts/dataset.h"

namespace {

void Check(const absl::StatusOr<selfcond::Dataset>& ds, int max_sentences) {
  if (!ds.ok()) return;
  if (!selfcond::ValidateDataset(*ds).ok()) std::abort();
  if (max_sentences > 0 && (ds->positive.size() > static_cast<size_t>(max_sentences) ||
                            ds->negative.size() > static_cast<size_t>(max_sentences))) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks max_sentences (0..3) so truncation is exercised too.
  const int max_sentences = data[0] % 4;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  selfcond::DatasetOptions opts;
  opts.max_sentences = max_sentences;

  Check(selfcond::ParseConceptJson(text, opts), max_sentences);
  Check(selfcond::ParseLabeledLines(text, "fuzz", opts), max_sentences);
  // Two "files": split at the first NUL (or the middle).
  size_t cut = text.find('\0');
  if (cut == std::string_view::npos) cut = text.size() / 2;
  Check(selfcond::ParseSentenceLines(text.substr(0, cut),
                                     text.substr(std::min(cut + 1, text.size())), "fuzz", opts),
        max_sentences);

  // The validator agrees with itself on the valid prefix.
  int64_t bad = selfcond::FindInvalidUtf8(text);
  if (bad >= 0) {
    if (static_cast<size_t>(bad) >= text.size()) std::abort();
    if (selfcond::FindInvalidUtf8(text.substr(0, bad)) != -1) std::abort();
  }
  return 0;
}
