// GPT-2: loading a selfcond model file, and the forward pass.
//
// Read Session::ForwardChunk top to bottom: it is the whole model. Everything it calls is either
// a kernel (src/kernels/kernels.h) or a small float helper in this file.
#include "model/gpt2.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if !defined(SELFCOND_WASM)
#include <sys/resource.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#if defined(__x86_64__) && !defined(SELFCOND_WASM)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "util/parallel.h"

namespace selfcond {

absl::StatusOr<Precision> ParsePrecision(const std::string& s) {
  if (s == "int8") return Precision::kInt8;
  if (s == "f32") return Precision::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", s, "' (expected int8 or f32)"));
}

// ---- loading -----------------------------------------------------------------------------

namespace {

std::string ShapeStr(const std::vector<uint32_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + ")";
}

// Finds a tensor and checks its dtype and logical shape; the error names the tensor.
absl::StatusOr<const TensorView*> Expect(const ModelFileView& f, const std::string& name,
                                         DType dtype, std::vector<uint32_t> shape) {
  const TensorView* t = f.Find(name);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor '", name, "'"));
  if (t->dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has dtype ",
                                                   static_cast<int>(t->dtype), ", expected ",
                                                   static_cast<int>(dtype)));
  }
  if (t->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' has shape ", ShapeStr(t->shape), ", expected ", ShapeStr(shape)));
  }
  if (dtype == DType::kF32) {
    if (auto st = CheckFinite(*t); !st.ok()) return st;
  }
  return t;
}

#define SC_ASSIGN_OR_RETURN(lhs, expr) \
  auto lhs##_or = (expr);              \
  if (!lhs##_or.ok()) return lhs##_or.status();

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path, LoadOptions opts) {
#if !defined(SELFCOND_WASM)
  if (opts.copy_to_memory) {
    auto bytes = ReadFileToHeap(path);
    if (!bytes.ok()) return bytes.status();
    auto m = FromBuffer(std::move(*bytes), opts);
    if (!m.ok()) {
      return absl::Status(m.status().code(),
                          absl::StrCat("model '", path, "': ", m.status().message()));
    }
    return m;
  }
#endif
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(*file);
  if (auto st = m->Build(opts); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("model '", path, "': ", st.message()));
  }
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromBuffer(HeapBuffer bytes, LoadOptions opts) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = MappedFile::FromBuffer(std::move(bytes));
  if (auto st = m->Build(opts); !st.ok()) return st;
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromBuffer(const std::string& bytes,
                                                         LoadOptions opts) {
  auto heap = HeapBuffer::CopyOf(bytes.data(), bytes.size());
  if (!heap.ok()) return heap.status();
  return FromBuffer(std::move(*heap), opts);
}

// A float copy (n, k) of a packed int8 matrix, owned by the model (the f32 path of a file that
// holds no float copies).
const float* Model::Dequantize(const kernels::PackedI8& q) {
  owned_f32_.emplace_back(static_cast<size_t>(q.n) * q.k);
  float* w = owned_f32_.back().data();
  for (int r = 0; r < q.n; ++r) kernels::UnpackRow(q, r, w + static_cast<size_t>(r) * q.k);
  return w;
}

// A float copy (n, k) of an int4 matrix (the f32 path of an int4 file).
const float* Model::DequantizeInt4(const LinearWeights& w) {
  const int n = w.q.n, k = w.q.k;
  owned_f32_.emplace_back(static_cast<size_t>(n) * k);
  float* out = owned_f32_.back().data();
  for (int r = 0; r < n; ++r) {
    const uint8_t* row = w.q4 + static_cast<size_t>(r) * (k / 2);
    for (int c = 0; c < k; ++c) {
      const int nib = c % 2 == 0 ? (row[c / 2] & 15) : (row[c / 2] >> 4);
      out[static_cast<size_t>(r) * k + c] = static_cast<float>(nib - 8) * w.q4_scale[r];
    }
  }
  return out;
}

