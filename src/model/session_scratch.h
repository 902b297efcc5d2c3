// A Session's buffers (internal to src/model/: session.cc and the forward passes).
#ifndef SELFCOND_MODEL_SESSION_SCRATCH_H_
#define SELFCOND_MODEL_SESSION_SCRATCH_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "model/model.h"

namespace selfcond {

// Activation buffers for one chunk of up to B = max_batch tokens, and the KV cache. Sizes for
// GPT-2 / the Llama family: qd = n_head * head_dim (GPT-2: d), kvd = n_head_kv * head_dim
// (GPT-2: d), F = d_ff.
struct Session::Scratch {
  std::vector<float> x;       // (B, d) residual stream
  std::vector<float> xn;      // (B, d) normed input of the next linear layer
  std::vector<float> qkv;     // (B, qd + 2 kvd) attn_in output: q | k | v
  std::vector<float> att;     // (B, qd) attention output (heads concatenated)
  std::vector<float> proj;    // (B, d) attn_out / mlp_out outputs
  std::vector<float> fc;      // (B, F) GPT-2's c_fc output, then GELU; (B, 2F) Llama gate | up
  std::vector<float> act;     // (B, F) Llama: silu(gate) * up (empty for GPT-2)
  std::vector<float> rope;    // (B, head_dim) Llama: cos | sin per position of the chunk
  std::vector<float> scores;  // (n_head, n_ctx) attention weights, one row per head
  std::vector<int8_t> xq;     // (B, max(d, qd, F) + 64) quantized activations (+ SIMD slack)
  std::vector<float> xscale;  // (B) activation scales
  // (layer, n_ctx, kvd) each, n_ctx = the session's; float, or IEEE half bits with
  // SessionOptions::KvType::kF16 (one of the two pairs is null). Not zero-filled on purpose: a
  // position is written before it is read, so only the positions used become resident memory.
  std::unique_ptr<float[]> key_cache;
  std::unique_ptr<float[]> value_cache;
  std::unique_ptr<uint16_t[]> key_cache16;
  std::unique_ptr<uint16_t[]> value_cache16;
  size_t kv_bytes = 0;
  std::vector<float> logits;   // (vocab) or (B, vocab)
  std::vector<int8_t> embed;   // (16 * d) one packed block of token-embedding rows
  std::vector<float> pos_row;  // (d) one row of the position embedding (GPT-2)
};

}  // namespace selfcond

#endif  // SELFCOND_MODEL_SESSION_SCRATCH_H_
