#include "formats/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace selfcond {
namespace {

// Bounds on what a pickle may build. A state dict needs ~15 objects and ~8 memo entries per
// tensor, a MARK nesting of 3 and tensors of rank <= 8: these leave two orders of magnitude.
constexpr size_t kMaxObjects = size_t{1} << 21;
constexpr size_t kMaxMemo = size_t{1} << 20;
constexpr size_t kMaxStack = size_t{1} << 20;
constexpr size_t kMaxMarks = 4096;
constexpr size_t kMaxGlobalName = 256;
constexpr size_t kMaxRank = 64;
constexpr size_t kMaxZipEntries = size_t{1} << 20;
constexpr uint64_t kMaxNumel = uint64_t{1} << 56;

inline uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
inline uint64_t Le64(const uint8_t* p) { return Le32(p) | (uint64_t{Le32(p + 4)} << 32); }

uint32_t Crc32(absl::Span<const uint8_t> b) {
  static const auto* table = [] {
    auto* t = new uint32_t[256];
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (uint8_t x : b) c = table[(c ^ x) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 80)) {
    if (c >= 0x20 && c < 0x7f) {
      out += c;
    } else {
      out += absl::StrFormat("\\x%02x", static_cast<unsigned char>(c));
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}

// ---- ZIP ---------------------------------------------------------------------------------------

struct ZipEntry {
  std::string name;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t data_offset = 0;  // of the (possibly compressed) data
  uint64_t size = 0;         // compressed size (== uncompressed for STORED)
};

// Reads the central directory: every entry's local header and data must lie inside the file,
// before the central directory, without overlapping another entry.
absl::StatusOr<std::vector<ZipEntry>> ReadZip(absl::Span<const uint8_t> b, const std::string& w) {
  const uint64_t n = b.size();
  auto err = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(w, ": ", parts...));
  };
  // End of central directory: 22 bytes + a comment that must reach exactly the end of the file.
  uint64_t eocd = UINT64_MAX;
  if (n >= 22) {
    const uint64_t lowest = n - 22 > 65535 ? n - 22 - 65535 : 0;
    for (uint64_t i = n - 22 + 1; i-- > lowest;) {
      if (Le32(b.data() + i) == 0x06054b50 && i + 22 + Le16(b.data() + i + 20) == n) {
        eocd = i;
        break;
      }
    }
  }
  if (eocd == UINT64_MAX) {
    return err("not a complete zip archive (no end-of-central-directory record; truncated?)");
  }
  const uint8_t* e = b.data() + eocd;
  uint64_t disk = Le16(e + 4), cd_disk = Le16(e + 6), n_disk = Le16(e + 8), n_total = Le16(e + 10);
  uint64_t cd_size = Le32(e + 12), cd_off = Le32(e + 16);
  uint64_t cd_limit = eocd;  // the central directory ends before this
  if (n_disk == 0xffff || n_total == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
    if (eocd < 20 || Le32(b.data() + eocd - 20) != 0x07064b50) {
      return err("zip end record has ZIP64 markers but no ZIP64 locator");
    }
    const uint8_t* loc = b.data() + eocd - 20;
    const uint64_t z_off = Le64(loc + 8);
    if (Le32(loc + 4) != 0 || Le32(loc + 16) != 1)
      return err("multi-disk zip archives are not supported");
    if (z_off > eocd - 20 || eocd - 20 - z_off < 56 || Le32(b.data() + z_off) != 0x06064b50) {
      return err("ZIP64 end of central directory record at offset ", z_off, " is invalid");
    }
    const uint8_t* z = b.data() + z_off;
    disk = Le32(z + 16);
    cd_disk = Le32(z + 20);
    n_disk = Le64(z + 24);
    n_total = Le64(z + 32);
    cd_size = Le64(z + 40);
    cd_off = Le64(z + 48);
    cd_limit = z_off;
  }
  if (disk != 0 || cd_disk != 0 || n_disk != n_total) {
    return err("multi-disk zip archives are not supported");
  }
  if (cd_off > cd_limit || cd_size > cd_limit - cd_off) {
    return err("zip central directory (offset ", cd_off, ", size ", cd_size,
               ") lies outside the file (size ", n, ")");
  }
  if (n_total > cd_size / 46 || n_total > kMaxZipEntries) {
    return err("zip central directory of ", cd_size, " bytes cannot hold ", n_total, " entries");
  }
  std::vector<ZipEntry> entries;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [local header, end of data)
  std::set<std::string> names;
  uint64_t pos = cd_off;
  const uint64_t cd_end = cd_off + cd_size;
  for (uint64_t k = 0; k < n_total; ++k) {
    if (cd_end - pos < 46 || Le32(b.data() + pos) != 0x02014b50) {
      return err("zip central directory entry ", k, " at offset ", pos, " is invalid");
    }
    const uint8_t* c = b.data() + pos;
    const uint16_t flags = Le16(c + 8), method = Le16(c + 10);
    const uint32_t crc = Le32(c + 16);
    uint64_t csize = Le32(c + 20), usize = Le32(c + 24);
    const uint16_t name_len = Le16(c + 28), extra_len = Le16(c + 30), comment_len = Le16(c + 32);
    uint64_t disk_start = Le16(c + 34), local = Le32(c + 42);
    if (cd_end - pos - 46 < uint64_t{name_len} + extra_len + comment_len) {
      return err("zip central directory entry ", k, " runs past the directory");
    }
    ZipEntry ent;
    ent.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
    const std::string en = absl::StrCat("zip entry '", Printable(ent.name), "'");
    // ZIP64 extended information: the 64-bit values of the fields saturated above, in order.
    const uint8_t* x = c + 46 + name_len;
    const uint8_t* x_end = x + extra_len;
    bool need_usize = usize == 0xffffffffu, need_csize = csize == 0xffffffffu;
    bool need_local = local == 0xffffffffu, need_disk = disk_start == 0xffff;
    while (x_end - x >= 4) {
      const uint16_t id = Le16(x), len = Le16(x + 2);
      if (x_end - x - 4 < len) return err(en, ": extra field runs past its entry");
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* f_end = f + len;
        auto take = [&](bool need, uint64_t* v, int bytes) {
          if (!need) return true;
          if (f_end - f < bytes) return false;
          *v = bytes == 8 ? Le64(f) : Le32(f);
          f += bytes;
          return true;
        };
        if (!take(need_usize, &usize, 8) || !take(need_csize, &csize, 8) ||
            !take(need_local, &local, 8) || !take(need_disk, &disk_start, 4)) {
          return err(en, ": ZIP64 extra field is too short");
        }
        need_usize = need_csize = need_local = need_disk = false;
      }
      x += 4 + len;
    }
    if (need_usize || need_csize || need_local || need_disk) {
      return err(en, ": 32-bit fields saturated without a ZIP64 extra field");
    }
    if (flags & 0x41) return err(en, " is encrypted");
    if (disk_start != 0) return err("multi-disk zip archives are not supported");
    if (method == 0 && csize != usize) {
      return err(en, " is stored but its sizes differ (", csize, " vs ", usize, ")");
    }
    if (!names.insert(ent.name).second) return err("duplicate ", en);
    // Local header: same name; the data follows it and must end before the central directory.
    if (local > cd_off || cd_off - local < 30 || Le32(b.data() + local) != 0x04034b50) {
      return err(en, ": local header at offset ", local, " is invalid");
    }
    const uint64_t l_name = Le16(b.data() + local + 26), l_extra = Le16(b.data() + local + 28);
    const uint64_t data = local + 30 + l_name + l_extra;
    if (data > cd_off || csize > cd_off - data) {
      return err(en, ": data (", csize, " bytes at offset ", data,
                 ") runs past the start of the central directory (offset ", cd_off, ")");
    }
    if (l_name != name_len || std::memcmp(b.data() + local + 30, ent.name.data(), name_len) != 0) {
      return err(en, ": local header names a different file");
    }
    ent.method = method;
    ent.crc = crc;
    ent.data_offset = data;
    ent.size = csize;
    ranges.push_back({local, data + csize});
    entries.push_back(std::move(ent));
    pos += 46 + name_len + extra_len + comment_len;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return err("zip entries at offsets ", ranges[i - 1].first, " and ", ranges[i].first,
                 " overlap");
    }
  }
  return entries;
}

