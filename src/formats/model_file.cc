#include "formats/model_file.h"

#include <unistd.h>  // getpid, fsync

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/kernels.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

// Upper bound for every config dimension and tensor dim: far above any GPT-2 (vocab 50257),
// low enough that products of a few of them cannot overflow 64 bits.
constexpr uint32_t kMaxDim = 1u << 20;
constexpr uint32_t kMaxTensorDim = 1u << 30;
constexpr uint32_t kMaxTensors = 1u << 20;
constexpr size_t kHashOffset = offsetof(FileHeader, content_hash);

uint64_t AlignUp(uint64_t x) { return (x + kTensorAlign - 1) / kTensorAlign * kTensorAlign; }

}  // namespace

absl::Status ValidateModelConfig(const ModelConfig& c) {
  auto bad = [](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("bad model config: ", msg));
  };
  const std::pair<const char*, uint32_t> dims[] = {
      {"n_layer", c.n_layer}, {"n_embd", c.n_embd},         {"n_head", c.n_head},
      {"n_ctx", c.n_ctx},     {"vocab_size", c.vocab_size}, {"n_inner", c.n_inner}};
  for (const auto& [name, v] : dims) {
    if (v == 0 || v > kMaxDim)
      return bad(absl::StrCat(name, " = ", v, " (must be in 1..", kMaxDim, ")"));
  }
  if (c.n_embd % 4 != 0) return bad(absl::StrCat("n_embd ", c.n_embd, " is not a multiple of 4"));
  if (c.n_inner % 4 != 0)
    return bad(absl::StrCat("n_inner ", c.n_inner, " is not a multiple of 4"));
  if (c.eos_token_id >= c.vocab_size) {
    return bad(absl::StrCat("eos_token_id ", c.eos_token_id, " >= vocab_size ", c.vocab_size));
  }
  if (!std::isfinite(c.layer_norm_eps) || !(c.layer_norm_eps > 0) || c.layer_norm_eps > 1) {
    return bad(absl::StrCat("layer_norm_eps ", c.layer_norm_eps, " (must be finite, in (0, 1])"));
  }
  if (c.tied_lm_head > 1) return bad(absl::StrCat("tied_lm_head = ", c.tied_lm_head, " (0 or 1)"));
  if (c.arch == Arch::kGpt2) {
    if (c.n_embd % c.n_head != 0) {
      return bad(absl::StrCat("n_embd ", c.n_embd, " is not a multiple of n_head ", c.n_head));
    }
    // (Derived when the file is read; a config made by hand may leave them 0.)
    if ((c.n_head_kv != 0 || c.head_dim != 0) &&
        (c.n_head_kv != c.n_head || c.head_dim != c.n_embd / c.n_head)) {
      return bad("a GPT-2 config has n_head_kv = n_head and head_dim = n_embd / n_head");
    }
    return absl::OkStatus();
  }
  if (c.arch != Arch::kLlama) {
    return bad(absl::StrCat("unknown architecture ", static_cast<uint32_t>(c.arch)));
  }
  if (c.n_head_kv == 0 || c.n_head_kv > c.n_head || c.n_head % c.n_head_kv != 0) {
    return bad(absl::StrCat("n_head ", c.n_head, " is not a multiple of n_head_kv ", c.n_head_kv));
  }
  if (c.head_dim < 2 || c.head_dim > 1024 || c.head_dim % 2 != 0) {
    return bad(absl::StrCat("head_dim ", c.head_dim, " (must be even, in 2..1024)"));
  }
  if ((uint64_t{c.n_head} * c.head_dim) % 4 != 0 || uint64_t{c.n_head} * c.head_dim > kMaxDim) {
    return bad(absl::StrCat("n_head * head_dim = ", uint64_t{c.n_head} * c.head_dim,
                            " (must be a multiple of 4, at most ", kMaxDim, ")"));
  }
  for (const auto& [name, v] : {std::pair<const char*, float>{"rope_theta", c.rope_theta},
                                {"rope factor", c.rope_factor},
                                {"rope low_freq_factor", c.rope_low_freq_factor},
                                {"rope high_freq_factor", c.rope_high_freq_factor}}) {
    if (!std::isfinite(v) || !(v > 0)) return bad(absl::StrCat(name, " ", v, " (must be > 0)"));
  }
  if (c.rope_scaling != RopeScaling::kNone && c.rope_scaling != RopeScaling::kLlama3 &&
      c.rope_scaling != RopeScaling::kLinear) {
    return bad(absl::StrCat("unknown rope scaling ", static_cast<uint32_t>(c.rope_scaling)));
  }
  if (c.rope_scaling == RopeScaling::kLlama3) {
    if (c.rope_original_ctx == 0 || c.rope_original_ctx > kMaxDim) {
      return bad("llama3 rope scaling needs original_max_position_embeddings in 1..2^20");
    }
    if (!(c.rope_high_freq_factor > c.rope_low_freq_factor)) {
      return bad("llama3 rope scaling needs high_freq_factor > low_freq_factor");
    }
  }
  if (c.flags > (kQkvBias | kOutBias | kMlpBias)) {
    return bad(absl::StrCat("unknown flags ", c.flags));
  }
  if (c.family != HfFamily::kLlama && c.family != HfFamily::kQwen2 &&
      c.family != HfFamily::kMistral) {
    return bad(absl::StrCat("unknown family ", static_cast<uint32_t>(c.family)));
  }
  return absl::OkStatus();
}