absl::Status Model::BuildLinear(const std::string& prefix, int n, int k, bool need_float,
                                LinearWeights* out) {
  const uint32_t un = n, uk = k, npad = kernels::PaddedRows(n);
  out->q = {};
  out->q.n = n;
  out->q.k = k;
  out->q.n_pad = static_cast<int>(npad);
  const TensorView* tq = view_.Find(prefix + ".q");
  if (tq != nullptr && tq->dtype == DType::kI4) {
    // A 4-bit layer: only XNNPACK runs it (int8 path), or its dequantized copy (f32 path).
    SC_ASSIGN_OR_RETURN(q4, Expect(view_, prefix + ".q", DType::kI4, {un, uk}));
    SC_ASSIGN_OR_RETURN(s4, Expect(view_, prefix + ".scale", DType::kF32, {un}));
    out->q4 = (*q4_or)->data;
    out->q4_scale = reinterpret_cast<const float*>((*s4_or)->data);
    has_int4_ = true;
  } else {
    SC_ASSIGN_OR_RETURN(q, Expect(view_, prefix + ".q", DType::kI8Packed, {un, uk}));
    SC_ASSIGN_OR_RETURN(scale, Expect(view_, prefix + ".scale", DType::kF32, {npad}));
    out->q.q = reinterpret_cast<const int8_t*>((*q_or)->data);
    out->q.scale = reinterpret_cast<const float*>((*scale_or)->data);
    if (view_.Find(prefix + ".row_sum") != nullptr) {
      SC_ASSIGN_OR_RETURN(rs, Expect(view_, prefix + ".row_sum", DType::kI32, {npad}));
      out->q.row_sum = reinterpret_cast<const int32_t*>((*rs_or)->data);
    } else {
      owned_i32_.emplace_back(npad);
      kernels::ComputeRowSums(out->q.q, static_cast<int>(npad), k, owned_i32_.back().data());
      out->q.row_sum = owned_i32_.back().data();
    }
  }
  out->bias = nullptr;
  if (view_.Find(prefix + ".bias") != nullptr || prefix.rfind("h.", 0) == 0) {
    SC_ASSIGN_OR_RETURN(b, Expect(view_, prefix + ".bias", DType::kF32, {un}));
    out->bias = reinterpret_cast<const float*>((*b_or)->data);
  }
  out->f = {nullptr, n, k};
  if (view_.Find(prefix + ".weight") != nullptr) {
    SC_ASSIGN_OR_RETURN(w, Expect(view_, prefix + ".weight", DType::kF32, {un, uk}));
    out->f.w = reinterpret_cast<const float*>((*w_or)->data);
    has_float_copies_ = true;
  } else if (need_float) {
    // No float copy in the file: the f32 path runs on dequantized weights.
    out->f.w = out->q4 != nullptr ? DequantizeInt4(*out) : Dequantize(out->q);
  }
  return absl::OkStatus();
}

absl::Status Model::Build(LoadOptions opts) {
  file_size_ = file_.bytes().size();
  auto view = ParseModelFile(file_.bytes());
  if (!view.ok()) return view.status();
  view_ = std::move(*view);
  if (opts.verify_hash) {
    // Hashing reads the whole file: a mapped file's pages go again as soon as they are hashed,
    // so verification does not add the file's size to peak memory (the packing reads them back
    // from the page cache).
    auto drop = [this](const uint8_t* p, size_t n) { file_.DropPages(p, n); };
    if (auto st = VerifyContentHash(file_.bytes(), drop); !st.ok()) return st;
  }
  hash_hex_ = view_.HashHex();
  auto tok = Tokenizer::Deserialize(view_.tokenizer_blob);
  if (!tok.ok()) return tok.status();
  tokenizer_ = std::move(*tok);
  const GPT2Config& c = view_.config;
  if (static_cast<uint32_t>(tokenizer_->vocab_size()) != c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", tokenizer_->vocab_size(),
                                                   " tokens but the config says vocab_size ",
                                                   c.vocab_size));
  }
  const int d = c.n_embd, V = c.vocab_size, T = c.n_ctx, F = c.n_inner;
  const uint32_t ud = d;

  LinearWeights wte;
  if (auto st = BuildLinear("wte", V, d, false, &wte); !st.ok()) return st;
  wte_q_ = wte.q;
  wte_f_ = {nullptr, V, d};
  if (view_.Find("wte.weight") != nullptr) {
    SC_ASSIGN_OR_RETURN(w, Expect(view_, "wte.weight", DType::kF32, {uint32_t(V), ud}));
    wte_f_.w = reinterpret_cast<const float*>((*w_or)->data);
  }
  if (c.tied_lm_head) {
    lm_head_ = wte;
    lm_head_.f = wte_f_;
  } else if (auto st = BuildLinear("lm_head", V, d, false, &lm_head_); !st.ok()) {
    return st;
  }

  SC_ASSIGN_OR_RETURN(wpe, Expect(view_, "wpe", DType::kF32, {uint32_t(T), ud}));
  wpe_ = reinterpret_cast<const float*>((*wpe_or)->data);
  SC_ASSIGN_OR_RETURN(lnfw, Expect(view_, "ln_f.weight", DType::kF32, {ud}));
  SC_ASSIGN_OR_RETURN(lnfb, Expect(view_, "ln_f.bias", DType::kF32, {ud}));
  ln_f_weight_ = reinterpret_cast<const float*>((*lnfw_or)->data);
  ln_f_bias_ = reinterpret_cast<const float*>((*lnfb_or)->data);

  blocks_.resize(c.n_layer);
  for (int l = 0; l < static_cast<int>(c.n_layer); ++l) {
    const std::string h = absl::StrCat("h.", l, ".");
    BlockWeights& b = blocks_[l];
    auto vec = [&](const std::string& name, const float** out) -> absl::Status {
      auto t = Expect(view_, h + name, DType::kF32, {ud});
      if (!t.ok()) return t.status();
      *out = reinterpret_cast<const float*>((*t)->data);
      return absl::OkStatus();
    };
    for (auto st : {vec("ln_1.weight", &b.ln_1_weight), vec("ln_1.bias", &b.ln_1_bias),
                    vec("ln_2.weight", &b.ln_2_weight), vec("ln_2.bias", &b.ln_2_bias),
                    BuildLinear(h + "attn.c_attn", 3 * d, d, opts.need_float, &b.c_attn),
                    BuildLinear(h + "attn.c_proj", d, d, opts.need_float, &b.attn_c_proj),
                    BuildLinear(h + "mlp.c_fc", F, d, opts.need_float, &b.c_fc),
                    BuildLinear(h + "mlp.c_proj", d, F, opts.need_float, &b.mlp_c_proj)}) {
      if (!st.ok()) return st;
    }
  }
  if (opts.need_float && wte_f_.w == nullptr) {
    wte_f_.w = Dequantize(wte_q_);
    if (c.tied_lm_head) lm_head_.f = wte_f_;
  }
  if (opts.need_float && lm_head_.f.w == nullptr) {
    lm_head_.f.w = Dequantize(lm_head_.q);
  }
  if (opts.xnnpack && kernels::xnn::Available()) {
    if (auto st = PackForXnnpack(); !st.ok()) return st;
    // A heap copy cannot drop pages the way a mapping does: keep only what is still read.
    if (!file_.mapped()) ReleasePackedSource();
  }
  // With the weights packed, a session reads from the file only LayerNorm parameters (copied
  // out here: a few KiB per layer) and rows of the embeddings (read with pread). So every page
  // read while loading leaves memory again; touching the small tensors through the mapping
  // would bring each one's 64 KiB fault-around window back. And the heap returns what the
  // tokenizer's construction freed, so peak RSS tracks what the model keeps.
  if (xnn_ != nullptr && file_.mapped()) {
    OwnLayerNorms();
    file_.DropPages(file_.bytes().data(), file_.bytes().size());
  } else {
    file_.DropPages(wpe_, static_cast<size_t>(T) * d * sizeof(float));
    file_.DropPages(view_.tokenizer_blob.data(), view_.tokenizer_blob.size());
  }
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  // The hand-written int8 kernels cannot run the 4-bit layers; Session::Create says so.
  float_ready_ = wte_f_.w != nullptr && lm_head_.f.w != nullptr;
  for (const auto& b : blocks_) {
    float_ready_ =
        float_ready_ && b.c_attn.f.w && b.attn_c_proj.f.w && b.c_fc.f.w && b.mlp_c_proj.f.w;
  }
  return absl::OkStatus();
}

