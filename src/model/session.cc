// The parts of a Session both forward passes share: creating it (KV cache and activation
// buffers, sized for the architecture and checked against the memory budget first), the
// interventions, and the steps every block takes: a linear layer, the expert hooks on a site,
// storing keys and values, attention over the cache, the residual hooks and the LM head.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>

#if !defined(SELFCOND_WASM)
#include <sys/resource.h>
#include <unistd.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/float_ops.h"
#include "model/model.h"
#include "model/session_scratch.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

// Non-finite values never pass silently: the residual stream is checked once per chunk and the
// logits where they are computed (both cheap next to the matrix products that made them).
// x * 0 is NaN exactly when x is NaN or infinite; eight partial sums let the loop vectorize.
bool AllFinite(const float* v, size_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += v[i + l] * 0.0f;
  }
  float tail = 0;
  for (; i < n; ++i) tail += v[i] * 0.0f;
  for (float a : acc) tail += a;
  return tail == 0.0f;
}

}  // namespace

Session::Session(const Model& model, SessionOptions opts)
    : model_(model), opts_(opts), units_(model.config()) {}
Session::~Session() = default;

absl::StatusOr<std::unique_ptr<Session>> Session::Create(const Model& model, SessionOptions opts) {
  if (opts.precision == Precision::kF32 && !model.float_ready()) {
    return absl::FailedPreconditionError(
        "f32 precision needs float weights: load the model with need_float");
  }
  if (opts.max_batch < 1) return absl::InvalidArgumentError("max_batch must be >= 1");
  if (opts.n_ctx < 0 || opts.n_ctx > static_cast<int>(model.config().n_ctx)) {
    return absl::InvalidArgumentError(absl::StrCat("session context ", opts.n_ctx,
                                                   " out of range [1, ", model.config().n_ctx,
                                                   "] (0: the model's)"));
  }
  if (opts.n_ctx == 0) opts.n_ctx = DefaultContext(model.config());
  bool use_xnnpack = false;
  if (opts.backend == nullptr) {
    use_xnnpack = opts.precision == Precision::kInt8 && model.xnn() != nullptr &&
                  kernels::BackendFromEnv() == nullptr;
    opts.backend = &kernels::DefaultBackend();
  }
  if (opts.precision == Precision::kInt8 && model.released_packed_source() && !use_xnnpack) {
    return absl::FailedPreconditionError(
        "this model was loaded from memory and keeps its int8 weights only in XNNPACK's layout: "
        "the hand-written kernels cannot run it (load it with xnnpack off to use them)");
  }
  if (opts.precision == Precision::kInt8 && model.has_int4() && !use_xnnpack) {
    return absl::FailedPreconditionError(
        "this model has 4-bit weights, which only the XNNPACK engine runs (load the model with "
        "XNNPACK, do not select a hand-written backend, or compute in float32: precision "
        "SELFCOND_F32 in the C API, \"f32\" in Python and JS, --precision f32 in the CLI)");
  }
  const ModelConfig& c = model.config();
  opts.max_batch = std::min<int>(opts.max_batch, opts.n_ctx);
  const size_t budget = opts.max_memory > 0 ? opts.max_memory : DefaultMemoryBudget();
  if (const size_t need = MemoryNeeded(c, opts); need > budget) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a session of this model needs ", need >> 20, " MiB (KV cache for ", opts.n_ctx,
        " positions x ", c.n_layer, " layers x ", c.kv_dim(), " channels, plus scratch), over the ",
        "memory budget of ", absl::StrFormat("%.2f", budget / 1048576.0),
        " MiB (max_memory_bytes): ask for a shorter context or a larger budget"));
  }
  std::unique_ptr<Session> s(new Session(model, opts));
  if (use_xnnpack) {
    auto ops = kernels::xnn::Operators::Create(*model.xnn());
    if (!ops.ok()) return ops.status();
    s->xnn_ops_ = std::move(*ops);
  }
  const bool llama = c.arch != Arch::kGpt2;
  const size_t B = opts.max_batch, d = c.n_embd, F = c.n_inner, qd = c.q_dim(), kvd = c.kv_dim();
  // Linear-layer inputs get slack at the end: XNNPACK reads up to kExtraBytes past them.
  const size_t slack = kernels::xnn::kExtraBytes / sizeof(float);
  auto& sc = *(s->s_ = std::make_unique<Scratch>());
  sc.x.resize(B * d);
  sc.xn.resize(B * d + slack);
  sc.qkv.resize(B * (qd + 2 * kvd));
  sc.att.resize(B * qd + slack);
  sc.proj.resize(B * d);
  sc.fc.resize(B * F * (llama ? 2 : 1) + slack);
  if (llama) {
    sc.act.resize(B * F + slack);
    sc.rope.resize(B * c.head_dim);
  }
  sc.scores.resize(static_cast<size_t>(c.n_head) * opts.n_ctx);
  sc.xq.resize(B * (std::max({d, qd, F}) + 64));
  sc.xscale.resize(B);
  const size_t kv = static_cast<size_t>(c.n_layer) * opts.n_ctx * kvd;
  bool allocated;
  if (opts.kv_type == SessionOptions::KvType::kF16) {
    sc.key_cache16.reset(new (std::nothrow) uint16_t[kv]);
    sc.value_cache16.reset(new (std::nothrow) uint16_t[kv]);
    sc.kv_bytes = 2 * kv * sizeof(uint16_t);
    allocated = sc.key_cache16 && sc.value_cache16;
  } else {
    sc.key_cache.reset(new (std::nothrow) float[kv]);
    sc.value_cache.reset(new (std::nothrow) float[kv]);
    sc.kv_bytes = 2 * kv * sizeof(float);
    allocated = sc.key_cache && sc.value_cache;
  }
  if (!allocated) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory for the KV cache (", sc.kv_bytes, " bytes)"));
  }
  return s;
}

