// Reader for PyTorch checkpoints written by torch.save (`pytorch_model.bin`): a state dict of
// name -> tensor, read without running any code of the file.
//
// Two containers are recognized:
//  - the zip format (torch >= 1.6): a ZIP archive (ZIP64 records allowed) of STORED entries
//    under one top folder of any name: <top>/data.pkl (the pickled state dict), <top>/data/<key>
//    (one raw little-endian storage per key), optional <top>/byteorder ("little" only) and
//    <top>/version;
//  - the legacy format (torch < 1.6): five pickles in a row (magic number 0x1950a86a20f9469cfc6c,
//    protocol version 1001, sys_info, the state dict, the list of storage keys) followed, per
//    key, by an int64 element count and the storage's raw bytes.
//
// data.pkl is read by a restricted unpickler: the opcodes of protocols 2 to 5 that torch.save
// emits, and only these globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2 /
// _rebuild_tensor / _rebuild_parameter, and torch.<T>Storage (Float, Half, BFloat16, Double,
// Long, Int, Short, Char, Byte, Bool; UntypedStorage as bytes). Any other global (os.system,
// builtins.eval, ...) is refused with an error naming it; REDUCE "calls" only the allowed
// callables, which build values in C++. Persistent ids ('storage', <T>Storage, key, location,
// numel[, view_metadata]) name the storages. Memo size, stack size, MARK nesting, object count
// and tensor ranks are bounded, and the machine is iterative (objects live in an arena and refer
// to each other by index), so a hostile pickle cannot recurse or exhaust memory.
//
// Tensors (`_rebuild_tensor_v2(storage, offset, size, stride, ...)`) become StTensors: a
// contiguous tensor's data points into the file; a strided view (a transposed storage, say) is
// copied into contiguous memory owned by this object (copies are bounded by the file's size).
// Several tensors may share a storage (tied weights). Values of the state dict that are not
// tensors (ints, nested dicts, `_metadata`) are skipped. Every error names the file (and the
// tensor where there is one); a hostile or truncated file never crashes.
#ifndef SELFCOND_TORCH_CHECKPOINT_H_
#define SELFCOND_TORCH_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "formats/safetensors.h"
#include "util/file_util.h"

namespace selfcond {

class TorchCheckpointFile {
 public:
  static absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> Open(const std::string& path);
  // Parses an in-memory image (not copied; must outlive the result). `label` names it in errors.
  static absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> FromBytes(
      absl::Span<const uint8_t> bytes, const std::string& label);

  const std::vector<StTensor>& tensors() const { return tensors_; }  // in the state dict's order
  const StTensor* Find(const std::string& name) const;               // nullptr when absent
  bool legacy() const { return legacy_; }                            // the pre-1.6 (non-zip) format

 private:
  TorchCheckpointFile() = default;
  absl::Status Parse(absl::Span<const uint8_t> bytes, const std::string& label);

  MappedFile mapped_;
  std::vector<HeapBuffer> copies_;  // contiguous copies of strided tensors
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t> by_name_;
  bool legacy_ = false;
};

}  // namespace selfcond

#endif  // SELFCOND_TORCH_CHECKPOINT_H_
