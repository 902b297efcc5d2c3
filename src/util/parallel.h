// Threads. Natively a pthreadpool (the pool XNNPACK uses too); in WASM a small std::thread pool
// (Emscripten pthreads) or none. Work is split by the callers into independent items.
#ifndef SELFCOND_PARALLEL_H_
#define SELFCOND_PARALLEL_H_

#include <functional>
#include <memory>

namespace selfcond {

class ThreadPool {
 public:
  // threads <= 0: the number of cores. Capped by MaxThreads().
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int size() const { return size_; }

  // Runs fn(i) for every i in [0, n), spread over the threads; returns when all are done.
  // fn must not throw. Not reentrant.
  void ParallelFor(int n, const std::function<void(int)>& fn);

  // The native pthreadpool_t (for XNNPACK), or nullptr.
  void* native_handle() const;

  static int NumCores();
  // The SELFCOND_MAX_THREADS environment variable caps every pool (0 / unset: no cap). For
  // hosts that must stay single-threaded, e.g. emulators whose threads do not work.
  static int MaxThreads();

 private:
  int size_ = 1;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace selfcond

#endif  // SELFCOND_PARALLEL_H_