size_t Session::kv_cache_bytes() const { return s_->kv_bytes; }

size_t Session::MemoryNeeded(const ModelConfig& c, const SessionOptions& opts) {
  // In doubles: a hostile config must not overflow the arithmetic (every factor < 2^21).
  const double n_ctx = opts.n_ctx > 0 ? opts.n_ctx : DefaultContext(c);
  const double B = std::min<double>(opts.max_batch, n_ctx), d = c.n_embd, F = c.n_inner;
  const bool llama = c.arch != Arch::kGpt2;
  const double qd = llama ? static_cast<double>(c.n_head) * c.head_dim : d;
  const double kvd = llama ? static_cast<double>(c.n_head_kv) * c.head_dim : d;
  const double kv = 2.0 * c.n_layer * n_ctx * kvd *
                    (opts.kv_type == SessionOptions::KvType::kF16 ? 2 : sizeof(float));
  // x, xn, proj (d each), qkv, att, fc (+ act and rope for the Llama family), the scores, the
  // logits of one position, and the quantized activations.
  const double per_token = 3 * d + (qd + 2 * kvd) + qd + (llama ? 3 * F + c.head_dim : F);
  const double scratch =
      sizeof(float) * (B * per_token + c.n_head * n_ctx + static_cast<double>(c.vocab_size)) +
      B * (std::max({d, qd, static_cast<double>(F)}) + 64);
  const double total = kv + scratch;
  return total >= 1.8e19 ? SIZE_MAX : static_cast<size_t>(total);
}

int Session::DefaultContext(const ModelConfig& c) {
  return static_cast<int>(std::min<uint32_t>(c.n_ctx, 8192));
}