const char* ArchName(Arch arch) {
  switch (arch) {
    case Arch::kGpt2:
      return "gpt2";
    case Arch::kLlama:
      return "llama";
  }
  return "?";
}

const char* FamilyName(HfFamily family) {
  switch (family) {
    case HfFamily::kGpt2:
      return "gpt2";
    case HfFamily::kLlama:
      return "llama";
    case HfFamily::kQwen2:
      return "qwen2";
    case HfFamily::kMistral:
      return "mistral";
  }
  return "?";
}

namespace {

// The header's config fields from a config, and back.
void StoreConfig(const ModelConfig& c, FileHeader* h) {
  h->config = {c.n_layer, c.n_embd,       c.n_head,         c.n_ctx,       c.vocab_size,
               c.n_inner, c.eos_token_id, c.layer_norm_eps, c.tied_lm_head};
  if (c.arch == Arch::kGpt2) return;  // version 1: config2 stays zero
  h->config2 = {static_cast<uint32_t>(c.arch),
                c.n_head_kv,
                c.head_dim,
                c.rope_theta,
                static_cast<uint32_t>(c.rope_scaling),
                c.rope_factor,
                c.rope_low_freq_factor,
                c.rope_high_freq_factor,
                c.rope_original_ctx,
                c.flags,
                static_cast<uint32_t>(c.family)};
}

ModelConfig LoadConfig(const FileHeader& h) {
  ModelConfig c;
  c.n_layer = h.config.n_layer;
  c.n_embd = h.config.n_embd;
  c.n_head = h.config.n_head;
  c.n_ctx = h.config.n_ctx;
  c.vocab_size = h.config.vocab_size;
  c.n_inner = h.config.n_inner;
  c.eos_token_id = h.config.eos_token_id;
  c.layer_norm_eps = h.config.layer_norm_eps;
  c.tied_lm_head = h.config.tied_lm_head;
  if (h.version == kModelVersionGpt2) {
    c.arch = Arch::kGpt2;
    c.n_head_kv = c.n_head;
    c.head_dim = c.n_head != 0 ? c.n_embd / c.n_head : 0;
    return c;
  }
  const HeaderConfigV2& e = h.config2;
  c.arch = static_cast<Arch>(e.arch);
  c.n_head_kv = e.n_head_kv;
  c.head_dim = e.head_dim;
  c.rope_theta = e.rope_theta;
  c.rope_scaling = static_cast<RopeScaling>(e.rope_scaling);
  c.rope_factor = e.rope_factor;
  c.rope_low_freq_factor = e.rope_low_freq_factor;
  c.rope_high_freq_factor = e.rope_high_freq_factor;
  c.rope_original_ctx = e.rope_original_ctx;
  c.flags = e.flags;
  c.family = static_cast<HfFamily>(e.family);
  return c;
}

}  // namespace

namespace {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kI32:
      return "I32";
    case DType::kI8Packed:
      return "I8P";
    case DType::kI4:
      return "I4";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

}  // namespace

