// GPT-2: loading a selfcond model file, and the forward pass.
//
// Read Session::ForwardChunk top to bottom: it is the whole model. Everything it calls is either
// a kernel (src/kernels/kernels.h) or a small float helper in this file.
#include "model/model.h"

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
#if !defined(SELFCOND_WASM)
#include <filesystem>
#endif
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "formats/safetensors.h"
#include "util/parallel.h"
#include "util/sha256.h"

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
  return FromFile(MappedFile::FromBuffer(std::move(bytes)), std::move(opts));
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromFile(MappedFile file, LoadOptions opts) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(file);
  if (auto st = m->Build(opts); !st.ok()) return st;
  return m;
}

absl::Status Model::CheckMemoryBudget(const LoadOptions& opts, size_t packed_bytes) const {
  if (opts.max_memory == 0) return absl::OkStatus();
  // What the model will hold: the packed copy, the float copies made so far, and the part of a
  // heap copy of the file that stays after packing (bounded by the whole file).
  size_t held = packed_bytes + (file_.owns_heap() ? file_size_ : 0);
  for (const auto& v : owned_f32_) held += v.size() * sizeof(float);
  if (held <= opts.max_memory) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("the model needs about ", held >> 20, " MiB (", packed_bytes >> 20,
                   " MiB of packed weights); the memory budget (max_memory_bytes) allows ",
                   opts.max_memory >> 20, " MiB"));
}

bool Model::Progress(const LoadOptions& opts, int64_t add) {
  progress_done_ += add;
  return !opts.progress || opts.progress(progress_done_, progress_total_);
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
      const float scale =
          w.q4_block > 0
              ? BF16ToFloat(w.q4_bscale[static_cast<size_t>(r) * (k / w.q4_block) + c / w.q4_block])
              : w.q4_scale[r];
      out[static_cast<size_t>(r) * k + c] = static_cast<float>(nib - 8) * scale;
    }
  }
  return out;
}

