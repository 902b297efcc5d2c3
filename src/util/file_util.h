// Reading files whole, and memory-mapping them read-only (the model is used in place).
#ifndef SELFCOND_FILE_UTIL_H_
#define SELFCOND_FILE_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace selfcond {

// Opens an input the one way every input is opened (models, tables, datasets, configs):
// non-blocking first, so a FIFO fails at once instead of waiting for a writer, then it must be a
// regular file. Returns the descriptor (close it) and the file's size. Not in WASM.
absl::StatusOr<int> OpenInput(const std::string& path, uint64_t* size);

// Reads a regular file whole (a FIFO, device or directory is an error, and so is a file over
// kMaxReadFileBytes: model files are mapped, not read).
inline constexpr uint64_t kMaxReadFileBytes = uint64_t{1} << 30;
absl::StatusOr<std::string> ReadFile(const std::string& path);
// Natively atomic (an AtomicOutputFile): the target is the old file or the whole new one.
absl::Status WriteFile(const std::string& path, std::string_view bytes);

// An output written under a temporary name of its own beside the target (`NAME.tmp.XXXXXX`,
// random, created with O_EXCL by mkostemp on the same file system: nothing planted at the name
// is followed or opened), removed on failure, when destroyed before Commit, and on SIGINT /
// SIGTERM; SIGXFSZ is ignored so that a file over `ulimit -f` fails with EFBIG and is removed.
// An existing target that is not a regular file (a device, FIFO, directory) is refused. Commit
// fsyncs it and renames it into place. Every output of selfcond goes through this: a kill or a
// full disk never leaves a truncated file where a valid one was.
class AtomicOutputFile {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicOutputFile>> Create(const std::string& path);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  absl::Status Write(const void* p, size_t n);                     // appends
  absl::Status WriteAt(uint64_t offset, const void* p, size_t n);  // over bytes already written
  absl::Status Commit();  // fsync, close, rename; the object is then done

 private:
  explicit AtomicOutputFile(std::string path);
  absl::Status Fail(const char* what, int err);  // removes the temporary file
  std::string path_, tmp_;
  int fd_ = -1;
  bool done_ = false;
};

// Output files (issue 9): an output must not replace one of the inputs, and its directory must
// be writable; both are checked before long work starts. SameFile: the same file (device and
// inode), false if either does not exist.
bool SameFile(const std::string& a, const std::string& b);
absl::Status CheckOutputPath(const std::string& out, const std::vector<std::string>& inputs);

// Temporary files being written are removed if the process gets SIGINT or SIGTERM (the handler
// is installed on first use). At most 16 at a time; further ones are simply not registered.
void RegisterTempFile(const std::string& path);
void UnregisterTempFile(const std::string& path);

// Bytes in one malloc'd block. Unlike std::string it can shrink in place: realloc to a smaller
// size hands the tail back to the allocator (in WASM, memory that never shrinks, this is the
// only way a freed part of a model file becomes usable again).
class HeapBuffer {
 public:
  HeapBuffer() = default;
  HeapBuffer(HeapBuffer&& o) noexcept : p_(std::move(o.p_)), n_(std::exchange(o.n_, 0)) {}
  HeapBuffer& operator=(HeapBuffer&& o) noexcept {
    p_ = std::move(o.p_);
    n_ = std::exchange(o.n_, 0);
    return *this;
  }
  static absl::StatusOr<HeapBuffer> Allocate(size_t n);  // uninitialized
  static absl::StatusOr<HeapBuffer> CopyOf(const void* p, size_t n);
  // Takes over a block from std::malloc (freed with std::free).
  static HeapBuffer Adopt(void* malloced, size_t n);
  uint8_t* data() { return p_.get(); }
  const uint8_t* data() const { return p_.get(); }
  size_t size() const { return n_; }
  void ShrinkTo(size_t n);  // n <= size(); the data may move

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> p_;
  size_t n_ = 0;
};

// A whole regular file read into the heap with pread (no size cap: for model files loaded with
// Model::LoadOptions::copy_to_memory). A file that shrinks while being read is an error, not a
// SIGBUS as with a mapping.
absl::StatusOr<HeapBuffer> ReadFileToHeap(const std::string& path);

// A read-only view of a file's bytes: mmap natively, a heap copy where mmap is unavailable
// (WASM) or for buffers handed over by the caller.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path);
  // length bytes of an open file from offset (length 0: to the end), mapped like Open: a model
  // stored inside a larger file (an Android APK's uncompressed asset). The descriptor is
  // duplicated (the caller may close its own). Not in WASM.
  static absl::StatusOr<MappedFile> OpenFd(int fd, uint64_t offset, uint64_t length);
  static MappedFile FromBuffer(HeapBuffer bytes);  // takes ownership
  // The caller's bytes, used in place (no copy, not freed): they must stay unchanged and alive
  // as long as the MappedFile. Pages are never dropped (they are not ours to discard).
  static MappedFile Borrow(const void* data, size_t size);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  bool mapped() const { return mapped_; }
  // A heap copy this object owns (FromBuffer, Open in WASM): neither mapped nor borrowed.
  bool owns_heap() const { return !mapped_ && !borrowed_; }

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

  // A heap copy's bytes, writable (empty for a mapped file), and shrinking it to its first n
  // bytes (the bytes may move: take pointers again afterwards).
  absl::Span<uint8_t> mutable_heap() { return {heap_.data(), owns_heap() ? heap_.size() : 0}; }
  void ShrinkHeap(size_t n);

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  bool borrowed_ = false;  // Borrow: the caller's bytes
  int fd_ = -1;            // the mapped file, kept open for Read()
  // The mapping: from the page-aligned offset at or below the data's (OpenFd maps part of a
  // file); data_ = map_base_ + (file_offset_ - aligned offset).
  const uint8_t* map_base_ = nullptr;
  size_t map_len_ = 0;
  uint64_t file_offset_ = 0;  // of data_[0] in the file (for pread)
  HeapBuffer heap_;
};

}  // namespace selfcond

#endif  // SELFCOND_FILE_UTIL_H_
