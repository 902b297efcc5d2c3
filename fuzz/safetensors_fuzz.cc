// libFuzzer target: the safetensors parser on arbitrary bytes (header JSON, offsets, dtypes) must
// never crash, overread or hit UB; when it parses, every float tensor is converted.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);  // exact size: ASan sees overreads
  auto f = selfcond::SafetensorsFile::FromBytes(buf, "fuzz");
  if (!f.ok()) return 0;
  volatile float sink = 0;
  for (const selfcond::StTensor& t : (*f)->tensors()) {
    if (t.numel() > (1u << 22)) continue;  // views are bounded by the input; just keep it quick
    auto v = selfcond::ToFloat(t);
    if (v.ok() && !v->empty()) sink = sink + (*v)[0] + v->back();
    (void)(*f)->Find(t.name);
  }
  return 0;
}
