// A small strict JSON reader/writer (RFC 8259) for config.json, vocab.json, safetensors headers,
// concept datasets, expert tables and reference files. No dependency, so it builds for WASM too.
// Parse errors name the byte offset. Nesting is limited (kMaxDepth) so hostile input cannot
// overflow the stack.
#ifndef SELFCOND_JSON_H_
#define SELFCOND_JSON_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace selfcond::json {

inline constexpr int kMaxDepth = 256;

class Value {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Value() = default;
  static Value Null() { return Value(); }
  static Value Bool(bool b);
  static Value Number(double d);
  static Value String(std::string s);
  static Value Array(std::vector<Value> items = {});
  static Value Object();  // keys keep insertion order

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool as_bool() const { return bool_; }
  double as_number() const { return number_; }
  const std::string& as_string() const { return string_; }
  const std::vector<Value>& items() const { return array_; }  // array elements
  std::vector<Value>& items() { return array_; }
  // Object members in document order.
  const std::vector<std::pair<std::string, Value>>& members() const { return object_; }

  // Object lookup; nullptr when absent or when this is not an object. Linear for small objects,
  // indexed once an object has many members (vocab.json has 50257).
  const Value* Find(std::string_view key) const;
  void Set(std::string key, Value v);           // object: append or replace
  void AppendMember(std::string key, Value v);  // object: append (no duplicate check)
  void Push(Value v) { array_.push_back(std::move(v)); }

  // Typed getters with errors that name the key.
  absl::StatusOr<double> GetNumber(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;  // must be integral
  absl::StatusOr<std::string> GetString(std::string_view key) const;

  // Compact serialization (numbers with enough digits to round-trip a float/double).
  std::string Dump() const;

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Value> array_;
  std::vector<std::pair<std::string, Value>> object_;
  mutable std::shared_ptr<std::map<std::string, size_t, std::less<>>> index_;
};

// Parses a whole document (trailing non-space is an error). Strings must be valid UTF-8 and
// \u escapes are decoded (surrogate pairs combined; a lone surrogate is an error).
absl::StatusOr<Value> Parse(std::string_view text);

// Escapes s as a JSON string literal (with quotes).
std::string Quote(std::string_view s);

}  // namespace selfcond::json

#endif  // SELFCOND_JSON_H_
