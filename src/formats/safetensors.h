// Reader for Hugging Face safetensors checkpoints (single file or sharded with
// model.safetensors.index.json; SafetensorsCheckpoint also reads PyTorch pytorch_model.bin
// checkpoints through formats/torch_checkpoint.h), validating everything: a hostile or truncated
// file gives an error naming the file and the tensor, never a crash.
//
// Format: u64 little-endian header length N, then N bytes of JSON
//   {"__metadata__": {...}, "<name>": {"dtype": "F16", "shape": [d0, d1], "data_offsets": [b, e]}}
// then the data buffer; offsets are relative to the start of the buffer (byte 8 + N).
#ifndef SELFCOND_SAFETENSORS_H_
#define SELFCOND_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "util/file_util.h"

namespace selfcond {

// Every dtype of the safetensors spec is recognized (so offsets of any tensor can be checked);
// only kF32 / kF16 / kBF16 convert to float.
enum class StDType {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
  kF8E4M3,
  kF8E5M2
};

const char* StDTypeName(StDType t);  // "F16", ...
size_t StDTypeSize(StDType t);       // bytes per element

struct StTensor {
  std::string name;  // as in the file (e.g. "transformer.h.0.ln_1.weight")
  StDType dtype;
  std::vector<uint64_t> shape;     // () for a scalar
  absl::Span<const uint8_t> data;  // exactly numel * dtype size bytes, inside the mapped file
  std::string file;                // the file it came from, for error messages

  uint64_t numel() const;
};

// One parsed safetensors file. Views point into bytes owned elsewhere (FromBytes) or into the
// object's own mapping (Open): keep the object alive while using them.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory image (not copied; must outlive the result). `label` names it in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(absl::Span<const uint8_t> bytes,
                                                                    const std::string& label);

  const std::vector<StTensor>& tensors() const { return tensors_; }  // in data-offset order
  const StTensor* Find(const std::string& name) const;               // nullptr when absent

 private:
  SafetensorsFile() = default;
  absl::Status Parse(absl::Span<const uint8_t> bytes, const std::string& label);

  MappedFile mapped_;
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t> by_name_;
};

class TorchCheckpointFile;  // formats/torch_checkpoint.h

// A whole checkpoint directory: model.safetensors, or the shards listed by
// model.safetensors.index.json ("weight_map": name -> shard file). When the directory has
// neither, PyTorch checkpoints are read the same way: pytorch_model.bin, or the shards listed by
// pytorch_model.bin.index.json (formats/torch_checkpoint.h: read without running any of the
// pickle's code). Safetensors is preferred when both kinds are present, as transformers does.
// Every shard is validated and a tensor must live in the shard the index says; names are unique
// across shards.
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const std::string& dir);
  SafetensorsCheckpoint();
  ~SafetensorsCheckpoint();

  const StTensor* Find(const std::string& name) const;  // nullptr when absent
  std::vector<std::string> Names() const;               // sorted
  size_t num_shards() const { return shards_.size() + torch_shards_.size(); }

 private:
  // Reads an index's weight_map, opening each shard once (torch: PyTorch shards).
  absl::Status OpenIndex(const std::string& dir, const std::string& index_path, bool torch);

  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<std::unique_ptr<TorchCheckpointFile>> torch_shards_;
  std::map<std::string, const StTensor*> by_name_;
};

// Converts a F32 / F16 / BF16 tensor to float (out must hold numel() values). Other dtypes are
// an InvalidArgument error naming the tensor. Reads unaligned data safely.
absl::Status ToFloat(const StTensor& t, float* out);
absl::StatusOr<std::vector<float>> ToFloat(const StTensor& t);

// IEEE binary16 / bfloat16 <-> binary32. Half: subnormals exact, inf and NaN preserved.
// Float -> half/bf16 rounds to nearest even (overflow -> inf; NaN stays NaN).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BF16ToFloat(uint16_t b);
uint16_t FloatToBF16(float f);

}  // namespace selfcond

#endif  // SELFCOND_SAFETENSORS_H_
