// Hugging Face Llama-family checkpoints (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM:
// config.json, tokenizer.json, *.safetensors) -> a version-2 selfcond model file. The q/k/v and
// gate/up projections are stored fused (docs/model-format.md), everything else as Hugging Face
// names it without the "model." prefix.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "formats/safetensors.h"
#include "formats/tokenizer.h"
#include "kernels/kernels.h"
#include "tools/convert.h"
#include "tools/convert_internal.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

namespace fs = std::filesystem;

absl::Status ConfigError(const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", msg));
}

// A positive integer field (the first of `keys` present), or `dflt` when none is (0: required).
absl::StatusOr<uint32_t> Dim(const json::Value& c, std::initializer_list<const char*> keys,
                             int64_t dflt = 0) {
  for (const char* key : keys) {
    const json::Value* v = c.Find(key);
    if (v == nullptr || v->is_null()) continue;
    auto i = c.GetInt(key);
    if (!i.ok()) return ConfigError(std::string(i.status().message()));
    if (*i <= 0 || *i > (int64_t{1} << 20)) {
      return ConfigError(absl::StrCat("\"", key, "\" = ", *i, " is out of range (1..2^20)"));
    }
    return static_cast<uint32_t>(*i);
  }
  if (dflt > 0) return static_cast<uint32_t>(dflt);
  return ConfigError(absl::StrCat("missing \"", *keys.begin(), "\""));
}

absl::StatusOr<double> Number(const json::Value& c, const char* key, double dflt) {
  const json::Value* v = c.Find(key);
  if (v == nullptr || v->is_null()) return dflt;
  if (!v->is_number() || !std::isfinite(v->as_number()) || !(v->as_number() > 0)) {
    return ConfigError(absl::StrCat("\"", key, "\" must be a positive number"));
  }
  return v->as_number();
}

absl::StatusOr<bool> Bool(const json::Value& c, const char* key, bool dflt) {
  const json::Value* v = c.Find(key);
  if (v == nullptr || v->is_null()) return dflt;
  if (!v->is_bool()) return ConfigError(absl::StrCat("\"", key, "\" is not a boolean"));
  return v->as_bool();
}

