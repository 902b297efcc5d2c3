#include "util/json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "util/utf8.h"

namespace selfcond::json {

// ---------------------------------------------------------------------------------------------
// Value: storage

static_assert(sizeof(Value) == 16, "a JSON value is 16 bytes (memory is bounded by the input)");

uint32_t** Value::IndexSlot(Block* b, size_t element_size) {
  static_assert(sizeof(Member) == kMemberSize);
  if (b == nullptr || element_size != kMemberSize || b->capacity < kIndexThreshold) return nullptr;
  return reinterpret_cast<uint32_t**>(reinterpret_cast<char*>(b) + sizeof(Block) +
                                      element_size * b->capacity);
}

Value::Block* Value::Reallocate(Block* b, size_t element_size, size_t capacity) {
  if (capacity > std::numeric_limits<uint32_t>::max()) return nullptr;
  if (uint32_t** slot = IndexSlot(b, element_size)) {  // the index would not move along
    std::free(*slot);
    *slot = nullptr;
  }
  void* p = std::realloc(b, BlockBytes(element_size, capacity));
  if (p == nullptr) return nullptr;
  Block* nb = static_cast<Block*>(p);
  if (b == nullptr) nb->size = 0;
  nb->capacity = static_cast<uint32_t>(capacity);
  if (uint32_t** slot = IndexSlot(nb, element_size)) *slot = nullptr;
  return nb;
}

Value* Value::elements() const {
  return reinterpret_cast<Value*>(reinterpret_cast<char*>(block()) + sizeof(Block));
}
Value::Member* Value::members_ptr() const {
  return reinterpret_cast<Member*>(reinterpret_cast<char*>(block()) + sizeof(Block));
}

void Value::Release() {
  switch (type()) {
    case Type::kString:
      if (rep_[1] == 0) std::free(Payload<char*>());
      break;
    case Type::kArray:
      if (Block* b = block()) {
        Value* e = elements();
        for (uint32_t i = 0; i < b->size; ++i) e[i].~Value();
        std::free(b);
      }
      break;
    case Type::kObject:
      if (Block* b = block()) {
        Member* m = members_ptr();
        for (uint32_t i = 0; i < b->size; ++i) m[i].~Member();
        if (uint32_t** slot = IndexSlot(b, sizeof(Member))) std::free(*slot);
        std::free(b);
      }
      break;
    default:
      break;
  }
  std::memset(rep_, 0, sizeof(rep_));
}

bool Value::AssignString(std::string_view s) {
  Release();
  SetType(Type::kString);
  if (s.size() <= kInlineString) {
    rep_[1] = static_cast<unsigned char>(s.size() + 1);
    if (!s.empty()) std::memcpy(rep_ + 2, s.data(), s.size());
    return true;
  }
  if (s.size() > std::numeric_limits<uint32_t>::max()) return false;
  char* p = static_cast<char*>(std::malloc(s.size()));
  if (p == nullptr) {
    std::memset(rep_, 0, sizeof(rep_));  // back to null
    return false;
  }
  std::memcpy(p, s.data(), s.size());
  const uint32_t n = static_cast<uint32_t>(s.size());
  std::memcpy(rep_ + 4, &n, 4);
  SetPayload(p);
  return true;
}

Value::Value(const Value& other) {
  std::memset(rep_, 0, sizeof(rep_));
  switch (other.type()) {
    case Type::kString:
      if (!AssignString(other.as_string())) throw std::bad_alloc();
      break;
    case Type::kArray: {
      SetType(Type::kArray);
      const Block* ob = other.block();
      if (ob == nullptr || ob->size == 0) break;
      Block* b = Reallocate(nullptr, sizeof(Value), ob->size);
      if (b == nullptr) throw std::bad_alloc();
      SetPayload(b);
      const Value* src = other.elements();
      for (uint32_t i = 0; i < ob->size; ++i) {
        new (elements() + i) Value(src[i]);
        ++b->size;
      }
      break;
    }
    case Type::kObject: {
      SetType(Type::kObject);
      const Block* ob = other.block();
      if (ob == nullptr || ob->size == 0) break;
      Block* b = Reallocate(nullptr, sizeof(Member), ob->size);
      if (b == nullptr) throw std::bad_alloc();
      SetPayload(b);
      const Member* src = other.members_ptr();
      for (uint32_t i = 0; i < ob->size; ++i) {
        new (members_ptr() + i) Member{src[i].key, src[i].value};
        ++b->size;
      }
      break;
    }
    default:
      std::memcpy(rep_, other.rep_, sizeof(rep_));
  }
}

Value::Value(Value&& other) noexcept {
  std::memcpy(rep_, other.rep_, sizeof(rep_));
  std::memset(other.rep_, 0, sizeof(other.rep_));
}

Value& Value::operator=(const Value& other) {
  if (this != &other) {
    Value copy(other);
    *this = std::move(copy);
  }
  return *this;
}

Value& Value::operator=(Value&& other) noexcept {
  if (this != &other) {
    Release();
    std::memcpy(rep_, other.rep_, sizeof(rep_));
    std::memset(other.rep_, 0, sizeof(other.rep_));
  }
  return *this;
}

Value Value::Bool(bool b) {
  Value v;
  v.SetType(Type::kBool);
  v.rep_[8] = b ? 1 : 0;
  return v;
}
Value Value::Number(double d) {
  Value v;
  v.SetType(Type::kNumber);
  v.SetPayload(d);
  return v;
}
Value Value::String(std::string_view s) {
  Value v;
  if (!v.AssignString(s)) throw std::bad_alloc();
  return v;
}
Value Value::Array(std::vector<Value> items) {
  Value v;
  v.SetType(Type::kArray);
  for (Value& item : items) v.Push(std::move(item));
  return v;
}
Value Value::Object() {
  Value v;
  v.SetType(Type::kObject);
  return v;
}

double Value::as_number() const { return is_number() ? Payload<double>() : 0.0; }

std::string_view Value::as_string() const {
  if (!is_string()) return {};
  if (rep_[1] != 0) return {reinterpret_cast<const char*>(rep_ + 2), size_t{rep_[1]} - 1u};
  return {Payload<const char*>(), HeapLength()};
}

absl::Span<const Value> Value::items() const {
  if (!is_array() || block() == nullptr) return {};
  return {elements(), block()->size};
}
absl::Span<Value> Value::items() {
  if (!is_array() || block() == nullptr) return {};
  return {elements(), block()->size};
}
MemberRange Value::members() const {
  if (!is_object() || block() == nullptr) return MemberRange(nullptr, 0);
  return MemberRange(members_ptr(), block()->size);
}

void Value::Grow(size_t element_size) {
  Block* b = block();
  if (b != nullptr && b->size < b->capacity) return;
  const size_t cap = b == nullptr ? 0 : b->capacity;
  Block* nb = Reallocate(b, element_size, std::max<size_t>(4, cap * 2));
  if (nb == nullptr) throw std::bad_alloc();
  SetPayload(nb);
}

void Value::Push(Value v) {
  if (!is_array()) {
    Release();
    SetType(Type::kArray);
  }
  Grow(sizeof(Value));
  Block* b = block();
  new (elements() + b->size) Value(std::move(v));
  ++b->size;
}

void Value::AppendMember(std::string_view key, Value v) {
  if (!is_object()) {
    Release();
    SetType(Type::kObject);
  }
  Value k = String(key);
  Grow(sizeof(Member));
  Block* b = block();
  new (members_ptr() + b->size) Member{std::move(k), std::move(v)};
  ++b->size;
  if (uint32_t** slot = IndexSlot(b, sizeof(Member))) {  // no longer covers every member
    std::free(*slot);
    *slot = nullptr;
  }
}

void Value::Set(std::string_view key, Value v) {
  if (is_object() && block() != nullptr) {
    Member* m = members_ptr();
    for (uint32_t i = block()->size; i-- > 0;) {
      if (m[i].key.as_string() == key) {
        m[i].value = std::move(v);
        return;
      }
    }
  }
  AppendMember(key, std::move(v));
}

const Value* Value::Find(std::string_view key) const {
  if (!is_object() || block() == nullptr) return nullptr;
  Block* b = block();
  const Member* m = members_ptr();
  uint32_t** slot = IndexSlot(b, sizeof(Member));
  if (slot != nullptr && *slot == nullptr && b->size >= kIndexThreshold) {
    // Sorted by key, ties in document order, so the last of equal keys is found last.
    auto* idx = static_cast<uint32_t*>(std::malloc(sizeof(uint32_t) * b->size));
    if (idx != nullptr) {
      std::iota(idx, idx + b->size, 0u);
      std::stable_sort(idx, idx + b->size, [m](uint32_t x, uint32_t y) {
        return m[x].key.as_string() < m[y].key.as_string();
      });
      *slot = idx;
    }
  }
  const uint32_t* index = slot != nullptr && b->size >= kIndexThreshold ? *slot : nullptr;
  if (index == nullptr) {  // small object (or no memory for the index)
    for (uint32_t i = b->size; i-- > 0;)
      if (m[i].key.as_string() == key) return &m[i].value;
    return nullptr;
  }
  const uint32_t* end = index + b->size;
  const uint32_t* it = std::upper_bound(
      index, end, key, [m](std::string_view k, uint32_t x) { return k < m[x].key.as_string(); });
  if (it == index || m[*(it - 1)].key.as_string() != key) return nullptr;
  return &m[*(it - 1)].value;
}

absl::StatusOr<double> Value::GetNumber(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("missing key \"", std::string(key), "\""));
  if (!v->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("key \"", std::string(key), "\" is not a number"));
  }
  return v->as_number();
}

