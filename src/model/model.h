// The model layer: a model loaded from a selfcond model file (GPT-2 or the Llama family), and a
// Session that runs its forward pass with a KV cache and the expert hooks (capture: max-pool
// unit responses; forcing: overwrite units). One forward pass per architecture, each readable
// top to bottom: Session::ForwardChunkGpt2 (src/model/forward_gpt2.cc) and
// Session::ForwardChunkLlama (src/model/forward_llama.cc); loading is src/model/model.cc, the
// session's shared parts (cache, linear layers, attention, hooks) src/model/session.cc.
//
// Model is immutable and shareable: one mmap, many Sessions (one per thread).
#ifndef SELFCOND_MODEL_MODEL_H_
#define SELFCOND_MODEL_MODEL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "formats/model_file.h"
#include "formats/tokenizer.h"
#include "kernels/kernels.h"
#include "kernels/xnnpack.h"
#include "model/units.h"
#include "util/file_util.h"

namespace selfcond {

enum class Precision { kInt8, kF32 };
absl::StatusOr<Precision> ParsePrecision(const std::string& s);  // "int8" | "f32"

// Weights of one linear layer, views into the mapped file (or into dequantized buffers).
struct LinearWeights {
  kernels::PackedI8 q;  // int8 path: (n, k) packed (q.q null for an int4 layer; n, k still set)
  const uint8_t* q4 = nullptr;          // int4 layer: (n, k / 2) nibbles (model_file.h, DType::kI4)
  const float* q4_scale = nullptr;      // per-channel int4 layer: (n)
  const uint16_t* q4_bscale = nullptr;  // blockwise int4 layer: (n, k / q4_block) bfloat16
  int q4_block = 0;                     // columns per scale (blockwise), 0 for per-channel
  kernels::MatF32 f;                    // f32 path: (n, k) output-major (file copy or dequantized)
  const float* bias = nullptr;          // (n) or null
  int xnn_id = -1;  // this layer in Model::xnn() (the int8 GEMM engine), -1 if not packed
};

// Weights of one block. The same four linear layers in both architectures (the Llama family's
// q/k/v and gate/up projections are stored fused, one GEMM each; their sites are column ranges).
struct BlockWeights {
  const float* norm1_w = nullptr;  // (d) ln_1 / input_layernorm
  const float* norm1_b = nullptr;  // (d) GPT-2's ln_1 bias; null for RMSNorm
  LinearWeights attn_in;           // GPT-2 c_attn (3d, d): q | k | v;
                                   // Llama qkv_proj (q_dim + 2 kv_dim, d): q | k | v
  LinearWeights attn_out;          // GPT-2 attn.c_proj (d, d); Llama o_proj (d, q_dim)
  const float* norm2_w = nullptr;  // (d) ln_2 / post_attention_layernorm
  const float* norm2_b = nullptr;  // (d) or null
  LinearWeights mlp_in;   // GPT-2 c_fc (d_ff, d); Llama gate_up_proj (2 d_ff, d): gate | up
  LinearWeights mlp_out;  // GPT-2 mlp.c_proj (d, d_ff); Llama down_proj (d, d_ff)
};

class Model {
 public:
  struct LoadOptions {
    bool verify_hash = false;  // recompute SHA-256 (slow for big models)
    bool need_float = false;   // prepare f32 weights (file copies, else dequantized int8)
    // Pack every int8 linear for XNNPACK (the default int8 GEMM engine) and drop the file's
    // copy of those weights from memory. Off: only the hand-written backends can run int8.
    bool xnnpack = true;
    // Read the file into memory instead of mapping it. A mapped file that is truncated or
    // rewritten while the process runs kills it with SIGBUS (or silently changes the weights);
    // a copy is immune, for files in locations others can write. Costs one read of the file;
    // peak memory is the same (the copy's packed weights are released after packing).
    bool copy_to_memory = false;
    // Bytes the loaded model may hold (packed weights, float copies, a heap copy of the file),
    // estimated before the large allocations: a load that would exceed it fails with
    // RESOURCE_EXHAUSTED instead of being killed by a phone's low-memory killer. 0: no limit.
    size_t max_memory = 0;
    // Called as loading goes (verifying the hash, packing the weights) with bytes done and the
    // total (fixed for the load); returning false cancels the load (CANCELLED).
    std::function<bool(int64_t done, int64_t total)> progress;
    // A directory for packed-weight cache files (created if missing; empty: no cache). XNNPACK
    // repacks every weight on each load (0.3-0.7 s for GPT-2 small); with a cache the first load
    // writes the packed bytes to <dir>/<model hash>-<packing id>.xnnpack and later loads of the
    // same model on the same kind of CPU and XNNPACK read them back. A missing, stale or damaged
    // file (checked by size and shapes; by checksum when verify_hash) means packing as without
    // a cache: never an error, never other weights. Native only (ignored in WASM).
    std::string packed_cache_dir;
  };
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path, LoadOptions opts);
  // From a file already opened or borrowed (MappedFile::OpenFd, MappedFile::Borrow).
  static absl::StatusOr<std::unique_ptr<Model>> FromFile(MappedFile file, LoadOptions opts);
  // From the file's bytes in memory (taken over; their packed weights' part is freed after
  // packing, see released_packed_source). The std::string form copies them first.
  static absl::StatusOr<std::unique_ptr<Model>> FromBuffer(HeapBuffer bytes, LoadOptions opts);
  static absl::StatusOr<std::unique_ptr<Model>> FromBuffer(const std::string& bytes,
                                                           LoadOptions opts);