// eos_token_id: an integer or a list of them.
absl::Status EosIds(const json::Value& c, const char* file, std::vector<int32_t>* out) {
  const json::Value* v = c.Find("eos_token_id");
  if (v == nullptr || v->is_null()) return absl::OkStatus();
  std::vector<const json::Value*> items;
  if (v->is_array()) {
    for (const json::Value& x : v->items()) items.push_back(&x);
  } else {
    items.push_back(v);
  }
  for (const json::Value* x : items) {
    const double d = x->as_number();
    if (!x->is_number() || d < 0 || d >= (1 << 24) || d != std::floor(d)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": eos_token_id must be an integer or a list of integers"));
    }
    if (std::find(out->begin(), out->end(), static_cast<int32_t>(d)) == out->end()) {
      out->push_back(static_cast<int32_t>(d));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// config.json's fields one after the other, each validated where it is read (the supported
// subset of LlamaConfig / Qwen2Config / MistralConfig): kept whole (~110 lines), a list, not logic.
absl::StatusOr<ModelConfig> LlamaConfigFromHF(const json::Value& c) {
  if (!c.is_object()) return ConfigError("not a JSON object");
  ModelConfig cfg;
  cfg.arch = Arch::kLlama;
  const std::string type(c.Find("model_type") != nullptr ? c.Find("model_type")->as_string() : "");
  if (type == "llama") {
    cfg.family = HfFamily::kLlama;
  } else if (type == "qwen2") {
    cfg.family = HfFamily::kQwen2;
  } else if (type == "mistral") {
    cfg.family = HfFamily::kMistral;
  } else {
    return ConfigError(absl::StrCat("model_type \"", type,
                                    "\" is not a Llama-family model (llama, qwen2, mistral)"));
  }
  struct {
    uint32_t* dst;
    std::initializer_list<const char*> keys;
  } dims[] = {{&cfg.n_layer, {"num_hidden_layers"}},  {&cfg.n_embd, {"hidden_size"}},
              {&cfg.n_head, {"num_attention_heads"}}, {&cfg.n_inner, {"intermediate_size"}},
              {&cfg.vocab_size, {"vocab_size"}},      {&cfg.n_ctx, {"max_position_embeddings"}}};
  for (auto& d : dims) {
    auto v = Dim(c, d.keys);
    if (!v.ok()) return v.status();
    *d.dst = *v;
  }
  auto kv = Dim(c, {"num_key_value_heads"}, cfg.n_head);
  if (!kv.ok()) return kv.status();
  cfg.n_head_kv = *kv;
  if (cfg.n_embd % cfg.n_head != 0 && c.Find("head_dim") == nullptr) {
    return ConfigError("hidden_size is not a multiple of num_attention_heads and no head_dim");
  }
  auto hd = Dim(c, {"head_dim"}, cfg.n_embd / cfg.n_head);
  if (!hd.ok()) return hd.status();
  cfg.head_dim = *hd;
  auto eps = Number(c, "rms_norm_eps", 1e-6);
  if (!eps.ok()) return eps.status();
  cfg.layer_norm_eps = static_cast<float>(*eps);
  auto theta = Number(c, "rope_theta", 10000.0);
  if (!theta.ok()) return theta.status();
  cfg.rope_theta = static_cast<float>(*theta);
  if (const json::Value* rs = c.Find("rope_scaling"); rs != nullptr && !rs->is_null()) {
    if (!rs->is_object()) return ConfigError("\"rope_scaling\" is not an object");
    std::string kind;
    for (const char* key : {"rope_type", "type"}) {
      if (const json::Value* t = rs->Find(key); t != nullptr && t->is_string()) {
        kind = std::string(t->as_string());
        break;
      }
    }
    auto factor = Number(*rs, "factor", 1.0);
    if (!factor.ok()) return factor.status();
    cfg.rope_factor = static_cast<float>(*factor);
    if (kind == "llama3") {
      cfg.rope_scaling = RopeScaling::kLlama3;
      auto lo = Number(*rs, "low_freq_factor", 1.0);
      auto hi = Number(*rs, "high_freq_factor", 4.0);
      auto orig = Dim(*rs, {"original_max_position_embeddings"});
      if (!lo.ok()) return lo.status();
      if (!hi.ok()) return hi.status();
      if (!orig.ok()) return orig.status();
      cfg.rope_low_freq_factor = static_cast<float>(*lo);
      cfg.rope_high_freq_factor = static_cast<float>(*hi);
      cfg.rope_original_ctx = *orig;
    } else if (kind == "linear") {
      cfg.rope_scaling = RopeScaling::kLinear;
    } else if (kind != "default") {
      return ConfigError(absl::StrCat("rope_scaling type \"", kind,
                                      "\" is not supported (llama3, linear, default)"));
    }
  }
  std::string act = "silu";
  if (const json::Value* a = c.Find("hidden_act"); a != nullptr && a->is_string()) {
    act = std::string(a->as_string());
  }
  if (act != "silu") {
    return ConfigError(absl::StrCat("hidden_act \"", act, "\" is not supported (silu)"));
  }
  // Biases: Qwen2 always has q/k/v biases; Llama's attention_bias covers q/k/v and o.
  if (cfg.family == HfFamily::kQwen2) {
    cfg.flags |= kQkvBias;
  } else {
    auto ab = Bool(c, "attention_bias", false);
    if (!ab.ok()) return ab.status();
    if (*ab) cfg.flags |= kQkvBias | kOutBias;
  }
  auto mb = Bool(c, "mlp_bias", false);
  if (!mb.ok()) return mb.status();
  if (*mb) cfg.flags |= kMlpBias;
  auto tied = Bool(c, "tie_word_embeddings", false);
  if (!tied.ok()) return tied.status();
  cfg.tied_lm_head = *tied ? 1 : 0;
  // A sliding window at least as long as the context changes nothing; a shorter one would
  // change attention beyond it, so the context is cut to the window (where both agree).
  auto sliding = Bool(c, "use_sliding_window", cfg.family == HfFamily::kMistral);
  if (!sliding.ok()) return sliding.status();
  if (*sliding) {
    if (const json::Value* w = c.Find("sliding_window"); w != nullptr && !w->is_null()) {
      auto win = Dim(c, {"sliding_window"});
      if (!win.ok()) return win.status();
      cfg.n_ctx = std::min(cfg.n_ctx, *win);
    }
  }
  std::vector<int32_t> eos;
  if (auto st = EosIds(c, "config.json", &eos); !st.ok()) return st;
  if (eos.empty()) return ConfigError("missing \"eos_token_id\"");
  cfg.eos_token_id = static_cast<uint32_t>(eos[0]);
  if (auto st = ValidateModelConfig(cfg); !st.ok()) return ConfigError(std::string(st.message()));
  return cfg;
}

namespace {

// One output tensor: its checkpoint sources (row-concatenated in order) and what to write.
struct LlamaJob {
  std::vector<std::string> src;  // canonical names (no "model." prefix)
  std::string out;
  enum Kind { kEmbedding, kLinear, kCopy } kind;
  int n = 0, k = 0;  // output shape (n, k) for kEmbedding / kLinear; (n) for kCopy
};

std::vector<LlamaJob> PlanLlama(const ModelConfig& c) {
  const int d = c.n_embd, F = c.n_inner, qd = c.q_dim(), kvd = c.kv_dim(), V = c.vocab_size;
  std::vector<LlamaJob> jobs;
  jobs.push_back({{"embed_tokens.weight"}, "embed_tokens", LlamaJob::kEmbedding, V, d});
  if (!c.tied_lm_head) jobs.push_back({{"lm_head.weight"}, "lm_head", LlamaJob::kEmbedding, V, d});
  auto linear = [&](const std::string& p, std::vector<std::string> parts, const std::string& out,
                    int n, int k, bool bias) {
    std::vector<std::string> w, b;
    for (const std::string& part : parts) {
      w.push_back(p + part + ".weight");
      b.push_back(p + part + ".bias");
    }
    jobs.push_back({w, p + out, LlamaJob::kLinear, n, k});
    if (bias) jobs.push_back({b, p + out + ".bias", LlamaJob::kCopy, n, 0});
  };
  for (uint32_t i = 0; i < c.n_layer; ++i) {
    const std::string p = absl::StrCat("layers.", i, ".");
    jobs.push_back(
        {{p + "input_layernorm.weight"}, p + "input_layernorm.weight", LlamaJob::kCopy, d, 0});
    linear(p, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, "self_attn.qkv_proj",
           qd + 2 * kvd, d, (c.flags & kQkvBias) != 0);
    linear(p, {"self_attn.o_proj"}, "self_attn.o_proj", d, qd, (c.flags & kOutBias) != 0);
    jobs.push_back({{p + "post_attention_layernorm.weight"},
                    p + "post_attention_layernorm.weight",
                    LlamaJob::kCopy,
                    d,
                    0});
    linear(p, {"mlp.gate_proj", "mlp.up_proj"}, "mlp.gate_up_proj", 2 * F, d,
           (c.flags & kMlpBias) != 0);
    linear(p, {"mlp.down_proj"}, "mlp.down_proj", d, F, (c.flags & kMlpBias) != 0);
  }
  jobs.push_back({{"norm.weight"}, "norm.weight", LlamaJob::kCopy, d, 0});
  return jobs;
}

// The expected checkpoint shape of one source of a job: [rows of that part, k] or [n].
std::vector<uint64_t> SourceShape(const ModelConfig& c, const std::string& name,
                                  const LlamaJob& j) {
  const uint64_t qd = c.q_dim(), kvd = c.kv_dim(), F = c.n_inner;
  uint64_t rows = j.n;
  if (absl::StrContains(name, "q_proj")) rows = qd;
  if (absl::StrContains(name, "k_proj") || absl::StrContains(name, "v_proj")) rows = kvd;
  if (absl::StrContains(name, "gate_proj") || absl::StrContains(name, "up_proj")) rows = F;
  if (j.kind == LlamaJob::kCopy) return {rows};
  return {rows, static_cast<uint64_t>(j.k)};
}

// The tokenizer (tokenizer.json) with the end-of-sequence ids of config.json and
// generation_config.json, serialized for the model file.
absl::StatusOr<std::vector<uint8_t>> LlamaTokenizerBlob(const std::string& hf_dir,
                                                        const json::Value& config_json,
                                                        uint32_t vocab_size) {
  std::vector<int32_t> eos;
  if (auto st = EosIds(config_json, "config.json", &eos); !st.ok()) return st;
  const std::string gen_path = (fs::path(hf_dir) / "generation_config.json").string();
  if (std::error_code ec; fs::exists(gen_path, ec)) {
    auto text = ReadFile(gen_path);
    if (!text.ok()) return text.status();
    auto doc = json::Parse(*text);
    if (!doc.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", gen_path, "' is not valid JSON: ", doc.status().message()));
    }
    if (auto st = EosIds(*doc, "generation_config.json", &eos); !st.ok()) return st;
  }
  const std::string tok_path = (fs::path(hf_dir) / "tokenizer.json").string();
  auto tok_text = ReadFile(tok_path);
  if (!tok_text.ok()) {
    return absl::NotFoundError(
        absl::StrCat("cannot read tokenizer.json in '", hf_dir,
                     "' (Llama-family checkpoints need it): ", tok_text.status().message()));
  }
  auto tokenizer = Tokenizer::FromTokenizerJson(*tok_text, eos);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", tok_path, "': ", tokenizer.status().message()));
  }
  if (static_cast<uint32_t>((*tokenizer)->vocab_size()) > vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json has ", (*tokenizer)->vocab_size(),
                     " tokens but config.json says vocab_size ", vocab_size,
                     " (the embedding must have a row for every token)"));
  }
  return (*tokenizer)->Serialize();
}

