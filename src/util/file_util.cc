#include "util/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#if !defined(SELFCOND_WASM)
#include <signal.h>
#include <sys/mman.h>
#endif

namespace selfcond {

#if !defined(SELFCOND_WASM)
absl::StatusOr<int> OpenInput(const std::string& path, uint64_t* size) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (forever). It is
  // cleared again once fstat shows a regular file, where it has no effect anyway.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

namespace {

// Reads [0, n) of fd into dst; an error when the file ends early (it shrank under us).
absl::Status ReadExactly(int fd, const std::string& path, uint8_t* dst, size_t n) {
  size_t done = 0;
  while (done < n) {
    const ssize_t k = ::pread(fd, dst + done, n - done, static_cast<off_t>(done));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      return absl::DataLossError(absl::StrCat("'", path, "' ended at byte ", done, " of ", n,
                                              " while being read (changed?)"));
    }
    done += static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

}  // namespace
#endif

absl::StatusOr<std::string> ReadFile(const std::string& path) {
#if !defined(SELFCOND_WASM)
  // Only regular files, of a bounded size: `--concept /dev/zero` or a FIFO would otherwise be
  // read without end.
  uint64_t size = 0;
  auto fd = OpenInput(path, &size);
  if (!fd.ok()) return fd.status();
  if (size > kMaxReadFileBytes) {
    ::close(*fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is ", size >> 20,
                                                   " MiB; inputs read whole are limited to ",
                                                   kMaxReadFileBytes >> 20, " MiB"));
  }
  std::string out(static_cast<size_t>(size), '\0');
  absl::Status st =
      ReadExactly(*fd, path, reinterpret_cast<uint8_t*>(out.data()), static_cast<size_t>(size));
  ::close(*fd);
  if (!st.ok()) return st;
  return out;
#else
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
  return ss.str();
#endif
}

absl::Status WriteFile(const std::string& path, std::string_view bytes) {
#if defined(SELFCOND_WASM)
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", path, "': ", strerror(errno)));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing '", path, "'"));
  return absl::OkStatus();
#else
  auto out = AtomicOutputFile::Create(path);
  if (!out.ok()) return out.status();
  if (auto st = (*out)->Write(bytes.data(), bytes.size()); !st.ok()) return st;
  return (*out)->Commit();
#endif
}

AtomicOutputFile::AtomicOutputFile(std::string path) : path_(std::move(path)) {}

absl::StatusOr<std::unique_ptr<AtomicOutputFile>> AtomicOutputFile::Create(
    const std::string& path) {
  std::unique_ptr<AtomicOutputFile> f(new AtomicOutputFile(path));
#if !defined(SELFCOND_WASM)
  // Only regular files are replaced: renaming over a device or FIFO (`--out /dev/null`) would
  // replace the node itself, and a directory cannot be.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    f->done_ = true;
    return absl::InvalidArgumentError(
        absl::StrCat("output '", path, "' exists and is not a regular file (",
                     S_ISDIR(st.st_mode)                          ? "a directory"
                     : S_ISFIFO(st.st_mode)                       ? "a FIFO"
                     : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                                  : "a special file",
                     "): refusing to replace it"));
  }
  // A file past RLIMIT_FSIZE must fail with EFBIG (and be cleaned up), not kill the process.
  static const bool xfsz = [] {
    struct sigaction old;
    if (::sigaction(SIGXFSZ, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      ::signal(SIGXFSZ, SIG_IGN);
    }
    return true;
  }();
  (void)xfsz;
  // A fresh, unpredictable name beside the target, created exclusively: nothing planted at a
  // guessable name (a symlink, a FIFO) is ever opened or followed.
  std::string tmpl = path + ".tmp.XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  f->fd_ = ::mkostemp(name.data(), O_CLOEXEC);
  if (f->fd_ < 0) {
    const int err = errno;
    f->done_ = true;
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create a temporary file beside '", path, "': ", strerror(err)));
  }
  ::fchmod(f->fd_, 0644);
  f->tmp_ = name.data();
  RegisterTempFile(f->tmp_);
#else
  f->tmp_ = path + ".tmp";
  f->fd_ = ::open(f->tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (f->fd_ < 0) {
    const int err = errno;
    f->done_ = true;
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", f->tmp_, "' (for '", path, "'): ", strerror(err)));
  }
#endif
  return f;
}

absl::Status AtomicOutputFile::Fail(const char* what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  UnregisterTempFile(tmp_);
  done_ = true;
  return absl::DataLossError(absl::StrCat(what, " '", path_, "': ", strerror(err)));
}

absl::Status AtomicOutputFile::Write(const void* p, size_t n) {
  if (done_) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t k = ::write(fd_, c, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return Fail("error writing", errno);
    }
    c += k;
    n -= static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

absl::Status AtomicOutputFile::WriteAt(uint64_t offset, const void* p, size_t n) {
  if (done_) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t k = ::pwrite(fd_, c, n, static_cast<off_t>(offset));
    if (k < 0) {
      if (errno == EINTR) continue;
      return Fail("error writing", errno);
    }
    c += k;
    offset += static_cast<uint64_t>(k);
    n -= static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

absl::Status AtomicOutputFile::Commit() {
  if (done_) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
#if !defined(SELFCOND_WASM)
  if (::fsync(fd_) != 0) return Fail("error writing", errno);
#endif
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return Fail("error writing", errno);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) return Fail("cannot rename into", errno);
  UnregisterTempFile(tmp_);
  done_ = true;
  return absl::OkStatus();
}

AtomicOutputFile::~AtomicOutputFile() {
  if (!done_) Fail("abandoned", 0).IgnoreError();
}

bool SameFile(const std::string& a, const std::string& b) {
#if defined(SELFCOND_WASM)
  return a == b;
#else
  struct stat sa, sb;
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
#endif
}

absl::Status CheckOutputPath(const std::string& out, const std::vector<std::string>& inputs) {
  if (out.empty()) return absl::InvalidArgumentError("empty output path");
  for (const std::string& in : inputs) {
    if (!in.empty() && (in == out || SameFile(in, out))) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", out, "' is also an input: it would be replaced"));
    }
  }
#if !defined(SELFCOND_WASM)
  struct stat st;
  if (::stat(out.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("output '", out, "' is a directory"));
  }
  const size_t slash = out.find_last_of('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : out.substr(0, slash));
  if (::access(dir.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write '", out, "': directory '", dir, "': ", strerror(errno)));
  }
#endif
  return absl::OkStatus();
}

#if !defined(SELFCOND_WASM)
namespace {

// Slots the signal handler reads: fixed storage, no allocation (async-signal-safe).
constexpr int kTempSlots = 16;
char g_temp_files[kTempSlots][4096];
volatile sig_atomic_t g_temp_used[kTempSlots];

extern "C" void RemoveTempFilesAndExit(int sig) {
  for (int i = 0; i < kTempSlots; ++i) {
    if (g_temp_used[i]) ::unlink(g_temp_files[i]);
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace
#endif

void RegisterTempFile(const std::string& path) {
#if !defined(SELFCOND_WASM)
  static const bool installed = [] {
    for (int sig : {SIGINT, SIGTERM}) {
      struct sigaction sa = {};
      sa.sa_handler = RemoveTempFilesAndExit;
      sigemptyset(&sa.sa_mask);
      // Keep a handler the application installed itself.
      struct sigaction old;
      if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
        ::sigaction(sig, &sa, nullptr);
      }
    }
    return true;
  }();
  (void)installed;
  if (path.size() >= sizeof(g_temp_files[0])) return;
  for (int i = 0; i < kTempSlots; ++i) {
    if (!g_temp_used[i]) {
      std::memcpy(g_temp_files[i], path.c_str(), path.size() + 1);
      g_temp_used[i] = 1;
      return;
    }
  }
#else
  (void)path;
#endif
}

void UnregisterTempFile(const std::string& path) {
#if !defined(SELFCOND_WASM)
  for (int i = 0; i < kTempSlots; ++i) {
    if (g_temp_used[i] && path == g_temp_files[i]) g_temp_used[i] = 0;
  }
#else
  (void)path;
#endif
}

void HeapBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

HeapBuffer HeapBuffer::Adopt(void* malloced, size_t n) {
  HeapBuffer b;
  b.p_.reset(static_cast<uint8_t*>(malloced));
  b.n_ = malloced != nullptr ? n : 0;
  return b;
}

absl::StatusOr<HeapBuffer> HeapBuffer::Allocate(size_t n) {
  HeapBuffer b;
  b.p_.reset(static_cast<uint8_t*>(std::malloc(n == 0 ? 1 : n)));
  if (!b.p_) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory for ", n, " bytes"));
  }
  b.n_ = n;
  return b;
}

absl::StatusOr<HeapBuffer> ReadFileToHeap(const std::string& path) {
#if defined(SELFCOND_WASM)
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return HeapBuffer::CopyOf(bytes->data(), bytes->size());
#else
  uint64_t size = 0;
  auto fd = OpenInput(path, &size);
  if (!fd.ok()) return fd.status();
  auto buf = HeapBuffer::Allocate(static_cast<size_t>(size));
  if (!buf.ok()) {
    ::close(*fd);
    return buf.status();
  }
  absl::Status st = ReadExactly(*fd, path, buf->data(), buf->size());
  ::close(*fd);
  if (!st.ok()) return st;
  return buf;
#endif
}

absl::StatusOr<HeapBuffer> HeapBuffer::CopyOf(const void* p, size_t n) {
  auto b = Allocate(n);
  if (b.ok() && n > 0) std::memcpy(b->data(), p, n);
  return b;
}

void HeapBuffer::ShrinkTo(size_t n) {
  if (n >= n_) return;
  if (void* q = std::realloc(p_.get(), n == 0 ? 1 : n)) {
    (void)p_.release();
    p_.reset(static_cast<uint8_t*>(q));
  }
  n_ = n;  // if realloc failed the block stays as it was, with fewer bytes in use
}

MappedFile MappedFile::FromBuffer(HeapBuffer bytes) {
  MappedFile f;
  f.heap_ = std::move(bytes);
  f.data_ = f.heap_.size() ? f.heap_.data() : nullptr;
  f.size_ = f.heap_.size();
  return f;
}

void MappedFile::ShrinkHeap(size_t n) {
  if (!owns_heap()) return;
  heap_.ShrinkTo(n);
  data_ = heap_.size() ? heap_.data() : nullptr;
  size_ = heap_.size();
}

absl::StatusOr<MappedFile> MappedFile::Open(const std::string& path) {
#if defined(SELFCOND_WASM)
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  auto heap = HeapBuffer::CopyOf(bytes->data(), bytes->size());
  if (!heap.ok()) return heap.status();
  return FromBuffer(std::move(*heap));
#else
  // Opened like every input (OpenInput: a FIFO fails at once instead of blocking).
  uint64_t size = 0;
  auto fd_or = OpenInput(path, &size);
  if (!fd_or.ok()) return fd_or.status();
  const int fd = *fd_or;
  MappedFile f;
  f.size_ = static_cast<size_t>(size);
  if (f.size_ == 0) {
    ::close(fd);
    return f;  // empty: callers report "truncated"
  }
  void* p = mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot mmap '", path, "': ", strerror(errno)));
  }
  f.data_ = static_cast<const uint8_t*>(p);
  f.map_base_ = f.data_;
  f.map_len_ = f.size_;
  f.mapped_ = true;
  f.fd_ = fd;  // kept for Read()
  return f;
#endif
}

absl::StatusOr<MappedFile> MappedFile::OpenFd(int fd, uint64_t offset, uint64_t length) {
#if defined(SELFCOND_WASM)
  (void)fd, (void)offset, (void)length;
  return absl::UnimplementedError("loading from a file descriptor is not available in WASM");
#else
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("fd: invalid descriptor ", fd));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("fd ", fd, ": ", strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("fd ", fd, " is not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (offset > file_size) {
    return absl::OutOfRangeError(
        absl::StrCat("offset ", offset, " is past the end of the file (", file_size, " bytes)"));
  }
  if (length == 0) length = file_size - offset;
  if (length > file_size - offset) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset, " + length ", length,
                                              " is past the end of the file (", file_size,
                                              " bytes)"));
  }
  if (length > SIZE_MAX) return absl::OutOfRangeError("length does not fit in memory");
  if (offset % 64 != 0) {
    // The model file's tensors are 64-byte aligned relative to its start: at another offset a
    // mapping would misalign them, so the range is read into (aligned) memory instead.
    auto heap = HeapBuffer::Allocate(static_cast<size_t>(length));
    if (!heap.ok()) return heap.status();
    size_t done = 0;
    while (done < length) {
      const ssize_t r = pread(fd, heap->data() + done, static_cast<size_t>(length) - done,
                              static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        return absl::DataLossError(absl::StrCat("fd ", fd, ": read at ", offset + done, ": ",
                                                r < 0 ? strerror(errno) : "end of file"));
      }
      done += static_cast<size_t>(r);
    }
    return FromBuffer(std::move(*heap));
  }
  const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return absl::InternalError(absl::StrCat("dup of fd ", fd, ": ", strerror(errno)));
  MappedFile f;
  f.size_ = static_cast<size_t>(length);
  f.fd_ = own;
  f.file_offset_ = offset;
  if (f.size_ == 0) return f;  // empty: callers report "truncated"
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t aligned = offset / page * page;
  f.map_len_ = static_cast<size_t>(offset - aligned) + f.size_;
  void* p = mmap(nullptr, f.map_len_, PROT_READ, MAP_PRIVATE, own, static_cast<off_t>(aligned));
  if (p == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot mmap fd ", fd, ": ", strerror(errno)));
  }
  f.map_base_ = static_cast<const uint8_t*>(p);
  f.data_ = f.map_base_ + (offset - aligned);
  f.mapped_ = true;
  return f;
#endif
}

MappedFile MappedFile::Borrow(const void* data, size_t size) {
  MappedFile f;
  f.data_ = size ? static_cast<const uint8_t*>(data) : nullptr;
  f.size_ = size;
  f.borrowed_ = true;
  return f;
}

MappedFile::MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this == &o) return *this;
    // Release what this one holds (not through ~MappedFile: that would end heap_'s lifetime).
