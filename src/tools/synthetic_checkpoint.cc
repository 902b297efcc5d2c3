#include "tools/synthetic_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/convert.h"
#include "util/file_util.h"
#include "util/json.h"

namespace selfcond {
namespace {

namespace fs = std::filesystem;

uint64_t Mix(uint64_t z) {  // splitmix64 finalizer: a counter-based generator
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t NameKey(const std::string& name, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ Mix(seed);
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

enum class ValueKind { kLnWeight, kBias, kWeight };

ValueKind KindOf(const std::string& name) {
  if (absl::EndsWith(name, ".bias")) return ValueKind::kBias;
  if (absl::StartsWith(name, "ln_f.") || absl::StrContains(name, ".ln_"))
    return ValueKind::kLnWeight;
  return ValueKind::kWeight;
}

inline float ValueFor(ValueKind kind, uint64_t key, uint64_t i) {
  // u uniform in [-1, 1) with 24 random bits.
  const float u =
      static_cast<float>(Mix(key + i * 0x9e3779b97f4a7c15ull) >> 40) * (1.0f / 8388608.0f) - 1.0f;
  switch (kind) {
    case ValueKind::kLnWeight:
      return 1.0f + 0.1f * u;
    case ValueKind::kBias:
      return 0.02f * u;
    case ValueKind::kWeight:
      return 0.0346f * u;  // std 0.02, GPT-2's init scale
  }
  return 0;
}

// GPT-2's bytes_to_unicode(): the byte order of vocab ids 0..255 and each byte's printable form.
std::vector<std::pair<int, std::string>> ByteTokens() {
  std::vector<int> bs;
  for (int b = 33; b <= 126; ++b) bs.push_back(b);
  for (int b = 161; b <= 172; ++b) bs.push_back(b);
  for (int b = 174; b <= 255; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::vector<std::pair<int, std::string>> out;
  for (size_t i = 0; i < bs.size(); ++i) {
    std::string s;
    int c = cs[i];  // < 0x800: one or two UTF-8 bytes
    if (c < 0x80) {
      s.push_back(static_cast<char>(c));
    } else {
      s.push_back(static_cast<char>(0xC0 | (c >> 6)));
      s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
    out.emplace_back(bs[i], s);
  }
  return out;
}

// A tiny but valid byte-level BPE: 256 byte tokens, n_merges merges (" a".." z", then letter
// sequences, breadth first), and "<|endoftext|>" last.
absl::Status WriteSyntheticTokenizer(const std::string& dir, uint32_t vocab_size) {
  if (vocab_size < 257) {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic tokenizer needs vocab_size >= 257, got ", vocab_size));
  }
  std::vector<std::string> vocab;
  for (const auto& [b, s] : ByteTokens()) vocab.push_back(s);
  std::set<std::string> known(vocab.begin(), vocab.end());
  std::vector<std::string> queue;        // left parts to extend, breadth first
  const std::string space = "\xC4\xA0";  // 'Ġ' = byte 0x20
  queue.push_back(space);
  for (char c = 'a'; c <= 'z'; ++c) queue.push_back(std::string(1, c));
  std::string merges = "#version: 0.2\n";
  const uint32_t n_merges = vocab_size - 257;
  uint32_t made = 0;
  for (size_t qi = 0; qi < queue.size() && made < n_merges; ++qi) {
    for (char c = 'a'; c <= 'z' && made < n_merges; ++c) {
      std::string right(1, c);
      std::string merged = queue[qi] + right;
      if (!known.insert(merged).second) continue;
      absl::StrAppend(&merges, queue[qi], " ", right, "\n");
      vocab.push_back(merged);
      queue.push_back(merged);
      ++made;
    }
  }
  vocab.push_back("<|endoftext|>");
  std::string vj = "{";
  for (size_t i = 0; i < vocab.size(); ++i) {
    absl::StrAppend(&vj, i ? ", " : "", json::Quote(vocab[i]), ": ", i);
  }
  vj += "}";
  if (auto s = WriteFile((fs::path(dir) / "vocab.json").string(), vj); !s.ok()) return s;
  return WriteFile((fs::path(dir) / "merges.txt").string(), merges);
}

struct TensorPlan {
  std::string canonical;  // name without prefix; also the value stream key
  std::string file_name;  // as written
  std::vector<uint64_t> shape;
  std::string value_from;  // canonical name whose values to use (lm_head copy of wte)
  bool mask = false;       // attn.bias buffer (tril ones) / masked_bias (-1e4)
  uint64_t numel() const {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return n;
  }
};

size_t DTypeBytes(StDType t) { return StDTypeSize(t); }

void Encode(const float* v, size_t n, StDType dtype, std::vector<uint8_t>* out) {
  out->resize(n * DTypeBytes(dtype));
  uint8_t* p = out->data();
  if (dtype == StDType::kF32) {
    std::memcpy(p, v, n * 4);
  } else if (dtype == StDType::kF16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = FloatToHalf(v[i]);
      std::memcpy(p + 2 * i, &h, 2);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = FloatToBF16(v[i]);
      std::memcpy(p + 2 * i, &h, 2);
    }
  }
}

}  // namespace

float SyntheticValue(const std::string& canonical_name, uint64_t seed, uint64_t i) {
  return ValueFor(KindOf(canonical_name), NameKey(canonical_name, seed), i);
}

namespace {

// The tokenizer: vocab.json + merges.txt copied from o.tokenizer_dir, or a synthetic byte-level
// one. Sets *vocab_size (when 0) and *eos_id (-1 if none).
absl::Status WriteTokenizer(const std::string& dir, const SyntheticCheckpointOptions& o,
                            uint32_t* vocab_size, int64_t* eos_id) {
  std::error_code ec;
  if (o.tokenizer_dir.empty()) {
    if (*vocab_size == 0) *vocab_size = 320;
    *eos_id = *vocab_size - 1;
    return WriteSyntheticTokenizer(dir, *vocab_size);
  }
  for (const char* f : {"vocab.json", "merges.txt"}) {
    fs::copy_file(fs::path(o.tokenizer_dir) / f, fs::path(dir) / f,
                  fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::NotFoundError(
          absl::StrCat("cannot copy ", f, " from '", o.tokenizer_dir, "': ", ec.message()));
    }
    // The source may be read-only (shared data); keep the copy rewritable.
    fs::permissions(fs::path(dir) / f, fs::perms::owner_read | fs::perms::owner_write,
                    fs::perm_options::add, ec);
  }
  auto text = ReadFile((fs::path(dir) / "vocab.json").string());
  if (!text.ok()) return text.status();
  auto vocab = json::Parse(*text);
  if (!vocab.ok() || !vocab->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", o.tokenizer_dir, "/vocab.json' is not a JSON object"));
  }
  const uint32_t n_tok = static_cast<uint32_t>(vocab->members().size());
  if (*vocab_size == 0) *vocab_size = n_tok;
  if (*vocab_size != n_tok) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size ", *vocab_size, " != the tokenizer's ", n_tok));
  }
  if (const json::Value* e = vocab->Find("<|endoftext|>"); e != nullptr && e->is_number()) {
    *eos_id = static_cast<int64_t>(e->as_number());
  }
  return absl::OkStatus();
}

absl::Status WriteConfig(const std::string& dir, const SyntheticCheckpointOptions& o,
                         uint32_t vocab_size, int64_t eos_id) {
  json::Value cfg = json::Value::Object();
  cfg.Set("architectures", json::Value::Array({json::Value::String("GPT2LMHeadModel")}));
  cfg.Set("model_type", json::Value::String("gpt2"));
  cfg.Set("vocab_size", json::Value::Number(vocab_size));
  cfg.Set("n_positions", json::Value::Number(o.n_ctx));
  cfg.Set("n_ctx", json::Value::Number(o.n_ctx));
  cfg.Set("n_embd", json::Value::Number(o.n_embd));
  cfg.Set("n_layer", json::Value::Number(o.n_layer));
  cfg.Set("n_head", json::Value::Number(o.n_head));
  cfg.Set("n_inner", o.n_inner ? json::Value::Number(o.n_inner) : json::Value::Null());
  cfg.Set("activation_function", json::Value::String("gelu_new"));
  cfg.Set("layer_norm_epsilon", json::Value::Number(1e-5));
  if (eos_id >= 0) {
    cfg.Set("bos_token_id", json::Value::Number(static_cast<double>(eos_id)));
    cfg.Set("eos_token_id", json::Value::Number(static_cast<double>(eos_id)));
  }
  cfg.Set("tie_word_embeddings",
          json::Value::Bool(o.lm_head != SyntheticCheckpointOptions::LmHead::kUntied));
  cfg.Set("torch_dtype", json::Value::String(o.dtype == StDType::kF32   ? "float32"
                                             : o.dtype == StDType::kF16 ? "float16"
                                                                        : "bfloat16"));
  return WriteFile((fs::path(dir) / "config.json").string(), cfg.Dump());
}

// The tensors in Hugging Face's order, with their file names and value sources.
std::vector<TensorPlan> Gpt2Plan(const SyntheticCheckpointOptions& o, uint64_t V) {
  const uint64_t d = o.n_embd, dff = o.n_inner ? o.n_inner : 4 * o.n_embd;
  const std::string pre = o.prefix ? "transformer." : "";
  std::vector<TensorPlan> plan;
  auto add = [&](const std::string& canon, std::vector<uint64_t> shape, bool prefixed = true) {
    plan.push_back({canon, (prefixed ? pre : "") + canon, std::move(shape), canon, false});
  };
  add("wte.weight", {V, d});
  add("wpe.weight", {o.n_ctx, d});
  for (uint32_t i = 0; i < o.n_layer; ++i) {
    const std::string h = absl::StrCat("h.", i, ".");
    add(h + "ln_1.weight", {d});
    add(h + "ln_1.bias", {d});
    if (o.attn_bias_buffers) {
      add(h + "attn.bias", {1, 1, o.n_ctx, o.n_ctx});
      plan.back().mask = true;
      add(h + "attn.masked_bias", {});
      plan.back().mask = true;
    }
    add(h + "attn.c_attn.weight", {d, 3 * d});
    add(h + "attn.c_attn.bias", {3 * d});
    add(h + "attn.c_proj.weight", {d, d});
    add(h + "attn.c_proj.bias", {d});
    add(h + "ln_2.weight", {d});
    add(h + "ln_2.bias", {d});
    add(h + "mlp.c_fc.weight", {d, dff});
    add(h + "mlp.c_fc.bias", {dff});
    add(h + "mlp.c_proj.weight", {dff, d});
    add(h + "mlp.c_proj.bias", {d});
  }
  add("ln_f.weight", {d});
  add("ln_f.bias", {d});
  if (o.lm_head != SyntheticCheckpointOptions::LmHead::kTied) {
    add("lm_head.weight", {V, d}, /*prefixed=*/false);
    if (o.lm_head == SyntheticCheckpointOptions::LmHead::kTiedExplicitCopy)
      plan.back().value_from = "wte.weight";
  }
  return plan;
}

// The shard of each tensor: contiguous runs of roughly equal bytes, none empty.
std::vector<int> AssignShards(const std::vector<TensorPlan>& plan, int n_shards, size_t esize) {
  uint64_t total = 0;
  for (const auto& t : plan) total += t.numel() * esize;
  std::vector<int> shard_of(plan.size());
  uint64_t acc = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    int s = static_cast<int>(acc * n_shards / std::max<uint64_t>(total, 1));
    // Never leave a later shard empty: reserve one tensor per remaining shard.
    s = std::max(s, n_shards - static_cast<int>(plan.size() - i));
    if (i > 0) s = std::max(s, shard_of[i - 1]);
    shard_of[i] = std::min(s, n_shards - 1);
    acc += plan[i].numel() * esize;
  }
  return shard_of;
}

// The safetensors header of shard s (padded to 8 bytes, as the reference writer does).
std::string ShardHeader(const std::vector<TensorPlan>& plan, const std::vector<int>& shard_of,
                        int s, StDType dtype) {
  const size_t esize = DTypeBytes(dtype);
  json::Value header = json::Value::Object();
  json::Value meta = json::Value::Object();
  meta.Set("format", json::Value::String("pt"));
  header.Set("__metadata__", std::move(meta));
  uint64_t off = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (shard_of[i] != s) continue;
    json::Value e = json::Value::Object();
    e.Set("dtype", json::Value::String(StDTypeName(dtype)));
    json::Value shape = json::Value::Array();
    for (uint64_t dim : plan[i].shape) shape.Push(json::Value::Number(static_cast<double>(dim)));
    e.Set("shape", std::move(shape));
    const uint64_t nb = plan[i].numel() * esize;
    e.Set("data_offsets", json::Value::Array({json::Value::Number(static_cast<double>(off)),
                                              json::Value::Number(static_cast<double>(off + nb))}));
    off += nb;
    header.Set(plan[i].file_name, std::move(e));
  }
  std::string htext = header.Dump();
  while (htext.size() % 8 != 0) htext.push_back(' ');
  return htext;
}

// One tensor's values, chunk by chunk, encoded in the checkpoint's dtype.
bool WriteTensorData(std::FILE* f, const TensorPlan& t, const SyntheticCheckpointOptions& o) {
  constexpr uint64_t kChunk = 1 << 16;
  std::vector<float> buf;
  std::vector<uint8_t> enc;
  const uint64_t n = t.numel();
  const ValueKind kind = KindOf(t.value_from);
  const uint64_t key = NameKey(t.value_from, o.seed);
  for (uint64_t b = 0; b < n; b += kChunk) {
    const uint64_t m = std::min(kChunk, n - b);
    buf.resize(m);
    for (uint64_t j = 0; j < m; ++j) {
      if (!t.mask) {
        buf[j] = ValueFor(kind, key, b + j);
      } else if (t.shape.empty()) {
        buf[j] = -1e4f;
      } else {
        const uint64_t idx = b + j;
        buf[j] = (idx % o.n_ctx) <= (idx / o.n_ctx) % o.n_ctx ? 1.0f : 0.0f;
      }
    }
    Encode(buf.data(), m, o.dtype, &enc);
    if (std::fwrite(enc.data(), 1, enc.size(), f) != enc.size()) return false;
  }
  return true;
}

absl::Status WriteShard(const std::string& path, const std::vector<TensorPlan>& plan,
                        const std::vector<int>& shard_of, int s,
                        const SyntheticCheckpointOptions& o) {
  const std::string htext = ShardHeader(plan, shard_of, s, o.dtype);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot create '", path, "'"));
  uint8_t len[8];
  for (int b = 0; b < 8; ++b)
    len[b] = static_cast<uint8_t>(static_cast<uint64_t>(htext.size()) >> (8 * b));
  bool ok = std::fwrite(len, 1, 8, f) == 8 &&
            std::fwrite(htext.data(), 1, htext.size(), f) == htext.size();
  for (size_t i = 0; i < plan.size() && ok; ++i) {
    if (shard_of[i] == s) ok = WriteTensorData(f, plan[i], o);
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("error writing '", path, "'"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSyntheticCheckpoint(const std::string& dir, const SyntheticCheckpointOptions& o) {
  if (o.dtype != StDType::kF32 && o.dtype != StDType::kF16 && o.dtype != StDType::kBF16) {
    return absl::InvalidArgumentError("synthetic checkpoint dtype must be F32, F16 or BF16");
  }
  if (o.n_layer == 0 || o.n_embd == 0 || o.n_head == 0 || o.n_ctx == 0 || o.n_shards < 1) {
    return absl::InvalidArgumentError("synthetic checkpoint: dimensions must be positive");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create '", dir, "': ", ec.message()));
  uint32_t vocab_size = o.vocab_size;
  int64_t eos_id = -1;
  if (auto st = WriteTokenizer(dir, o, &vocab_size, &eos_id); !st.ok()) return st;
  if (auto st = WriteConfig(dir, o, vocab_size, eos_id); !st.ok()) return st;
  const std::vector<TensorPlan> plan = Gpt2Plan(o, vocab_size);
  const size_t esize = DTypeBytes(o.dtype);
  const int n_shards = std::min<int>(o.n_shards, static_cast<int>(plan.size()));
  const std::vector<int> shard_of = AssignShards(plan, n_shards, esize);
  auto shard_name = [&](int s) {
    return n_shards == 1 ? std::string("model.safetensors")
                         : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, n_shards);
  };
  for (int s = 0; s < n_shards; ++s) {
    if (auto st = WriteShard((fs::path(dir) / shard_name(s)).string(), plan, shard_of, s, o);
        !st.ok()) {
      return st;
    }
  }
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  if (n_shards == 1) {
    fs::remove(index_path, ec);  // a stale index would take precedence
    return absl::OkStatus();
  }
  uint64_t total = 0;
  for (const auto& t : plan) total += t.numel() * esize;
  json::Value index = json::Value::Object();
  json::Value meta = json::Value::Object();
  meta.Set("total_size", json::Value::Number(static_cast<double>(total)));
  index.Set("metadata", std::move(meta));
  json::Value map = json::Value::Object();
  for (size_t i = 0; i < plan.size(); ++i)
    map.Set(plan[i].file_name, json::Value::String(shard_name(shard_of[i])));
  index.Set("weight_map", std::move(map));
  if (auto st = WriteFile(index_path, index.Dump()); !st.ok()) return st;
  fs::remove(fs::path(dir) / "model.safetensors", ec);
  return absl::OkStatus();
}

absl::StatusOr<std::string> WriteHostileModel(const std::string& dir, HostileModel kind) {
  SyntheticCheckpointOptions o;
  o.n_embd = 8;
  o.n_head = 2;
  o.vocab_size = 260;
  const bool many = kind == HostileModel::kManyLayers;
  o.n_layer = many ? 4000 : 200;
  o.n_ctx = many ? 16 : (1u << 20);
  const std::string name = many ? "hostile-4000-layers" : "hostile-context-2p20";
  const std::string ckpt = dir + "/ckpt-" + name, out = dir + "/" + name + ".scm";
  if (auto st = WriteSyntheticCheckpoint(ckpt, o); !st.ok()) return st;
  ConvertOptions co;
  co.model_name = name;
  if (auto st = ConvertCheckpoint(ckpt, out, co, nullptr); !st.ok()) return st;
  std::error_code ec;
  std::filesystem::remove_all(ckpt, ec);
  return out;
}

}  // namespace selfcond
