// The Llama family's forward pass (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM): read
// Session::ForwardChunkLlama top to bottom, it is the whole model, as Hugging Face computes it:
// RMSNorm, rotary position embeddings (rotate-half layout, the config's scaling), grouped-query
// attention, a SwiGLU MLP. q/k/v and gate/up are one fused linear layer each (one GEMM); the
// expert sites are their column ranges, hooked before RoPE and before the activation.
#include <cmath>
#include <cstring>

#include "model/float_ops.h"
#include "model/model.h"
#include "model/session_scratch.h"

namespace selfcond {
namespace {

// Rotates each head of rows x(n, heads * hd) (row stride ld) by the angles of the chunk's
// positions: for j < hd / 2, (x_j, x_{j+hd/2}) -> (x_j cos - x_{j+hd/2} sin,
// x_{j+hd/2} cos + x_j sin) (Hugging Face's rotate_half). rope(n, hd) = cos | sin.
void ApplyRope(float* x, int ld, int n, int heads, int hd, const float* rope) {
  const int half = hd / 2;
  for (int i = 0; i < n; ++i) {
    const float* cs = rope + static_cast<size_t>(i) * hd;
    const float* sn = cs + half;
    for (int h = 0; h < heads; ++h) {
      float* v = x + static_cast<size_t>(i) * ld + h * hd;
      for (int j = 0; j < half; ++j) {
        const float a = v[j], b = v[j + half];
        v[j] = a * cs[j] - b * sn[j];
        v[j + half] = b * cs[j] + a * sn[j];
      }
    }
  }
}

}  // namespace

absl::Status Session::ForwardChunkLlama(const int32_t* tokens, int n, bool last_chunk,
                                        Logits want) {
  const ModelConfig& c = model_.config();
  const int d = c.n_embd, F = c.n_inner, hd = c.head_dim;
  const int qd = c.q_dim(), kvd = c.kv_dim(), ld_qkv = qd + 2 * kvd;
  const float eps = c.layer_norm_eps;
  const bool f32 = opts_.precision == Precision::kF32;
  Scratch& s = *s_;
  float* x = s.x.data();  // (n, d) the residual stream

  // Token embeddings (no position embedding: positions enter through RoPE).
  for (int i = 0; i < n; ++i) {
    float* xi = x + static_cast<size_t>(i) * d;
    if (f32) {
      std::memcpy(xi, model_.wte_f32() + static_cast<size_t>(tokens[i]) * d, d * sizeof(float));
    } else if (auto st = model_.EmbedInt8(tokens[i], xi, &s.embed); !st.ok()) {
      return st;
    }
  }
  // The rotation angles of the chunk's positions, once for every layer: pos * inv_freq (double,
  // then cos / sin in float).
  const std::vector<double>& inv_freq = model_.rope_inv_freq();
  for (int i = 0; i < n; ++i) {
    float* r = s.rope.data() + static_cast<size_t>(i) * hd;
    for (int j = 0; j < hd / 2; ++j) {
      const double angle = static_cast<double>(pos_ + i) * inv_freq[j];
      r[j] = static_cast<float>(std::cos(angle));
      r[hd / 2 + j] = static_cast<float>(std::sin(angle));
    }
  }

  for (int l = 0; l < static_cast<int>(c.n_layer); ++l) {
    if (auto st = CheckAbort(); !st.ok()) return st;  // selfcond_session_abort, any thread
    const BlockWeights& b = model_.block(l);

    // --- attention ---
    for (int i = 0; i < n; ++i) ops::RmsNorm(x + i * d, b.norm1_w, d, eps, s.xn.data() + i * d);
    // qkv_proj: (n, qd + 2 kvd) = q | k | v (each with its bias for Qwen2)
    float* q = s.qkv.data();
    float* k = q + qd;
    float* v = k + kvd;
    if (auto st = Linear(b.attn_in, s.xn.data(), n, q); !st.ok()) return st;
    Intervene(units_.site_index(l, LlamaSite::kQ), q, n, ld_qkv, last_chunk);
    Intervene(units_.site_index(l, LlamaSite::kK), k, n, ld_qkv, last_chunk);
    Intervene(units_.site_index(l, LlamaSite::kV), v, n, ld_qkv, last_chunk);
    ApplyRope(q, ld_qkv, n, c.n_head, hd, s.rope.data());
    ApplyRope(k, ld_qkv, n, c.n_head_kv, hd, s.rope.data());
    StoreKv(l, k, ld_qkv, v, ld_qkv, n);
    Attention(l, q, ld_qkv, n, s.att.data());  // (n, qd)
    if (auto st = Linear(b.attn_out, s.att.data(), n, s.proj.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, LlamaSite::kO), s.proj.data(), n, d, last_chunk);
    ops::AddInPlace(x, s.proj.data(), static_cast<size_t>(n) * d);

    // --- MLP: down(silu(gate(x)) * up(x)) ---
    for (int i = 0; i < n; ++i) ops::RmsNorm(x + i * d, b.norm2_w, d, eps, s.xn.data() + i * d);
    float* gate = s.fc.data();  // (n, 2F) = gate | up
    float* up = gate + F;
    if (auto st = Linear(b.mlp_in, s.xn.data(), n, gate); !st.ok()) return st;
    Intervene(units_.site_index(l, LlamaSite::kGate), gate, n, 2 * F, last_chunk);
    Intervene(units_.site_index(l, LlamaSite::kUp), up, n, 2 * F, last_chunk);
    for (int i = 0; i < n; ++i) {
      const size_t row = static_cast<size_t>(i) * 2 * F;
      ops::SiluMul(gate + row, up + row, s.act.data() + static_cast<size_t>(i) * F, F);
    }
    if (auto st = Linear(b.mlp_out, s.act.data(), n, s.proj.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, LlamaSite::kDown), s.proj.data(), n, d, last_chunk);
    ops::AddInPlace(x, s.proj.data(), static_cast<size_t>(n) * d);
    ResidualHooks(l, x, n);
  }
  pos_ += n;

  // --- final RMSNorm and the LM head (tied to embed_tokens unless the file has lm_head) ---
  if (want == Logits::kNone || (want == Logits::kLast && !last_chunk)) return absl::OkStatus();
  const int first = want == Logits::kLast ? n - 1 : 0;
  for (int i = first; i < n; ++i) {
    ops::RmsNorm(x + i * d, model_.ln_f_weight(), d, eps, s.xn.data() + (i - first) * d);
  }
  return LmHead(s.xn.data(), n - first);
}

}  // namespace selfcond
