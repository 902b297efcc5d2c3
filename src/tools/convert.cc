#include "tools/convert.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "formats/safetensors.h"
#include "formats/tokenizer.h"
#include "kernels/kernels.h"
#include "tools/convert_internal.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxConfigDim = int64_t{1} << 20;

absl::Status ConfigError(const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", msg));
}

// A required positive integer field (or one of its aliases).
absl::StatusOr<uint32_t> GetDim(const json::Value& c, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    const json::Value* v = c.Find(key);
    if (v == nullptr || v->is_null()) continue;
    auto i = c.GetInt(key);
    if (!i.ok()) return ConfigError(std::string(i.status().message()));
    if (*i <= 0 || *i > kMaxConfigDim) {
      return ConfigError(
          absl::StrCat("\"", key, "\" = ", *i, " is out of range (1..", kMaxConfigDim, ")"));
    }
    return static_cast<uint32_t>(*i);
  }
  return ConfigError(absl::StrCat("missing \"", *keys.begin(), "\""));
}

// An optional boolean field that must have a given value for selfcond to run the model.
absl::Status RequireBool(const json::Value& c, const char* key, bool want, const char* why) {
  const json::Value* v = c.Find(key);
  if (v == nullptr || v->is_null()) return absl::OkStatus();
  if (!v->is_bool()) return ConfigError(absl::StrCat("\"", key, "\" is not a boolean"));
  if (v->as_bool() != want) {
    return ConfigError(absl::StrCat("\"", key, "\": ", v->as_bool() ? "true" : "false",
                                    " is not supported (", why, ")"));
  }
  return absl::OkStatus();
}

// What the converter does with one checkpoint tensor.
enum class Kind {
  kEmbedding,  // (rows, d) as stored -> int8 packed (+ F32 copy with keep_float)
  kLinear,     // HF Conv1D [k, n] -> transpose to (n, k) -> int8 packed (+ F32 copy)
  kCopy,       // F32 as stored (LayerNorm, biases, wpe)
};

struct Job {
  std::string src;  // canonical checkpoint name (no "transformer." prefix)
  std::string out;  // output base name
  Kind kind;
  std::vector<uint64_t> hf_shape;  // expected checkpoint shape
  const StTensor* tensor = nullptr;
};

std::string ShapeStr(const std::vector<uint64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

template <typename T>
absl::Span<const uint8_t> Bytes(const std::vector<T>& v) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()),
                                   v.size() * sizeof(T));
}

}  // namespace

absl::Status CheckFiniteValues(const float* v, size_t n, const StTensor& t) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' in '%s' has a non-finite value (%g) at element %d", t.name,
                          t.file, v[i], i));
    }
  }
  return absl::OkStatus();
}

absl::Span<const uint8_t> FloatBytes(const std::vector<float>& v) { return Bytes(v); }

void AddSpecs(const std::string& name, int n, int k, WeightBits bits, bool keep_float,
              std::vector<ModelFileWriter::Spec>* specs) {
  const uint32_t un = n, uk = k;
  if (n == 0) {
    specs->push_back({name, DType::kF32, {uk}});
    return;
  }
  const uint32_t n_pad = static_cast<uint32_t>(kernels::PaddedRows(n));
  if (bits == WeightBits::kInt4) {
    specs->push_back({name + ".q", DType::kI4, {un, uk}});
    if (k % kInt4Block == 0) {
      specs->push_back({name + ".scale", DType::kBF16, {un, uk / kInt4Block}});
    } else {
      specs->push_back({name + ".scale", DType::kF32, {un}});  // per channel (see convert.h)
    }
  } else {
    specs->push_back({name + ".q", DType::kI8Packed, {un, uk}});
    specs->push_back({name + ".scale", DType::kF32, {n_pad}});
    specs->push_back({name + ".row_sum", DType::kI32, {n_pad}});
  }
  if (keep_float) specs->push_back({name + ".weight", DType::kF32, {un, uk}});
}