absl::StatusOr<uint64_t> TensorNBytes(DType dtype, absl::Span<const uint32_t> shape) {
  if (shape.empty() || shape.size() > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor rank ", shape.size(), " (must be 1 or 2)"));
  }
  uint64_t numel = 1;
  for (uint32_t d : shape) {
    if (d == 0 || d > kMaxTensorDim) {
      return absl::InvalidArgumentError(absl::StrCat("tensor dimension ", d, " out of range"));
    }
    numel *= d;
  }
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return numel * 4;
    case DType::kI8Packed:
      if (shape.size() != 2 || shape[1] % kernels::kKGroup != 0) {
        return absl::InvalidArgumentError("I8P tensors need shape (n, k) with k a multiple of 4");
      }
      return static_cast<uint64_t>(kernels::PaddedRows(static_cast<int>(shape[0]))) * shape[1];
    case DType::kI4:
      if (shape.size() != 2 || shape[1] % 2 != 0) {
        return absl::InvalidArgumentError("I4 tensors need shape (n, k) with k even");
      }
      return numel / 2;
    case DType::kBF16:
      return numel * 2;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", static_cast<uint32_t>(dtype)));
}

// ---- writing -----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ModelFileWriter>> ModelFileWriter::Create(
    const std::string& path, const ModelConfig& config, const std::string& model_name,
    absl::Span<const uint8_t> tokenizer_blob, std::vector<Spec> specs) {
  if (absl::Status s = ValidateModelConfig(config); !s.ok()) return s;
  if (specs.size() > kMaxTensors) return absl::InvalidArgumentError("too many tensors");
  std::unique_ptr<ModelFileWriter> w(new ModelFileWriter());
  std::set<std::string> names;
  for (const Spec& s : specs) {
    if (s.name.empty() || s.name.size() >= sizeof(TensorEntry::name) ||
        s.name.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name '", s.name, "' must be 1..79 bytes without NUL"));
    }
    if (!names.insert(s.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", s.name, "'"));
    }
    auto nb = TensorNBytes(s.dtype, s.shape);
    if (!nb.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", s.name, "': ", nb.status().message()));
    }
    w->nbytes_.push_back(*nb);
  }
  // Layout: header | index | tokenizer | tensors (each 64-byte aligned), in the given order.
  FileHeader h{};  // zero, reserved bytes included
  std::memcpy(h.magic, kModelMagic, sizeof(h.magic));
  // GPT-2 files stay version 1 (byte-identical to what earlier builds wrote, same hashes).
  h.version = config.arch == Arch::kGpt2 ? kModelVersionGpt2 : kModelVersion;
  h.header_bytes = sizeof(FileHeader);
  StoreConfig(config, &h);
  h.n_tensors = static_cast<uint32_t>(specs.size());
  h.tensor_index_offset = sizeof(FileHeader);
  h.tokenizer_offset = h.tensor_index_offset + uint64_t{sizeof(TensorEntry)} * specs.size();
  h.tokenizer_bytes = tokenizer_blob.size();
  // Informational only: truncate to 63 bytes without splitting a UTF-8 sequence.
  size_t name_len = std::min(model_name.size(), sizeof(h.model_name) - 1);
  while (name_len > 0 && name_len < model_name.size() &&
         (static_cast<uint8_t>(model_name[name_len]) & 0xC0) == 0x80) {
    --name_len;
  }
  std::memcpy(h.model_name, model_name.data(), name_len);
  uint64_t pos = h.tokenizer_offset + h.tokenizer_bytes;
  std::vector<TensorEntry> index(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    pos = AlignUp(pos);
    TensorEntry& e = index[i];
    std::memset(&e, 0, sizeof(e));
    std::memcpy(e.name, specs[i].name.data(), specs[i].name.size());
    e.dtype = static_cast<uint32_t>(specs[i].dtype);
    e.ndim = static_cast<uint32_t>(specs[i].shape.size());
    for (size_t d = 0; d < specs[i].shape.size(); ++d) e.shape[d] = specs[i].shape[d];
    e.offset = pos;
    e.nbytes = w->nbytes_[i];
    w->offsets_.push_back(pos);
    pos += e.nbytes;
  }
  h.file_bytes = pos;

  // Written under a temporary name, renamed into place once complete and synced.
  auto out = AtomicOutputFile::Create(path);
  if (!out.ok()) return out.status();
  w->out_ = std::move(*out);
  w->specs_ = std::move(specs);
  w->sha_ = std::make_unique<Sha256>();
  if (absl::Status s = w->Write(&h, sizeof(h)); !s.ok()) return s;
  if (!index.empty()) {
    if (absl::Status s = w->Write(index.data(), index.size() * sizeof(TensorEntry)); !s.ok())
      return s;
  }
  if (!tokenizer_blob.empty()) {
    if (absl::Status s = w->Write(tokenizer_blob.data(), tokenizer_blob.size()); !s.ok()) return s;
  }
  return w;
}

absl::Status ModelFileWriter::Write(const void* p, size_t n) {
  if (absl::Status s = out_->Write(p, n); !s.ok()) return s;
  sha_->Update(p, n);
  pos_ += n;
  return absl::OkStatus();
}

absl::Status ModelFileWriter::PadTo(uint64_t offset) {
  static constexpr uint8_t kZeros[kTensorAlign] = {};
  while (pos_ < offset) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(offset - pos_, kTensorAlign));
    if (absl::Status s = Write(kZeros, n); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ModelFileWriter::Append(absl::Span<const uint8_t> data) {
  if (finished_ || next_ >= specs_.size()) {
    return absl::FailedPreconditionError("ModelFileWriter::Append: all tensors already written");
  }
  if (data.size() != nbytes_[next_]) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", specs_[next_].name, "': got ",
                                                   data.size(), " bytes, expected ",
                                                   nbytes_[next_]));
  }
  if (absl::Status s = PadTo(offsets_[next_]); !s.ok()) return s;
  if (!data.empty()) {
    if (absl::Status s = Write(data.data(), data.size()); !s.ok()) return s;
  }
  ++next_;
  return absl::OkStatus();
}

