#include "formats/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "formats/torch_checkpoint.h"
#include "util/json.h"

namespace selfcond {
namespace {

// The official implementation refuses headers above 100 MB; a GPT-2-xl header is ~60 KB.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
// Bound on element counts so numel * dtype size cannot overflow uint64.
constexpr uint64_t kMaxNumel = uint64_t{1} << 56;

struct DTypeInfo {
  const char* name;
  StDType type;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"BOOL", StDType::kBool, 1}, {"U8", StDType::kU8, 1},          {"I8", StDType::kI8, 1},
    {"I16", StDType::kI16, 2},   {"U16", StDType::kU16, 2},        {"F16", StDType::kF16, 2},
    {"BF16", StDType::kBF16, 2}, {"I32", StDType::kI32, 4},        {"U32", StDType::kU32, 4},
    {"F32", StDType::kF32, 4},   {"F64", StDType::kF64, 8},        {"I64", StDType::kI64, 8},
    {"U64", StDType::kU64, 8},   {"F8_E4M3", StDType::kF8E4M3, 1}, {"F8_E5M2", StDType::kF8E5M2, 1},
};

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::string ShapeStr(const std::vector<uint64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A JSON number that is a non-negative integer exactly representable in a double.
bool AsU64(const json::Value& v, uint64_t* out) {
  if (!v.is_number()) return false;
  double d = v.as_number();
  if (!(d >= 0 && d <= 9007199254740992.0) || std::floor(d) != d) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace

const char* StDTypeName(StDType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

size_t StDTypeSize(StDType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.size;
  return 0;
}

uint64_t StTensor::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // bounded by kMaxNumel at parse time
  return n;
}

// ---- half / bfloat16 ----------------------------------------------------------

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // inf / NaN (payload kept)
  return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // inf or NaN (NaN forced quiet so it cannot become inf)
    return sign | (a > 0x7f800000u ? static_cast<uint16_t>(0x7e00 | ((a >> 13) & 0x3ff)) : 0x7c00);
  }
  if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  if (a >= 0x38800000u) {                      // normal half (>= 2^-14)
    uint32_t h = (a - (112u << 23)) >> 13;
    uint32_t rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // carry into exponent is correct
    return sign | static_cast<uint16_t>(h);
  }
  const uint32_t e = a >> 23;
  if (e < 102) return sign;  // < 2^-25 (ties at 2^-25 go to even = 0)
  const uint32_t m = (a & 0x7fffff) | 0x800000;
  const uint32_t shift = 126 - e;  // 14..24
  uint32_t h = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float BF16ToFloat(uint16_t b) { return BitsFloat(uint32_t{b} << 16); }

uint16_t FloatToBF16(float f) {
  uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

// ---- one file ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto mapped = MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->mapped_ = std::move(*mapped);
  absl::Status s = f->Parse(f->mapped_.bytes(), path);
  if (!s.ok()) return s;
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    absl::Span<const uint8_t> bytes, const std::string& label) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  absl::Status s = f->Parse(bytes, label);
  if (!s.ok()) return s;
  return f;
}

// The safetensors layout in order (length, JSON header, each entry's dtype, shape and offsets,
// then coverage of the data): kept whole (~120 lines) so every bound check sits next to the field
// it bounds.
absl::Status SafetensorsFile::Parse(absl::Span<const uint8_t> bytes, const std::string& label) {
  const std::string where = absl::StrCat("safetensors file '", label, "'");
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is truncated: ", bytes.size(),
                                                   " bytes, the header length alone needs 8"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  const uint64_t avail = bytes.size() - 8;
  if (header_len > avail) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": header length ", header_len,
                                                   " past end of file (size ", bytes.size(), ")"));
  }
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header length ", header_len, " exceeds the 100 MB limit"));
  }
  std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), header_len);
  auto header = json::Parse(text);
  if (!header.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header is not valid JSON: ", header.status().message()));
  }
  if (!header->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": header is not a JSON object"));
  }
  const uint8_t* data = bytes.data() + 8 + header_len;
  const uint64_t data_size = avail - header_len;

  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  std::vector<StTensor> tensors;
  std::set<std::string> seen;
  for (const auto& [name_view, spec] : header->members()) {
    const std::string name(name_view);
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate tensor '", name, "'"));
    }
    if (name == "__metadata__") continue;  // free-form string map: ignored
    const std::string tw = absl::StrCat(where, ", tensor '", name, "'");
    if (!spec.is_object()) return absl::InvalidArgumentError(absl::StrCat(tw, ": not an object"));
    const json::Value* dtype = spec.Find("dtype");
    const json::Value* shape = spec.Find("shape");
    const json::Value* offsets = spec.Find("data_offsets");
    if (dtype == nullptr || !dtype->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": missing or non-string \"dtype\""));
    }
    if (shape == nullptr || !shape->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": missing or non-array \"shape\""));
    }
    if (offsets == nullptr || !offsets->is_array() || offsets->items().size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": \"data_offsets\" must be an array [begin, end]"));
    }
    StTensor t;
    t.name = name;
    t.file = label;
    const DTypeInfo* info = nullptr;
    for (const auto& d : kDTypes)
      if (dtype->as_string() == d.name) info = &d;
    if (info == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": unknown dtype '", std::string(dtype->as_string()), "'"));
    }
    t.dtype = info->type;
    uint64_t numel = 1;
    for (const json::Value& d : shape->items()) {
      uint64_t dim;
      if (!AsU64(d, &dim)) {
        return absl::InvalidArgumentError(
            absl::StrCat(tw, ": shape entries must be non-negative integers"));
      }
      t.shape.push_back(dim);
      if (dim != 0 && numel > kMaxNumel / dim) {
        return absl::InvalidArgumentError(
            absl::StrCat(tw, ": shape ", ShapeStr(t.shape), " is too large"));
      }
      numel *= dim;
    }
    uint64_t begin, end;
    if (!AsU64(offsets->items()[0], &begin) || !AsU64(offsets->items()[1], &end) || end < begin) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": data_offsets must be non-negative integers with begin <= end"));
    }
    if (end > data_size) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": data_offsets end ", end,
                                                     " past end of data (", data_size,
                                                     " bytes after the header)"));
    }
    const uint64_t need = numel * info->size;
    if (end - begin != need) {
      return absl::InvalidArgumentError(absl::StrCat(
          tw, ": data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes but shape ",
          ShapeStr(t.shape), " of ", info->name, " needs ", need));
    }
    t.data = absl::Span<const uint8_t>(data + begin, need);
    ranges.push_back({begin, end, tensors.size()});
    tensors.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t prev_end = 0;
  size_t prev = SIZE_MAX;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;  // empty tensors occupy nothing
    if (prev != SIZE_MAX && r.begin < prev_end) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": tensors '", tensors[prev].name, "' and '", tensors[r.index].name, "' overlap"));
    }
    prev_end = r.end;
    prev = r.index;
  }
  tensors_.reserve(tensors.size());
  for (const Range& r : ranges) tensors_.push_back(std::move(tensors[r.index]));
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].name] = i;
  return absl::OkStatus();
}

