// Reading files whole, and memory-mapping them read-only (the model is used in place).
#ifndef SELFCOND_FILE_UTIL_H_
#define SELFCOND_FILE_UTIL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace selfcond {

absl::StatusOr<std::string> ReadFile(const std::string& path);
// Natively atomic: writes a temporary file beside `path`, fsyncs it and renames it into place.
absl::Status WriteFile(const std::string& path, std::string_view bytes);

// A read-only view of a file's bytes: mmap natively, a heap copy where mmap is unavailable
// (WASM) or for buffers handed over by the caller.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path);
  static MappedFile FromBuffer(std::string bytes);  // takes ownership

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  bool mapped() const { return mapped_; }

  // Tells the kernel that [p, p + n) will not be needed for a while: the whole pages inside it
  // leave the resident set (a later read faults them in again from the file, so this is always
  // safe). Used after XNNPACK has packed its own copy of a weight matrix. No-op for heap copies.
  void DropPages(const void* p, size_t n) const;

  // Copies [p, p + n) (inside the file) to dst with pread() on a mapped file, memcpy otherwise.
  // For data read a little at a time after its pages were dropped (token embedding rows): a
  // read through the mapping would fault the kernel's "fault-around" window (up to 64 KiB) into
  // the resident set for every few hundred bytes used. Also turns a file truncated under the
  // running process into an error instead of SIGBUS.
  absl::Status Read(const void* p, size_t n, void* dst) const;

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  int fd_ = -1;  // the mapped file, kept open for Read()
  std::string owned_;
};

}  // namespace selfcond

#endif  // SELFCOND_FILE_UTIL_H_