absl::Status AppendMatrix(ModelFileWriter* writer, const std::vector<float>& rows, int n, int k,
                          WeightBits bits, bool keep_float) {
  if (bits == WeightBits::kInt4) {
    std::vector<uint8_t> q4(static_cast<size_t>(n) * k / 2, 0);
    if (k % kInt4Block == 0) {
      std::vector<uint16_t> scale(static_cast<size_t>(n) * (k / kInt4Block), 0);
      QuantizeInt4Blocks(rows.data(), n, k, kInt4Block, q4.data(), scale.data());
      for (auto bytes : {Bytes(q4), Bytes(scale)}) {
        if (absl::Status s = writer->Append(bytes); !s.ok()) return s;
      }
    } else {
      std::vector<float> scale(n, 0.0f);
      QuantizeInt4(rows.data(), n, k, q4.data(), scale.data());
      for (auto bytes : {Bytes(q4), Bytes(scale)}) {
        if (absl::Status s = writer->Append(bytes); !s.ok()) return s;
      }
    }
  } else {
    const int n_pad = kernels::PaddedRows(n);
    std::vector<int8_t> q(static_cast<size_t>(n_pad) * k, 0);
    std::vector<float> scale(n_pad, 0.0f);
    std::vector<int32_t> row_sum(n_pad, 0);
    kernels::QuantizePackWeights(rows.data(), n, k, q.data(), scale.data(), row_sum.data());
    for (auto bytes : {Bytes(q), Bytes(scale), Bytes(row_sum)}) {
      if (absl::Status s = writer->Append(bytes); !s.ok()) return s;
    }
  }
  if (keep_float) return writer->Append(Bytes(rows));
  return absl::OkStatus();
}

std::string ModelName(const std::string& hf_dir, const ConvertOptions& opts) {
  if (!opts.model_name.empty()) return opts.model_name;
  fs::path p = fs::path(hf_dir);
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

absl::StatusOr<ModelConfig> Gpt2ConfigFromHF(const json::Value& c) {
  if (!c.is_object()) return ConfigError("not a JSON object");
  if (const json::Value* mt = c.Find("model_type"); mt != nullptr && !mt->is_null()) {
    if (!mt->is_string() || mt->as_string() != "gpt2") {
      return ConfigError(
          absl::StrCat("model_type ", mt->is_string() ? std::string(mt->as_string()) : mt->Dump(),
                       " is not supported (gpt2, or the Llama family: llama, qwen2, mistral)"));
    }
  }
  ModelConfig cfg;
  auto n_layer = GetDim(c, {"n_layer"});
  if (!n_layer.ok()) return n_layer.status();
  auto n_embd = GetDim(c, {"n_embd"});
  if (!n_embd.ok()) return n_embd.status();
  auto n_head = GetDim(c, {"n_head"});
  if (!n_head.ok()) return n_head.status();
  auto n_ctx = GetDim(c, {"n_positions", "n_ctx"});
  if (!n_ctx.ok()) return n_ctx.status();
  auto vocab = GetDim(c, {"vocab_size"});
  if (!vocab.ok()) return vocab.status();
  cfg.n_layer = *n_layer;
  cfg.n_embd = *n_embd;
  cfg.n_head = *n_head;
  cfg.n_ctx = *n_ctx;
  cfg.vocab_size = *vocab;
  if (const json::Value* v = c.Find("n_inner"); v == nullptr || v->is_null()) {
    if (cfg.n_embd > kMaxConfigDim / 4) return ConfigError("n_embd too large");
    cfg.n_inner = 4 * cfg.n_embd;
  } else {
    auto n_inner = GetDim(c, {"n_inner"});
    if (!n_inner.ok()) return n_inner.status();
    cfg.n_inner = *n_inner;
  }
  if (const json::Value* v = c.Find("layer_norm_epsilon"); v != nullptr && !v->is_null()) {
    if (!v->is_number()) return ConfigError("\"layer_norm_epsilon\" is not a number");
    double eps = v->as_number();
    if (!std::isfinite(eps) || !(eps > 0) || eps > 1) {
      return ConfigError(absl::StrCat("layer_norm_epsilon ", eps, " must be in (0, 1]"));
    }
    cfg.layer_norm_eps = static_cast<float>(eps);
  }
  if (const json::Value* v = c.Find("eos_token_id"); v != nullptr && !v->is_null()) {
    auto eos = c.GetInt("eos_token_id");
    if (!eos.ok()) return ConfigError(std::string(eos.status().message()));
    if (*eos < 0 || *eos >= cfg.vocab_size) {
      return ConfigError(
          absl::StrCat("eos_token_id ", *eos, " is not below vocab_size ", cfg.vocab_size));
    }
    cfg.eos_token_id = static_cast<uint32_t>(*eos);
  }
  std::string act = "gelu_new";  // transformers' ModelConfig default
  if (const json::Value* v = c.Find("activation_function"); v != nullptr && !v->is_null()) {
    if (!v->is_string()) return ConfigError("\"activation_function\" is not a string");
    act = v->as_string();
  }
  if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
    return ConfigError(absl::StrCat("activation_function \"", act,
                                    "\" is not supported (selfcond implements the tanh GELU: "
                                    "gelu_new / gelu_pytorch_tanh)"));
  }
  cfg.tied_lm_head = 1;
  if (const json::Value* v = c.Find("tie_word_embeddings"); v != nullptr && !v->is_null()) {
    if (!v->is_bool()) return ConfigError("\"tie_word_embeddings\" is not a boolean");
    cfg.tied_lm_head = v->as_bool() ? 1 : 0;
  }
  if (auto s = RequireBool(c, "add_cross_attention", false, "encoder-decoder GPT-2"); !s.ok())
    return s;
  if (auto s =
          RequireBool(c, "scale_attn_weights", true, "selfcond scales scores by 1/sqrt(d_head)");
      !s.ok()) {
    return s;
  }
  if (auto s = RequireBool(c, "scale_attn_by_inverse_layer_idx", false, "not implemented");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateModelConfig(cfg); !s.ok())
    return ConfigError(std::string(s.message()));
  return cfg;
}