// Packs every int8 linear (and the LM head) into XNNPACK's layout, then drops the file's pages of
// those weights: the packed copy is the one that stays resident. (The token embedding reads rows
// of wte's int8 data; only the rows a prompt uses come back into memory.)
std::vector<LinearWeights*> Model::Linears() {
  std::vector<LinearWeights*> linears = {&lm_head_};
  for (auto& b : blocks_) {
    for (LinearWeights* w : {&b.c_attn, &b.attn_c_proj, &b.c_fc, &b.mlp_c_proj}) {
      linears.push_back(w);
    }
  }
  return linears;
}

absl::Status Model::PackForXnnpack() {
  // The LM head first: it is the largest matrix (vocab x d), and packing it while nothing else
  // is packed yet keeps the peak of loading below the steady state.
  const std::vector<LinearWeights*> linears = Linears();
  size_t bound = 0;
  for (const LinearWeights* w : linears) {
    bound += kernels::xnn::PackedWeights::UpperBoundPackedBytes(w->q.n, w->q.k);
  }
  auto packed = kernels::xnn::PackedWeights::Create(bound);
  if (!packed.ok()) return packed.status();
  xnn_ = std::move(*packed);
  for (LinearWeights* w : linears) {
    kernels::xnn::LinearSpec spec;
    if (w->q4 != nullptr) {
      spec.q4 = w->q4;
      spec.q4_scale = w->q4_scale;
    } else {
      spec.q8 = &w->q;
    }
    spec.bias = w->bias;
    spec.n = w->q.n;
    spec.k = w->q.k;
    // The file's pages are dropped as soon as XNNPACK has read them (before it packs), so a
    // matrix is at most twice in memory (row-major copy + packed) while it is being packed.
    spec.after_read = [this, w] {
      if (w->q4 != nullptr) {
        file_.DropPages(w->q4, static_cast<size_t>(w->q.n) * w->q.k / 2);
      } else {
        file_.DropPages(w->q.q, static_cast<size_t>(w->q.n_pad) * w->q.k);
      }
    };
    auto id = xnn_->Add(spec);
    if (!id.ok()) return id.status();
    w->xnn_id = *id;
  }
  xnn_->Finalize();
  return absl::OkStatus();
}