  const ModelConfig& config() const { return view_.config; }
  Arch arch() const { return view_.config.arch; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& hash_hex() const { return hash_hex_; }
  const std::string& name() const { return view_.model_name; }
  const ModelFileView& file() const { return view_; }
  size_t file_bytes() const { return file_size_; }
  // True when the model holds the file as a heap copy (FromBuffer, or any load in WASM) and
  // released the bytes of the weights XNNPACK packed: the packed copy is then the only copy
  // (the hand-written int8 kernels, which read the file's layout, can no longer run).
  bool released_packed_source() const { return released_packed_source_; }
  // What the packed-weight cache did on load: "off", "hit", "miss, saved" or "miss, not saved:
  // <why>" (a miss names why the file was not used, e.g. "no packed-weight cache <path>").
  const std::string& packed_cache_status() const { return packed_cache_status_; }
  bool has_float_copies() const { return has_float_copies_; }
  bool float_ready() const { return float_ready_; }
  bool has_int4() const { return has_int4_; }  // some linears are 4-bit (XNNPACK only)
  // XNNPACK's packed weights, or null (LoadOptions::xnnpack off, or XNNPACK unavailable).
  const kernels::xnn::PackedWeights* xnn() const { return xnn_.get(); }

  // Weights (shape comments in BlockWeights).
  const kernels::PackedI8& wte_q() const { return wte_q_; }  // (vocab, d) int8 token embedding
  const float* wte_f32() const { return wte_f_.w; }          // (vocab, d) or null
  const LinearWeights& lm_head() const { return lm_head_; }  // (vocab, d)
  const float* wpe() const { return wpe_; }                  // (n_ctx, d) GPT-2; null otherwise
  const BlockWeights& block(int l) const { return blocks_[l]; }
  // RoPE (Llama family): the rotation frequency of each pair of a head's dimensions, rope
  // scaling applied, in double (head_dim / 2).
  const std::vector<double>& rope_inv_freq() const { return rope_inv_freq_; }
  // out(d) = the int8 token embedding of `token`, dequantized. Reads the row's 16-row packed
  // block from the file (MappedFile::Read) into scratch rather than through the mapping.
  absl::Status EmbedInt8(int32_t token, float* out, std::vector<int8_t>* scratch) const;
  // x(d) += the position embedding of `pos`, read from the file the same way (one row, not the
  // kernel's fault-around window of the mapping).
  absl::Status AddPosition(int pos, float* x, std::vector<float>* scratch) const;
  const float* ln_f_weight() const { return ln_f_weight_; }  // (d) ln_f / norm
  const float* ln_f_bias() const { return ln_f_bias_; }      // (d) GPT-2; null for RMSNorm

 private:
  Model() = default;
  absl::Status Build(LoadOptions opts);
  absl::Status BuildGpt2(bool need_float);
  absl::Status BuildLlama(bool need_float);
  absl::Status BuildEmbedding(const std::string& name);
  const float* Dequantize(const kernels::PackedI8& q);
  const float* DequantizeInt4(const LinearWeights& w);
  // Every linear layer XNNPACK runs: the LM head first, then each block's four.
  std::vector<LinearWeights*> Linears();
  absl::Status PackForXnnpack(const LoadOptions& opts);
  // RESOURCE_EXHAUSTED when the model would hold more than LoadOptions::max_memory with
  // packed_bytes of packed weights (checked once, before packing or instead of it).
  absl::Status CheckMemoryBudget(const LoadOptions& opts, size_t packed_bytes) const;
  // The load's progress (LoadOptions::progress): false when the caller cancelled.
  bool Progress(const LoadOptions& opts, int64_t add);
  int64_t progress_done_ = 0, progress_total_ = 0;
  void ReleasePackedSource();
  void OwnLayerNorms();
  absl::Status BuildLinear(const std::string& prefix, int n, int k, bool need_float, bool bias,
                           LinearWeights* out);
  absl::Status NormVector(const std::string& name, const float** out);

  MappedFile file_;
  ModelFileView view_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string hash_hex_;
  bool has_float_copies_ = false;
  bool float_ready_ = false;
  bool has_int4_ = false;
  bool released_packed_source_ = false;
  std::string packed_cache_status_ = "off";
  size_t file_size_ = 0;
  kernels::PackedI8 wte_q_;
  kernels::MatF32 wte_f_;
  LinearWeights lm_head_;
  const float* wpe_ = nullptr;
  std::vector<BlockWeights> blocks_;
  const float* ln_f_weight_ = nullptr;
  const float* ln_f_bias_ = nullptr;
  std::vector<double> rope_inv_freq_;
  std::vector<std::vector<float>> owned_f32_;    // dequantized weights, LayerNorm copies
  std::vector<std::vector<int32_t>> owned_i32_;  // row sums when absent from the file
  std::unique_ptr<kernels::xnn::PackedWeights> xnn_;
};

class ThreadPool;  // src/util/parallel.h

struct SessionOptions {
  Precision precision = Precision::kInt8;
  // The hand-written kernels (f32 path; int8 path only when XNNPACK is not used). Null: int8 on
  // XNNPACK when the model has packed weights (unless the SELFCOND_BACKEND environment variable
  // names a hand-written backend), and kernels::DefaultBackend() for the rest.
  const kernels::Backend* backend = nullptr;
  ThreadPool* pool = nullptr;  // null: single-threaded
  // Tokens per forward call (prefill chunk). 128: the activation scratch is sized by it (~10 MB
  // at 256 for GPT-2 small), and longer chunks prefill no faster.
  int max_batch = 128;
  // Context this session may hold (KV cache positions); 0: Session::DefaultContext (the
  // model's n_ctx up to 8192). The KV cache is allocated for it but only the positions used
  // become resident.
  int n_ctx = 0;
  // KV cache element type: float32, or IEEE half (half the cache memory; keys and values are
  // rounded to 11 significant bits, attention still computes in float).
  enum class KvType { kF32, kF16 };
  KvType kv_type = KvType::kF32;
  // Bytes this session may allocate (KV cache + activation scratch), checked before allocating
  // anything: a model file's config can ask for any context. 0: DefaultMemoryBudget().
  size_t max_memory = 0;
};

// Half of the machine's physical memory, or of the address-space limit (RLIMIT_AS) when lower
// (2 GiB in WASM, whose memory ends at 4 GiB).
size_t DefaultMemoryBudget();

class Session {
 public:
  // Bounds on what interventions may write: forcing values and steering vector entries (the
  // activations they replace or shift are far below this in every real model), and a logit
  // bias (exp(1e4) already makes a token certain). Larger values are refused when set.
  static constexpr float kMaxIntervention = 1e6f;
  static constexpr float kMaxLogitBias = 1e4f;