// ---- the restricted unpickler -------------------------------------------------------------------

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,  // LONG1 wider than 64 bits: the raw little-endian bytes in `s`
  kFloat,
  kStr,  // str, Python 2 str and bytes alike
  kTuple,
  kList,
  kDict,  // items: k0, v0, k1, v1, ...
  kSet,
  kGlobal,
  kStorage,  // i: index in Unpickler::storages
  kTensor,   // i: index in Unpickler::tensors
};
const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
    case Kind::kBigInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kStr:
      return "str";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kSet:
      return "set";
    case Kind::kGlobal:
      return "global";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
  }
  return "?";
}

enum class Callable : uint8_t {
  kOrderedDict,
  kRebuildTensorV2,
  kRebuildTensor,
  kRebuildParameter,
  kStorageClass,
};

// 16 bytes (strings and item lists live in side tables): a hostile pickle of N one-byte opcodes
// costs well under 100 N bytes.
struct Obj {
  Kind kind = Kind::kNone;
  Callable callable = Callable::kOrderedDict;  // kGlobal
  uint32_t ref = 0;  // index in the string table (kStr, kBigInt, kGlobal "module.name") or
                     // the item table (kTuple, kList, kDict: k0, v0, k1, v1, ..., kSet)
  int64_t i = 0;     // kBool, kInt, kStorage, kTensor; kFloat: the double's bits;
                     // kGlobal storage class: its StDType
};
static_assert(sizeof(Obj) == 16, "Obj is meant to stay small");

bool HasString(Kind k) { return k == Kind::kStr || k == Kind::kBigInt || k == Kind::kGlobal; }
bool HasItems(Kind k) {
  return k == Kind::kTuple || k == Kind::kList || k == Kind::kDict || k == Kind::kSet;
}

struct StorageRef {
  std::string key;
  StDType dtype;
  uint64_t numel;
};

struct TensorRef {
  size_t storage;
  uint64_t offset;
  std::vector<uint64_t> shape, stride;
};

struct StorageName {
  const char* name;
  StDType dtype;
};
constexpr StorageName kStorages[] = {
    {"FloatStorage", StDType::kF32},     {"HalfStorage", StDType::kF16},
    {"BFloat16Storage", StDType::kBF16}, {"DoubleStorage", StDType::kF64},
    {"LongStorage", StDType::kI64},      {"IntStorage", StDType::kI32},
    {"ShortStorage", StDType::kI16},     {"CharStorage", StDType::kI8},
    {"ByteStorage", StDType::kU8},       {"BoolStorage", StDType::kBool},
    {"UntypedStorage", StDType::kU8},
};

class Unpickler {
 public:
  // `label` names the file; `part` the pickle in it ("data.pkl", "pickle 4"). Persistent ids
  // are accepted only with `pid_len` > 0 (5 for the zip format, 6 for the legacy one).
  Unpickler(absl::Span<const uint8_t> b, uint64_t pos, std::string label, std::string part,
            size_t pid_len)
      : b_(b), pos_(pos), label_(std::move(label)), part_(std::move(part)), pid_len_(pid_len) {
    for (Kind k : {Kind::kNone, Kind::kBool, Kind::kBool, Kind::kTuple}) (void)New(k);
    objs_[kTrue].i = 1;
  }

  // Runs to STOP; returns the result object.
  absl::StatusOr<uint32_t> Run();
  uint64_t end() const { return pos_; }
  const Obj& obj(uint32_t o) const { return objs_[o]; }
  const std::string& str(uint32_t o) const { return strs_[objs_[o].ref]; }
  const std::vector<uint32_t>& items(uint32_t o) const { return seqs_[objs_[o].ref]; }
  const std::vector<StorageRef>& storages() const { return storages_; }
  const StorageRef* FindStorage(const std::string& key) const {
    auto it = storage_by_key_.find(key);
    return it == storage_by_key_.end() ? nullptr : &storages_[it->second];
  }
  const std::vector<TensorRef>& tensors() const { return tensors_; }

