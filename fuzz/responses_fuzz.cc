// libFuzzer target: a stored-responses file (experts/responses.h) from arbitrary bytes must never
// crash, overread or hit UB. When it parses, every sentence and every response row is read.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "experts/responses.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy, 8-byte aligned like mmap and malloc'd images, so ASan sees overreads.
  auto buf = selfcond::HeapBuffer::CopyOf(data, size);
  if (!buf.ok()) return 0;
  auto store = selfcond::ResponseStore::FromBuffer(std::move(*buf), "fuzz");
  if (!store.ok()) return 0;
  volatile float sink = 0;
  for (int64_t i = 0; i < store->num_sentences(); ++i) {
    const std::string_view s = store->sentence(i);
    if (store->Find(s) != i) __builtin_trap();  // sentences are distinct and indexed
    const float* row = store->row(i);
    for (int64_t u = 0; u < store->num_units(); ++u) sink = sink + row[u];
  }
  return 0;
}