  // The model must outlive the session.
  static absl::StatusOr<std::unique_ptr<Session>> Create(const Model& model, SessionOptions opts);
  ~Session();

  // Clears the KV cache (position back to 0). Keeps forcing and capture settings, and a
  // pending abort (ClearAbort drops it).
  void Reset();
  // Asks the Forward running on this session (or the next one, if none runs) to stop: it fails
  // with CANCELLED at the next block boundary, with pos() and the cache as before the call.
  // Safe from any thread: the one way to stop a long prefill. A request is consumed by the
  // Forward that sees it.
  void RequestAbort() { abort_.store(true, std::memory_order_relaxed); }
  void ClearAbort() { abort_.store(false, std::memory_order_relaxed); }
  // CANCELLED when an abort was requested (the request is then consumed); checked before each
  // block of the forward passes and before each generated token.
  absl::Status CheckAbort();
  int pos() const { return pos_; }
  int n_ctx() const { return opts_.n_ctx; }  // positions this session can hold
  // What runs the linear layers: "xnnpack" or a hand-written backend's name.
  const char* engine_name() const;
  const Model& model() const { return model_; }
  const SessionOptions& options() const { return opts_; }
  // Bytes allocated for the KV cache (virtual; pages become resident as positions are used).
  size_t kv_cache_bytes() const;
  // What Create allocates for these options (KV cache and scratch): checked against the budget.
  static size_t MemoryNeeded(const ModelConfig& c, const SessionOptions& opts);
  // The context a session gets when it asks for none (SessionOptions::n_ctx 0): the model's,
  // up to 8192 positions (a Llama 3.2 config says 131072; a cache for that is GiBs).
  static int DefaultContext(const ModelConfig& c);