absl::StatusOr<WeightBits> ParseWeightBits(const std::string& s) {
  if (s == "int8") return WeightBits::kInt8;
  if (s == "int4") return WeightBits::kInt4;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown weights '", s, "' (expected int8 or int4)"));
}

void QuantizeInt4(const float* w, int n, int k, uint8_t* q, float* scale) {
  for (int r = 0; r < n; ++r) {
    const float* row = w + static_cast<size_t>(r) * k;
    float amax = 0;
    for (int c = 0; c < k; ++c) amax = std::max(amax, std::fabs(row[c]));
    const float s = amax / 7.0f;
    scale[r] = s;
    uint8_t* out = q + static_cast<size_t>(r) * (k / 2);
    for (int c = 0; c < k; ++c) {
      int v = s > 0 ? static_cast<int>(std::nearbyint(row[c] / s)) : 0;
      v = std::min(7, std::max(-7, v)) + 8;
      if (c % 2 == 0) {
        out[c / 2] = static_cast<uint8_t>(v);
      } else {
        out[c / 2] = static_cast<uint8_t>(out[c / 2] | (v << 4));
      }
    }
  }
}

void QuantizeInt4Blocks(const float* w, int n, int k, int block, uint8_t* q, uint16_t* scale) {
  // Per block, the scale that minimizes the squared error among amax / t for t in 6..8 (steps of
  // 1/4), each rounded to bfloat16 before the values are rounded with it. t = 8 maps a block's
  // most negative value to -8 exactly but clips a positive maximum to 7; smaller t trade range
  // for resolution. The search costs nothing at conversion time and lowers the error of
  // heavy-tailed blocks (measured in docs/kernels.md).
  const int blocks = k / block;
  std::vector<int> best_q(block), cand_q(block);
  for (int r = 0; r < n; ++r) {
    const float* row = w + static_cast<size_t>(r) * k;
    uint8_t* out = q + static_cast<size_t>(r) * (k / 2);
    for (int b = 0; b < blocks; ++b) {
      const float* x = row + static_cast<size_t>(b) * block;
      float amax = 0;
      for (int c = 0; c < block; ++c) amax = std::max(amax, std::fabs(x[c]));
      uint16_t best_s = FloatToBF16(1.0f);  // an all-zero block: any positive normal scale
      std::fill(best_q.begin(), best_q.end(), 0);
      if (amax > 0) {
        double best_err = std::numeric_limits<double>::infinity();
        for (int step = 0; step <= 8; ++step) {
          const float t = 6.0f + 0.25f * static_cast<float>(step);
          // A positive normal bfloat16 (XNNPACK refuses zero or subnormal scales).
          const uint16_t sb =
              FloatToBF16(std::max(amax / t, std::numeric_limits<float>::min() * 2));
          const float d = BF16ToFloat(sb);
          double err = 0;
          for (int c = 0; c < block; ++c) {
            const int v = std::min(7, std::max(-8, static_cast<int>(std::nearbyint(x[c] / d))));
            cand_q[c] = v;
            const double e = x[c] - static_cast<double>(v) * d;
            err += e * e;
          }
          if (err < best_err) {
            best_err = err;
            best_s = sb;
            best_q.swap(cand_q);
          }
        }
      }
      scale[static_cast<size_t>(r) * blocks + b] = best_s;
      for (int c = 0; c < block; ++c) {
        const int col = b * block + c;
        const auto v = static_cast<uint8_t>(best_q[c] + 8);
        out[col / 2] = col % 2 == 0 ? v : static_cast<uint8_t>(out[col / 2] | (v << 4));
      }
    }
  }
}

