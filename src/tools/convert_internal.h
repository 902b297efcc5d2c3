// Helpers the converters share (tools layer; convert.cc for GPT-2, convert_llama.cc for the
// Llama family). Internal to src/tools/.
#ifndef SELFCOND_TOOLS_CONVERT_INTERNAL_H_
#define SELFCOND_TOOLS_CONVERT_INTERNAL_H_

#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "formats/model_file.h"
#include "formats/safetensors.h"
#include "tools/convert.h"
#include "util/json.h"

namespace selfcond {

// The specs of one output: n == 0: an F32 vector of k values; else an (n, k) matrix quantized
// to `bits` (int8: .q .scale .row_sum; int4: .q .scale), plus an F32 .weight copy when
// keep_float.
void AddSpecs(const std::string& name, int n, int k, WeightBits bits, bool keep_float,
              std::vector<ModelFileWriter::Spec>* specs);
// Appends what AddSpecs declared for a matrix rows(n, k) (row-major, output-major).
absl::Status AppendMatrix(ModelFileWriter* writer, const std::vector<float>& rows, int n, int k,
                          WeightBits bits, bool keep_float);
absl::Span<const uint8_t> FloatBytes(const std::vector<float>& v);
// An error naming the tensor and the element when a value is not finite.
absl::Status CheckFiniteValues(const float* v, size_t n, const StTensor& t);
// The file's informational name: opts.model_name, else the checkpoint directory's name.
std::string ModelName(const std::string& hf_dir, const ConvertOptions& opts);

// The checkpoint's tensors by name without `prefix` ("transformer.", "model.") where a name has
// it, minus the buffers whose names end with one of skip_suffixes; an error when a name appears
// both with and without the prefix.
absl::StatusOr<std::map<std::string, const StTensor*>> CanonicalTensors(
    const SafetensorsCheckpoint& ckpt, const std::string& prefix,
    const std::vector<std::string>& skip_suffixes);

// The Llama family's converter (convert_llama.cc); ConvertCheckpoint dispatches to it.
absl::Status ConvertLlamaCheckpoint(const std::string& hf_dir, const json::Value& config_json,
                                    const std::string& out_path, const ConvertOptions& opts,
                                    std::function<void(float)> progress);

}  // namespace selfcond

#endif  // SELFCOND_TOOLS_CONVERT_INTERNAL_H_