size_t DefaultMemoryBudget() {
#if defined(SELFCOND_WASM)
  return size_t{2} << 30;
#else
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  size_t budget = pages <= 0 || page <= 0
                      ? size_t{4} << 30
                      : static_cast<size_t>(pages) * static_cast<size_t>(page) / 2;
  // Under an address-space limit (ulimit -v: containers, CI), half of it: a request the limit
  // cannot hold is then refused by the budget, with the sizes in the message, rather than by a
  // failed allocation.
  struct rlimit as;
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
    budget = std::min<size_t>(budget, static_cast<size_t>(as.rlim_cur) / 2);
  }
  return budget;
#endif
}

void Session::Reset() {
  pos_ = 0;
  last_logits_valid_ = false;
}

absl::Status Session::CheckAbort() {
  if (!abort_.exchange(false, std::memory_order_relaxed)) return absl::OkStatus();
  return absl::CancelledError("aborted (selfcond_session_abort)");
}

const char* Session::engine_name() const {
  return xnn_ops_ != nullptr ? "xnnpack" : opts_.backend->name;
}

absl::Status Session::Validate(const Conditioning& c) const {
  const ModelConfig& mc = model_.config();
  const Forcing& forcing = c.forcing;
  if (!forcing.empty()) {
    if (forcing.per_site.size() != static_cast<size_t>(units_.num_sites())) {
      return absl::InvalidArgumentError(absl::StrCat("forcing has ", forcing.per_site.size(),
                                                     " sites, the model has ", units_.num_sites()));
    }
    for (int s = 0; s < units_.num_sites(); ++s) {
      for (const auto& u : forcing.per_site[s]) {
        if (u.unit < 0 || u.unit >= units_.site_size(s)) {
          return absl::InvalidArgumentError(absl::StrCat("forcing: unit ", u.unit, " of ",
                                                         units_.SiteName(s), " out of range (",
                                                         units_.site_size(s), " units)"));
        }
        if (!std::isfinite(u.value) || std::fabs(u.value) > kMaxIntervention) {
          return absl::InvalidArgumentError(absl::StrCat(
              "forcing: unit ", u.unit, " of ", units_.SiteName(s), " would be set to ", u.value,
              ": a forcing value must be finite and at most ", kMaxIntervention,
              " in magnitude (is the expert table broken?)"));
        }
      }
    }
  }
  const Steering& steering = c.steering;
  if (!steering.add.empty()) {
    if (steering.layer < 0 || steering.layer >= static_cast<int>(mc.n_layer)) {
      return absl::OutOfRangeError(
          absl::StrCat("steering layer ", steering.layer, " out of range [0, ", mc.n_layer, ")"));
    }
    if (steering.add.size() != mc.n_embd) {
      return absl::InvalidArgumentError(absl::StrCat("steering vector has ", steering.add.size(),
                                                     " values, the model's n_embd is ", mc.n_embd));
    }
    for (float v : steering.add) {
      if (!std::isfinite(v) || std::fabs(v) > kMaxIntervention) {
        return absl::InvalidArgumentError(
            absl::StrCat("steering vector has a value of ", v,
                         " (after scaling by its strength): must be finite and at most ",
                         kMaxIntervention, " in magnitude"));
      }
    }
  }
  for (const auto& [token, b] : c.logit_bias) {
    if (token < 0 || static_cast<uint32_t>(token) >= mc.vocab_size) {
      return absl::OutOfRangeError(
          absl::StrCat("logit bias: token id ", token, " out of range [0, ", mc.vocab_size, ")"));
    }
    if (!std::isfinite(b) || std::fabs(b) > kMaxLogitBias) {
      return absl::InvalidArgumentError(absl::StrCat("logit bias ", b, " for token ", token,
                                                     ": must be finite and at most ", kMaxLogitBias,
                                                     " in magnitude"));
    }
  }
  return absl::OkStatus();
}

absl::Status Session::SetConditioning(Conditioning c) {
  if (auto st = Validate(c); !st.ok()) return st;
  if (c.forcing.empty()) c.forcing = Forcing();  // no per-site lists to walk
  if (c.steering.add.empty()) c.steering = Steering();
  cond_ = std::move(c);
  return absl::OkStatus();
}

