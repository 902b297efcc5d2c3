// libFuzzer target: ParseModelFile on arbitrary bytes must never crash, overread or hit UB.
// Seed with real model files (e.g. a converted synthetic checkpoint): when the input parses,
// every tensor is walked (CheckFinite reads each F32 tensor fully; the packed int8 tensors and
// the tokenizer blob are read end to end) and the content hash is checked.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "formats/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy into a heap buffer of exactly `size` bytes (4-byte aligned, as mmap and heap images
  // are) so ASan flags any read past the end.
  std::vector<uint8_t> buf(data, data + size);
  auto view = selfcond::ParseModelFile(buf);
  if (!view.ok()) return 0;
  volatile uint32_t sink = 0;
  for (const selfcond::TensorView& t : view->tensors) {
    (void)selfcond::CheckFinite(t);
    uint32_t acc = 0;
    for (uint64_t i = 0; i < t.nbytes; ++i) acc += t.data[i];
    sink = sink + acc;
    (void)view->Find(t.name);
  }
  for (uint8_t b : view->tokenizer_blob) sink = sink + b;
  (void)view->HashHex();
  (void)selfcond::VerifyContentHash(buf);
  return 0;
}
