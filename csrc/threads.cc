// The worker pool and barrier of threads.h.
#include "gatedkernels/threads.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace gatedkernels {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// One thread unless GATEDKERNELS_NUM_THREADS asks for more (or set_num_threads is called).
// Measured on the 2-vCPU CI machine: right after NumPy's OpenBLAS has run with its default
// threads, its workers keep spinning for about 0.1 s, and a 2-thread sequence then ran at
// 25.4 ms against 17.1 ms on one thread (LSTM, T=100, N=16, H=256). Using every core by default
// would make that the silent default; asking for threads is one call.
int default_threads() {
  if (const char* env = std::getenv("GATEDKERNELS_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n > 256 ? 256 : n;
  }
  return 1;
}

// Workers sleep on a condition variable between parallel regions, so an idle pool costs
// nothing; a region wakes them once (tens of microseconds), which is why the kernels only use
// threads for calls with enough work (see kernel.h, threads_for).
class Pool {
 public:
  static Pool& get() {
    static bool registered = register_fork_handler();
    (void)registered;
    Pool* p = current().load(std::memory_order_acquire);
    if (!p) {
      Pool* fresh = new Pool();  // never destroyed: workers may outlive static destructors
      if (!current().compare_exchange_strong(p, fresh)) delete fresh;
      else p = fresh;
    }
    return *p;
  }

  int threads() const { return threads_.load(std::memory_order_relaxed); }
  void set_threads(int n) { threads_.store(n < 1 ? 1 : n > 256 ? 256 : n); }

  // n is not cut to threads(): the caller sized its work and its barrier (Sched) for n threads,
  // from get_num_threads() just before, and a set_num_threads from another thread in between
  // would otherwise leave its barrier waiting for a thread that never comes.
  void run(int n, TaskFn task, void* ctx) {
    if (n > kMaxThreads) n = kMaxThreads;
    if (n <= 1) {
      task(ctx, 0, 1);
      return;
    }
    std::lock_guard<std::mutex> call_lock(call_mutex_);  // one parallel region at a time
    ensure_workers(n - 1);
    {
      std::lock_guard<std::mutex> lk(mutex_);
      task_ = task;
      ctx_ = ctx;
      active_ = n;
      pending_.store(n - 1);
      ++epoch_;
    }
    cv_.notify_all();
    task(ctx, 0, n);
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }

 private:
  Pool() : threads_(default_threads()) {}
  explicit Pool(int threads) : threads_(threads) {}

  static std::atomic<Pool*>& current() {
    static std::atomic<Pool*> pool{nullptr};
    return pool;
  }

  // After fork() the child has none of the parent's worker threads (and maybe a mutex locked by
  // one of them): it gets a new, empty pool with the same thread count; the old one is leaked.
  static void after_fork_in_child() {
    Pool* old = current().load();
    current().store(new Pool(old ? old->threads() : default_threads()));
  }

  static bool register_fork_handler() {
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, after_fork_in_child);
#endif
    return true;
  }

  void ensure_workers(int count) {
    while (static_cast<int>(workers_.size()) < count) {
      const int tid = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, tid] { loop(tid); });
      workers_.back().detach();
    }
  }

  void loop(int tid) {
    uint64_t seen = 0;
    for (;;) {
      TaskFn task;
      void* ctx;
      int n;
      {
        std::unique_lock<std::mutex> lk(mutex_);
        cv_.wait(lk, [&] { return epoch_ != seen; });
        seen = epoch_;
        task = task_;
        ctx = ctx_;
        n = active_;
      }
      if (tid < n) {
        task(ctx, tid, n);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::atomic<int> threads_;
  std::mutex call_mutex_, mutex_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  TaskFn task_ = nullptr;
  void* ctx_ = nullptr;
  int active_ = 0;
  uint64_t epoch_ = 0;
  std::atomic<int> pending_{0};
};

}  // namespace

int get_num_threads() { return Pool::get().threads(); }

void set_num_threads(int n) { Pool::get().set_threads(n); }

void parallel_run(int n, TaskFn task, void* ctx) { Pool::get().run(n, task, ctx); }

void barrier_init(Barrier* b, int n) {
  b->count = 0;
  b->generation = 0;
  b->n = n;
}

void barrier_wait(Barrier* b) {
  if (b->n <= 1) return;
  const int gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
  if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
    __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&b->generation, gen + 1, __ATOMIC_RELEASE);
    return;
  }
  for (int spin = 0; __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) == gen; ++spin) {
    if (spin < 200)  // ~10 us of pause on this class of CPU, then hand the core back
      cpu_relax();
    else
      std::this_thread::yield();
  }
}

void sched_init(Sched* s, int n) {
  barrier_init(&s->bar, n);
  for (int i = 0; i < n && i < kMaxThreads; ++i) s->slot[i].word = 0;  // only n are used
}

void work_open(Sched* s, int tid, int n, int64_t count) {
  int64_t b0, b1;
  split_range(count, tid, n, &b0, &b1);
  __atomic_store_n(&s->slot[tid].word, static_cast<uint64_t>(b1 - b0) << 32, __ATOMIC_RELAXED);
}

int64_t work_next(Sched* s, int tid, int n, int64_t count, int* cursor, bool reverse) {
  // Relaxed is enough: items of one pass share no data, and the barrier between passes orders
  // everything else.
  for (; *cursor < n; ++*cursor) {
    const int owner = (tid + *cursor) % n;
    const bool front = (owner == tid) != reverse;  // the owner's end of the range
    uint64_t* word = &s->slot[owner].word;
    uint64_t w = __atomic_load_n(word, __ATOMIC_RELAXED);
    for (;;) {
      const uint64_t lo = w & 0xffffffffu, hi = w >> 32;
      if (lo >= hi) break;
      const uint64_t next = front ? w + 1 : w - (uint64_t(1) << 32);
      if (__atomic_compare_exchange_n(word, &w, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        int64_t b0, b1;
        split_range(count, owner, n, &b0, &b1);
        return b0 + static_cast<int64_t>(front ? lo : hi - 1);
      }
    }
  }
  return -1;
}

}  // namespace gatedkernels