// y(m, n) = x(m, k) . W^T + bias: on XNNPACK (int8), or on a hand-written backend split over
// threads by blocks of output channels.
absl::Status Session::Linear(const LinearWeights& w, const float* x, int m, float* y) {
  const int n = w.q.n;
  const int threads = opts_.pool ? opts_.pool->size() : 1;
  // Small products (under ~1M multiply-adds, e.g. the demo model's per-token linears) run on
  // the calling thread: waking the pool costs more than it saves there.
  const bool small = static_cast<int64_t>(m) * n * w.q.k < (int64_t{1} << 20);
  if (xnn_ops_ != nullptr && opts_.precision == Precision::kInt8) {
    void* pool = small || threads == 1 ? nullptr : opts_.pool->native_handle();
    return xnn_ops_->Run(w.xnn_id, x, m, y, pool);
  }
  const kernels::Backend& be = *opts_.backend;
  // Enough tasks to balance threads; each a multiple of the 16-row packed block.
  int tasks = threads == 1 || small ? 1 : std::min(threads * 4, kernels::PaddedRows(n) / 16);
  tasks = std::max(tasks, 1);
  const int rows_per_task = (kernels::PaddedRows(n) / 16 + tasks - 1) / tasks * 16;
  auto run = [&](auto&& fn) {
    if (tasks == 1) {
      fn(0, n);
    } else {
      opts_.pool->ParallelFor(tasks, [&](int t) {
        const int b = t * rows_per_task, e = std::min(n, b + rows_per_task);
        if (b < e) fn(b, e);
      });
    }
  };
  if (opts_.precision == Precision::kInt8) {
    be.quantize_rows(x, m, w.q.k, s_->xq.data(), s_->xscale.data());
    run([&](int b, int e) {
      be.gemm_i8(w.q, s_->xq.data(), s_->xscale.data(), m, w.bias, y, n, b, e);
    });
  } else {
    run([&](int b, int e) { be.gemm_f32(w.f, x, m, w.bias, y, n, b, e); });
  }
  return absl::OkStatus();
}

// The expert hooks on a site: its m rows of `size` outputs start at y with row stride ld.
void Session::Intervene(int site, float* y, int m, int ld, bool chunk_has_last) {
  const Forcing& forcing = cond_.forcing;
  if (!forcing.per_site.empty()) {
    const auto& units = forcing.per_site[site];
    if (!units.empty()) {
      const int first = forcing.only_last_token ? (chunk_has_last ? m - 1 : m) : 0;
      for (int i = first; i < m; ++i) {
        for (const auto& u : units) y[static_cast<size_t>(i) * ld + u.unit] = u.value;
      }
    }
  }
  if (observer_ != nullptr) observer_->OnSite(site, y, m, ld, pos_);
}

void Session::StoreKv(int l, const float* k, int ldk, const float* v, int ldv, int n) {
  const int kvd = model_.config().kv_dim();
  const size_t layer_off = static_cast<size_t>(l) * opts_.n_ctx * kvd;
  for (int i = 0; i < n; ++i) {
    const size_t at = layer_off + static_cast<size_t>(pos_ + i) * kvd;
    const float* ki = k + static_cast<size_t>(i) * ldk;
    const float* vi = v + static_cast<size_t>(i) * ldv;
    if (s_->key_cache16 != nullptr) {
      ops::ToHalf(ki, s_->key_cache16.get() + at, kvd);
      ops::ToHalf(vi, s_->value_cache16.get() + at, kvd);
    } else {
      std::memcpy(s_->key_cache.get() + at, ki, kvd * sizeof(float));
      std::memcpy(s_->value_cache.get() + at, vi, kvd * sizeof(float));
    }
  }
}

// Context length from which decode's attention runs its heads in parallel (set, not tuned: the
// gain was measured at 128-256 positions, docs/kernels.md "Threads at decode").
constexpr int kParallelDecodeAttention = 32;