#if !defined(SELFCOND_WASM)
  if (mapped_ && map_base_) munmap(const_cast<uint8_t*>(map_base_), map_len_);
  if (fd_ >= 0) ::close(fd_);
#endif
  heap_ = HeapBuffer();
  mapped_ = o.mapped_;
  borrowed_ = o.borrowed_;
  size_ = o.size_;
  fd_ = o.fd_;
  map_base_ = o.map_base_;
  map_len_ = o.map_len_;
  file_offset_ = o.file_offset_;
  o.fd_ = -1;
  o.map_base_ = nullptr;
  o.map_len_ = 0;
  o.borrowed_ = false;
  if (mapped_ || borrowed_) {
    data_ = o.data_;
  } else {
    heap_ = std::move(o.heap_);
    data_ = heap_.data();
    if (size_ == 0) data_ = nullptr;
  }
  o.data_ = nullptr;
  o.size_ = 0;
  o.mapped_ = false;
  return *this;
}

MappedFile::~MappedFile() {
#if !defined(SELFCOND_WASM)
  if (mapped_ && map_base_) munmap(const_cast<uint8_t*>(map_base_), map_len_);
  if (fd_ >= 0) ::close(fd_);
#endif
  map_base_ = nullptr;
  fd_ = -1;
  mapped_ = false;
  data_ = nullptr;
  size_ = 0;
}

absl::Status MappedFile::Read(const void* p, size_t n, void* dst) const {
  const size_t off = static_cast<size_t>(static_cast<const uint8_t*>(p) - data_);
  if (off > size_ || n > size_ - off) return absl::OutOfRangeError("read past the model file");
#if !defined(SELFCOND_WASM)
  if (fd_ >= 0) {
    size_t done = 0;
    while (done < n) {
      const ssize_t r = pread(fd_, static_cast<uint8_t*>(dst) + done, n - done,
                              static_cast<off_t>(file_offset_ + off + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        return absl::DataLossError(
            absl::StrCat("the model file changed or became unreadable while in use (read at ",
                         off + done, ": ", r < 0 ? strerror(errno) : "end of file", ")"));
      }
      done += static_cast<size_t>(r);
    }
    return absl::OkStatus();
  }
#endif
  std::memcpy(dst, p, n);
  return absl::OkStatus();
}

void MappedFile::DropPages(const void* p, size_t n) const {
#if !defined(SELFCOND_WASM)
  if (!mapped_ || n == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (end > begin) {
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace selfcond
