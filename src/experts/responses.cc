#include "experts/responses.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/units.h"

namespace selfcond {
namespace {

constexpr char kMagic[8] = {'S', 'C', 'R', 'E', 'S', 'P', '\0', '\1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 128;
constexpr size_t kAlign = 64;
// Bounds a file's header must respect before anything is sized from it.
constexpr uint64_t kMaxSentences = uint64_t{1} << 26;
constexpr uint64_t kMaxUnits = uint64_t{1} << 26;

// The header, field by field (written and read with memcpy at these offsets).
struct Header {
  uint32_t version = kVersion;
  uint32_t precision = 0;  // 0 int8, 1 f32
  uint64_t num_sentences = 0;
  uint64_t num_units = 0;
  uint64_t text_bytes = 0;        // the sentences' bytes (after lengths and flags)
  uint64_t responses_offset = 0;  // multiple of 64
  char model_hash[64] = {};       // hex
};

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

void PutHeader(const Header& h, uint8_t* out) {
  std::memset(out, 0, kHeaderBytes);
  std::memcpy(out, kMagic, 8);
  std::memcpy(out + 8, &h.version, 4);
  std::memcpy(out + 12, &h.precision, 4);
  std::memcpy(out + 16, &h.num_sentences, 8);
  std::memcpy(out + 24, &h.num_units, 8);
  std::memcpy(out + 32, &h.text_bytes, 8);
  std::memcpy(out + 40, &h.responses_offset, 8);
  std::memcpy(out + 48, h.model_hash, 64);
}

Header GetHeader(const uint8_t* in) {
  Header h;
  std::memcpy(&h.version, in + 8, 4);
  std::memcpy(&h.precision, in + 12, 4);
  std::memcpy(&h.num_sentences, in + 16, 8);
  std::memcpy(&h.num_units, in + 24, 8);
  std::memcpy(&h.text_bytes, in + 32, 8);
  std::memcpy(&h.responses_offset, in + 40, 8);
  std::memcpy(h.model_hash, in + 48, 64);
  return h;
}

}  // namespace

void ResponseStore::BuildIndex() {
  index_ = std::make_unique<std::unordered_map<std::string_view, int64_t>>();
  index_->reserve(sentences_.size());
  for (size_t i = 0; i < sentences_.size(); ++i) index_->emplace(sentences_[i], i);
}

int64_t ResponseStore::Find(std::string_view sentence) const {
  auto it = index_->find(sentence);
  return it == index_->end() ? -1 : it->second;
}

absl::StatusOr<ResponseStore> ResponseStore::Compute(const Model& model,
                                                     const std::vector<std::string>& sentences,
                                                     const RankOptions& opts) {
  // Distinct sentences, in order of first appearance.
  std::vector<std::string> distinct;
  {
    std::unordered_set<std::string_view> seen;
    for (const std::string& s : sentences)
      if (seen.insert(s).second) distinct.push_back(s);
  }
  RankOptions ro = opts;
  ro.max_sentences = 0;  // applies to a dataset's classes, not to this flat list
  auto pooled = ComputeUnlabeledResponses(model, distinct, ro);
  if (!pooled.ok()) return pooled.status();
  ResponseStore st;
  st.model_hash_ = model.hash_hex();
  st.precision_ = opts.precision;
  st.num_units_ = pooled->num_units;
  st.text_ = std::make_unique<std::string>();
  size_t total = 0;
  for (const auto& s : distinct) total += s.size();
  st.text_->reserve(total);
  for (const auto& s : distinct) st.text_->append(s);
  size_t at = 0;
  for (const auto& s : distinct) {
    st.sentences_.emplace_back(st.text_->data() + at, s.size());
    at += s.size();
  }
  st.truncated_ = std::move(pooled->truncated);
  st.owned_rows_ = std::make_unique<std::vector<float>>(std::move(pooled->responses));
  st.rows_ = st.owned_rows_->data();
  st.BuildIndex();
  return st;
}

absl::Status ResponseStore::Save(const std::string& path) const {
  Header h;
  h.precision = precision_ == Precision::kF32 ? 1 : 0;
  h.num_sentences = sentences_.size();
  h.num_units = static_cast<uint64_t>(num_units_);
  for (std::string_view s : sentences_) h.text_bytes += s.size();
  const size_t meta = kHeaderBytes + 5 * sentences_.size() + h.text_bytes;
  h.responses_offset = AlignUp(meta);
  std::memcpy(h.model_hash, model_hash_.data(), std::min<size_t>(64, model_hash_.size()));
  auto out = AtomicOutputFile::Create(path);
  if (!out.ok()) return out.status();
  uint8_t head[kHeaderBytes];
  PutHeader(h, head);
  if (auto s = (*out)->Write(head, sizeof(head)); !s.ok()) return s;
  std::vector<uint32_t> lengths;
  for (std::string_view s : sentences_) lengths.push_back(static_cast<uint32_t>(s.size()));
  if (auto s = (*out)->Write(lengths.data(), lengths.size() * 4); !s.ok()) return s;
  if (auto s = (*out)->Write(truncated_.data(), truncated_.size()); !s.ok()) return s;
  for (std::string_view t : sentences_) {
    if (auto s = (*out)->Write(t.data(), t.size()); !s.ok()) return s;
  }
  const std::vector<uint8_t> pad(h.responses_offset - meta, 0);
  if (auto s = (*out)->Write(pad.data(), pad.size()); !s.ok()) return s;
  if (auto s = (*out)->Write(rows_, sizeof(float) * sentences_.size() * num_units_); !s.ok())
    return s;
  return (*out)->Commit();
}

absl::StatusOr<ResponseStore> ResponseStore::Load(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return FromFile(std::move(*file), path);
}

absl::StatusOr<ResponseStore> ResponseStore::FromBuffer(HeapBuffer bytes, const std::string& name) {
  return FromFile(MappedFile::FromBuffer(std::move(bytes)), name);
}

absl::StatusOr<ResponseStore> ResponseStore::FromFile(MappedFile file, const std::string& path) {
  const absl::Span<const uint8_t> b = file.bytes();
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("responses file '", path, "': ", what));
  };
  if (b.size() < 8 || std::memcmp(b.data(), kMagic, 8) != 0) {
    return bad("not a selfcond responses file (no SCRESP header)");
  }
  if (b.size() < kHeaderBytes) {
    return bad(
        absl::StrCat("truncated: ", b.size(), " bytes, the header alone needs ", kHeaderBytes));
  }
  for (size_t i = 112; i < kHeaderBytes; ++i) {  // after the model hash: reserved, zero
    if (b[i] != 0) return bad(absl::StrCat("reserved header byte ", i, " is not zero"));
  }
  const Header h = GetHeader(b.data());
  if (h.version != kVersion) return bad(absl::StrCat("version ", h.version, " (expected 1)"));
  if (h.precision > 1) return bad(absl::StrCat("unknown precision ", h.precision));
  if (h.num_sentences == 0 || h.num_sentences > kMaxSentences || h.num_units == 0 ||
      h.num_units > kMaxUnits) {
    return bad(
        absl::StrCat(h.num_sentences, " sentences x ", h.num_units, " units is out of range"));
  }
  // Every size is checked against the file before it is used (all products fit in 64 bits:
  // each factor is below 2^26).
  const uint64_t meta = kHeaderBytes + 5 * h.num_sentences + h.text_bytes;
  if (h.text_bytes > b.size() || meta > b.size() || h.responses_offset != AlignUp(meta) ||
      h.responses_offset + 4 * h.num_sentences * h.num_units != b.size()) {
    return bad(absl::StrCat("sizes do not add up to the file's ", b.size(),
                            " bytes (truncated or corrupt)"));
  }
  ResponseStore st;
  st.model_hash_.assign(h.model_hash, 64);
  for (char c : st.model_hash_) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return bad("invalid model hash");
  }
  st.precision_ = h.precision == 1 ? Precision::kF32 : Precision::kInt8;
  st.num_units_ = static_cast<int64_t>(h.num_units);
  const uint8_t* lengths = b.data() + kHeaderBytes;
  const uint8_t* flags = lengths + 4 * h.num_sentences;
  const char* text = reinterpret_cast<const char*>(flags + h.num_sentences);
  uint64_t at = 0;
  st.sentences_.reserve(h.num_sentences);
  for (uint64_t i = 0; i < h.num_sentences; ++i) {
    uint32_t n;
    std::memcpy(&n, lengths + 4 * i, 4);
    if (n == 0 || n > h.text_bytes - at) return bad(absl::StrCat("sentence ", i, ": bad length"));
    std::string_view s(text + at, n);
    if (FindInvalidUtf8(s) >= 0) return bad(absl::StrCat("sentence ", i, " is not valid UTF-8"));
    st.sentences_.push_back(s);
    at += n;
  }
  if (at != h.text_bytes) return bad("sentence lengths do not add up to the text's size");
  st.truncated_.assign(flags, flags + h.num_sentences);
  st.BuildIndex();
  if (st.index_->size() != st.sentences_.size()) return bad("a sentence is stored twice");
  st.rows_ = reinterpret_cast<const float*>(b.data() + h.responses_offset);
  st.file_ = std::make_unique<MappedFile>(std::move(file));
  return st;
}