void Session::Attention(int l, const float* q, int ldq, int n, float* att) {
  const ModelConfig& c = model_.config();
  const int H = c.n_head, hd = c.head_dim, kvd = c.kv_dim(), group = c.n_head / c.n_head_kv;
  const int T = opts_.n_ctx, p0 = pos_;
  const size_t layer_off = static_cast<size_t>(l) * T * kvd;
  const float* kc = s_->key_cache ? s_->key_cache.get() + layer_off : nullptr;
  const float* vc = s_->value_cache ? s_->value_cache.get() + layer_off : nullptr;
  const uint16_t* kc16 = s_->key_cache16 ? s_->key_cache16.get() + layer_off : nullptr;
  const uint16_t* vc16 = s_->value_cache16 ? s_->value_cache16.get() + layer_off : nullptr;
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  auto head = [&](int h) {
    float* sc = s_->scores.data() + static_cast<size_t>(h) * T;
    const int kv_off = (h / group) * hd;  // this query head's key/value head
    for (int i = 0; i < n; ++i) {
      const float* qi = q + static_cast<size_t>(i) * ldq + h * hd;
      // causal: positions 0..p0+i; padding (ForwardPadding): the real tokens before it only
      const int len = attend_limit_ >= 0 ? attend_limit_ : p0 + i + 1;
      if (kc16 != nullptr) {
        for (int t = 0; t < len; ++t) {
          sc[t] = ops::DotHalf(qi, kc16 + static_cast<size_t>(t) * kvd + kv_off, hd) * inv_sqrt;
        }
      } else {
        ops::DotRows(qi, kc + kv_off, kvd, len, hd, inv_sqrt, sc);
      }
      float mx = -std::numeric_limits<float>::infinity();
      for (int t = 0; t < len; ++t) mx = std::max(mx, sc[t]);
      float sum = 0;
      for (int t = 0; t < len; ++t) sum += (sc[t] = std::exp(sc[t] - mx));
      const float inv = 1.0f / sum;
      for (int t = 0; t < len; ++t) sc[t] *= inv;
      float* out = att + static_cast<size_t>(i) * H * hd + h * hd;
      std::fill(out, out + hd, 0.0f);
      if (vc16 != nullptr) {
        for (int t = 0; t < len; ++t) {
          ops::AxpyHalf(sc[t], vc16 + static_cast<size_t>(t) * kvd + kv_off, out, hd);
        }
      } else {
        ops::AxpyRows(sc, vc + kv_off, kvd, len, out, hd);
      }
    }
  };
  // Heads in parallel for a chunk, and at decode once the context makes a head's work (len x
  // head_dim, twice) outweigh a parallel region (a few microseconds now that the pool's workers
  // spin between regions: docs/kernels.md, "Threads at decode").
  if (opts_.pool && opts_.pool->size() > 1 && (n > 1 || p0 >= kParallelDecodeAttention)) {
    opts_.pool->ParallelFor(H, head);
  } else {
    for (int h = 0; h < H; ++h) head(h);
  }
}

void Session::ResidualHooks(int l, float* x, int n) {
  const int d = model_.config().n_embd;
  if (l == cond_.steering.layer) {
    for (int i = 0; i < n; ++i) {
      ops::AddInPlace(x + static_cast<size_t>(i) * d, cond_.steering.add.data(), d);
    }
  }
  if (observer_ != nullptr) observer_->OnResidual(l, x, n, pos_);
}

