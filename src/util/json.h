// A small strict JSON reader/writer (RFC 8259) for config.json, vocab.json, safetensors headers,
// concept datasets, expert tables and reference files. No dependency, so it builds for WASM too.
// Parse errors name the byte offset. Nesting is limited (kMaxDepth) so hostile input cannot
// overflow the stack.
//
// Memory is bounded by the input: a Value is 16 bytes (strings up to 14 bytes inline, longer
// ones and containers in one exact-size heap block), and Parse refuses, with an error, a document
// whose tree would need more than ParseOptions::max_memory (default 3 x its size + 1 MiB). So a
// JSON input costs at most ~4x its size including the text itself, however it is shaped: a
// hostile `[0,0,0,...]` (2 bytes of text per 16-byte value) is refused instead of growing the
// process by 8x its size. Container sizes are counted in a first quick pass so each container is
// allocated once at its final size (no doubling vectors).
#ifndef SELFCOND_JSON_H_
#define SELFCOND_JSON_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace selfcond::json {

inline constexpr int kMaxDepth = 256;

class Value;
class MemberRange;
class Parser;

// One object member as seen through MemberRange: the key and the value (both borrowed).
using MemberRef = std::pair<std::string_view, const Value&>;

class Value {
 public:
  enum class Type : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

  Value() { std::memset(rep_, 0, sizeof(rep_)); }
  Value(const Value& other);
  Value(Value&& other) noexcept;
  Value& operator=(const Value& other);
  Value& operator=(Value&& other) noexcept;
  ~Value() { Release(); }

  static Value Null() { return Value(); }
  static Value Bool(bool b);
  static Value Number(double d);
  static Value String(std::string_view s);
  static Value Array(std::vector<Value> items = {});
  static Value Object();  // keys keep insertion order

  Type type() const { return static_cast<Type>(rep_[0]); }
  bool is_null() const { return type() == Type::kNull; }
  bool is_bool() const { return type() == Type::kBool; }
  bool is_number() const { return type() == Type::kNumber; }
  bool is_string() const { return type() == Type::kString; }
  bool is_array() const { return type() == Type::kArray; }
  bool is_object() const { return type() == Type::kObject; }

  bool as_bool() const { return is_bool() && rep_[8] != 0; }
  double as_number() const;               // 0 unless a number
  std::string_view as_string() const;     // empty unless a string
  absl::Span<const Value> items() const;  // array elements (empty unless an array)
  absl::Span<Value> items();
  MemberRange members() const;  // object members in document order

  // Object lookup; nullptr when absent or when this is not an object. With duplicate keys the
  // last one wins. Linear for small objects; big ones (vocab.json has 50257 members) build a
  // sorted index on first use (not thread-safe: look up from one thread, or warm it first).
  const Value* Find(std::string_view key) const;
  void Set(std::string_view key, Value v);           // object: append or replace
  void AppendMember(std::string_view key, Value v);  // object: append (no duplicate check)
  void Push(Value v);                                // array: append

  // Typed getters with errors that name the key.
  absl::StatusOr<double> GetNumber(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;  // must be integral
  absl::StatusOr<std::string> GetString(std::string_view key) const;

  // Compact serialization (numbers with enough digits to round-trip a float/double).
  std::string Dump() const;

 private:
  friend class MemberRange;
  friend class Parser;
  struct Member;
  static constexpr size_t kMemberSize = 32;  // sizeof(Member), checked in json.cc
  // A container's heap block: this header, then `capacity` elements (Value or Member). An object
  // block of capacity >= kIndexThreshold ends with one more slot: its lookup index (member
  // indices sorted by key, built by Find; null until then). Small blocks carry no index pointer:
  // a safetensors header is mostly 3-member objects and 2-number arrays.
  struct alignas(8) Block {
    uint32_t size;
    uint32_t capacity;
  };
  static constexpr size_t kInlineString = 14;
  static constexpr uint32_t kIndexThreshold = 16;
  static size_t BlockBytes(size_t element_size, size_t capacity) {
    return sizeof(Block) + element_size * capacity +
           (element_size == kMemberSize && capacity >= kIndexThreshold ? sizeof(uint32_t*) : 0);
  }
  // The index slot of an object block (nullptr for arrays and small objects).
  static uint32_t** IndexSlot(Block* b, size_t element_size);
  // Resizes (or, with b == nullptr, allocates) a block to `capacity` elements; the elements are
  // moved bytewise (a Value holds no pointer into itself); an object's index is dropped. Null
  // when out of memory (b is kept).
  static Block* Reallocate(Block* b, size_t element_size, size_t capacity);

  // rep_ layout (memcpy'd fields, so every access is well defined):
  //   [0] type   [1] inline string length + 1 (0: not inline)   [2..15] inline string bytes
  //   [4..7] heap string length   [8..15] double | bool | char* | Block*
  alignas(8) unsigned char rep_[16];

  void SetType(Type t) { rep_[0] = static_cast<unsigned char>(t); }
  template <typename T>
  T Payload() const {
    T v;
    std::memcpy(&v, rep_ + 8, sizeof(T));
    return v;
  }
  template <typename T>
  void SetPayload(T v) {
    std::memcpy(rep_ + 8, &v, sizeof(T));
  }
  uint32_t HeapLength() const {
    uint32_t n;
    std::memcpy(&n, rep_ + 4, 4);
    return n;
  }
  Block* block() const { return Payload<Block*>(); }
  Value* elements() const;  // array elements of block()
  Member* members_ptr() const;
  void Release();
  // Makes room for one more array element / object member (doubling); throws std::bad_alloc.
  void Grow(size_t element_size);
  // Assigns string bytes: inline when short, else an exact heap copy. False when out of memory.
  bool AssignString(std::string_view s);
};

struct Value::Member {
  Value key;  // a string
  Value value;
};

class MemberRange {
 public:
  class iterator {
   public:
    explicit iterator(const Value::Member* p) : p_(p) {}
    MemberRef operator*() const { return {p_->key.as_string(), p_->value}; }
    iterator& operator++() {
      ++p_;
      return *this;
    }
    bool operator==(const iterator& o) const { return p_ == o.p_; }
    bool operator!=(const iterator& o) const { return p_ != o.p_; }

   private:
    const Value::Member* p_;
  };
  MemberRange(const Value::Member* begin, size_t size) : begin_(begin), size_(size) {}
  iterator begin() const { return iterator(begin_); }
  iterator end() const { return iterator(begin_ + size_); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  MemberRef operator[](size_t i) const { return {begin_[i].key.as_string(), begin_[i].value}; }

 private:
  const Value::Member* begin_;
  size_t size_;
};

struct ParseOptions {
  // Most bytes the parsed tree may take (blocks, heap strings, allocator overhead, the size
  // counts of the first pass). 0: kDefaultMemoryFactor x the text's size + kDefaultMemorySlack.
  size_t max_memory = 0;
};
inline constexpr size_t kDefaultMemoryFactor = 3;
inline constexpr size_t kDefaultMemorySlack = size_t{1} << 20;

// Parses a whole document (trailing non-space is an error). Strings must be valid UTF-8 and
// \u escapes are decoded (surrogate pairs combined; a lone surrogate is an error).
absl::StatusOr<Value> Parse(std::string_view text, const ParseOptions& options = {});

// Escapes s as a JSON string literal (with quotes).
std::string Quote(std::string_view s);

}  // namespace selfcond::json

#endif  // SELFCOND_JSON_H_