const StTensor* SafetensorsFile::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

// ---- checkpoint directory --------------------------------------------------------

SafetensorsCheckpoint::SafetensorsCheckpoint() = default;
SafetensorsCheckpoint::~SafetensorsCheckpoint() = default;

absl::Status SafetensorsCheckpoint::OpenIndex(const std::string& dir, const std::string& index_path,
                                              bool torch) {
  namespace fs = std::filesystem;
  auto text = ReadFile(index_path);
  if (!text.ok()) return text.status();
  auto index = json::Parse(*text);
  if (!index.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", index_path, "' is not valid JSON: ", index.status().message()));
  }
  const json::Value* map = index->Find("weight_map");
  if (map == nullptr || !map->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", index_path, "' has no \"weight_map\" object"));
  }
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [name_view, file] : map->members()) {
    const std::string name(name_view);
    if (!file.is_string() || file.as_string().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", index_path, "': weight_map entry '", name, "' is not a file name"));
    }
    const std::string fname(file.as_string());
    // Shards live beside the index: refuse paths that would escape the directory.
    if (fname.find('/') != std::string::npos || fname.find('\\') != std::string::npos ||
        fname == "." || fname == "..") {
      return absl::InvalidArgumentError(absl::StrCat("'", index_path, "': shard name '", fname,
                                                     "' for tensor '", name,
                                                     "' must be a plain file name"));
    }
    auto it = shard_of_file.find(fname);
    if (it == shard_of_file.end()) {
      const std::string path = (fs::path(dir) / fname).string();
      if (torch) {
        auto shard = TorchCheckpointFile::Open(path);
        if (!shard.ok()) return shard.status();
        it = shard_of_file.emplace(fname, torch_shards_.size()).first;
        torch_shards_.push_back(std::move(*shard));
      } else {
        auto shard = SafetensorsFile::Open(path);
        if (!shard.ok()) return shard.status();
        it = shard_of_file.emplace(fname, shards_.size()).first;
        shards_.push_back(std::move(*shard));
      }
    }
    const StTensor* t =
        torch ? torch_shards_[it->second]->Find(name) : shards_[it->second]->Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is listed in '",
                                                     index_path, "' for shard '", fname,
                                                     "' but that file does not contain it"));
    }
    if (!by_name_.emplace(name, t).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", index_path, "': duplicate tensor '", name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(
    const std::string& dir) {
  namespace fs = std::filesystem;
  auto ckpt = std::make_unique<SafetensorsCheckpoint>();
  auto in_dir = [&](const char* name) { return (fs::path(dir) / name).string(); };
  const std::string index_path = in_dir("model.safetensors.index.json");
  const std::string single_path = in_dir("model.safetensors");
  const std::string bin_index_path = in_dir("pytorch_model.bin.index.json");
  const std::string bin_path = in_dir("pytorch_model.bin");
  std::error_code ec;
  // Safetensors first (like transformers); PyTorch checkpoints only when there is none.
  if (fs::exists(index_path, ec)) {
    absl::Status s = ckpt->OpenIndex(dir, index_path, /*torch=*/false);
    if (!s.ok()) return s;
    return ckpt;
  }
  if (fs::exists(single_path, ec)) {
    auto f = SafetensorsFile::Open(single_path);
    if (!f.ok()) return f.status();
    ckpt->shards_.push_back(std::move(*f));
    for (const StTensor& t : ckpt->shards_[0]->tensors()) ckpt->by_name_[t.name] = &t;
    return ckpt;
  }
  if (fs::exists(bin_index_path, ec)) {
    absl::Status s = ckpt->OpenIndex(dir, bin_index_path, /*torch=*/true);
    if (!s.ok()) return s;
    return ckpt;
  }
  if (fs::exists(bin_path, ec)) {
    auto f = TorchCheckpointFile::Open(bin_path);
    if (!f.ok()) return f.status();
    ckpt->torch_shards_.push_back(std::move(*f));
    for (const StTensor& t : ckpt->torch_shards_[0]->tensors()) ckpt->by_name_[t.name] = &t;
    return ckpt;
  }
  return absl::NotFoundError(
      absl::StrCat("no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                   "pytorch_model.bin.index.json in '",
                   dir, "'"));
}