  // Runs tokens at positions pos()..pos()+n-1 (prefilled as one batch, chunked by max_batch)
  // and appends them to the KV cache. Fails (without changing state) if pos()+n > n_ctx or a
  // token id is out of range.
  // want_logits: kNone (ranking: skips the LM head), kLast (generation: last position) or
  // kAll (perplexity: every position, (n, vocab) row-major).
  enum class Logits { kNone, kLast, kAll };
  absl::StatusOr<absl::Span<const float>> Forward(absl::Span<const int32_t> tokens, Logits want);
  // The logits of position pos()-1 when the last Forward computed them (Logits::kLast) and
  // nothing ran since; else empty. What continuing a generation samples its first token from.
  absl::Span<const float> last_logits() const;

  // Padding after the tokens in the cache, as a Hugging Face GPT-2 computes the positions whose
  // attention_mask is 0 (ml-selfcond's padded ranking): runs `tokens` at positions
  // pos()..pos()+n-1 like Forward (capture and forcing apply), except that each one attends only
  // to the positions 0..pos()-1 already in the cache, not to itself nor to the other padding
  // tokens. The padding leaves no trace: pos() and the cache's first pos() positions are
  // unchanged. Needs pos() >= 1 and pos()+n <= n_ctx(); computes no logits.
  absl::Status ForwardPadding(absl::Span<const int32_t> tokens);

  // What a session's generation is conditioned on: one value, validated as a whole when set
  // (on error the previous one stays), copied into the session.
  //  - forcing: expert units overwritten with fixed values (self-conditioning);
  //  - steering: add(n_embd) added to the residual stream after block `layer` at every position
  //    (activation addition; layer -1: none);
  //  - logit bias: (token, bias) pairs added to the logits a token is sampled from. It lives in
  //    the sampler (Generation), not in the forward pass: scoring text (perplexity, responses)
  //    sees the model's own logits.
  struct Steering {
    int layer = -1;
    std::vector<float> add;  // (n_embd)
  };
  struct Conditioning {
    Forcing forcing;
    Steering steering;
    std::vector<std::pair<int32_t, float>> logit_bias;
    bool empty() const { return forcing.empty() && steering.add.empty() && logit_bias.empty(); }
  };
  absl::Status SetConditioning(Conditioning c);
  const Conditioning& conditioning() const { return cond_; }
  // Checks a conditioning against this session's model without setting it.
  absl::Status Validate(const Conditioning& c) const;

