// libFuzzer target: the PyTorch checkpoint reader (zip or legacy container, restricted unpickler,
// tensor views and strided copies) on arbitrary bytes must never crash, overread, hit UB or
// run away with memory; when it parses, every float tensor is converted.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "formats/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);  // exact size: ASan sees overreads
  auto f = selfcond::TorchCheckpointFile::FromBytes(buf, "fuzz");
  if (!f.ok()) return 0;
  volatile float sink = 0;
  for (const selfcond::StTensor& t : (*f)->tensors()) {
    if (t.data.size() != t.numel() * selfcond::StDTypeSize(t.dtype)) __builtin_trap();
    if (t.numel() > (1u << 22)) continue;  // views are bounded by the input; just keep it quick
    auto v = selfcond::ToFloat(t);
    if (v.ok() && !v->empty()) sink = sink + (*v)[0] + v->back();
    if ((*f)->Find(t.name) == nullptr) __builtin_trap();
  }
  return 0;
}