absl::Status Model::BuildLinear(const std::string& prefix, int n, int k, bool need_float, bool bias,
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
    out->q4 = (*q4_or)->data;
    const TensorView* ts = view_.Find(prefix + ".scale");
    if (ts != nullptr && ts->dtype == DType::kBF16) {
      // Blockwise: (n, k / block) bfloat16 scales, block a multiple of 32 dividing k (XNNPACK's
      // qb4w needs both).
      const uint32_t blocks = ts->shape.size() == 2 ? ts->shape[1] : 0;
      if (blocks == 0 || uk % blocks != 0 || (uk / blocks) % 32 != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", prefix, ".scale': blockwise int4 scales must have shape (", un,
                         ", k / block) with the block a multiple of 32 dividing k = ", uk));
      }
      SC_ASSIGN_OR_RETURN(s4, Expect(view_, prefix + ".scale", DType::kBF16, {un, blocks}));
      out->q4_bscale = reinterpret_cast<const uint16_t*>((*s4_or)->data);
      out->q4_block = static_cast<int>(uk / blocks);
      for (size_t i = 0; i < size_t{un} * blocks; ++i) {
        // XNNPACK refuses a scale that is not a positive normal number; name the tensor first.
        const float v = BF16ToFloat(out->q4_bscale[i]);
        if (!(v > 0) || !std::isnormal(v)) {
          return absl::InvalidArgumentError(absl::StrCat("tensor '", prefix, ".scale': scale #", i,
                                                         " is ", v,
                                                         " (must be positive and normal)"));
        }
      }
    } else {
      SC_ASSIGN_OR_RETURN(s4, Expect(view_, prefix + ".scale", DType::kF32, {un}));
      out->q4_scale = reinterpret_cast<const float*>((*s4_or)->data);
    }
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
  if (bias) {
    SC_ASSIGN_OR_RETURN(b, Expect(view_, prefix + ".bias", DType::kF32, {un}));
    out->bias = reinterpret_cast<const float*>((*b_or)->data);
  } else if (view_.Find(prefix + ".bias") != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected tensor '", prefix, ".bias' (the config has no such bias)"));
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

absl::Status Model::NormVector(const std::string& name, const float** out) {
  auto t = Expect(view_, name, DType::kF32, {view_.config.n_embd});
  if (!t.ok()) return t.status();
  *out = reinterpret_cast<const float*>((*t)->data);
  return absl::OkStatus();
}

// The token embedding (int8, optionally with a float copy) and the LM head (tied to it, or its
// own matrix).
absl::Status Model::BuildEmbedding(const std::string& name) {
  const ModelConfig& c = view_.config;
  const int d = c.n_embd, V = c.vocab_size;
  LinearWeights wte;
  if (auto st = BuildLinear(name, V, d, false, false, &wte); !st.ok()) return st;
  wte_q_ = wte.q;
  wte_f_ = {nullptr, V, d};
  if (view_.Find(name + ".weight") != nullptr) {
    SC_ASSIGN_OR_RETURN(w,
                        Expect(view_, name + ".weight", DType::kF32, {uint32_t(V), uint32_t(d)}));
    wte_f_.w = reinterpret_cast<const float*>((*w_or)->data);
  }
  if (c.tied_lm_head) {
    lm_head_ = wte;
    lm_head_.f = wte_f_;
    return absl::OkStatus();
  }
  return BuildLinear("lm_head", V, d, false, false, &lm_head_);
}

// GPT-2's tensors (docs/model-format.md): wte, wpe, h.{i}.{ln_1, attn.c_attn, attn.c_proj,
// ln_2, mlp.c_fc, mlp.c_proj}, ln_f.
absl::Status Model::BuildGpt2(bool need_float) {
  const ModelConfig& c = view_.config;
  const int d = c.n_embd, T = c.n_ctx, F = c.n_inner;
  if (auto st = BuildEmbedding("wte"); !st.ok()) return st;
  SC_ASSIGN_OR_RETURN(wpe, Expect(view_, "wpe", DType::kF32, {uint32_t(T), uint32_t(d)}));
  wpe_ = reinterpret_cast<const float*>((*wpe_or)->data);
  if (auto st = NormVector("ln_f.weight", &ln_f_weight_); !st.ok()) return st;
  if (auto st = NormVector("ln_f.bias", &ln_f_bias_); !st.ok()) return st;
  blocks_.resize(c.n_layer);
  for (int l = 0; l < static_cast<int>(c.n_layer); ++l) {
    const std::string h = absl::StrCat("h.", l, ".");
    BlockWeights& b = blocks_[l];
    for (auto st :
         {NormVector(h + "ln_1.weight", &b.norm1_w), NormVector(h + "ln_1.bias", &b.norm1_b),
          NormVector(h + "ln_2.weight", &b.norm2_w), NormVector(h + "ln_2.bias", &b.norm2_b),
          BuildLinear(h + "attn.c_attn", 3 * d, d, need_float, true, &b.attn_in),
          BuildLinear(h + "attn.c_proj", d, d, need_float, true, &b.attn_out),
          BuildLinear(h + "mlp.c_fc", F, d, need_float, true, &b.mlp_in),
          BuildLinear(h + "mlp.c_proj", d, F, need_float, true, &b.mlp_out)}) {
      if (!st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

// The Llama family's tensors (docs/model-format.md): embed_tokens, layers.{i}.{input_layernorm,
// self_attn.qkv_proj, self_attn.o_proj, post_attention_layernorm, mlp.gate_up_proj,
// mlp.down_proj}, norm; and the RoPE frequencies from the config.
absl::Status Model::BuildLlama(bool need_float) {
  const ModelConfig& c = view_.config;
  const int d = c.n_embd, F = c.n_inner, qd = c.q_dim(), kvd = c.kv_dim();
  if (auto st = BuildEmbedding("embed_tokens"); !st.ok()) return st;
  if (auto st = NormVector("norm.weight", &ln_f_weight_); !st.ok()) return st;
  blocks_.resize(c.n_layer);
  for (int l = 0; l < static_cast<int>(c.n_layer); ++l) {
    const std::string p = absl::StrCat("layers.", l, ".");
    BlockWeights& b = blocks_[l];
    for (auto st : {NormVector(p + "input_layernorm.weight", &b.norm1_w),
                    NormVector(p + "post_attention_layernorm.weight", &b.norm2_w),
                    BuildLinear(p + "self_attn.qkv_proj", qd + 2 * kvd, d, need_float,
                                (c.flags & kQkvBias) != 0, &b.attn_in),
                    BuildLinear(p + "self_attn.o_proj", d, qd, need_float,
                                (c.flags & kOutBias) != 0, &b.attn_out),
                    BuildLinear(p + "mlp.gate_up_proj", 2 * F, d, need_float,
                                (c.flags & kMlpBias) != 0, &b.mlp_in),
                    BuildLinear(p + "mlp.down_proj", d, F, need_float, (c.flags & kMlpBias) != 0,
                                &b.mlp_out)}) {
      if (!st.ok()) return st;
    }
  }
  // inv_freq[j] = theta^(-2j / head_dim), then the rope scaling (Hugging Face's
  // _compute_llama3_parameters for llama3; positions divided by the factor for linear).
  const int half = static_cast<int>(c.head_dim / 2);
  rope_inv_freq_.resize(half);
  const double kPi = 3.14159265358979323846;
  for (int j = 0; j < half; ++j) {
    double f = 1.0 / std::pow(static_cast<double>(c.rope_theta), 2.0 * j / c.head_dim);
    if (c.rope_scaling == RopeScaling::kLinear) {
      f /= c.rope_factor;
    } else if (c.rope_scaling == RopeScaling::kLlama3) {
      const double old_ctx = c.rope_original_ctx;
      const double low_wavelen = old_ctx / c.rope_low_freq_factor;
      const double high_wavelen = old_ctx / c.rope_high_freq_factor;
      const double wavelen = 2 * kPi / f;
      if (wavelen > low_wavelen) {
        f /= c.rope_factor;
      } else if (!(wavelen < high_wavelen)) {  // between the two: interpolate
        const double smooth = (old_ctx / wavelen - c.rope_low_freq_factor) /
                              (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (1 - smooth) * f / c.rope_factor + smooth * f;
      }
    }
    rope_inv_freq_[j] = f;
  }
  return absl::OkStatus();
}

absl::Status Model::Build(LoadOptions opts) {
  file_size_ = file_.bytes().size();
  auto view = ParseModelFile(file_.bytes());
  if (!view.ok()) return view.status();
  view_ = std::move(*view);
  // Progress: the file's bytes once for the hash, once more for the packing (each packed
  // matrix counts as its share of the linear layers' bytes).
  const bool pack = opts.xnnpack && kernels::xnn::Available();
  progress_total_ =
      static_cast<int64_t>(file_size_) * ((opts.verify_hash ? 1 : 0) + (pack ? 1 : 0));
  if (!Progress(opts, 0)) return absl::CancelledError("model load cancelled");
  if (opts.verify_hash) {
    // Hashing reads the whole file: a mapped file's pages go again as soon as they are hashed,
    // so verification does not add the file's size to peak memory (the packing reads them back
    // from the page cache).
    bool cancelled = false;
    auto drop = [&](const uint8_t* p, size_t n) {
      file_.DropPages(p, n);
      if (!cancelled && !Progress(opts, static_cast<int64_t>(n))) cancelled = true;
    };
    if (auto st = VerifyContentHash(file_.bytes(), drop); !st.ok()) return st;
    // (The hash covers the file but its own field: count the whole file as done.)
    if (cancelled || !Progress(opts, static_cast<int64_t>(file_size_) - progress_done_)) {
      return absl::CancelledError("model load cancelled");
    }
  }
  hash_hex_ = view_.HashHex();
  auto tok = Tokenizer::Deserialize(view_.tokenizer_blob);
  if (!tok.ok()) return tok.status();
  tokenizer_ = std::move(*tok);
  const ModelConfig& c = view_.config;
  // GPT-2's tokenizer has exactly the embedding's rows. A tokenizer.json may have fewer: Qwen2
  // pads its embedding (151,936 rows for 151,665 tokens); those ids never come from text.
  const uint32_t n_tok = static_cast<uint32_t>(tokenizer_->vocab_size());
  if (c.arch == Arch::kGpt2 ? n_tok != c.vocab_size : n_tok > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", tokenizer_->vocab_size(),
                                                   " tokens but the config says vocab_size ",
                                                   c.vocab_size));
  }
  // Memory follows the file, not a header field: a header asking for 2^20 layers must not get
  // 2^20 blocks allocated before the first missing tensor is noticed. Every block has at least
  // 10 tensors (Llama: 2 norms + 4 linears x .q / .scale; GPT-2: more).
  if (static_cast<uint64_t>(c.n_layer) * 10 > view_.tensors.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the header says ", c.n_layer, " layers but the file has only ",
                     view_.tensors.size(), " tensors (each layer needs at least 10)"));
  }
  if (auto st = c.arch == Arch::kGpt2 ? BuildGpt2(opts.need_float) : BuildLlama(opts.need_float);
      !st.ok()) {
    return st;
  }
  if (opts.need_float && wte_f_.w == nullptr) {
    wte_f_.w = Dequantize(wte_q_);
    if (c.tied_lm_head) lm_head_.f = wte_f_;
  }
  if (opts.need_float && lm_head_.f.w == nullptr) {
    lm_head_.f.w = Dequantize(lm_head_.q);
  }
  if (pack) {
    if (auto st = PackForXnnpack(opts); !st.ok()) return st;
    // A heap copy cannot drop pages the way a mapping does: keep only what is still read.
    if (file_.owns_heap()) ReleasePackedSource();
  } else if (auto st = CheckMemoryBudget(opts, 0); !st.ok()) {
    return st;
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
    if (wpe_ != nullptr) {
      file_.DropPages(wpe_, static_cast<size_t>(c.n_ctx) * c.n_embd * sizeof(float));
    }
    file_.DropPages(view_.tokenizer_blob.data(), view_.tokenizer_blob.size());
  }
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  // The hand-written int8 kernels cannot run the 4-bit layers; Session::Create says so.
  float_ready_ = wte_f_.w != nullptr && lm_head_.f.w != nullptr;
  for (const auto& b : blocks_) {
    float_ready_ = float_ready_ && b.attn_in.f.w && b.attn_out.f.w && b.mlp_in.f.w && b.mlp_out.f.w;
  }
  return absl::OkStatus();
}

// Packs every int8 linear (and the LM head) into XNNPACK's layout, then drops the file's pages of
// those weights: the packed copy is the one that stays resident. (The token embedding reads rows
// of wte's int8 data; only the rows a prompt uses come back into memory.)
std::vector<LinearWeights*> Model::Linears() {
  std::vector<LinearWeights*> linears = {&lm_head_};
  for (auto& b : blocks_) {
    for (LinearWeights* w : {&b.attn_in, &b.attn_out, &b.mlp_in, &b.mlp_out}) {
      linears.push_back(w);
    }
  }
  return linears;
}

absl::Status Model::PackForXnnpack(const LoadOptions& opts) {
  // The LM head first: it is the largest matrix (vocab x d), and packing it while nothing else
  // is packed yet keeps the peak of loading below the steady state.
  const std::vector<LinearWeights*> linears = Linears();
  size_t bound = 0;
  for (const LinearWeights* w : linears) {
    bound += kernels::xnn::PackedWeights::UpperBoundPackedBytes(w->q.n, w->q.k);
  }
  if (auto st = CheckMemoryBudget(opts, bound); !st.ok()) return st;
  auto spec_of = [](const LinearWeights* w) {
    kernels::xnn::LinearSpec spec;
    if (w->q4 != nullptr) {
      spec.q4 = w->q4;
      spec.q4_scale = w->q4_scale;
      spec.q4_bscale = w->q4_bscale;
      spec.q4_block = w->q4_block;
    } else {
      spec.q8 = &w->q;
    }
    spec.bias = w->bias;
    spec.n = w->q.n;
    spec.k = w->q.k;
    return spec;
  };
  // The bytes of a matrix's weights in the file (4-bit: two per byte, unpadded; int8: n_pad rows).
  auto source_bytes = [](const LinearWeights* w) {
    return w->q4 != nullptr ? size_t{1} * w->q.n * w->q.k / 2 : size_t{1} * w->q.n_pad * w->q.k;
  };
  // The file's pages of a matrix, dropped once XNNPACK has read (or no longer needs) them.
  auto drop_source = [this, source_bytes](const LinearWeights* w) {
    file_.DropPages(w->q4 != nullptr ? static_cast<const void*>(w->q4) : w->q.q, source_bytes(w));
  };
  const int64_t pack_start = progress_done_;
  std::string cache_path, cache_id;
#if !defined(SELFCOND_WASM)
  if (!opts.packed_cache_dir.empty()) {
    cache_id = absl::StrCat(kernels::xnn::PackedWeights::PackingId(), " model=", view_.HashHex(),
                            " bytes=", file_size_);
    const Sha256::Digest id_hash = Sha256::Hash(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(cache_id.data()), cache_id.size()));
    cache_path = absl::StrCat(opts.packed_cache_dir, "/", view_.HashHex().substr(0, 16), "-",
                              HexLower(absl::MakeConstSpan(id_hash.data(), 8)), ".xnnpack");
    std::vector<kernels::xnn::LinearSpec> specs;
    for (const LinearWeights* w : linears) specs.push_back(spec_of(w));
    auto cached =
        kernels::xnn::PackedWeights::LoadFrom(cache_path, cache_id, specs, opts.verify_hash);
    if (cached.ok()) {
      xnn_ = std::move(*cached);
      for (size_t i = 0; i < linears.size(); ++i) {
        linears[i]->xnn_id = static_cast<int>(i);
        drop_source(linears[i]);
      }
      packed_cache_status_ = "hit";
      if (!Progress(opts, pack_start + static_cast<int64_t>(file_size_) - progress_done_)) {
        return absl::CancelledError("model load cancelled");
      }
      return absl::OkStatus();
    }
    packed_cache_status_ = absl::StrCat("miss (", cached.status().message(), ")");
  }
#endif
  auto packed_or = kernels::xnn::PackedWeights::Create(bound);
  if (!packed_or.ok()) return packed_or.status();
  xnn_ = std::move(*packed_or);
  int64_t all = 0, packed = 0;
  for (const LinearWeights* w : linears) all += static_cast<int64_t>(source_bytes(w));
  all = std::max<int64_t>(all, 1);
  for (LinearWeights* w : linears) {
    kernels::xnn::LinearSpec spec = spec_of(w);
    // The file's pages are dropped as soon as XNNPACK has read them (before it packs), so a
    // matrix is at most twice in memory (row-major copy + packed) while it is being packed.
    spec.after_read = [drop_source, w] { drop_source(w); };
    auto id = xnn_->Add(spec);
    if (!id.ok()) return id.status();
    w->xnn_id = *id;
    packed += static_cast<int64_t>(source_bytes(w));
    const int64_t target =
        pack_start + static_cast<int64_t>(static_cast<double>(file_size_) * packed / all);
    if (!Progress(opts, target - progress_done_)) {
      return absl::CancelledError("model load cancelled");
    }
  }
  xnn_->Finalize();
#if !defined(SELFCOND_WASM)
  if (!cache_path.empty()) {
    // A cache that cannot be written (read-only directory, full disk) costs only the next load.
    std::error_code ec;
    std::filesystem::create_directories(opts.packed_cache_dir, ec);
    const absl::Status saved = xnn_->SaveTo(cache_path, cache_id);
    absl::StrAppend(&packed_cache_status_,
                    saved.ok() ? ", saved" : absl::StrCat(", not saved: ", saved.message()));
  }
#endif
  if (!Progress(opts, pack_start + static_cast<int64_t>(file_size_) - progress_done_)) {
    return absl::CancelledError("model load cancelled");
  }
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
      // XNNPACK's PackedWeights keeps its own copy of block scales.
      if (w->q4_bscale != nullptr) dropped.push_back(reinterpret_cast<uintptr_t>(w->q4_bscale));
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
    w.q4_bscale = move(w.q4_bscale);
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
    for (const float** p : {&b.norm1_w, &b.norm1_b, &b.norm2_w, &b.norm2_b}) *p = move(*p);
  }
  for (TensorView& t : view_.tensors) t.data = move(t.data);
  view_.tokenizer_blob = {};
  released_packed_source_ = true;
}

void Model::OwnLayerNorms() {
  const size_t d = view_.config.n_embd;
  auto own = [&](const float** p) {
    if (*p == nullptr) return;  // RMSNorm has no bias
    owned_f32_.emplace_back(*p, *p + d);
    *p = owned_f32_.back().data();
  };
  for (auto& b : blocks_) {
    for (const float** p : {&b.norm1_w, &b.norm1_b, &b.norm2_w, &b.norm2_b}) own(p);
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

}  // namespace selfcond