absl::StatusOr<int64_t> Value::GetInt(std::string_view key) const {
  auto d = GetNumber(key);
  if (!d.ok()) return d.status();
  if (!(std::fabs(*d) <= 9007199254740992.0) || std::floor(*d) != *d) {
    return absl::InvalidArgumentError(
        absl::StrCat("key \"", std::string(key), "\" is not an integer"));
  }
  return static_cast<int64_t>(*d);
}

absl::StatusOr<std::string> Value::GetString(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("missing key \"", std::string(key), "\""));
  if (!v->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("key \"", std::string(key), "\" is not a string"));
  }
  return std::string(v->as_string());
}

// ---------------------------------------------------------------------------------------------
// Parser

// What a heap allocation of n bytes occupies (glibc: an 8-byte header, 16-byte granules, 32
// bytes at least; Emscripten's dlmalloc needs less).
static size_t ChunkBytes(size_t n) { return std::max<size_t>(32, (n + 8 + 15) & ~size_t{15}); }

class Parser {
 public:
  Parser(std::string_view text, size_t budget) : s_(text), budget_(budget) {}

  absl::StatusOr<Value> ParseDocument() {
    if (auto st = CountContainers(); !st.ok()) return st;
    Value v;
    if (auto st = ParseValue(&v, 0); !st.ok()) return st;
    SkipSpace();
    if (i_ != s_.size()) return Error("unexpected trailing characters");
    return v;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("JSON: ", std::string(what), " at byte ", i_));
  }

  // Accounts for `bytes` more of the tree; refuses the document past the budget.
  absl::Status Charge(size_t bytes) {
    used_ += bytes;
    if (used_ <= budget_) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat(
        "JSON: holding this ", s_.size(), "-byte document would take more than ", budget_,
        " bytes of memory (too many small values; stopped at byte ", i_, ")"));
  }
  absl::Status OutOfMemory() const { return Error("out of memory"); }

  // First pass: the element count of every container, in document order, so the second pass
  // allocates each one once at its final size. Only a hint (the second pass validates and grows
  // if malformed input makes a count wrong); stops counting past the nesting limit.
  absl::Status CountContainers() {
    struct Open {
      uint32_t index;
      bool has_content;
    };
    std::vector<Open> stack;
    const auto mark = [&] {
      if (!stack.empty()) stack.back().has_content = true;
    };
    const size_t n = s_.size();
    for (size_t i = 0; i < n; ++i) {
      switch (s_[i]) {
        case ' ':
        case '\t':
        case '\n':
        case '\r':
          break;
        case '"':
          mark();
          for (++i; i < n && s_[i] != '"'; ++i)
            if (s_[i] == '\\') ++i;
          break;
        case '[':
        case '{':
          mark();
          if (stack.size() > static_cast<size_t>(kMaxDepth) + 1) return absl::OkStatus();
          if (counts_.size() == counts_.capacity()) {
            const size_t want = std::max<size_t>(64, counts_.capacity() * 2);
            if (auto st = Charge((want - counts_.capacity()) * sizeof(uint32_t)); !st.ok())
              return st;
            counts_.reserve(want);
          }
          stack.push_back({static_cast<uint32_t>(counts_.size()), false});
          counts_.push_back(0);
          break;
        case ']':
        case '}':
          if (!stack.empty()) {
            if (stack.back().has_content) ++counts_[stack.back().index];
            stack.pop_back();
          }
          break;
        case ',':
          if (!stack.empty()) ++counts_[stack.back().index];
          break;
        default:
          mark();
      }
    }
    return absl::OkStatus();
  }

  uint32_t NextHint() { return next_container_ < counts_.size() ? counts_[next_container_++] : 0; }

  // Makes room for one more element in *out's block (allocating `hint` elements first).
  absl::Status Reserve(Value* out, size_t element_size, uint32_t hint) {
    Value::Block* b = out->block();
    if (b != nullptr && b->size < b->capacity) return absl::OkStatus();
    const size_t cap = b == nullptr ? 0 : b->capacity;
    const size_t want = b == nullptr ? std::max<uint32_t>(hint, 1) : cap * 2;
    const size_t before = b == nullptr ? 0 : ChunkBytes(Value::BlockBytes(element_size, cap));
    if (auto st = Charge(ChunkBytes(Value::BlockBytes(element_size, want)) - before); !st.ok())
      return st;
    Value::Block* nb = Value::Reallocate(b, element_size, want);
    if (nb == nullptr) return OutOfMemory();
    out->SetPayload(nb);
    return absl::OkStatus();
  }

  void SkipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }

  bool Consume(std::string_view lit) {
    if (s_.substr(i_, lit.size()) == lit) {
      i_ += lit.size();
      return true;
    }
    return false;
  }

  absl::Status ParseValue(Value* out, int depth) {
    if (depth > kMaxDepth) return Error("nesting too deep");
    SkipSpace();
    if (i_ >= s_.size()) return Error("unexpected end of input");
    char c = s_[i_];
    if (c == '{') return ParseObject(out, depth);
    if (c == '[') return ParseArray(out, depth);
    if (c == '"') return ParseString(out);
    if (Consume("true")) {
      *out = Value::Bool(true);
      return absl::OkStatus();
    }
    if (Consume("false")) {
      *out = Value::Bool(false);
      return absl::OkStatus();
    }
    if (Consume("null")) {
      *out = Value::Null();
      return absl::OkStatus();
    }
    if (c == '-' || (c >= '0' && c <= '9')) return ParseNumber(out);
    // Python's json.dumps writes these for non-finite floats; accept them on read.
    if (Consume("NaN")) {
      *out = Value::Number(NAN);
      return absl::OkStatus();
    }
    if (Consume("Infinity")) {
      *out = Value::Number(INFINITY);
      return absl::OkStatus();
    }
    return Error(absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  absl::Status ParseNumber(Value* out) {
    size_t start = i_;
    if (s_[i_] == '-') ++i_;
    if (Consume("Infinity")) {
      *out = Value::Number(-INFINITY);
      return absl::OkStatus();
    }
    auto digits = [&] {
      size_t d = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ - d;
    };
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else if (digits() == 0) {
      return Error("invalid number");
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (digits() == 0) return Error("invalid number");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (digits() == 0) return Error("invalid number");
    }
    // strtod needs a terminated copy; numbers are short (a long one is copied to the heap).
    const std::string_view lit = s_.substr(start, i_ - start);
    char buf[64];
    if (lit.size() < sizeof(buf)) {
      std::memcpy(buf, lit.data(), lit.size());
      buf[lit.size()] = '\0';
      *out = Value::Number(std::strtod(buf, nullptr));
    } else {
      *out = Value::Number(std::strtod(std::string(lit).c_str(), nullptr));
    }
    return absl::OkStatus();
  }

  absl::Status ParseHex4(uint32_t* cp) {
    if (i_ + 4 > s_.size()) return Error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char h = s_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= h - '0';
      else if (h >= 'a' && h <= 'f')
        v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F')
        v |= h - 'A' + 10;
      else
        return Error("invalid \\u escape");
    }
    *cp = v;
    return absl::OkStatus();
  }

  // Decodes the string at s_[i_] (the opening quote) into *out.
  absl::Status ParseString(Value* out) {
    ++i_;  // opening quote
    // Escapes only shrink, so the raw extent bounds the decoded size: reserve it once.
    size_t end = i_;
    while (end < s_.size() && s_[end] != '"') end += s_[end] == '\\' ? 2 : 1;
    const size_t raw = std::min(end, s_.size()) - i_;
    if (raw > scratch_.capacity()) {
      if (auto st = Charge(raw - scratch_.capacity()); !st.ok()) return st;
      scratch_.reserve(raw);
    }
    scratch_.clear();
    std::string* text = &scratch_;
    for (;;) {
      if (i_ >= s_.size()) return Error("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        break;
      }
      if (c < 0x20) return Error("control character in string");
      if (c == '\\') {
        ++i_;
        if (i_ >= s_.size()) return Error("unterminated string");
        char e = s_[i_++];
        switch (e) {
          case '"':
            text->push_back('"');
            break;
          case '\\':
            text->push_back('\\');
            break;
          case '/':
            text->push_back('/');
            break;
          case 'b':
            text->push_back('\b');
            break;
          case 'f':
            text->push_back('\f');
            break;
          case 'n':
            text->push_back('\n');
            break;
          case 'r':
            text->push_back('\r');
            break;
          case 't':
            text->push_back('\t');
            break;
          case 'u': {
            uint32_t cp = 0;
            if (auto st = ParseHex4(&cp); !st.ok()) return st;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              uint32_t lo = 0;
              if (!Consume("\\u")) return Error("lone high surrogate");
              if (auto st = ParseHex4(&lo); !st.ok()) return st;
              if (lo < 0xDC00 || lo > 0xDFFF) return Error("invalid low surrogate");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              return Error("lone low surrogate");
            }
            AppendUtf8(cp, text);
            break;
          }
          default:
            return Error("invalid escape");
        }
        continue;
      }
      uint32_t cp;
      const size_t n = DecodeUtf8(s_, i_, &cp);
      if (n == 0) return Error("invalid UTF-8 in string");
      text->append(s_.substr(i_, n));
      i_ += n;
    }
    if (text->size() > Value::kInlineString) {
      if (auto st = Charge(ChunkBytes(text->size())); !st.ok()) return st;
    }
    if (!out->AssignString(*text)) return OutOfMemory();
    return absl::OkStatus();
  }

  absl::Status ParseArray(Value* out, int depth) {
    ++i_;
    const uint32_t hint = NextHint();
    *out = Value::Array();
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return absl::OkStatus();
    }
    for (;;) {
      if (auto st = Reserve(out, sizeof(Value), hint); !st.ok()) return st;
      Value::Block* b = out->block();
      Value* item = new (out->elements() + b->size) Value();
      ++b->size;  // counted before parsing, so a failure releases what it holds
      if (auto st = ParseValue(item, depth + 1); !st.ok()) return st;
      SkipSpace();
      if (i_ >= s_.size()) return Error("unterminated array");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == ']') {
        ++i_;
        return absl::OkStatus();
      }
      return Error("expected ',' or ']'");
    }
  }

  absl::Status ParseObject(Value* out, int depth) {
    ++i_;
    const uint32_t hint = NextHint();
    *out = Value::Object();
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return absl::OkStatus();
    }
    for (;;) {
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != '"') return Error("expected a string key");
      if (auto st = Reserve(out, sizeof(Value::Member), hint); !st.ok()) return st;
      Value::Block* b = out->block();
      Value::Member* m = new (out->members_ptr() + b->size) Value::Member();
      ++b->size;
      if (auto st = ParseString(&m->key); !st.ok()) return st;
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != ':') return Error("expected ':'");
      ++i_;
      // Appending directly (no duplicate check) keeps parsing linear; Find returns the last.
      if (auto st = ParseValue(&m->value, depth + 1); !st.ok()) return st;
      SkipSpace();
      if (i_ >= s_.size()) return Error("unterminated object");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == '}') {
        ++i_;
        return absl::OkStatus();
      }
      return Error("expected ',' or '}'");
    }
  }

  std::string_view s_;
  size_t i_ = 0;
  const size_t budget_;
  size_t used_ = 0;
  std::vector<uint32_t> counts_;  // element count per container, document order (first pass)
  size_t next_container_ = 0;
  std::string scratch_;  // decoded bytes of the current string
};