absl::Status ModelFileWriter::Finish() {
  if (finished_) return absl::FailedPreconditionError("ModelFileWriter::Finish called twice");
  if (next_ != specs_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("ModelFileWriter::Finish: ", next_, " of ",
                                                      specs_.size(), " tensors written"));
  }
  hash_ = sha_->Final();
  if (absl::Status s = out_->WriteAt(kHashOffset, hash_.data(), hash_.size()); !s.ok()) return s;
  if (absl::Status s = out_->Commit(); !s.ok()) return s;
  finished_ = true;
  return absl::OkStatus();
}

ModelFileWriter::~ModelFileWriter() = default;  // an unfinished output removes its temp file

absl::Status WriteModelFile(const std::string& path, const ModelConfig& config,
                            const std::string& model_name, absl::Span<const uint8_t> tokenizer_blob,
                            const std::vector<TensorToWrite>& tensors) {
  std::vector<ModelFileWriter::Spec> specs;
  specs.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
  auto w = ModelFileWriter::Create(path, config, model_name, tokenizer_blob, std::move(specs));
  if (!w.ok()) return w.status();
  for (const TensorToWrite& t : tensors) {
    if (absl::Status s = (*w)->Append(t.data); !s.ok()) return s;
  }
  return (*w)->Finish();
}

// ---- reading -----------------------------------------------------------------

const TensorView* ModelFileView::Find(const std::string& name) const {
  if (index.size() == tensors.size()) {
    auto it = index.find(name);
    return it == index.end() ? nullptr : &tensors[it->second];
  }
  for (const TensorView& t : tensors)  // a view assembled by hand, without the index
    if (t.name == name) return &t;
  return nullptr;
}

std::string ModelFileView::HashHex() const { return HexLower(content_hash); }