namespace {

// config.json of a checkpoint directory, parsed.
absl::StatusOr<json::Value> ReadConfigJson(const std::string& hf_dir) {
  const std::string config_path = (fs::path(hf_dir) / "config.json").string();
  auto config_text = ReadFile(config_path);
  if (!config_text.ok()) {
    return absl::NotFoundError(absl::StrCat("cannot read config.json in '", hf_dir,
                                            "': ", config_text.status().message()));
  }
  auto config_json = json::Parse(*config_text);
  if (!config_json.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", config_path, "' is not valid JSON: ", config_json.status().message()));
  }
  return config_json;
}

// GPT-2's tokenizer (vocab.json + merges.txt), serialized for the model file.
absl::StatusOr<std::vector<uint8_t>> Gpt2TokenizerBlob(const std::string& hf_dir, uint64_t vocab) {
  const std::string vocab_path = (fs::path(hf_dir) / "vocab.json").string();
  const std::string merges_path = (fs::path(hf_dir) / "merges.txt").string();
  for (const std::string& p : {vocab_path, merges_path}) {
    std::error_code ec;
    if (!fs::exists(p, ec)) {
      return absl::NotFoundError(absl::StrCat("missing '", p,
                                              "' (the GPT-2 tokenizer files vocab.json and "
                                              "merges.txt are required)"));
    }
  }
  auto tokenizer = Tokenizer::FromFiles(vocab_path, merges_path);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load the tokenizer from '", hf_dir,
                                                   "': ", tokenizer.status().message()));
  }
  // Equal, as in every GPT-2 checkpoint: the Model loader relies on it (a padded embedding
  // would need rules for the extra rows that nothing here defines).
  if (static_cast<uint64_t>((*tokenizer)->vocab_size()) != vocab) {
    return absl::InvalidArgumentError(absl::StrCat("vocab.json has ", (*tokenizer)->vocab_size(),
                                                   " tokens but config.json says vocab_size ",
                                                   vocab, " (they must be equal)"));
  }
  return (*tokenizer)->Serialize();
}