 private:
  static constexpr uint32_t kNoneObj = 0, kFalse = 1, kTrue = 2, kEmptyTuple = 3;

  absl::Status Err(const std::string& msg) const {
    return absl::InvalidArgumentError(
        absl::StrCat(label_, ": ", part_, " byte ", op_pos_, ": ", msg));
  }
  absl::Status Truncated() const {
    return absl::InvalidArgumentError(
        absl::StrCat(label_, ": ", part_, " is truncated (at byte ", pos_, ")"));
  }
  bool Has(uint64_t n) const { return n <= b_.size() - pos_; }
  absl::StatusOr<uint32_t> New(Kind kind) {
    if (objs_.size() >= kMaxObjects) {
      return Err(absl::StrCat("more than ", kMaxObjects, " objects; refusing"));
    }
    objs_.emplace_back();
    Obj& o = objs_.back();
    o.kind = kind;
    if (HasString(kind)) {
      o.ref = static_cast<uint32_t>(strs_.size());
      strs_.emplace_back();
    } else if (HasItems(kind)) {
      o.ref = static_cast<uint32_t>(seqs_.size());
      seqs_.emplace_back();
    }
    return static_cast<uint32_t>(objs_.size() - 1);
  }
  absl::Status Push(uint32_t o) {
    if (stack_.size() >= kMaxStack) return Err(absl::StrCat("stack deeper than ", kMaxStack));
    stack_.push_back(o);
    return absl::OkStatus();
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<uint32_t> Pop() {
    if (stack_.size() <= Floor()) return Err("stack underflow");
    uint32_t o = stack_.back();
    stack_.pop_back();
    return o;
  }
  absl::StatusOr<uint32_t> Top() const {
    if (stack_.size() <= Floor()) return Err("stack underflow");
    return stack_.back();
  }
  // Pops everything above the last MARK and the MARK.
  absl::StatusOr<std::vector<uint32_t>> PopMark() {
    if (marks_.empty()) return Err("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }
  absl::Status PushString(uint64_t len) {
    if (!Has(len)) return Truncated();
    auto o = New(Kind::kStr);
    if (!o.ok()) return o.status();
    S(*o).assign(reinterpret_cast<const char*>(b_.data() + pos_), len);
    pos_ += len;
    return Push(*o);
  }
  absl::Status PushInt(int64_t v) {
    auto o = New(Kind::kInt);
    if (!o.ok()) return o.status();
    objs_[*o].i = v;
    return Push(*o);
  }
  absl::StatusOr<uint32_t> MakeSeq(Kind kind, std::vector<uint32_t> items) {
    auto o = New(kind);
    if (!o.ok()) return o.status();
    Items(*o) = std::move(items);
    return *o;
  }
  absl::Status Memo(uint64_t index) {
    auto top = Top();
    if (!top.ok()) return top.status();
    if (memo_.size() >= kMaxMemo && memo_.find(index) == memo_.end()) {
      return Err(absl::StrCat("more than ", kMaxMemo, " memo entries; refusing"));
    }
    memo_[index] = *top;
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return Err(absl::StrCat("memo entry ", index, " is not defined"));
    return Push(it->second);
  }
  absl::Status Global(std::string module, std::string name);  // copies: New() moves objects
  absl::Status Reduce();
  absl::Status PersistentLoad();
  absl::StatusOr<uint32_t> RebuildTensor(const std::vector<uint32_t>& args, bool v2);
  bool IsInt(uint32_t o) const { return objs_[o].kind == Kind::kInt; }
  std::string& S(uint32_t o) { return strs_[objs_[o].ref]; }
  std::vector<uint32_t>& Items(uint32_t o) { return seqs_[objs_[o].ref]; }
  absl::StatusOr<std::vector<uint64_t>> IntTuple(uint32_t o, const char* what) const;

  absl::Span<const uint8_t> b_;
  uint64_t pos_;
  uint64_t op_pos_ = 0;
  std::string label_, part_;
  size_t pid_len_;
  // References into these move when an object is created (New): copy what must survive it.
  std::vector<Obj> objs_;
  std::vector<std::string> strs_;
  std::vector<std::vector<uint32_t>> seqs_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, uint32_t> memo_;
  std::vector<StorageRef> storages_;
  std::map<std::string, size_t> storage_by_key_;
  std::vector<TensorRef> tensors_;
};

absl::Status Unpickler::Global(std::string module, std::string name) {
  auto o = New(Kind::kGlobal);
  if (!o.ok()) return o.status();
  Obj& g = objs_[*o];
  S(*o) = absl::StrCat(module, ".", name);
  bool ok = true;
  if (module == "collections" && name == "OrderedDict") {
    g.callable = Callable::kOrderedDict;
  } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    g.callable = Callable::kRebuildTensorV2;
  } else if (module == "torch._utils" && name == "_rebuild_tensor") {
    g.callable = Callable::kRebuildTensor;
  } else if (module == "torch._utils" && name == "_rebuild_parameter") {
    g.callable = Callable::kRebuildParameter;
  } else if (module == "torch") {
    ok = false;
    for (const StorageName& s : kStorages) {
      if (name == s.name) {
        g.callable = Callable::kStorageClass;
        g.i = static_cast<int64_t>(s.dtype);
        ok = true;
      }
    }
    if (!ok && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0) {
      return absl::InvalidArgumentError(absl::StrCat(label_, ": storage type 'torch.",
                                                     Printable(name), "' is not supported (", part_,
                                                     " byte ", op_pos_, ")"));
    }
  } else {
    ok = false;
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        label_, ": refuses to load global '", Printable(module), ".", Printable(name),
        "' (only tensors, storages and OrderedDict are allowed; the file may be malicious)"));
  }
  return Push(*o);
}