// The file as a heap copy holds every int8 / int4 weight matrix a second time next to
// XNNPACK's packed copy. Moves every tensor still read (embeddings, scales, biases, LayerNorm,
// float copies) to the front of the buffer, in place, shrinks the buffer to them and points
// every weight pointer at their new places: the linear layers' weights are then in memory once.
// (In place, because a second buffer would grow WASM memory, which never shrinks.) The tied
// token embedding stays (EmbedInt8 reads its rows); the tokenizer blob goes (the Tokenizer owns
// its data).
void Model::ReleasePackedSource() {
  std::vector<uintptr_t> dropped;  // data of the matrices XNNPACK packed
  for (const LinearWeights* w : Linears()) {
    if (w->xnn_id < 0) continue;
    if (w->q4 != nullptr) {
      dropped.push_back(reinterpret_cast<uintptr_t>(w->q4));
    } else if (w->q.q != wte_q_.q) {  // the tied LM head's data is the token embedding
      dropped.push_back(reinterpret_cast<uintptr_t>(w->q.q));
    }
  }
  std::sort(dropped.begin(), dropped.end());
  absl::Span<uint8_t> heap = file_.mutable_heap();
  const uintptr_t old_base = reinterpret_cast<uintptr_t>(heap.data());
  // Tensor ranges in file order, each with its offset after compaction (SIZE_MAX: dropped).
  // Kept ranges only move towards the front, so moving them in file order is safe in place.
  struct Range {
    size_t offset, size, new_offset;
  };
  std::vector<Range> ranges;
  for (const TensorView& t : view_.tensors) {
    ranges.push_back({static_cast<size_t>(reinterpret_cast<uintptr_t>(t.data) - old_base),
                      static_cast<size_t>(t.nbytes), SIZE_MAX});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.offset < b.offset; });
  size_t total = 0;
  for (Range& r : ranges) {
    if (std::binary_search(dropped.begin(), dropped.end(), old_base + r.offset)) continue;
    total = (total + 63) / 64 * 64;  // the file's 64-byte alignment
    r.new_offset = total;
    std::memmove(heap.data() + total, heap.data() + r.offset, r.size);
    total += r.size;
  }
  file_.ShrinkHeap(total);
  uint8_t* base = file_.mutable_heap().data();
  // Old pointer -> new pointer (null for dropped data; pointers outside the file, to memory the
  // model owns, stay as they are).
  auto move = [&](auto* p) -> decltype(p) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (p == nullptr || a < old_base) return p;
    const size_t off = a - old_base;
    auto it = std::upper_bound(ranges.begin(), ranges.end(), off,
                               [](size_t x, const Range& r) { return x < r.offset; });
    if (it == ranges.begin()) return p;
    --it;
    if (off >= it->offset + it->size) return p;  // not in a tensor: model-owned memory
    if (it->new_offset == SIZE_MAX) return nullptr;
    return reinterpret_cast<const T*>(base + it->new_offset + (off - it->offset));
  };
  auto move_linear = [&](LinearWeights& w) {
    w.q.q = move(w.q.q);
    w.q.scale = move(w.q.scale);
    w.q.row_sum = move(w.q.row_sum);
    w.q4 = move(w.q4);
    w.q4_scale = move(w.q4_scale);
    w.f.w = move(w.f.w);
    w.bias = move(w.bias);
  };
  wte_q_.q = move(wte_q_.q);
  wte_q_.scale = move(wte_q_.scale);
  wte_q_.row_sum = move(wte_q_.row_sum);
  wte_f_.w = move(wte_f_.w);
  for (LinearWeights* w : Linears()) move_linear(*w);
  wpe_ = move(wpe_);
  ln_f_weight_ = move(ln_f_weight_);
  ln_f_bias_ = move(ln_f_bias_);
  for (auto& b : blocks_) {
    for (const float** p : {&b.ln_1_weight, &b.ln_1_bias, &b.ln_2_weight, &b.ln_2_bias}) {
      *p = move(*p);
    }
  }
  for (TensorView& t : view_.tensors) t.data = move(t.data);
  view_.tokenizer_blob = {};
  released_packed_source_ = true;
}

void Model::OwnLayerNorms() {
  const size_t d = view_.config.n_embd;
  auto own = [&](const float** p) {
    owned_f32_.emplace_back(*p, *p + d);
    *p = owned_f32_.back().data();
  };
  for (auto& b : blocks_) {
    for (const float** p : {&b.ln_1_weight, &b.ln_1_bias, &b.ln_2_weight, &b.ln_2_bias}) own(p);
  }
  own(&ln_f_weight_);
  own(&ln_f_bias_);
}

absl::Status Model::AddPosition(int pos, float* x, std::vector<float>* scratch) const {
  const size_t d = view_.config.n_embd;
  scratch->resize(d);
  if (auto st = file_.Read(wpe_ + static_cast<size_t>(pos) * d, d * sizeof(float), scratch->data());
      !st.ok()) {
    return st;
  }
  for (size_t j = 0; j < d; ++j) x[j] += (*scratch)[j];
  return absl::OkStatus();
}

absl::Status Model::EmbedInt8(int32_t token, float* out, std::vector<int8_t>* scratch) const {
  const kernels::PackedI8& w = wte_q_;
  // The 16 rows that share token's packed block: (k / 4) groups of 16 x 4 bytes.
  const size_t block_bytes =
      static_cast<size_t>(w.k / kernels::kKGroup) * kernels::kRowBlock * kernels::kKGroup;
  const int block = token / kernels::kRowBlock;
  scratch->resize(block_bytes);
  if (auto st = file_.Read(w.q + block * block_bytes, block_bytes, scratch->data()); !st.ok()) {
    return st;
  }
  kernels::PackedI8 one = w;
  one.q = scratch->data();
  one.scale = w.scale + block * kernels::kRowBlock;
  kernels::UnpackRow(one, token % kernels::kRowBlock, out);
  return absl::OkStatus();
}

// ---- the forward pass ----------------------------------------------------------------------