// One pass over the file in its own order (header, config, tensor table, tokenizer, data), each
// check next to the field it guards: kept whole (~150 lines) so the format can be read against
// docs/model-format.md top to bottom.
absl::StatusOr<ModelFileView> ParseModelFile(absl::Span<const uint8_t> bytes) {
  const uint64_t size = bytes.size();
  if (size < sizeof(FileHeader)) {
    if (size >= sizeof(kModelMagic) &&
        std::memcmp(bytes.data(), kModelMagic, sizeof(kModelMagic)) != 0) {
      return absl::InvalidArgumentError("wrong magic: not a selfcond model file");
    }
    return absl::DataLossError(
        absl::StrCat("truncated: file has ", size, " bytes, less than the 256-byte header"));
  }
  // The loader reads F32/I32 tensors in place: the image must be at least 4-byte aligned
  // (mmap and heap buffers are).
  if (reinterpret_cast<uintptr_t>(bytes.data()) % 4 != 0) {
    return absl::InvalidArgumentError("model file image is not 4-byte aligned in memory");
  }
  FileHeader h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (std::memcmp(h.magic, kModelMagic, sizeof(kModelMagic)) != 0) {
    return absl::InvalidArgumentError("wrong magic: not a selfcond model file");
  }
  if (h.version != kModelVersion && h.version != kModelVersionGpt2) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported model file version ", h.version,
                                                   " (this build reads ", kModelVersionGpt2,
                                                   " and ", kModelVersion, ")"));
  }
  if (h.header_bytes != sizeof(FileHeader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header_bytes is ", h.header_bytes, ", expected ", sizeof(FileHeader)));
  }
  if (h.file_bytes != size) {
    if (h.file_bytes > size) {
      return absl::DataLossError(
          absl::StrCat("truncated: header says ", h.file_bytes, " bytes, file has ", size));
    }
    return absl::DataLossError(absl::StrCat("file has ", size, " bytes but header says ",
                                            h.file_bytes, " (trailing data)"));
  }
  const ModelConfig config = LoadConfig(h);
  if (h.version == kModelVersion && config.arch == Arch::kGpt2) {
    return absl::InvalidArgumentError("a version-2 header must name a non-GPT-2 architecture");
  }
  for (uint8_t b : h.reserved) {
    if (b != 0) return absl::InvalidArgumentError("reserved header bytes are not zero");
  }
  if (h.version == kModelVersionGpt2) {
    const uint8_t* v2 = reinterpret_cast<const uint8_t*>(&h.config2);
    for (size_t i = 0; i < sizeof(h.config2); ++i) {
      if (v2[i] != 0) return absl::InvalidArgumentError("reserved header bytes are not zero");
    }
  }
  if (absl::Status s = ValidateModelConfig(config); !s.ok()) return s;

  ModelFileView view;
  view.config = config;
  std::memcpy(view.content_hash, h.content_hash, sizeof(view.content_hash));
  const char* name_end =
      static_cast<const char*>(std::memchr(h.model_name, '\0', sizeof(h.model_name)));
  if (name_end == nullptr) return absl::InvalidArgumentError("model_name is not NUL-terminated");
  view.model_name.assign(h.model_name, name_end - h.model_name);

  // Sections: [begin, end) ranges that must lie in the file and not overlap.
  struct Range {
    uint64_t begin, end;
    std::string what;
  };
  std::vector<Range> ranges;
  ranges.push_back({0, sizeof(FileHeader), "header"});
  if (h.n_tensors > kMaxTensors) {
    return absl::InvalidArgumentError(absl::StrCat("n_tensors ", h.n_tensors, " is absurd"));
  }
  const uint64_t index_bytes = uint64_t{h.n_tensors} * sizeof(TensorEntry);
  if (h.tensor_index_offset > size || index_bytes > size - h.tensor_index_offset) {
    return absl::DataLossError(absl::StrCat("tensor index [", h.tensor_index_offset, ", +",
                                            index_bytes, ") past end of file (size ", size, ")"));
  }
  if (h.tensor_index_offset % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor index offset ", h.tensor_index_offset, " is not 8-byte aligned"));
  }
  ranges.push_back({h.tensor_index_offset, h.tensor_index_offset + index_bytes, "tensor index"});
  if (h.tokenizer_offset > size || h.tokenizer_bytes > size - h.tokenizer_offset) {
    return absl::DataLossError(absl::StrCat("tokenizer section [", h.tokenizer_offset, ", +",
                                            h.tokenizer_bytes, ") past end of file (size ", size,
                                            ")"));
  }
  ranges.push_back({h.tokenizer_offset, h.tokenizer_offset + h.tokenizer_bytes, "tokenizer"});
  view.tokenizer_blob = bytes.subspan(h.tokenizer_offset, h.tokenizer_bytes);

  view.tensors.reserve(h.n_tensors);
  view.index.reserve(h.n_tensors);
  for (uint32_t i = 0; i < h.n_tensors; ++i) {
    TensorEntry e;
    std::memcpy(&e, bytes.data() + h.tensor_index_offset + uint64_t{i} * sizeof(TensorEntry),
                sizeof(e));
    const char* end = static_cast<const char*>(std::memchr(e.name, '\0', sizeof(e.name)));
    if (end == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor #", i, ": name is not NUL-terminated"));
    }
    TensorView t;
    t.name.assign(e.name, end - e.name);
    if (t.name.empty())
      return absl::InvalidArgumentError(absl::StrCat("tensor #", i, ": empty name"));
    const std::string tw = absl::StrCat("tensor '", t.name, "'");
    if (!view.index.emplace(t.name, view.tensors.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate ", tw));
    }
    if (e.dtype > static_cast<uint32_t>(DType::kBF16)) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": unknown dtype ", e.dtype));
    }
    t.dtype = static_cast<DType>(e.dtype);
    if (e.ndim != 1 && e.ndim != 2) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": ndim ", e.ndim, " (must be 1 or 2)"));
    }
    t.shape.assign(e.shape, e.shape + e.ndim);
    auto nb = TensorNBytes(t.dtype, t.shape);
    if (!nb.ok()) return absl::InvalidArgumentError(absl::StrCat(tw, ": ", nb.status().message()));
    if (*nb != e.nbytes) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": nbytes ", e.nbytes, " but ",
                                                     DTypeName(t.dtype), " shape needs ", *nb));
    }
    if (e.offset % kTensorAlign != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": offset ", e.offset, " is not ", kTensorAlign, "-byte aligned"));
    }
    if (e.offset > size || e.nbytes > size - e.offset) {
      return absl::DataLossError(absl::StrCat(tw, ": data [", e.offset, ", +", e.nbytes,
                                              ") past end of file (size ", size, ")"));
    }
    t.data = bytes.data() + e.offset;
    t.nbytes = e.nbytes;
    ranges.push_back({e.offset, e.offset + e.nbytes, tw});
    view.tensors.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin == ranges[i].end) continue;
    // Compare against the furthest end seen so far among non-empty ranges.
    for (size_t j = i; j-- > 0;) {
      if (ranges[j].begin == ranges[j].end) continue;
      if (ranges[i].begin < ranges[j].end) {
        return absl::InvalidArgumentError(
            absl::StrCat(ranges[j].what, " and ", ranges[i].what, " overlap"));
      }
      break;
    }
  }
  return view;
}