absl::StatusOr<std::vector<uint64_t>> Unpickler::IntTuple(uint32_t o, const char* what) const {
  const Kind kind = objs_[o].kind;
  if (kind != Kind::kTuple && kind != Kind::kList) {
    return Err(absl::StrCat("tensor ", what, " is a ", KindName(kind), ", not a tuple"));
  }
  const std::vector<uint32_t>& items = seqs_[objs_[o].ref];
  if (items.size() > kMaxRank) {
    return Err(absl::StrCat("tensor ", what, " has ", items.size(), " dimensions (at most ",
                            kMaxRank, ")"));
  }
  std::vector<uint64_t> v;
  for (uint32_t x : items) {
    if (!IsInt(x) || objs_[x].i < 0) {
      return Err(absl::StrCat("tensor ", what, " holds a value that is not an integer >= 0"));
    }
    v.push_back(static_cast<uint64_t>(objs_[x].i));
  }
  return v;
}

absl::StatusOr<uint32_t> Unpickler::RebuildTensor(const std::vector<uint32_t>& a, bool v2) {
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
  // [, metadata]); _rebuild_tensor(storage, storage_offset, size, stride).
  if (v2 ? (a.size() != 6 && a.size() != 7) : a.size() != 4) {
    return Err(absl::StrCat(v2 ? "_rebuild_tensor_v2" : "_rebuild_tensor", " with ", a.size(),
                            " arguments"));
  }
  if (objs_[a[0]].kind != Kind::kStorage) {
    return Err(absl::StrCat("tensor storage is a ", KindName(objs_[a[0]].kind)));
  }
  if (!IsInt(a[1]) || objs_[a[1]].i < 0) return Err("tensor storage offset is not an integer >= 0");
  TensorRef t;
  t.storage = static_cast<size_t>(objs_[a[0]].i);
  t.offset = static_cast<uint64_t>(objs_[a[1]].i);
  auto shape = IntTuple(a[2], "size");
  if (!shape.ok()) return shape.status();
  auto stride = IntTuple(a[3], "stride");
  if (!stride.ok()) return stride.status();
  if (shape->size() != stride->size()) {
    return Err(
        absl::StrCat("tensor size has ", shape->size(), " dimensions but stride ", stride->size()));
  }
  t.shape = std::move(*shape);
  t.stride = std::move(*stride);
  if (v2) {
    const Kind hooks = objs_[a[5]].kind;
    if (hooks != Kind::kDict && hooks != Kind::kNone) {
      return Err("tensor backward_hooks is not an OrderedDict");
    }
    if (hooks == Kind::kDict && !Items(a[5]).empty()) {
      return Err("tensor has backward hooks (only plain tensors are supported)");
    }
  }
  auto o = New(Kind::kTensor);
  if (!o.ok()) return o.status();
  objs_[*o].i = static_cast<int64_t>(tensors_.size());
  tensors_.push_back(std::move(t));
  return *o;
}

absl::Status Unpickler::Reduce() {
  auto args = Pop();
  if (!args.ok()) return args.status();
  auto fn = Pop();
  if (!fn.ok()) return fn.status();
  if (objs_[*fn].kind != Kind::kGlobal) {
    return Err(absl::StrCat("REDUCE of a ", KindName(objs_[*fn].kind),
                            " (only allowed globals are called)"));
  }
  if (objs_[*args].kind != Kind::kTuple) return Err("REDUCE arguments are not a tuple");
  // Copies: New() below may move the objects.
  const Callable callable = objs_[*fn].callable;
  const std::string fname = S(*fn);
  const std::vector<uint32_t> a = Items(*args);
  switch (callable) {
    case Callable::kOrderedDict: {
      std::vector<uint32_t> items;
      if (a.size() > 1) return Err("OrderedDict() with more than one argument");
      if (a.size() == 1) {  // OrderedDict([(k, v), ...])
        const Kind kind = objs_[a[0]].kind;
        if (kind != Kind::kList && kind != Kind::kTuple) {
          return Err("OrderedDict() of something other than a list of pairs");
        }
        for (uint32_t p : Items(a[0])) {
          if ((objs_[p].kind != Kind::kTuple && objs_[p].kind != Kind::kList) ||
              Items(p).size() != 2) {
            return Err("OrderedDict() of something other than a list of pairs");
          }
          items.push_back(Items(p)[0]);
          items.push_back(Items(p)[1]);
        }
      }
      auto d = MakeSeq(Kind::kDict, std::move(items));
      if (!d.ok()) return d.status();
      return Push(*d);
    }
    case Callable::kRebuildTensorV2:
    case Callable::kRebuildTensor: {
      auto t = RebuildTensor(a, callable == Callable::kRebuildTensorV2);
      if (!t.ok()) return t.status();
      return Push(*t);
    }
    case Callable::kRebuildParameter:  // (data, requires_grad, backward_hooks): the tensor itself
      if (a.size() != 3 || objs_[a[0]].kind != Kind::kTensor) {
        return Err("_rebuild_parameter with unexpected arguments");
      }
      return Push(a[0]);
    case Callable::kStorageClass:
      break;
  }
  return Err(absl::StrCat("REDUCE of '", fname, "' is not supported"));
}