// Activation buffers for one chunk of up to max_batch tokens, and the KV cache.
struct Session::Scratch {
  std::vector<float> x;       // (B, d) residual stream
  std::vector<float> xn;      // (B, d) LayerNorm output
  std::vector<float> qkv;     // (B, 3d) c_attn output: q | k | v
  std::vector<float> att;     // (B, d) attention output (heads concatenated)
  std::vector<float> proj;    // (B, d) c_proj outputs
  std::vector<float> fc;      // (B, d_ff) c_fc output, then GELU
  std::vector<float> scores;  // (n_head, n_ctx) attention weights, one row per head
  std::vector<int8_t> xq;     // (B, max(d, d_ff) + 64) quantized activations (+ SIMD slack)
  std::vector<float> xscale;  // (B) activation scales
  // (layer, n_ctx, d) each, n_ctx = the session's; float, or IEEE half bits with
  // SessionOptions::KvType::kF16 (one of the two pairs is null). Not zero-filled on purpose: a
  // position is written before it is read, so only the positions used become resident memory.
  std::unique_ptr<float[]> key_cache;
  std::unique_ptr<float[]> value_cache;
  std::unique_ptr<uint16_t[]> key_cache16;
  std::unique_ptr<uint16_t[]> value_cache16;
  size_t kv_bytes = 0;
  std::vector<float> logits;   // (vocab) or (B, vocab)
  std::vector<int8_t> embed;   // (16 * d) one packed block of token-embedding rows
  std::vector<float> pos_row;  // (d) one row of the position embedding
};

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
  if (opts.n_ctx == 0) opts.n_ctx = static_cast<int>(model.config().n_ctx);
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
        "XNNPACK, do not select a hand-written backend, or use --precision f32)");
  }
  const GPT2Config& c = model.config();
  opts.max_batch = std::min<int>(opts.max_batch, opts.n_ctx);
  const size_t budget = opts.max_memory > 0 ? opts.max_memory : DefaultMemoryBudget();
  if (const size_t need = MemoryNeeded(c, opts); need > budget) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a session of this model needs ", need >> 20, " MiB (KV cache for ", opts.n_ctx,
        " positions x ", c.n_layer, " layers x ", c.n_embd, " channels, plus scratch), over the ",
        "memory budget of ", budget >> 20, " MiB: ask for a shorter context or a larger budget"));
  }
  std::unique_ptr<Session> s(new Session(model, opts));
  if (use_xnnpack) {
    auto ops = kernels::xnn::Operators::Create(*model.xnn());
    if (!ops.ok()) return ops.status();
    s->xnn_ops_ = std::move(*ops);
  }
  const size_t B = opts.max_batch, d = c.n_embd, F = c.n_inner;
  // Linear-layer inputs get slack at the end: XNNPACK reads up to kExtraBytes past them.
  const size_t slack = kernels::xnn::kExtraBytes / sizeof(float);
  auto& sc = *(s->s_ = std::make_unique<Scratch>());
  sc.x.resize(B * d);
  sc.xn.resize(B * d + slack);
  sc.qkv.resize(B * 3 * d);
  sc.att.resize(B * d + slack);
  sc.proj.resize(B * d);
  sc.fc.resize(B * F + slack);
  sc.scores.resize(static_cast<size_t>(c.n_head) * opts.n_ctx);
  sc.xq.resize(B * (std::max(d, F) + 64));
  sc.xscale.resize(B);
  const size_t kv = static_cast<size_t>(c.n_layer) * opts.n_ctx * d;
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