  // What a caller may watch while tokens run (one observer at a time; null: none). Forcing has
  // been applied to the values an observer sees.
  class Observer {
   public:
    virtual ~Observer() = default;
    // A site's outputs at positions pos..pos+m-1: row i is y[i * ld .. i * ld + size).
    virtual void OnSite(int site, const float* y, int m, int ld, int pos) {
      (void)site, (void)y, (void)m, (void)ld, (void)pos;
    }
    // The residual stream after block `layer` (steering added) at positions pos..pos+n-1:
    // rows of n_embd floats.
    virtual void OnResidual(int layer, const float* x, int n, int pos) {
      (void)layer, (void)x, (void)n, (void)pos;
    }
  };
  void SetObserver(Observer* observer) { observer_ = observer; }

 private:
  Session(const Model& model, SessionOptions opts);
  // One chunk of up to max_batch tokens through the whole model: the forward pass of the
  // model's architecture.
  absl::Status ForwardChunk(const int32_t* tokens, int n, bool last_chunk, Logits want);
  absl::Status ForwardChunkGpt2(const int32_t* tokens, int n, bool last_chunk, Logits want);
  absl::Status ForwardChunkLlama(const int32_t* tokens, int n, bool last_chunk, Logits want);
  // Shared steps of the forward passes (session.cc).
  absl::Status Linear(const LinearWeights& w, const float* x, int m, float* y);
  // The hooks on site `site`, whose outputs are the m rows y[i * ld .. i * ld + size).
  void Intervene(int site, float* y, int m, int ld, bool chunk_has_last);
  // Appends rows k(n, kv_dim) and v(n, kv_dim) (row strides ldk, ldv) at positions
  // pos()..pos()+n-1 of layer l's cache.
  void StoreKv(int l, const float* k, int ldk, const float* v, int ldv, int n);
  // att(n, n_head * head_dim) = softmax(q k^T / sqrt(head_dim)) v over layer l's cache for the
  // chunk's n positions (causal; padding: the cached positions only); q(n, n_head * head_dim)
  // with row stride ldq. Query head h reads key/value head h / (n_head / n_head_kv).
  void Attention(int l, const float* q, int ldq, int n, float* att);
  // The residual-stream hooks (steering vector, mean-residual capture) after block l.
  void ResidualHooks(int l, float* x, int n);
  // The LM head on the final-normed rows xn (rows), into the logits.
  absl::Status LmHead(const float* xn, int rows);
  // The error for non-finite activations or logits, naming the likely cause.
  absl::Status NonFinite(const char* what) const;

  const Model& model_;
  SessionOptions opts_;
  UnitSpace units_;
  int pos_ = 0;
  int logits_row_ = 0;              // rows of logits written by the current Forward call
  Conditioning cond_;               // empty: unconditioned
  Observer* observer_ = nullptr;    // not owned
  int attend_limit_ = -1;           // >= 0 during ForwardPadding: keys 0..attend_limit_-1 only
  std::atomic<bool> abort_{false};  // RequestAbort
  bool last_logits_valid_ = false;  // last_logits()
  struct Scratch;
  std::unique_ptr<Scratch> s_;
  std::unique_ptr<kernels::xnn::Operators> xnn_ops_;  // int8 on XNNPACK, else null
};

// Runs fn(worker, session) once per pool thread (null pool: once, on the calling thread), each
// with its own single-threaded Session for opts; returns the first error.
absl::Status ForEachWorkerSession(const Model& model, const SessionOptions& opts, ThreadPool* pool,
                                  const std::function<absl::Status(int, Session&)>& fn);

}  // namespace selfcond

#endif  // SELFCOND_MODEL_MODEL_H_