// Checks the checkpoint against the plan: every source tensor present with its shape, a tied
// head identical to the embedding (then dropped), nothing unexpected. The output specs go to
// *specs, the source elements to *total_elems.
absl::Status CheckLlamaTensors(const ModelConfig& cfg, const std::string& hf_dir,
                               const std::vector<LlamaJob>& jobs, const ConvertOptions& opts,
                               std::map<std::string, const StTensor*>* tensors,
                               std::vector<ModelFileWriter::Spec>* specs, uint64_t* total_elems) {
  if (cfg.tied_lm_head && tensors->count("lm_head.weight") != 0) {
    // transformers ties them and ignores lm_head.weight: accept it only when it is the same.
    auto a = ToFloat(*tensors->at("embed_tokens.weight"));
    auto b = ToFloat(*tensors->at("lm_head.weight"));
    if (!a.ok()) return a.status();
    if (!b.ok()) return b.status();
    if (*a != *b) {
      return absl::InvalidArgumentError(
          "lm_head.weight differs from embed_tokens.weight but config.json says "
          "tie_word_embeddings: true; set it to false to use an untied head");
    }
    tensors->erase("lm_head.weight");
  }
  std::map<std::string, bool> used;
  for (const LlamaJob& job : jobs) {
    for (const std::string& src : job.src) {
      auto it = tensors->find(src);
      if (it == tensors->end()) {
        return absl::InvalidArgumentError(absl::StrCat("missing tensor 'model.", src, "' in '",
                                                       hf_dir, "' (expected by config.json)"));
      }
      const std::vector<uint64_t> want = SourceShape(cfg, src, job);
      if (it->second->shape != want) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", it->second->name, "' in '", it->second->file, "' has shape [",
                         absl::StrJoin(it->second->shape, ", "), "], config.json implies [",
                         absl::StrJoin(want, ", "), "]"));
      }
      used[src] = true;
      *total_elems += it->second->numel();
    }
    AddSpecs(job.out, job.kind == LlamaJob::kCopy ? 0 : job.n,
             job.kind == LlamaJob::kCopy ? job.n : job.k,
             job.kind == LlamaJob::kLinear ? opts.weights : WeightBits::kInt8, opts.keep_float,
             specs);
  }
  for (const auto& [name, t] : *tensors) {
    if (!used.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected tensor '", t->name, "' in '", t->file, "' (not part of a ", cfg.n_layer,
          "-layer ", FamilyName(cfg.family), " model as config.json describes it)"));
    }
  }
  return absl::OkStatus();
}