size_t Session::MemoryNeeded(const GPT2Config& c, const SessionOptions& opts) {
  // In doubles: a hostile config must not overflow the arithmetic (every factor < 2^21).
  const double n_ctx = opts.n_ctx > 0 ? opts.n_ctx : c.n_ctx;
  const double B = std::min<double>(opts.max_batch, n_ctx), d = c.n_embd, F = c.n_inner;
  const double kv = 2.0 * c.n_layer * n_ctx * d *
                    (opts.kv_type == SessionOptions::KvType::kF16 ? 2 : sizeof(float));
  const double scratch =
      sizeof(float) * (B * (7 * d + F) + c.n_head * n_ctx + static_cast<double>(c.vocab_size)) +
      B * (std::max(d, F) + 64);
  const double total = kv + scratch;
  return total >= 1.8e19 ? SIZE_MAX : static_cast<size_t>(total);
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

void Session::Reset() { pos_ = 0; }

const char* Session::engine_name() const {
  return xnn_ops_ != nullptr ? "xnnpack" : opts_.backend->name;
}

absl::Status Session::SetSteering(Steering steering) {
  if (steering.add.empty()) {
    steering_ = Steering();
    return absl::OkStatus();
  }
  const GPT2Config& c = model_.config();
  if (steering.layer < 0 || steering.layer >= static_cast<int>(c.n_layer)) {
    return absl::OutOfRangeError(
        absl::StrCat("steering layer ", steering.layer, " out of range [0, ", c.n_layer, ")"));
  }
  if (steering.add.size() != c.n_embd) {
    return absl::InvalidArgumentError(absl::StrCat("steering vector has ", steering.add.size(),
                                                   " values, the model's n_embd is ", c.n_embd));
  }
  for (float v : steering.add) {
    if (!std::isfinite(v)) return absl::InvalidArgumentError("steering vector is not finite");
  }
  steering_ = std::move(steering);
  return absl::OkStatus();
}

absl::Status Session::SetLogitBias(std::vector<std::pair<int32_t, float>> bias) {
  for (const auto& [token, b] : bias) {
    if (token < 0 || static_cast<uint32_t>(token) >= model_.config().vocab_size) {
      return absl::OutOfRangeError(absl::StrCat("logit bias: token id ", token, " out of range"));
    }
    if (!std::isfinite(b)) return absl::InvalidArgumentError("logit bias is not finite");
  }
  logit_bias_ = std::move(bias);
  return absl::OkStatus();
}

absl::Status Session::SetUnitTrace(int64_t unit_id, float* trace) {
  if (trace == nullptr) {
    trace_ = nullptr;
    trace_site_ = -1;
    return absl::OkStatus();
  }
  if (unit_id < 0 || unit_id >= units_.num_units()) {
    return absl::OutOfRangeError(
        absl::StrCat("unit ", unit_id, " out of range [0, ", units_.num_units(), ")"));
  }
  const auto [site, unit] = units_.SiteAndUnit(unit_id);
  trace_site_ = site;
  trace_unit_ = unit;
  trace_ = trace;
  return absl::OkStatus();
}

void Session::ClearInterventions() {
  forcing_ = Forcing();
  steering_ = Steering();
  logit_bias_.clear();
}

absl::Status Session::SetForcing(Forcing forcing) {
  if (!forcing.empty()) {
    if (forcing.per_site.size() != static_cast<size_t>(units_.num_sites())) {
      return absl::InvalidArgumentError(absl::StrCat("forcing has ", forcing.per_site.size(),
                                                     " sites, the model has ", units_.num_sites()));
    }
    for (int s = 0; s < units_.num_sites(); ++s) {
      for (const auto& u : forcing.per_site[s]) {
        if (u.unit < 0 || u.unit >= units_.site_size(s) || !std::isfinite(u.value)) {
          return absl::InvalidArgumentError(
              absl::StrCat("forcing: unit ", u.unit, " of ", units_.SiteName(s), " out of range (",
                           units_.site_size(s), " units) or value not finite"));
        }
      }
    }
  }
  forcing_ = forcing.empty() ? Forcing() : std::move(forcing);
  return absl::OkStatus();
}

namespace {

// The float helpers below are small loops written so the compiler vectorizes them (independent
// partial sums instead of one serial reduction; branch-free GELU). GCC compiles each twice, for
// x86-64-v3 (AVX2+FMA) and baseline, and picks at load time (target_clones); elsewhere they are
// plain code.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SELFCOND_WASM)
#define SC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SC_MULTIVERSION
#endif

SC_MULTIVERSION float Dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  }
  float s = 0;
  for (; j < n; ++j) s += a[j] * b[j];
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

SC_MULTIVERSION void Axpy(float a, const float* x, float* y, int n) {
  for (int j = 0; j < n; ++j) y[j] += a * x[j];
}

// IEEE half <-> float for the fp16 KV cache. To half: round to nearest even, saturating at the
// largest finite half (65504) so no key or value becomes infinite. From half: shift the
// exponent and mantissa into place and rescale by 2^112, exact for normal and subnormal halves
// (the cache never holds inf or NaN) and branch-free, so the loops below vectorize.
inline uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x477fe000u) return static_cast<uint16_t>(sign | 0x7bffu);  // >= 65520: saturate
  if (x < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    float a;
    std::memcpy(&a, &x, 4);
    // Adding 0.5 aligns the value's bits so the FPU rounds it to a multiple of 2^-24.
    const float r = a + 0.5f;
    uint32_t rb;
    std::memcpy(&rb, &r, 4);
    return static_cast<uint16_t>(sign | (rb - 0x3f000000u));
  }
  const uint32_t mant_odd = (x >> 13) & 1u;
  x += 0xc8000fffu + mant_odd;  // rebias the exponent (-112 << 23) and round to nearest even
  return static_cast<uint16_t>(sign | (x >> 13));
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t bits = (static_cast<uint32_t>(h & 0x7fffu) << 13);
  float f;
  std::memcpy(&f, &bits, 4);
  f *= 5.192296858534828e+33f;  // 2^112
  uint32_t out;
  std::memcpy(&out, &f, 4);
  out |= static_cast<uint32_t>(h & 0x8000u) << 16;  // the sign bit, branch-free
  std::memcpy(&f, &out, 4);
  return f;
}

void ToHalf(const float* x, uint16_t* y, int n) {
  for (int j = 0; j < n; ++j) y[j] = FloatToHalf(x[j]);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SELFCOND_WASM)
// With F16C the conversion is one instruction per 8 values (GCC vectorizes the portable loops
// below only 4 wide). Same 8 partial sums, same final order, no FMA: the same arithmetic.
__attribute__((target("avx2,f16c"))) float DotHalfF16c(const float* a, const uint16_t* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 bh = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j)));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + j), bh));
  }
  float s = 0;
  for (; j < n; ++j) s += a[j] * HalfToFloat(b[j]);
  alignas(32) float l[8];
  _mm256_store_ps(l, acc);
  return s + ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

__attribute__((target("avx2,f16c"))) void AxpyHalfF16c(float a, const uint16_t* x, float* y,
                                                       int n) {
  const __m256 va = _mm256_set1_ps(a);
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 xh = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + j)));
    _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_loadu_ps(y + j), _mm256_mul_ps(va, xh)));
  }
  for (; j < n; ++j) y[j] += a * HalfToFloat(x[j]);
}

bool HasF16c() {
  // CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports has no "f16c").
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
  }();
  return ok;
}
#endif

SC_MULTIVERSION float DotHalfPortable(const float* a, const uint16_t* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * HalfToFloat(b[j + l]);
  }
  float s = 0;
  for (; j < n; ++j) s += a[j] * HalfToFloat(b[j]);
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