// Every tensor GPT-2's file holds, in output order, with the checkpoint shape it comes from.
std::vector<Job> PlanGpt2(const ModelConfig& cfg) {
  const uint64_t d = cfg.n_embd, dff = cfg.n_inner, vocab = cfg.vocab_size;
  std::vector<Job> jobs;
  jobs.push_back({"wte.weight", "wte", Kind::kEmbedding, {vocab, d}});
  jobs.push_back({"wpe.weight", "wpe", Kind::kCopy, {cfg.n_ctx, d}});
  for (uint32_t i = 0; i < cfg.n_layer; ++i) {
    const std::string h = absl::StrCat("h.", i, ".");
    jobs.push_back({h + "ln_1.weight", h + "ln_1.weight", Kind::kCopy, {d}});
    jobs.push_back({h + "ln_1.bias", h + "ln_1.bias", Kind::kCopy, {d}});
    jobs.push_back({h + "attn.c_attn.weight", h + "attn.c_attn", Kind::kLinear, {d, 3 * d}});
    jobs.push_back({h + "attn.c_attn.bias", h + "attn.c_attn.bias", Kind::kCopy, {3 * d}});
    jobs.push_back({h + "attn.c_proj.weight", h + "attn.c_proj", Kind::kLinear, {d, d}});
    jobs.push_back({h + "attn.c_proj.bias", h + "attn.c_proj.bias", Kind::kCopy, {d}});
    jobs.push_back({h + "ln_2.weight", h + "ln_2.weight", Kind::kCopy, {d}});
    jobs.push_back({h + "ln_2.bias", h + "ln_2.bias", Kind::kCopy, {d}});
    jobs.push_back({h + "mlp.c_fc.weight", h + "mlp.c_fc", Kind::kLinear, {d, dff}});
    jobs.push_back({h + "mlp.c_fc.bias", h + "mlp.c_fc.bias", Kind::kCopy, {dff}});
    jobs.push_back({h + "mlp.c_proj.weight", h + "mlp.c_proj", Kind::kLinear, {dff, d}});
    jobs.push_back({h + "mlp.c_proj.bias", h + "mlp.c_proj.bias", Kind::kCopy, {d}});
  }
  jobs.push_back({"ln_f.weight", "ln_f.weight", Kind::kCopy, {d}});
  jobs.push_back({"ln_f.bias", "ln_f.bias", Kind::kCopy, {d}});
  return jobs;
}

// A separate lm_head.weight: the same as wte (tied; then not stored) or its own output (when
// config.json unties them).
absl::Status BindLmHead(const StTensor* lm_head, ModelConfig* cfg, std::vector<Job>* jobs) {
  const uint64_t d = cfg->n_embd, vocab = cfg->vocab_size;
  if (lm_head->shape != std::vector<uint64_t>{vocab, d}) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", lm_head->name, "' in '", lm_head->file, "' has shape ",
                     ShapeStr(lm_head->shape), ", config.json implies ", ShapeStr({vocab, d})));
  }
  const StTensor* wte = (*jobs)[0].tensor;
  bool identical = false;
  if (wte->dtype == lm_head->dtype) {
    identical = std::memcmp(wte->data.data(), lm_head->data.data(), wte->data.size()) == 0;
  } else {
    auto a = ToFloat(*wte);
    if (!a.ok()) return a.status();
    auto b = ToFloat(*lm_head);
    if (!b.ok()) return b.status();
    identical = std::memcmp(a->data(), b->data(), a->size() * sizeof(float)) == 0;
  }
  if (identical) {
    cfg->tied_lm_head = 1;
    return absl::OkStatus();
  }
  if (cfg->tied_lm_head) {
    // transformers would silently replace lm_head.weight with wte.weight here; refuse rather
    // than guess which one the user meant.
    return absl::InvalidArgumentError(
        "lm_head.weight differs from wte.weight but config.json says tie_word_embeddings: "
        "true (transformers would ignore lm_head.weight); set it to false to use an untied "
        "head");
  }
  jobs->insert(jobs->begin() + 1,
               Job{"lm_head.weight", "lm_head", Kind::kEmbedding, {vocab, d}, lm_head});
  return absl::OkStatus();
}

