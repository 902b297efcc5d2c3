// SHA-256 (FIPS 180-4), streaming. Used for the model file's content hash, which identifies a
// model (expert tables store it). Small and dependency-free so it builds for WASM too.
#ifndef SELFCOND_SHA256_H_
#define SELFCOND_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace selfcond {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256();
  void Update(const void* data, size_t n);
  void Update(absl::Span<const uint8_t> bytes) { Update(bytes.data(), bytes.size()); }
  // Finishes and returns the digest; the object must not be updated afterwards.
  Digest Final();

  static Digest Hash(absl::Span<const uint8_t> bytes);

 private:
  void Block(const uint8_t* p);  // one 64-byte block

  uint32_t h_[8];
  uint8_t buf_[64];  // (64) pending partial block
  size_t buf_len_ = 0;
  uint64_t total_ = 0;  // bytes hashed so far
};

// Lowercase hex of any byte string (64 chars for a digest).
std::string HexLower(absl::Span<const uint8_t> bytes);

}  // namespace selfcond

#endif  // SELFCOND_SHA256_H_