// Converts one output tensor at a time; sources are row-concatenated (q | k | v, gate | up).
absl::Status WriteLlamaTensors(ModelFileWriter* writer, const std::vector<LlamaJob>& jobs,
                               const std::map<std::string, const StTensor*>& tensors,
                               const ConvertOptions& opts, uint64_t total_elems,
                               const std::function<void(float)>& progress) {
  uint64_t done = 0;
  std::vector<float> w;
  for (const LlamaJob& job : jobs) {
    uint64_t numel = 0;
    for (const std::string& src : job.src) numel += tensors.at(src)->numel();
    w.resize(numel);
    float* at = w.data();
    for (const std::string& src : job.src) {
      const StTensor& t = *tensors.at(src);
      if (auto st = ToFloat(t, at); !st.ok()) return st;
      if (auto st = CheckFiniteValues(at, t.numel(), t); !st.ok()) return st;
      at += t.numel();
    }
    absl::Status st;
    if (job.kind == LlamaJob::kCopy) {
      st = writer->Append(FloatBytes(w));
    } else {
      st = AppendMatrix(writer, w, job.n, job.k,
                        job.kind == LlamaJob::kLinear ? opts.weights : WeightBits::kInt8,
                        opts.keep_float);
    }
    if (!st.ok()) return st;
    done += numel;
    if (progress) progress(static_cast<float>(static_cast<double>(done) / total_elems));
  }
  return writer->Finish();
}

}  // namespace