absl::Status VerifyContentHash(absl::Span<const uint8_t> bytes,
                               const std::function<void(const uint8_t*, size_t)>& hashed) {
  if (bytes.size() < sizeof(FileHeader)) {
    return absl::DataLossError("truncated: no room for the header and its content hash");
  }
  Sha256 sha;
  static constexpr uint8_t kZeros[32] = {};
  sha.Update(bytes.data(), kHashOffset);
  sha.Update(kZeros, sizeof(kZeros));
  // In chunks, so that a caller can let each chunk's pages go once hashed (a mapped file would
  // otherwise be resident whole, next to the weights packed from it).
  static constexpr size_t kChunk = size_t{4} << 20;
  for (size_t at = kHashOffset + sizeof(kZeros); at < bytes.size(); at += kChunk) {
    const size_t n = std::min(kChunk, bytes.size() - at);
    sha.Update(bytes.subspan(at, n));
    if (hashed) hashed(bytes.data() + at, n);
  }
  const Sha256::Digest got = sha.Final();
  absl::Span<const uint8_t> want = bytes.subspan(kHashOffset, 32);
  if (!std::equal(got.begin(), got.end(), want.begin())) {
    return absl::DataLossError(absl::StrCat("content hash mismatch: header says ", HexLower(want),
                                            ", contents hash to ", HexLower(got),
                                            " (file corrupted or modified)"));
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(const TensorView& t) {
  if (t.dtype != DType::kF32) return absl::OkStatus();
  const uint64_t n = t.nbytes / 4;
  for (uint64_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, t.data + 4 * i, 4);
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' has a non-finite value (%g) at element %d", t.name, v, i));
    }
  }
  return absl::OkStatus();
}

}  // namespace selfcond