SC_MULTIVERSION void AxpyHalfPortable(float a, const uint16_t* x, float* y, int n) {
  for (int j = 0; j < n; ++j) y[j] += a * HalfToFloat(x[j]);
}

float DotHalf(const float* a, const uint16_t* b, int n) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SELFCOND_WASM)
  if (HasF16c()) return DotHalfF16c(a, b, n);
#endif
  return DotHalfPortable(a, b, n);
}

void AxpyHalf(float a, const uint16_t* x, float* y, int n) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SELFCOND_WASM)
  if (HasF16c()) return AxpyHalfF16c(a, x, y, n);
#endif
  AxpyHalfPortable(a, x, y, n);
}

SC_MULTIVERSION void LayerNorm(const float* x, const float* w, const float* b, int d, float eps,
                               float* out) {
  float mean = 0;
  for (int i = 0; i < d; ++i) mean += x[i];
  mean /= d;
  float var = 0;
  for (int i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= d;
  const float inv = 1.0f / std::sqrt(var + eps);
  for (int i = 0; i < d; ++i) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

// tanh as Eigen's rational approximation (|error| < 1e-6 on [-9, 9], exactly +-1 beyond):
// std::tanh was 5% of decode time and does not vectorize.
inline float FastTanh(float x) {
  const float c = 7.90531110763549805f;
  x = x < c ? x : c;  // written as selects (not std::min/max) so the loop vectorizes
  x = x > -c ? x : -c;
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

// GPT-2's "gelu_new" (tanh approximation), as in Hugging Face, in place over n values.
SC_MULTIVERSION void GeluInPlace(float* x, size_t n) {
  constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + FastTanh(kC * (v + 0.044715f * v * v * v)));
  }
}

SC_MULTIVERSION void AddInPlace(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace

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

// The expert hooks, on a linear layer's output y(m, n) for site `site`.
void Session::Intervene(int site, float* y, int m, int n, bool chunk_has_last) {
  if (!forcing_.per_site.empty()) {
    const auto& units = forcing_.per_site[site];
    if (!units.empty()) {
      const int first = forcing_.only_last_token ? (chunk_has_last ? m - 1 : m) : 0;
      for (int i = first; i < m; ++i) {
        for (const auto& u : units) y[static_cast<size_t>(i) * n + u.unit] = u.value;
      }
    }
  }
  if (trace_ != nullptr && site == trace_site_) {
    for (int i = 0; i < m; ++i) trace_[pos_ + i] = y[static_cast<size_t>(i) * n + trace_unit_];
  }
  if (capture_max_ != nullptr) {
    float* mx = capture_max_ + units_.site_offset(site);
    for (int i = 0; i < m; ++i) {
      const float* row = y + static_cast<size_t>(i) * n;
      for (int j = 0; j < n; ++j) mx[j] = std::max(mx[j], row[j]);
    }
  }
}

absl::StatusOr<absl::Span<const float>> Session::Forward(absl::Span<const int32_t> tokens,
                                                         Logits want) {
  const GPT2Config& c = model_.config();
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
  for (size_t i = 0; i < tokens.size(); i += B) {
    const int n = static_cast<int>(std::min<size_t>(B, tokens.size() - i));
    if (auto st = ForwardChunk(tokens.data() + i, n, i + n == tokens.size(), want); !st.ok()) {
      return st;
    }
  }
  return absl::Span<const float>(s_->logits);
}

absl::Status Session::ForwardPadding(absl::Span<const int32_t> tokens) {
  if (pos_ < 1) return absl::FailedPreconditionError("padding needs tokens in the cache first");
  if (tokens.empty()) return absl::OkStatus();
  const int p0 = pos_;
  attend_limit_ = p0;
  auto done = Forward(tokens, Logits::kNone);
  attend_limit_ = -1;
  pos_ = p0;
  return done.status();
}

absl::Status Session::ForwardChunk(const int32_t* tokens, int n, bool last_chunk, Logits want) {
  const GPT2Config& c = model_.config();
  const int d = c.n_embd, F = c.n_inner, H = c.n_head, hd = d / H, T = opts_.n_ctx;
  const int p0 = pos_;
  const bool f32 = opts_.precision == Precision::kF32;
  Scratch& s = *s_;
  float* x = s.x.data();

  // Token + position embeddings.
  for (int i = 0; i < n; ++i) {
    float* xi = x + static_cast<size_t>(i) * d;
    if (f32) {
      std::memcpy(xi, model_.wte_f32() + static_cast<size_t>(tokens[i]) * d, d * sizeof(float));
    } else {
      if (auto st = model_.EmbedInt8(tokens[i], xi, &s.embed); !st.ok()) return st;
    }
    if (auto st = model_.AddPosition(p0 + i, xi, &s.pos_row); !st.ok()) return st;
  }

  for (int l = 0; l < static_cast<int>(c.n_layer); ++l) {
    const BlockWeights& b = model_.block(l);
    // This layer's KV cache, (n_ctx, d) each: float, or half (the other pair is null).
    const size_t layer_off = static_cast<size_t>(l) * T * d;
    float* kc = s.key_cache ? s.key_cache.get() + layer_off : nullptr;
    float* vc = s.value_cache ? s.value_cache.get() + layer_off : nullptr;
    uint16_t* kc16 = s.key_cache16 ? s.key_cache16.get() + layer_off : nullptr;
    uint16_t* vc16 = s.value_cache16 ? s.value_cache16.get() + layer_off : nullptr;

    // --- attention ---
    for (int i = 0; i < n; ++i) {
      LayerNorm(x + i * d, b.ln_1_weight, b.ln_1_bias, d, c.layer_norm_eps, s.xn.data() + i * d);
    }
    if (auto st = Linear(b.c_attn, s.xn.data(), n, s.qkv.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kCAttn), s.qkv.data(), n, 3 * d, last_chunk);
    for (int i = 0; i < n; ++i) {
      const float* row = s.qkv.data() + static_cast<size_t>(i) * 3 * d;
      const size_t at = static_cast<size_t>(p0 + i) * d;
      if (kc16 != nullptr) {
        ToHalf(row + d, kc16 + at, d);
        ToHalf(row + 2 * d, vc16 + at, d);
      } else {
        std::memcpy(kc + at, row + d, d * sizeof(float));
        std::memcpy(vc + at, row + 2 * d, d * sizeof(float));
      }
    }
    auto head = [&](int h) {
      float* sc = s.scores.data() + static_cast<size_t>(h) * T;
      const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
      for (int i = 0; i < n; ++i) {
        const float* q = s.qkv.data() + static_cast<size_t>(i) * 3 * d + h * hd;
        // causal: positions 0..p0+i; padding (ForwardPadding): the real tokens before it only
        const int len = attend_limit_ >= 0 ? attend_limit_ : p0 + i + 1;
        float mx = -std::numeric_limits<float>::infinity();
        for (int t = 0; t < len; ++t) {
          const size_t at = static_cast<size_t>(t) * d + h * hd;
          sc[t] = (kc16 ? DotHalf(q, kc16 + at, hd) : Dot(q, kc + at, hd)) * inv_sqrt;
          mx = std::max(mx, sc[t]);
        }
        float sum = 0;
        for (int t = 0; t < len; ++t) sum += (sc[t] = std::exp(sc[t] - mx));
        const float inv = 1.0f / sum;
        float* out = s.att.data() + static_cast<size_t>(i) * d + h * hd;
        std::fill(out, out + hd, 0.0f);
        for (int t = 0; t < len; ++t) {
          const size_t at = static_cast<size_t>(t) * d + h * hd;
          if (vc16 != nullptr) {
            AxpyHalf(sc[t] * inv, vc16 + at, out, hd);
          } else {
            Axpy(sc[t] * inv, vc + at, out, hd);
          }
        }
      }
    };
    if (opts_.pool && opts_.pool->size() > 1 && n > 1) {
      opts_.pool->ParallelFor(H, head);
    } else {
      for (int h = 0; h < H; ++h) head(h);
    }
    if (auto st = Linear(b.attn_c_proj, s.att.data(), n, s.proj.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kAttnCProj), s.proj.data(), n, d, last_chunk);
    AddInPlace(x, s.proj.data(), static_cast<size_t>(n) * d);

    // --- MLP ---
    for (int i = 0; i < n; ++i) {
      LayerNorm(x + i * d, b.ln_2_weight, b.ln_2_bias, d, c.layer_norm_eps, s.xn.data() + i * d);
    }
    if (auto st = Linear(b.c_fc, s.xn.data(), n, s.fc.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kCFc), s.fc.data(), n, F, last_chunk);
    GeluInPlace(s.fc.data(), static_cast<size_t>(n) * F);
    if (auto st = Linear(b.mlp_c_proj, s.fc.data(), n, s.proj.data()); !st.ok()) return st;
    Intervene(units_.site_index(l, SiteKind::kMlpCProj), s.proj.data(), n, d, last_chunk);
    AddInPlace(x, s.proj.data(), static_cast<size_t>(n) * d);
    // The residual-stream hooks (steering vector, mean-residual capture) on the block's output.
    if (l == steering_.layer) {
      for (int i = 0; i < n; ++i)
        AddInPlace(x + static_cast<size_t>(i) * d, steering_.add.data(), d);
    }
    if (residual_sum_ != nullptr && l == residual_layer_) {
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < d; ++j) residual_sum_[j] += x[static_cast<size_t>(i) * d + j];
      }
    }
  }
  pos_ += n;

  // --- LM head (tied to wte unless the file has lm_head) ---
  if (want == Logits::kNone || (want == Logits::kLast && !last_chunk)) return absl::OkStatus();
  const int first = want == Logits::kLast ? n - 1 : 0;
  const int rows = n - first;
  for (int i = first; i < n; ++i) {
    LayerNorm(x + i * d, model_.ln_f_weight(), model_.ln_f_bias(), d, c.layer_norm_eps,
              s.xn.data() + (i - first) * d);
  }
  // kAll: this chunk's rows go after the previous chunks' rows.
  float* out = s.logits.data() + static_cast<size_t>(logits_row_) * c.vocab_size;
  if (auto st = Linear(model_.lm_head(), s.xn.data(), rows, out); !st.ok()) return st;
  for (int i = 0; i < rows; ++i) {
    for (const auto& [token, bias] : logit_bias_)
      out[static_cast<size_t>(i) * c.vocab_size + token] += bias;
  }
  logits_row_ += rows;
  return absl::OkStatus();
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