const StTensor* SafetensorsCheckpoint::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsCheckpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) names.push_back(name);
  return names;
}

// ---- conversion ------------------------------------------------------------------

absl::Status ToFloat(const StTensor& t, float* out) {
  const uint64_t n = t.numel();
  const uint8_t* p = t.data.data();
  // Little-endian hosts only (x86, ARM, WASM): the file's byte order is the host's.
  switch (t.dtype) {
    case StDType::kF32:
      if (n) std::memcpy(out, p, n * 4);
      return absl::OkStatus();
    case StDType::kF16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      return absl::OkStatus();
    case StDType::kBF16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = BF16ToFloat(h);
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' in '", t.file,
                                                     "' has dtype ", StDTypeName(t.dtype),
                                                     "; only F32, F16 and BF16 are supported"));
  }
}

absl::StatusOr<std::vector<float>> ToFloat(const StTensor& t) {
  std::vector<float> out;
  if (t.dtype != StDType::kF32 && t.dtype != StDType::kF16 && t.dtype != StDType::kBF16) {
    absl::Status s = ToFloat(t, nullptr);
    return s;
  }
  out.resize(t.numel());
  absl::Status s = ToFloat(t, out.data());
  if (!s.ok()) return s;
  return out;
}

}  // namespace selfcond