absl::Status Unpickler::PersistentLoad() {
  auto pid = Pop();
  if (!pid.ok()) return pid.status();
  if (pid_len_ == 0) return Err("persistent id outside the state dict pickle");
  if (objs_[*pid].kind != Kind::kTuple || Items(*pid).empty() ||
      objs_[Items(*pid)[0]].kind != Kind::kStr) {
    return Err("persistent id is not a tuple ('storage', ...)");
  }
  if (S(Items(*pid)[0]) != "storage") {
    return Err(absl::StrCat("persistent id of type '", Printable(S(Items(*pid)[0])),
                            "' (only 'storage' is supported)"));
  }
  const std::vector<uint32_t> it = Items(*pid);
  if (it.size() != pid_len_ || objs_[it[1]].kind != Kind::kGlobal ||
      objs_[it[1]].callable != Callable::kStorageClass || objs_[it[2]].kind != Kind::kStr ||
      objs_[it[3]].kind != Kind::kStr || !IsInt(it[4]) || objs_[it[4]].i < 0) {
    return Err(absl::StrCat("persistent id must be ('storage', <T>Storage, key, location, numel",
                            pid_len_ == 6 ? ", view_metadata" : "", ")"));
  }
  if (pid_len_ == 6 && objs_[it[5]].kind != Kind::kNone) {
    return Err("storage views (legacy view_metadata) are not supported");
  }
  const StDType dtype = static_cast<StDType>(objs_[it[1]].i);
  const std::string key = S(it[2]);
  const uint64_t numel = static_cast<uint64_t>(objs_[it[4]].i);
  if (numel > kMaxNumel) return Err(absl::StrCat("storage '", Printable(key), "' is too large"));
  auto [pos, fresh] = storage_by_key_.emplace(key, storages_.size());
  if (fresh) {
    storages_.push_back({key, dtype, numel});
  } else {
    const StorageRef& s = storages_[pos->second];
    if (s.dtype != dtype || s.numel != numel) {
      return Err(absl::StrCat("storage '", Printable(key),
                              "' is referenced with different types or sizes"));
    }
  }
  auto o = New(Kind::kStorage);
  if (!o.ok()) return o.status();
  objs_[*o].i = static_cast<int64_t>(pos->second);
  return Push(*o);
}

