// Writes a small (or GPT-2-small-sized) Hugging Face-style GPT-2 checkpoint directory with
// deterministic random weights: config.json, model.safetensors (or shards + index),
// vocab.json, merges.txt. Used by the converter tests and by `selfcond bench` (a GPT-2-small-
// shaped model without downloading one). Streams tensor by tensor: 124M parameters take a few
// seconds and little memory.
#ifndef SELFCOND_SYNTHETIC_CHECKPOINT_H_
#define SELFCOND_SYNTHETIC_CHECKPOINT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "formats/safetensors.h"

namespace selfcond {

struct SyntheticCheckpointOptions {
  uint32_t n_layer = 2;
  uint32_t n_embd = 64;
  uint32_t n_head = 4;
  uint32_t n_ctx = 64;
  // 0: the tokenizer's size; with tokenizer_dir it must equal the tokenizer's size. With the
  // synthetic tokenizer, any value >= 257 works (256 byte tokens + vocab_size - 257 merges +
  // "<|endoftext|>"); 0 means 320.
  uint32_t vocab_size = 0;
  uint32_t n_inner = 0;           // 0: null in config.json (= 4 * n_embd)
  StDType dtype = StDType::kF32;  // kF32, kF16 or kBF16
  bool prefix = true;             // keys "transformer.h.0..." (true) or "h.0..." (false)
  int n_shards = 1;               // > 1: model-0000i-of-0000N.safetensors + index.json
  enum class LmHead {
    kTied,              // no lm_head.weight (the usual GPT-2 checkpoint)
    kTiedExplicitCopy,  // lm_head.weight stored, byte-identical to wte
    kUntied,            // lm_head.weight with its own values, tie_word_embeddings: false
  };
  LmHead lm_head = LmHead::kTied;
  bool attn_bias_buffers = false;  // also write the causal-mask buffers older checkpoints hold
  // Copy vocab.json + merges.txt from this directory; empty: a synthetic byte-level tokenizer.
  std::string tokenizer_dir;
  uint64_t seed = 1;
};

// Writes the checkpoint into dir (created if needed; existing files are overwritten).
absl::Status WriteSyntheticCheckpoint(const std::string& dir,
                                      const SyntheticCheckpointOptions& opts);

// Well-formed but hostile model files, written through the real converter (tests and bench):
//   kManyLayers   4,000 layers of width 8: tens of thousands of tensors in a ~20 MB file (a
//                 tensor lookup that scans the table made its load take a minute);
//   kHugeContext  200 layers of width 8 claiming a 2^20-position context (a KV cache sized
//                 from the config would need ~13 GB).
enum class HostileModel { kManyLayers, kHugeContext };
// Writes the checkpoint under dir/ckpt-*, converts it to dir/<kind>.scm and returns that path.
absl::StatusOr<std::string> WriteHostileModel(const std::string& dir, HostileModel kind);

// The value WriteSyntheticCheckpoint stores (before dtype rounding) at element i of the tensor
// with this canonical name (no "transformer." prefix), so tests can check without re-reading.
float SyntheticValue(const std::string& canonical_name, uint64_t seed, uint64_t i);

}  // namespace selfcond

#endif  // SELFCOND_SYNTHETIC_CHECKPOINT_H_