absl::Status ConvertLlamaCheckpoint(const std::string& hf_dir, const json::Value& config_json,
                                    const std::string& out_path, const ConvertOptions& opts,
                                    std::function<void(float)> progress) {
  const std::string config_path = (fs::path(hf_dir) / "config.json").string();
  auto cfg_or = LlamaConfigFromHF(config_json);
  if (!cfg_or.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(cfg_or.status().message(), " (in '", config_path, "')"));
  }
  const ModelConfig cfg = *cfg_or;
  auto tokenizer_blob = LlamaTokenizerBlob(hf_dir, config_json, cfg.vocab_size);
  if (!tokenizer_blob.ok()) return tokenizer_blob.status();
  auto ckpt = SafetensorsCheckpoint::Open(hf_dir);
  if (!ckpt.ok()) return ckpt.status();
  auto tensors = CanonicalTensors(**ckpt, "model.", {".rotary_emb.inv_freq"});  // a buffer
  if (!tensors.ok()) return tensors.status();
  if (const std::string last = absl::StrCat("layers.", cfg.n_layer - 1, ".input_layernorm.weight");
      tensors->count(last) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("missing tensor 'model.", last, "' in '", hf_dir,
                                                   "' (expected by config.json: ", cfg.n_layer,
                                                   " layers)"));
  }
  const std::vector<LlamaJob> jobs = PlanLlama(cfg);
  std::vector<ModelFileWriter::Spec> specs;
  uint64_t total_elems = 0;
  if (auto st = CheckLlamaTensors(cfg, hf_dir, jobs, opts, &*tensors, &specs, &total_elems);
      !st.ok()) {
    return st;
  }
  auto writer = ModelFileWriter::Create(out_path, cfg, ModelName(hf_dir, opts), *tokenizer_blob,
                                        std::move(specs));
  if (!writer.ok()) return writer.status();
  return WriteLlamaTensors(writer->get(), jobs, *tensors, opts, total_elems, progress);
}

}  // namespace selfcond