absl::StatusOr<uint32_t> Unpickler::Run() {
  while (true) {
    op_pos_ = pos_;
    if (!Has(1)) return Truncated();
    const uint8_t op = b_[pos_++];
    absl::Status s;
    switch (op) {
      case 0x80: {  // PROTO
        if (!Has(1)) return Truncated();
        const uint8_t v = b_[pos_++];
        if (v < 2 || v > 5) return Err(absl::StrCat("pickle protocol ", v, " is not supported"));
        break;
      }
      case 0x95:  // FRAME: a length hint
        if (!Has(8)) return Truncated();
        if (Le64(b_.data() + pos_) > b_.size() - pos_ - 8) return Truncated();
        pos_ += 8;
        break;
      case '.': {  // STOP
        auto r = Pop();
        if (!r.ok()) return r.status();
        return *r;
      }
      case '(':  // MARK
        if (marks_.size() >= kMaxMarks) {
          return Err(absl::StrCat("MARKs nested deeper than ", kMaxMarks));
        }
        marks_.push_back(stack_.size());
        break;
      case '0': {  // POP (a MARK when nothing is above it)
        if (stack_.size() > Floor()) {
          stack_.pop_back();
        } else if (!marks_.empty()) {
          marks_.pop_back();
        } else {
          return Err("stack underflow");
        }
        break;
      }
      case '1': {  // POP_MARK
        auto items = PopMark();
        if (!items.ok()) return items.status();
        break;
      }
      case '}':     // EMPTY_DICT
      case ']':     // EMPTY_LIST
      case 0x8f: {  // EMPTY_SET
        auto o = New(op == '}' ? Kind::kDict : op == ']' ? Kind::kList : Kind::kSet);
        if (!o.ok()) return o.status();
        s = Push(*o);
        break;
      }
      case ')':  // EMPTY_TUPLE
        s = Push(kEmptyTuple);
        break;
      case 't':     // TUPLE
      case 'l':     // LIST
      case 'd':     // DICT
      case 0x91: {  // FROZENSET
        auto items = PopMark();
        if (!items.ok()) return items.status();
        if (op == 'd' && items->size() % 2) return Err("DICT with an odd number of items");
        auto o = MakeSeq(op == 't'   ? Kind::kTuple
                         : op == 'l' ? Kind::kList
                         : op == 'd' ? Kind::kDict
                                     : Kind::kSet,
                         std::move(*items));
        if (!o.ok()) return o.status();
        s = Push(*o);
        break;
      }
      case 0x85:    // TUPLE1
      case 0x86:    // TUPLE2
      case 0x87: {  // TUPLE3
        const size_t k = op - 0x84;
        if (stack_.size() - Floor() < k) return Err("stack underflow");
        std::vector<uint32_t> items(stack_.end() - k, stack_.end());
        stack_.resize(stack_.size() - k);
        auto o = MakeSeq(Kind::kTuple, std::move(items));
        if (!o.ok()) return o.status();
        s = Push(*o);
        break;
      }
      case 'X':  // BINUNICODE
      case 'B':  // BINBYTES
        if (!Has(4)) return Truncated();
        pos_ += 4;
        s = PushString(Le32(b_.data() + pos_ - 4));
        break;
      case 'T': {  // BINSTRING (signed length)
        if (!Has(4)) return Truncated();
        const int32_t len = static_cast<int32_t>(Le32(b_.data() + pos_));
        pos_ += 4;
        if (len < 0) return Err("BINSTRING with a negative length");
        s = PushString(static_cast<uint64_t>(len));
        break;
      }
      case 0x8c:  // SHORT_BINUNICODE
      case 'U':   // SHORT_BINSTRING
      case 'C':   // SHORT_BINBYTES
        if (!Has(1)) return Truncated();
        s = PushString(b_[pos_++]);
        break;
      case 0x8d:  // BINUNICODE8
      case 0x8e:  // BINBYTES8
        if (!Has(8)) return Truncated();
        pos_ += 8;
        s = PushString(Le64(b_.data() + pos_ - 8));
        break;
      case 'J':  // BININT
        if (!Has(4)) return Truncated();
        s = PushInt(static_cast<int32_t>(Le32(b_.data() + pos_)));
        pos_ += 4;
        break;
      case 'K':  // BININT1
        if (!Has(1)) return Truncated();
        s = PushInt(b_[pos_++]);
        break;
      case 'M':  // BININT2
        if (!Has(2)) return Truncated();
        s = PushInt(Le16(b_.data() + pos_));
        pos_ += 2;
        break;
      case 0x8a: {  // LONG1: n bytes, little-endian two's complement
        if (!Has(1)) return Truncated();
        const size_t n = b_[pos_++];
        if (!Has(n)) return Truncated();
        const uint8_t* p = b_.data() + pos_;
        pos_ += n;
        if (n > 8) {
          auto o = New(Kind::kBigInt);
          if (!o.ok()) return o.status();
          S(*o).assign(reinterpret_cast<const char*>(p), n);
          s = Push(*o);
          break;
        }
        uint64_t v = 0;
        for (size_t k = 0; k < n; ++k) v |= uint64_t{p[k]} << (8 * k);
        if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        s = PushInt(static_cast<int64_t>(v));
        break;
      }
      case 0x88:  // NEWTRUE
        s = Push(kTrue);
        break;
      case 0x89:  // NEWFALSE
        s = Push(kFalse);
        break;
      case 'N':  // NONE
        s = Push(kNoneObj);
        break;
      case 'G': {  // BINFLOAT: big-endian double
        if (!Has(8)) return Truncated();
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | b_[pos_ + k];
        pos_ += 8;
        auto o = New(Kind::kFloat);
        if (!o.ok()) return o.status();
        objs_[*o].i = static_cast<int64_t>(bits);
        s = Push(*o);
        break;
      }
      case 'q':  // BINPUT
        if (!Has(1)) return Truncated();
        s = Memo(b_[pos_++]);
        break;
      case 'r':  // LONG_BINPUT
        if (!Has(4)) return Truncated();
        s = Memo(Le32(b_.data() + pos_));
        pos_ += 4;
        break;
      case 0x94:  // MEMOIZE
        s = Memo(memo_.size());
        break;
      case 'h':  // BINGET
        if (!Has(1)) return Truncated();
        s = Get(b_[pos_++]);
        break;
      case 'j':  // LONG_BINGET
        if (!Has(4)) return Truncated();
        s = Get(Le32(b_.data() + pos_));
        pos_ += 4;
        break;
      case 's': {  // SETITEM
        auto v = Pop();
        if (!v.ok()) return v.status();
        auto k = Pop();
        if (!k.ok()) return k.status();
        auto d = Top();
        if (!d.ok()) return d.status();
        if (objs_[*d].kind != Kind::kDict) {
          return Err(absl::StrCat("SETITEM on a ", KindName(objs_[*d].kind)));
        }
        Items(*d).push_back(*k);
        Items(*d).push_back(*v);
        break;
      }
      case 'u':     // SETITEMS
      case 'e':     // APPENDS
      case 0x90: {  // ADDITEMS
        auto items = PopMark();
        if (!items.ok()) return items.status();
        auto d = Top();
        if (!d.ok()) return d.status();
        const Kind want = op == 'u' ? Kind::kDict : op == 'e' ? Kind::kList : Kind::kSet;
        if (objs_[*d].kind != want) {
          return Err(absl::StrCat(op == 'u'   ? "SETITEMS"
                                  : op == 'e' ? "APPENDS"
                                              : "ADDITEMS",
                                  " on a ", KindName(objs_[*d].kind)));
        }
        if (op == 'u' && items->size() % 2) return Err("SETITEMS with an odd number of items");
        auto& dst = Items(*d);
        dst.insert(dst.end(), items->begin(), items->end());
        break;
      }
      case 'a': {  // APPEND
        auto v = Pop();
        if (!v.ok()) return v.status();
        auto l = Top();
        if (!l.ok()) return l.status();
        if (objs_[*l].kind != Kind::kList) {
          return Err(absl::StrCat("APPEND on a ", KindName(objs_[*l].kind)));
        }
        Items(*l).push_back(*v);
        break;
      }
      case 'c': {  // GLOBAL: "module\nname\n"
        std::string parts[2];
        for (std::string& part : parts) {
          while (true) {
            if (!Has(1)) return Truncated();
            const char ch = static_cast<char>(b_[pos_++]);
            if (ch == '\n') break;
            if (part.size() >= kMaxGlobalName) return Err("GLOBAL name too long");
            part += ch;
          }
        }
        s = Global(parts[0], parts[1]);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = Pop();
        if (!name.ok()) return name.status();
        auto module = Pop();
        if (!module.ok()) return module.status();
        if (objs_[*name].kind != Kind::kStr || objs_[*module].kind != Kind::kStr) {
          return Err("STACK_GLOBAL of non-strings");
        }
        s = Global(S(*module), S(*name));
        break;
      }
      case 'R':  // REDUCE
        s = Reduce();
        break;
      case 'b': {  // BUILD: the state of an OrderedDict (its _metadata) is ignored
        auto state = Pop();
        if (!state.ok()) return state.status();
        auto target = Top();
        if (!target.ok()) return target.status();
        if (objs_[*target].kind != Kind::kDict) {
          return Err(absl::StrCat("BUILD on a ", KindName(objs_[*target].kind),
                                  " (only an OrderedDict's state is accepted)"));
        }
        break;
      }
      case 'Q':  // BINPERSID
        s = PersistentLoad();
        break;
      default:
        return Err(absl::StrFormat("unsupported pickle opcode 0x%02x", op));
    }
    if (!s.ok()) return s;
  }
}