absl::StatusOr<ExpertTable> ResponseStore::Rank(const Model& model, const Dataset& dataset,
                                                const RankOptions& opts) const {
  if (!absl::EqualsIgnoreCase(model_hash_, model.hash_hex())) {
    return absl::FailedPreconditionError(
        absl::StrCat("stored responses were computed on another model (sha256 ", model_hash_,
                     "); this model is '", model.name(), "' (sha256 ", model.hash_hex(), ")"));
  }
  if (precision_ != opts.precision) {
    return absl::FailedPreconditionError(absl::StrCat(
        "stored responses were computed in ", precision_ == Precision::kF32 ? "f32" : "int8",
        "; asked for ", opts.precision == Precision::kF32 ? "f32" : "int8"));
  }
  if (opts.compat.enabled) {
    return absl::InvalidArgumentError(
        "stored responses are pooled over each sentence's own tokens: the ml-selfcond mode "
        "(padded pooling) must run the model");
  }
  if (num_units_ != UnitSpace(model.config()).num_units()) {
    return absl::FailedPreconditionError("stored responses do not match the model's units");
  }
  Dataset ds = dataset;
  KeepFirst(&ds, opts.max_sentences);
  if (absl::Status valid = ValidateDataset(ds); !valid.ok()) return valid;
  const size_t n = ds.positive.size() + ds.negative.size();
  std::vector<float> responses(n * static_cast<size_t>(num_units_));
  int missing = 0, truncated = 0;
  std::string first_missing;
  for (size_t i = 0; i < n; ++i) {
    const std::string& s =
        i < ds.positive.size() ? ds.positive[i] : ds.negative[i - ds.positive.size()];
    const int64_t r = Find(s);
    if (r < 0) {
      if (missing++ == 0) first_missing = s;
      continue;
    }
    truncated += truncated_[r];
    std::memcpy(responses.data() + i * num_units_, row(r), sizeof(float) * num_units_);
  }
  if (missing > 0) {
    return absl::NotFoundError(
        absl::StrCat(missing, " of ", n, " sentences of concept '", ds.concept,
                     "' are not in the stored responses (first: \"", first_missing.substr(0, 80),
                     "\"); compute them with `selfcond responses`"));
  }
  std::unique_ptr<ThreadPool> own;
  ThreadPool* pool = opts.pool;
  if (pool == nullptr && opts.threads != 1) {
    own = std::make_unique<ThreadPool>(opts.threads);
    pool = own.get();
  }
  return ExpertTableFromResponses(model, ds, responses, truncated, opts, pool);
}