// Finds every job's tensor and checks its shape; refuses a missing or an unexpected tensor.
absl::Status BindGpt2Tensors(const std::map<std::string, const StTensor*>& tensors,
                             const std::string& hf_dir, ModelConfig* cfg, std::vector<Job>* jobs) {
  std::map<std::string, bool> used;
  for (Job& job : *jobs) {
    auto it = tensors.find(job.src);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor '", job.src, "' in '", hf_dir,
                                                     "' (expected by config.json: ", cfg->n_layer,
                                                     " layers, n_embd ", cfg->n_embd, ")"));
    }
    job.tensor = it->second;
    used[job.src] = true;
    if (job.tensor->shape != job.hf_shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", job.tensor->name, "' in '", job.tensor->file, "' has shape ",
          ShapeStr(job.tensor->shape), ", config.json implies ", ShapeStr(job.hf_shape)));
    }
  }
  auto lm = tensors.find("lm_head.weight");
  if (lm == tensors.end() && !cfg->tied_lm_head) {
    return absl::InvalidArgumentError(
        "missing tensor 'lm_head.weight' (config.json says tie_word_embeddings: false)");
  }
  if (lm != tensors.end()) {
    used["lm_head.weight"] = true;
    if (auto st = BindLmHead(lm->second, cfg, jobs); !st.ok()) return st;
  }
  for (const auto& [name, t] : tensors) {
    if (!used.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected tensor '", t->name, "' in '",
                                                     t->file, "' (not part of a ", cfg->n_layer,
                                                     "-layer GPT-2 as described by config.json)"));
    }
  }
  return absl::OkStatus();
}

// Writes the model file: the specs of every job, then each tensor converted in turn.
absl::Status WriteGpt2(const std::string& out_path, const ModelConfig& cfg, const std::string& name,
                       const std::vector<uint8_t>& tokenizer_blob, const std::vector<Job>& jobs,
                       const ConvertOptions& opts, const std::function<void(float)>& progress) {
  std::vector<ModelFileWriter::Spec> specs;
  uint64_t total_elems = 0;
  for (const Job& job : jobs) {
    total_elems += job.tensor->numel();
    if (job.kind == Kind::kCopy) {
      std::vector<uint32_t> shape(job.hf_shape.begin(), job.hf_shape.end());
      specs.push_back({job.out, DType::kF32, shape});
      continue;
    }
    const int n = static_cast<int>(job.kind == Kind::kLinear ? job.hf_shape[1] : job.hf_shape[0]);
    const int k = static_cast<int>(job.kind == Kind::kLinear ? job.hf_shape[0] : job.hf_shape[1]);
    const WeightBits bits = job.kind == Kind::kLinear ? opts.weights : WeightBits::kInt8;
    if (bits == WeightBits::kInt4 && k % 2 != 0) {
      return absl::InvalidArgumentError("int4 weights need an even n_embd");
    }
    AddSpecs(job.out, n, k, bits, opts.keep_float, &specs);
  }
  auto writer = ModelFileWriter::Create(out_path, cfg, name, tokenizer_blob, std::move(specs));
  if (!writer.ok()) return writer.status();
  uint64_t done_elems = 0;
  std::vector<float> w, wt;
  for (const Job& job : jobs) {
    const StTensor& t = *job.tensor;
    w.resize(t.numel());
    if (absl::Status s = ToFloat(t, w.data()); !s.ok()) return s;
    if (absl::Status s = CheckFiniteValues(w.data(), w.size(), t); !s.ok()) return s;
    absl::Status s;
    if (job.kind == Kind::kCopy) {
      s = (*writer)->Append(Bytes(w));
    } else {
      const std::vector<float>* rows = &w;  // (n, k)
      int n = static_cast<int>(job.hf_shape[0]), k = static_cast<int>(job.hf_shape[1]);
      if (job.kind == Kind::kLinear) {
        // Conv1D [k, n] -> (n, k): each output channel's weights become one row.
        std::swap(n, k);
        wt.resize(w.size());
        for (int r = 0; r < k; ++r) {
          const float* src = w.data() + static_cast<size_t>(r) * n;
          for (int c = 0; c < n; ++c) wt[static_cast<size_t>(c) * k + r] = src[c];
        }
        rows = &wt;
      }
      const WeightBits bits = job.kind == Kind::kLinear ? opts.weights : WeightBits::kInt8;
      s = AppendMatrix(writer->get(), *rows, n, k, bits, opts.keep_float);
    }
    if (!s.ok()) return s;
    done_elems += t.numel();
    if (progress) progress(static_cast<float>(static_cast<double>(done_elems) / total_elems));
  }
  return (*writer)->Finish();
}

}  // namespace