// A StTensor from a rebuilt tensor and its storage's bytes; strided views are copied into
// `copies` (whose total size `copied` is kept under `budget`).
absl::Status MakeTensor(const std::string& name, const TensorRef& t, const StorageRef& st,
                        absl::Span<const uint8_t> storage, const std::string& label,
                        std::vector<HeapBuffer>* copies, uint64_t* copied, uint64_t budget,
                        StTensor* out) {
  const std::string tw = absl::StrCat(label, ", tensor '", Printable(name), "'");
  out->name = name;
  out->dtype = st.dtype;
  out->shape = t.shape;
  out->file = label;
  const uint64_t es = StDTypeSize(st.dtype);
  uint64_t numel = 1;
  for (uint64_t d : t.shape) {
    if (d != 0 && numel > kMaxNumel / d) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": size [", absl::StrJoin(t.shape, ", "), "] is too large"));
    }
    numel *= d;
  }
  if (numel == 0) {
    out->data = storage.subspan(0, 0);
    return absl::OkStatus();
  }
  // The last element's index, overflow-checked (strides are >= 0).
  uint64_t last = t.offset;
  bool contiguous = true;
  uint64_t expect = 1;
  for (size_t k = t.shape.size(); k-- > 0;) {
    uint64_t span;
    if (__builtin_mul_overflow(t.shape[k] - 1, t.stride[k], &span) ||
        __builtin_add_overflow(last, span, &last)) {
      last = UINT64_MAX;
      break;
    }
    if (t.shape[k] != 1 && t.stride[k] != expect) contiguous = false;
    expect *= t.shape[k];
  }
  if (last >= st.numel) {
    return absl::InvalidArgumentError(absl::StrCat(
        tw, ": offset ", t.offset, ", size [", absl::StrJoin(t.shape, ", "), "] and stride [",
        absl::StrJoin(t.stride, ", "), "] reach past the end of storage '", Printable(st.key),
        "' (", st.numel, " elements)"));
  }
  if (contiguous) {
    out->data = storage.subspan(t.offset * es, numel * es);
    return absl::OkStatus();
  }
  const uint64_t bytes = numel * es;
  if (bytes > budget || *copied > budget - bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(tw, ": copying the strided (non-contiguous) tensors would take more than ",
                     budget, " bytes, more than the file's size (a broadcast view?)"));
  }
  auto buf = HeapBuffer::Allocate(bytes);
  if (!buf.ok()) return buf.status();
  *copied += bytes;
  uint8_t* dst = buf->data();
  const size_t rank = t.shape.size();
  std::vector<uint64_t> idx(rank, 0);
  uint64_t src = t.offset;
  for (uint64_t i = 0; i < numel; ++i) {
    std::memcpy(dst + i * es, storage.data() + src * es, es);
    for (size_t k = rank; k-- > 0;) {  // odometer over the dimensions
      if (++idx[k] < t.shape[k]) {
        src += t.stride[k];
        break;
      }
      src -= (t.shape[k] - 1) * t.stride[k];
      idx[k] = 0;
    }
  }
  out->data = absl::Span<const uint8_t>(buf->data(), bytes);
  copies->push_back(std::move(*buf));
  return absl::OkStatus();
}

const uint8_t kLegacyMagic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

}  // namespace

absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> TorchCheckpointFile::Open(
    const std::string& path) {
  auto mapped = MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<TorchCheckpointFile> f(new TorchCheckpointFile());
  f->mapped_ = std::move(*mapped);
  absl::Status s = f->Parse(f->mapped_.bytes(), path);
  if (!s.ok()) return s;
  return f;
}

absl::StatusOr<std::unique_ptr<TorchCheckpointFile>> TorchCheckpointFile::FromBytes(
    absl::Span<const uint8_t> bytes, const std::string& label) {
  std::unique_ptr<TorchCheckpointFile> f(new TorchCheckpointFile());
  absl::Status s = f->Parse(bytes, label);
  if (!s.ok()) return s;
  return f;
}

const StTensor* TorchCheckpointFile::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