absl::Status Session::LmHead(const float* xn, int rows) {
  const size_t V = model_.config().vocab_size;
  // kAll: this chunk's rows go after the previous chunks' rows.
  float* out = s_->logits.data() + static_cast<size_t>(logits_row_) * V;
  if (auto st = Linear(model_.lm_head(), xn, rows, out); !st.ok()) return st;
  if (!AllFinite(out, static_cast<size_t>(rows) * V)) return NonFinite("logits");
  logits_row_ += rows;
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> Session::Forward(absl::Span<const int32_t> tokens,
                                                         Logits want) {
  const ModelConfig& c = model_.config();
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to run");
  if (pos_ + tokens.size() > static_cast<size_t>(opts_.n_ctx)) {
    return absl::OutOfRangeError(absl::StrCat("context full: ", pos_, " tokens in the cache + ",
                                              tokens.size(), " new > context length ",
                                              opts_.n_ctx));
  }
  for (int32_t t : tokens) {
    if (t < 0 || static_cast<uint32_t>(t) >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " out of range [0, ", c.vocab_size, ")"));
    }
  }
  const size_t V = c.vocab_size;
  s_->logits.resize(want == Logits::kAll ? tokens.size() * V : (want == Logits::kLast ? V : 0));
  const int B = opts_.max_batch;
  logits_row_ = 0;
  last_logits_valid_ = false;
  const int p0 = pos_;
  for (size_t i = 0; i < tokens.size(); i += B) {
    const int n = static_cast<int>(std::min<size_t>(B, tokens.size() - i));
    if (auto st = ForwardChunk(tokens.data() + i, n, i + n == tokens.size(), want); !st.ok()) {
      // An abort leaves the session as before the call: the positions this call filled are
      // forgotten (their cache rows are overwritten by the next call).
      if (absl::IsCancelled(st)) pos_ = p0;
      return st;
    }
  }
  last_logits_valid_ = want == Logits::kLast;
  return absl::Span<const float>(s_->logits);
}

absl::Span<const float> Session::last_logits() const {
  if (!last_logits_valid_ || pos_ == 0) return {};
  return absl::Span<const float>(s_->logits);
}

absl::Status Session::ForwardPadding(absl::Span<const int32_t> tokens) {
  if (pos_ < 1) return absl::FailedPreconditionError("padding needs tokens in the cache first");
  if (tokens.empty()) return absl::OkStatus();
  const int p0 = pos_;
  attend_limit_ = p0;
  auto done = Forward(tokens, Logits::kNone);  // leaves no last logits
  attend_limit_ = -1;
  pos_ = p0;
  return done.status();
}

absl::Status Session::NonFinite(const char* what) const {
  return absl::OutOfRangeError(
      absl::StrCat("non-finite ", what, " at position ", pos_, ": the activations overflowed (",
                   !cond_.forcing.empty()
                       ? "check the forcing values: an expert table with huge on_p50 / on_p90? "
                       : "",
                   !cond_.steering.add.empty() ? "check the steering vector's strength; " : "",
                   "or the model's weights are broken)"));
}

absl::Status Session::ForwardChunk(const int32_t* tokens, int n, bool last_chunk, Logits want) {
  const int p0 = pos_;
  absl::Status st = model_.arch() == Arch::kGpt2 ? ForwardChunkGpt2(tokens, n, last_chunk, want)
                                                 : ForwardChunkLlama(tokens, n, last_chunk, want);
  if (st.ok() && !AllFinite(s_->x.data(), static_cast<size_t>(n) * model_.config().n_embd)) {
    pos_ = p0;  // the chunk is not kept
    return NonFinite("activations");
  }
  return st;
}

absl::Status ForEachWorkerSession(const Model& model, const SessionOptions& opts, ThreadPool* pool,
                                  const std::function<absl::Status(int, Session&)>& fn) {
  const int workers = pool ? std::max(1, pool->size()) : 1;
  std::vector<absl::Status> status(workers);
  auto body = [&](int w) {
    SessionOptions so = opts;
    so.pool = nullptr;  // one single-threaded session per worker
    auto session = Session::Create(model, so);
    status[w] = session.ok() ? fn(w, **session) : session.status();
  };
  if (pool && workers > 1) {
    pool->ParallelFor(workers, body);
  } else {
    body(0);
  }
  for (const auto& st : status) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace selfcond