absl::StatusOr<std::map<std::string, const StTensor*>> CanonicalTensors(
    const SafetensorsCheckpoint& ckpt, const std::string& prefix,
    const std::vector<std::string>& skip_suffixes) {
  std::map<std::string, const StTensor*> tensors;
  for (const std::string& name : ckpt.Names()) {
    std::string canon = name;
    if (absl::StartsWith(canon, prefix)) canon = canon.substr(prefix.size());
    bool skip = false;
    for (const std::string& s : skip_suffixes) skip = skip || absl::EndsWith(canon, s);
    if (skip) continue;
    if (!tensors.emplace(canon, ckpt.Find(name)).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", canon, "' appears both with and without the \"", prefix, "\" prefix"));
    }
  }
  return tensors;
}

absl::Status ConvertCheckpoint(const std::string& hf_dir, const std::string& out_path,
                               const ConvertOptions& opts, std::function<void(float)> progress) {
  // The output must not replace a file of the checkpoint (any file of the directory: shards of
  // either format, indexes, tokenizer files), and must be writable: checked before reading
  // anything.
  std::vector<std::string> inputs;
  for (const char* f : {"config.json", "vocab.json", "merges.txt", "tokenizer.json",
                        "model.safetensors", "pytorch_model.bin"}) {
    inputs.push_back((fs::path(hf_dir) / f).string());
  }
  std::error_code ec;
  for (fs::directory_iterator it(hf_dir, ec), end; !ec && it != end; it.increment(ec)) {
    inputs.push_back(it->path().string());
  }
  if (auto st = CheckOutputPath(out_path, inputs); !st.ok()) return st;
  auto config_json = ReadConfigJson(hf_dir);
  if (!config_json.ok()) return config_json.status();
  if (const json::Value* mt = config_json->Find("model_type");
      mt != nullptr && mt->is_string() &&
      (mt->as_string() == "llama" || mt->as_string() == "qwen2" || mt->as_string() == "mistral")) {
    return ConvertLlamaCheckpoint(hf_dir, *config_json, out_path, opts, std::move(progress));
  }
  auto config_or = Gpt2ConfigFromHF(*config_json);
  if (!config_or.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_or.status().message(), " (in '", (fs::path(hf_dir) / "config.json").string(), "')"));
  }
  ModelConfig cfg = *config_or;
  auto tokenizer_blob = Gpt2TokenizerBlob(hf_dir, cfg.vocab_size);
  if (!tokenizer_blob.ok()) return tokenizer_blob.status();
  auto ckpt = SafetensorsCheckpoint::Open(hf_dir);
  if (!ckpt.ok()) return ckpt.status();
  // Causal-mask buffers saved by older transformers versions: not weights.
  auto tensors = CanonicalTensors(**ckpt, "transformer.", {".attn.bias", ".attn.masked_bias"});
  if (!tensors.ok()) return tensors.status();
  // A config that names more layers than the checkpoint holds is refused before the plan (12
  // tensors per layer) is built: config.json may say anything up to n_layer = 2^20.
  if (const std::string last = absl::StrCat("h.", cfg.n_layer - 1, ".ln_1.weight");
      tensors->count(last) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("missing tensor '", last, "' in '", hf_dir,
                                                   "' (expected by config.json: ", cfg.n_layer,
                                                   " layers)"));
  }
  std::vector<Job> jobs = PlanGpt2(cfg);
  if (auto st = BindGpt2Tensors(*tensors, hf_dir, &cfg, &jobs); !st.ok()) return st;
  return WriteGpt2(out_path, cfg, ModelName(hf_dir, opts), *tokenizer_blob, jobs, opts, progress);
}

}  // namespace selfcond
