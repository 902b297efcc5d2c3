#include "util/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace selfcond::json {

Value Value::Bool(bool b) {
  Value v;
  v.type_ = Type::kBool;
  v.bool_ = b;
  return v;
}
Value Value::Number(double d) {
  Value v;
  v.type_ = Type::kNumber;
  v.number_ = d;
  return v;
}
Value Value::String(std::string s) {
  Value v;
  v.type_ = Type::kString;
  v.string_ = std::move(s);
  return v;
}
Value Value::Array(std::vector<Value> items) {
  Value v;
  v.type_ = Type::kArray;
  v.array_ = std::move(items);
  return v;
}
Value Value::Object() {
  Value v;
  v.type_ = Type::kObject;
  return v;
}

// Objects with few members are searched linearly; big ones (vocab.json) get a lazy index.
static constexpr size_t kIndexThreshold = 16;

const Value* Value::Find(std::string_view key) const {
  if (type_ != Type::kObject) return nullptr;
  if (object_.size() < kIndexThreshold) {
    for (const auto& [k, v] : object_)
      if (k == key) return &v;
    return nullptr;
  }
  if (!index_ || index_->size() != object_.size()) {
    auto idx = std::make_shared<std::map<std::string, size_t, std::less<>>>();
    for (size_t i = 0; i < object_.size(); ++i) (*idx)[object_[i].first] = i;  // last wins
    index_ = std::move(idx);
  }
  auto it = index_->find(key);
  return it == index_->end() ? nullptr : &object_[it->second].second;
}

void Value::Set(std::string key, Value v) {
  type_ = Type::kObject;
  for (auto& [k, old] : object_) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  object_.emplace_back(std::move(key), std::move(v));
  index_.reset();
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
  return v->as_string();
}

namespace {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if invalid.
size_t Utf8SeqLen(std::string_view s, size_t i) {
  auto b = [&](size_t j) { return static_cast<unsigned char>(s[j]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t j = 1; j < n; ++j) {
    if ((b(i + j) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + j) & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return 0;
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  absl::StatusOr<Value> ParseDocument() {
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
    if (c == '"') {
      std::string str;
      if (auto st = ParseString(&str); !st.ok()) return st;
      *out = Value::String(std::move(str));
      return absl::OkStatus();
    }
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
    if (Consume("-Infinity")) {
      *out = Value::Number(-INFINITY);
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
    std::string tmp(s_.substr(start, i_ - start));
    *out = Value::Number(std::strtod(tmp.c_str(), nullptr));
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

  absl::Status ParseString(std::string* out) {
    ++i_;  // opening quote
    for (;;) {
      if (i_ >= s_.size()) return Error("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return absl::OkStatus();
      }
      if (c < 0x20) return Error("control character in string");
      if (c == '\\') {
        ++i_;
        if (i_ >= s_.size()) return Error("unterminated string");
        char e = s_[i_++];
        switch (e) {
          case '"':
            out->push_back('"');
            break;
          case '\\':
            out->push_back('\\');
            break;
          case '/':
            out->push_back('/');
            break;
          case 'b':
            out->push_back('\b');
            break;
          case 'f':
            out->push_back('\f');
            break;
          case 'n':
            out->push_back('\n');
            break;
          case 'r':
            out->push_back('\r');
            break;
          case 't':
            out->push_back('\t');
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
            AppendUtf8(cp, out);
            break;
          }
          default:
            return Error("invalid escape");
        }
        continue;
      }
      size_t n = Utf8SeqLen(s_, i_);
      if (n == 0) return Error("invalid UTF-8 in string");
      out->append(s_.substr(i_, n));
      i_ += n;
    }
  }

  absl::Status ParseArray(Value* out, int depth) {
    ++i_;
    *out = Value::Array();
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return absl::OkStatus();
    }
    for (;;) {
      Value item;
      if (auto st = ParseValue(&item, depth + 1); !st.ok()) return st;
      out->Push(std::move(item));
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
    *out = Value::Object();
    std::vector<std::pair<std::string, Value>> members;
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return absl::OkStatus();
    }
    for (;;) {
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != '"') return Error("expected a string key");
      std::string key;
      if (auto st = ParseString(&key); !st.ok()) return st;
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != ':') return Error("expected ':'");
      ++i_;
      Value v;
      if (auto st = ParseValue(&v, depth + 1); !st.ok()) return st;
      // Appending directly (not Set) keeps parsing linear; duplicate keys: Find returns the last.
      members.emplace_back(std::move(key), std::move(v));
      SkipSpace();
      if (i_ >= s_.size()) return Error("unterminated object");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == '}') {
        ++i_;
        break;
      }
      return Error("expected ',' or '}'");
    }
    *out = Value::Object();
    for (auto& m : members) out->AppendMember(std::move(m.first), std::move(m.second));
    return absl::OkStatus();
  }

  std::string_view s_;
  size_t i_ = 0;
};

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

void Value::AppendMember(std::string key, Value v) {
  type_ = Type::kObject;
  object_.emplace_back(std::move(key), std::move(v));
  index_.reset();
}

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

absl::StatusOr<Value> Parse(std::string_view text) { return Parser(text).ParseDocument(); }

}  // namespace selfcond::json
