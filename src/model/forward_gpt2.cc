// GPT-2's forward pass: read Session::ForwardChunkGpt2 top to bottom, it is the whole model.
// Everything it calls is a linear layer (Session::Linear: XNNPACK or a hand-written kernel), a
// float loop (model/float_ops.h) or a step shared with the Llama family (session.cc).
#include <cstring>

#include "model/float_ops.h"
#include "model/model.h"
#include "model/session_scratch.h"

namespace selfcond {

absl::Status Session::ForwardChunkGpt2(const int32_t* tokens, int n, bool last_chunk, Logits want) {
  const ModelConfig& c = model_.config();
  const int d = c.n_embd, F = c.n_inner;
  const bool f32 = opts_.precision == Precision::kF32;
  Scratch& s = *s_;
  float* x = s.x.data();  // (n, d) the residual stream

  // Token + position embeddings.
  for (int i = 0; i < n; ++i) {
    float* xi = x + static_cast<size_t>(i) * d;
    if (f32) {
      std::memcpy(xi, model_.wte_f32() + static_cast<size_t>(tokens[i]) * d, d * sizeof(float));
    } else {
      if (auto st = model_.EmbedInt8(tokens[i], xi, &s.embed); !st.ok()) return st;
    }
    if (auto st = model_.AddPosition(pos_ + i, xi, &s.pos_row); !st.ok()) return st;
  }

  for (int l = 0; l < static_cast<int>(c.n_layer); ++l) {
    if (auto st = CheckAbort(); !st.ok()) return st;  // selfcond_session_abort, any thread
    const BlockWeights& b = model_.block(l);

    // --- attention ---
    for (int i = 0; i < n; ++i) {
      ops::LayerNorm(x + i * d, b.norm1_w, b.norm1_b, d, c.layer_norm_eps, s.xn.data() + i * d);
    }
    // c_attn: (n, 3d) = q | k | v
    if (auto st = Linear(b.attn_in, s.xn.data(), n, s.qkv.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kCAttn), s.qkv.data(), n, 3 * d, last_chunk);
    StoreKv(l, s.qkv.data() + d, 3 * d, s.qkv.data() + 2 * d, 3 * d, n);
    Attention(l, s.qkv.data(), 3 * d, n, s.att.data());
    if (auto st = Linear(b.attn_out, s.att.data(), n, s.proj.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kAttnCProj), s.proj.data(), n, d, last_chunk);
    ops::AddInPlace(x, s.proj.data(), static_cast<size_t>(n) * d);

    // --- MLP ---
    for (int i = 0; i < n; ++i) {
      ops::LayerNorm(x + i * d, b.norm2_w, b.norm2_b, d, c.layer_norm_eps, s.xn.data() + i * d);
    }
    if (auto st = Linear(b.mlp_in, s.xn.data(), n, s.fc.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kCFc), s.fc.data(), n, F, last_chunk);  // pre-GELU
    ops::GeluInPlace(s.fc.data(), static_cast<size_t>(n) * F);
    if (auto st = Linear(b.mlp_out, s.fc.data(), n, s.proj.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kMlpCProj), s.proj.data(), n, d, last_chunk);
    ops::AddInPlace(x, s.proj.data(), static_cast<size_t>(n) * d);
    ResidualHooks(l, x, n);
  }
  pos_ += n;

  // --- LM head (tied to wte unless the file has lm_head) ---
  if (want == Logits::kNone || (want == Logits::kLast && !last_chunk)) return absl::OkStatus();
  const int first = want == Logits::kLast ? n - 1 : 0;
  for (int i = first; i < n; ++i) {
    ops::LayerNorm(x + i * d, model_.ln_f_weight(), model_.ln_f_bias(), d, c.layer_norm_eps,
                   s.xn.data() + (i - first) * d);
  }
  return LmHead(s.xn.data(), n - first);
}

}  // namespace selfcond