absl::StatusOr<std::vector<ExpertTable>> RankConcepts(const Model& model,
                                                      const std::vector<Dataset>& datasets,
                                                      const RankOptions& opts) {
  if (opts.compat.enabled) {
    // Each concept draws its own subset and drops its own long sentences: one ranking each.
    std::vector<ExpertTable> tables;
    for (const Dataset& d : datasets) {
      auto t = RankConcept(model, d, opts);
      if (!t.ok()) {
        return absl::Status(t.status().code(),
                            absl::StrCat("concept '", d.concept, "': ", t.status().message()));
      }
      tables.push_back(std::move(*t));
    }
    return tables;
  }
  std::vector<std::string> all;
  for (Dataset d : datasets) {
    KeepFirst(&d, opts.max_sentences);
    all.insert(all.end(), d.positive.begin(), d.positive.end());
    all.insert(all.end(), d.negative.begin(), d.negative.end());
  }
  for (const Dataset& d : datasets) {
    if (absl::Status valid = ValidateDataset(d); !valid.ok()) {
      return absl::Status(valid.code(),
                          absl::StrCat("concept '", d.concept, "': ", valid.message()));
    }
  }
  std::unique_ptr<ThreadPool> own;
  RankOptions ro = opts;
  if (ro.pool == nullptr && ro.threads != 1) {
    own = std::make_unique<ThreadPool>(ro.threads);
    ro.pool = own.get();
  }
  auto store = ResponseStore::Compute(model, all, ro);
  if (!store.ok()) return store.status();
  std::vector<ExpertTable> tables;
  for (const Dataset& d : datasets) {
    auto t = store->Rank(model, d, ro);
    if (!t.ok()) return t.status();
    tables.push_back(std::move(*t));
  }
  return tables;
}

}  // namespace selfcond
