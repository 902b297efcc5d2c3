#include "util/parallel.h"

#include <cstdlib>
#include <thread>

#if defined(SELFCOND_HAVE_PTHREADPOOL)
#include <pthreadpool.h>
#endif

namespace selfcond {

int ThreadPool::NumCores() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int ThreadPool::MaxThreads() {
  static const int cap = [] {
    const char* env = std::getenv("SELFCOND_MAX_THREADS");
    const int v = env != nullptr ? std::atoi(env) : 0;
    return v > 0 ? v : 0;
  }();
  return cap;
}

#if defined(SELFCOND_HAVE_PTHREADPOOL)

struct ThreadPool::Impl {
  pthreadpool_t pool = nullptr;
};

ThreadPool::ThreadPool(int threads) : impl_(new Impl) {
  size_ = threads <= 0 ? NumCores() : threads;
  if (MaxThreads() > 0 && size_ > MaxThreads()) size_ = MaxThreads();
  if (size_ > 1) impl_->pool = pthreadpool_create(static_cast<size_t>(size_));
  if (impl_->pool == nullptr) size_ = 1;
}

ThreadPool::~ThreadPool() {
  if (impl_->pool) pthreadpool_destroy(impl_->pool);
}

namespace {
void Trampoline(void* ctx, size_t i) {
  (*static_cast<const std::function<void(int)>*>(ctx))(static_cast<int>(i));
}
}  // namespace

void ThreadPool::ParallelFor(int n, const std::function<void(int)>& fn) {
  if (n <= 0) return;
  if (impl_->pool == nullptr || n == 1) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  pthreadpool_parallelize_1d(impl_->pool, Trampoline, const_cast<std::function<void(int)>*>(&fn),
                             static_cast<size_t>(n), PTHREADPOOL_FLAG_YIELD_WORKERS);
}

void* ThreadPool::native_handle() const { return impl_->pool; }

#else

struct ThreadPool::Impl {};
ThreadPool::ThreadPool(int) : size_(1), impl_(new Impl) {}
ThreadPool::~ThreadPool() = default;
void ThreadPool::ParallelFor(int n, const std::function<void(int)>& fn) {
  for (int i = 0; i < n; ++i) fn(i);
}
void* ThreadPool::native_handle() const { return nullptr; }

#endif

}  // namespace selfcond
