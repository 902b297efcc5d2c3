#include "parallel.h"

#include <thread>

#if defined(SELFCOND_HAVE_PTHREADPOOL)
#include <pthreadpool.h>
#elif defined(__EMSCRIPTEN_PTHREADS__)
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <vector>
#endif

namespace selfcond {

int ThreadPool::NumCores() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

#if defined(SELFCOND_HAVE_PTHREADPOOL)

struct ThreadPool::Impl {
  pthreadpool_t pool = nullptr;
};

ThreadPool::ThreadPool(int threads) : impl_(new Impl) {
  size_ = threads <= 0 ? NumCores() : threads;
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

#elif defined(__EMSCRIPTEN_PTHREADS__)

// A minimal fork-join pool: workers wait for a generation number, take items from an atomic
// counter, and the caller joins in.
struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable cv_start, cv_done;
  const std::function<void(int)>* fn = nullptr;
  int n = 0;
  std::atomic<int> next{0};
  int active = 0;
  long generation = 0;
  bool stop = false;

  void Work() {
    for (int i; (i = next.fetch_add(1)) < n;) (*fn)(i);
  }
  void Loop() {
    long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv_start.wait(lock, [&] { return stop || generation != seen; });
        if (stop) return;
        seen = generation;
      }
      Work();
      std::lock_guard<std::mutex> lock(mu);
      if (--active == 0) cv_done.notify_one();
    }
  }
};

ThreadPool::ThreadPool(int threads) : impl_(new Impl) {
  size_ = threads <= 0 ? NumCores() : threads;
  for (int t = 1; t < size_; ++t) impl_->workers.emplace_back([this] { impl_->Loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv_start.notify_all();
  for (auto& w : impl_->workers) w.join();
}

void ThreadPool::ParallelFor(int n, const std::function<void(int)>& fn) {
  if (n <= 0) return;
  if (impl_->workers.empty() || n == 1) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->fn = &fn;
    impl_->n = n;
    impl_->next = 0;
    impl_->active = static_cast<int>(impl_->workers.size());
    ++impl_->generation;
  }
  impl_->cv_start.notify_all();
  impl_->Work();
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv_done.wait(lock, [&] { return impl_->active == 0; });
}

void* ThreadPool::native_handle() const { return nullptr; }

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
