// Hugging Face checkpoints -> selfcond model file (src/formats/model_file.h,
// docs/model-format.md). Weights in F32 / F16 / BF16, from safetensors or PyTorch's
// pytorch_model.bin (read without running its pickle: formats/torch_checkpoint.h), one file or
// sharded with an index; safetensors is used when both are present:
//   - GPT-2 (config.json, vocab.json, merges.txt): the whole family (gpt2, -medium, -large, -xl,
//     distilgpt2) and the demo model; keys with or without the "transformer." prefix, tied or
//     explicit lm_head;
//   - the Llama family (config.json model_type llama, qwen2 or mistral; tokenizer.json):
//     grouped-query attention, explicit head_dim, llama3 / linear rope scaling, attention and MLP
//     biases, tied or untied heads (convert_llama.cc).
#ifndef SELFCOND_CONVERT_H_
#define SELFCOND_CONVERT_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/model_file.h"
#include "util/json.h"

namespace selfcond {

enum class WeightBits { kInt8, kInt4 };

struct ConvertOptions {
  // Bits of the four linear layers of every block: int8 (default, per-channel, what every
  // engine runs) or int4 (blockwise: 32 columns per bfloat16 scale, zero point 8; XNNPACK only).
  // The token embedding / LM head stays int8 either way: it is both the embedding table and the
  // output layer, the two places where 4 bits cost the most.
  WeightBits weights = WeightBits::kInt8;
  // Also store F32 copies of the linear weights and wte (and lm_head when untied), for the f32
  // reference path. Roughly quintuples the file size.
  bool keep_float = false;
  // Informational, stored in the header (truncated to 63 bytes); empty: the checkpoint
  // directory's name.
  std::string model_name;
};

// Reads a Hugging Face GPT-2 config.json document. n_positions (or n_ctx) -> n_ctx; n_inner null
// or absent -> 4 * n_embd; layer_norm_epsilon default 1e-5; eos_token_id default 50256;
// tie_word_embeddings (default true) -> tied_lm_head (the converter may still untie it when an
// explicit lm_head differs). activation_function must be gelu_new or gelu_pytorch_tanh; variants
// selfcond does not implement (cross-attention, unscaled or layer-scaled attention) are errors.
absl::StatusOr<ModelConfig> Gpt2ConfigFromHF(const json::Value& config);
// Reads a Llama-family config.json (model_type llama / qwen2 / mistral): hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads (default: heads),
// head_dim (default hidden_size / heads), rms_norm_eps, rope_theta, rope_scaling (llama3, linear),
// max_position_embeddings (cut to a shorter sliding window when one is in use),
// tie_word_embeddings (default false), attention_bias, mlp_bias (Qwen2: q/k/v biases always),
// eos_token_id (the first of a list). hidden_act must be silu.
absl::StatusOr<ModelConfig> LlamaConfigFromHF(const json::Value& config);

// "int8" | "int4"
absl::StatusOr<WeightBits> ParseWeightBits(const std::string& s);

// Columns per scale of `--weights int4` (XNNPACK's qb4w needs a multiple of 32). A matrix whose
// k is not a multiple of it falls back to per-channel scales (QuantizeInt4).
inline constexpr int kInt4Block = 32;

// Quantizes a row-major float matrix w(n, k) to 4 bits per weight, symmetric per row:
// scale = max|w| / 7, q = clamp(round(w / scale), -7, 7), stored as q + 8 (DType::kI4 layout).
void QuantizeInt4(const float* w, int n, int k, uint8_t* q, float* scale);

// Blockwise 4-bit (what `--weights int4` writes): one bfloat16 scale (n, k / block) per `block`
// consecutive columns of a row (block divides k), q = clamp(round(w / scale), -8, 7) stored as
// q + 8 (DType::kI4 layout), the scale chosen per block to minimize the squared error.
void QuantizeInt4Blocks(const float* w, int n, int k, int block, uint8_t* q, uint16_t* scale);

// Converts the checkpoint in hf_dir (GPT-2 or the Llama family, from config.json's model_type)
// to a model file at out_path (written to out_path + ".tmp",
// then renamed: out_path is never left half-written). progress (may be empty) receives the
// fraction done, 0..1, after each tensor. Errors name the file and tensor at fault: missing or
// unexpected tensors, shape mismatches, non-finite values, unsupported dtypes or configs.
// Deterministic: the same input gives a byte-identical file (same content hash).
absl::Status ConvertCheckpoint(const std::string& hf_dir, const std::string& out_path,
                               const ConvertOptions& opts, std::function<void(float)> progress);

}  // namespace selfcond

#endif  // SELFCOND_CONVERT_H_