// The container (zip or legacy), then the state dict pickle, then each tensor against its
// storage's bytes.
absl::Status TorchCheckpointFile::Parse(absl::Span<const uint8_t> b, const std::string& label) {
  auto err = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", parts...));
  };
  std::unique_ptr<Unpickler> main;
  uint32_t top = 0;
  std::vector<absl::Span<const uint8_t>> storage_bytes;
  if (b.size() >= 4 && b[0] == 'P' && b[1] == 'K') {
    auto entries = ReadZip(b, label);
    if (!entries.ok()) return entries.status();
    if (entries->empty()) return err("empty zip archive (no data.pkl)");
    const std::string& first = (*entries)[0].name;
    const size_t slash = first.find('/');
    if (slash == std::string::npos || slash == 0) {
      return err("zip entry '", Printable(first),
                 "' is not inside a top folder (not a torch.save archive)");
    }
    const std::string prefix = first.substr(0, slash + 1);
    std::map<std::string, const ZipEntry*> by_name;
    for (const ZipEntry& e : *entries) by_name[e.name] = &e;
    // A small entry read whole (STORED, CRC checked); nullptr data when absent.
    auto small = [&](const std::string& name,
                     absl::Span<const uint8_t>* out) -> absl::StatusOr<bool> {
      auto it = by_name.find(prefix + name);
      if (it == by_name.end()) return false;
      const ZipEntry& e = *it->second;
      if (e.method != 0) {
        return err("zip entry '", Printable(e.name), "' is compressed (method ", e.method,
                   "); torch.save stores entries uncompressed");
      }
      *out = b.subspan(e.data_offset, e.size);
      if (Crc32(*out) != e.crc) return err("zip entry '", Printable(e.name), "' fails its CRC");
      return true;
    };
    absl::Span<const uint8_t> pkl, order;
    auto has_pkl = small("data.pkl", &pkl);
    if (!has_pkl.ok()) return has_pkl.status();
    if (!*has_pkl) {
      return err("zip archive has no '", Printable(prefix),
                 "data.pkl' (not a torch.save checkpoint)");
    }
    auto has_order = small("byteorder", &order);
    if (!has_order.ok()) return has_order.status();
    if (*has_order) {
      const std::string_view o(reinterpret_cast<const char*>(order.data()), order.size());
      if (o != "little") {
        return err("byte order '", Printable(o), "' is not supported (only little-endian)");
      }
    }
    main = std::make_unique<Unpickler>(pkl, 0, label, "data.pkl", 5);
    auto r = main->Run();
    if (!r.ok()) return r.status();
    top = *r;
    for (const StorageRef& s : main->storages()) {
      auto it = by_name.find(prefix + "data/" + s.key);
      if (it == by_name.end()) {
        return err("storage '", Printable(s.key), "' has no zip entry '", Printable(prefix),
                   "data/", Printable(s.key), "'");
      }
      const ZipEntry& e = *it->second;
      if (e.method != 0) {
        return err("zip entry '", Printable(e.name), "' is compressed (method ", e.method,
                   "); torch.save stores tensor data uncompressed");
      }
      const uint64_t need = s.numel * StDTypeSize(s.dtype);
      if (e.size != need) {
        return err("storage '", Printable(s.key), "' of ", s.numel, " ", StDTypeName(s.dtype),
                   " elements needs ", need, " bytes but zip entry '", Printable(e.name), "' has ",
                   e.size);
      }
      storage_bytes.push_back(b.subspan(e.data_offset, e.size));
    }
  } else if (b.size() >= 2 && b[0] == 0x80) {
    // Legacy: magic number, protocol version, sys_info, the object, the storage keys, the data.
    legacy_ = true;
    Unpickler magic(b, 0, label, "pickle 1 (magic number)", 0);
    auto m = magic.Run();
    if (!m.ok()) {
      return err("not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file: ",
                 m.status().message(), ")");
    }
    if (magic.obj(*m).kind != Kind::kBigInt || magic.str(*m).size() != 10 ||
        std::memcmp(magic.str(*m).data(), kLegacyMagic, 10) != 0) {
      return err("not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file)");
    }
    Unpickler version(b, magic.end(), label, "pickle 2 (protocol version)", 0);
    auto v = version.Run();
    if (!v.ok()) return v.status();
    if (version.obj(*v).kind != Kind::kInt || version.obj(*v).i != 1001) {
      return err("legacy torch.save protocol version is not 1001");
    }
    Unpickler sys_info(b, version.end(), label, "pickle 3 (sys_info)", 0);
    auto si = sys_info.Run();
    if (!si.ok()) return si.status();
    const Obj& info = sys_info.obj(*si);
    if (info.kind != Kind::kDict) return err("legacy sys_info is not a dict");
    const std::vector<uint32_t>& info_items = sys_info.items(*si);
    for (size_t k = 0; k + 1 < info_items.size(); k += 2) {
      const Obj& key = sys_info.obj(info_items[k]);
      const Obj& val = sys_info.obj(info_items[k + 1]);
      if (key.kind == Kind::kStr && sys_info.str(info_items[k]) == "little_endian" &&
          !(val.kind == Kind::kBool && val.i == 1)) {
        return err("big-endian legacy checkpoints are not supported");
      }
    }
    main = std::make_unique<Unpickler>(b, sys_info.end(), label, "pickle 4 (state dict)", 6);
    auto r = main->Run();
    if (!r.ok()) return r.status();
    top = *r;
    Unpickler keys(b, main->end(), label, "pickle 5 (storage keys)", 0);
    auto kr = keys.Run();
    if (!kr.ok()) return kr.status();
    const Obj& list = keys.obj(*kr);
    if (list.kind != Kind::kList && list.kind != Kind::kTuple) {
      return err("legacy storage key list is a ", KindName(list.kind));
    }
    std::map<std::string, absl::Span<const uint8_t>> data_of;
    uint64_t pos = keys.end();
    for (uint32_t k : keys.items(*kr)) {
      if (keys.obj(k).kind != Kind::kStr) return err("legacy storage key is not a string");
      const std::string& key = keys.str(k);
      const StorageRef* s = main->FindStorage(key);
      if (s == nullptr) return err("storage '", Printable(key), "' is never used by a tensor");
      if (b.size() - pos < 8) return err("truncated in the data of storage '", Printable(key), "'");
      const uint64_t count = Le64(b.data() + pos);
      pos += 8;
      if (count != s->numel) {
        return err("storage '", Printable(key), "' has ", count, " elements in the file but ",
                   s->numel, " in its persistent id");
      }
      const uint64_t need = count * StDTypeSize(s->dtype);
      if (b.size() - pos < need) {
        return err("truncated in the data of storage '", Printable(key), "' (", need,
                   " bytes needed, ", b.size() - pos, " left)");
      }
      if (!data_of.emplace(key, b.subspan(pos, need)).second) {
        return err("storage '", Printable(key), "' is listed twice");
      }
      pos += need;
    }
    for (const StorageRef& s : main->storages()) {
      auto it = data_of.find(s.key);
      if (it == data_of.end()) return err("storage '", Printable(s.key), "' has no data");
      storage_bytes.push_back(it->second);
    }
  } else {
    return err("not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file)");
  }

  const Obj& dict = main->obj(top);
  if (dict.kind != Kind::kDict) {
    return err("the pickled object is a ", KindName(dict.kind),
               ", not a state dict (a dict of name -> tensor)");
  }
  uint64_t copied = 0;
  const uint64_t budget = b.size() + (uint64_t{1} << 20);
  size_t skipped = 0;
  std::vector<std::string> skipped_names;
  const std::vector<uint32_t>& entries = main->items(top);
  for (size_t k = 0; k + 1 < entries.size(); k += 2) {
    const Obj& key = main->obj(entries[k]);
    const Obj& val = main->obj(entries[k + 1]);
    const std::string name = key.kind == Kind::kStr ? main->str(entries[k]) : "";
    if (val.kind != Kind::kTensor) {
      ++skipped;
      if (key.kind == Kind::kStr && skipped_names.size() < 3) {
        skipped_names.push_back(absl::StrCat("'", Printable(name), "'"));
      }
      continue;
    }
    if (key.kind != Kind::kStr) return err("a tensor's name is a ", KindName(key.kind));
    if (by_name_.count(name)) return err("duplicate tensor '", Printable(name), "'");
    const TensorRef& t = main->tensors()[static_cast<size_t>(val.i)];
    StTensor st;
    absl::Status s = MakeTensor(name, t, main->storages()[t.storage], storage_bytes[t.storage],
                                label, &copies_, &copied, budget, &st);
    if (!s.ok()) return s;
    by_name_[name] = tensors_.size();
    tensors_.push_back(std::move(st));
  }
  if (tensors_.empty() && skipped > 0) {
    return err("the state dict holds no tensors at its top level (keys ",
               absl::StrJoin(skipped_names, ", "), skipped > skipped_names.size() ? ", ..." : "",
               ")");
  }
  return absl::OkStatus();
}

}  // namespace selfcond