namespace {

void DumpTo(const Value& v, std::string* out) {
  switch (v.type()) {
    case Value::Type::kNull:
      out->append("null");
      break;
    case Value::Type::kBool:
      out->append(v.as_bool() ? "true" : "false");
      break;
    case Value::Type::kNumber: {
      double d = v.as_number();
      if (std::isnan(d)) {
        out->append("NaN");
      } else if (std::isinf(d)) {
        out->append(d > 0 ? "Infinity" : "-Infinity");
      } else if (std::floor(d) == d && std::fabs(d) < 1e15) {
        absl::StrAppend(out, static_cast<int64_t>(d));
      } else {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.9g", d);
        // %.9g round-trips float32 values (our statistics are float); use 17 if it does not
        // round-trip as a double.
        if (std::strtod(buf, nullptr) != d) std::snprintf(buf, sizeof(buf), "%.17g", d);
        out->append(buf);
      }
      break;
    }
    case Value::Type::kString:
      out->append(Quote(v.as_string()));
      break;
    case Value::Type::kArray: {
      out->push_back('[');
      bool first = true;
      for (const auto& item : v.items()) {
        if (!first) out->push_back(',');
        first = false;
        DumpTo(item, out);
      }
      out->push_back(']');
      break;
    }
    case Value::Type::kObject: {
      out->push_back('{');
      bool first = true;
      for (const auto& [k, item] : v.members()) {
        if (!first) out->push_back(',');
        first = false;
        out->append(Quote(k));
        out->push_back(':');
        DumpTo(item, out);
      }
      out->push_back('}');
      break;
    }
  }
}

}  // namespace

std::string Value::Dump() const {
  std::string out;
  DumpTo(*this, &out);
  return out;
}

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
  return out;
}

absl::StatusOr<Value> Parse(std::string_view text, const ParseOptions& options) {
  size_t budget = options.max_memory;
  if (budget == 0) {
    budget = text.size() > (std::numeric_limits<size_t>::max() - kDefaultMemorySlack) /
                               kDefaultMemoryFactor
                 ? std::numeric_limits<size_t>::max()
                 : kDefaultMemoryFactor * text.size() + kDefaultMemorySlack;
  }
  return Parser(text, budget).ParseDocument();
}

}  // namespace selfcond::json
