// A persistent pool of worker threads (std::thread; no OpenMP runtime to ship or to clash with)
// and the barrier the kernels meet at between time steps.
//
// Compiled once, for the baseline target (threads.cc). The kernels of every ISA call it through
// plain functions and a function pointer + context, never through a standard-library template,
// so nothing instantiated here can be merged with an ISA-specific copy.
#pragma once

#include <cstdint>

namespace gatedkernels {

// Threads the kernels may use (the calling thread included). Default: 1, or
// GATEDKERNELS_NUM_THREADS when set (see threads.cc for the measurement behind that default).
int get_num_threads();
void set_num_threads(int n);  // n >= 1; clamped to 256

// A reusable barrier for `n` threads: spins briefly (the common case: all threads arrive within
// a fraction of a microsecond), then yields, so a descheduled vCPU cannot livelock the others.
struct Barrier {
  alignas(64) volatile int count;
  alignas(64) volatile int generation;
  int n;
};
void barrier_init(Barrier* b, int n);
void barrier_wait(Barrier* b);

// Dynamic scheduling of the work items of one pass (say, every hidden block of a time step).
// Each of the n threads owns a contiguous home range of the items (split_range) and takes them
// front to back; a thread that has run out takes the items others have not started yet, from the
// back of their ranges (a reverse pass: back to front, stealing from the fronts). So a thread on
// a faster core runs more items, while each thread mostly keeps its own items (and their weights
// stay in its cache) from one step to the next.
// Which thread runs an item never changes what the item computes.
//
// Passes need no reset between them and no barrier of their own: a thread opens its range of a
// pass itself, and every pass is separated from the next by a barrier (all threads have left a
// range before its owner opens it again). A range another thread has not opened yet looks empty.
constexpr int kMaxThreads = 256;

struct alignas(64) WorkSlot {
  uint64_t word;  // items [lo, hi) of the owner's range not yet taken: lo | hi << 32
};

struct Sched {
  Barrier bar;
  WorkSlot slot[kMaxThreads];
};
void sched_init(Sched* s, int n);  // n threads: the barrier and empty ranges

// Thread `tid` of `n` opens its range of a pass over `count` items (count < 2^32).
void work_open(Sched* s, int tid, int n, int64_t count);
// The next item for thread `tid` in [0, count), or -1 when every item of the pass is taken.
// `cursor` starts at 0 for each pass (which range the thread takes from: its own, then the
// others'). reverse: the owner takes its items back to front and others steal from the front
// (a thread then starts a pass on the weights it read last in the pass before).
int64_t work_next(Sched* s, int tid, int n, int64_t count, int* cursor, bool reverse = false);

// Runs task(ctx, tid, n) for tid = 0 .. n-1 concurrently and returns when all have finished;
// tid 0 runs on the calling thread. n is clamped to [1, kMaxThreads] only: the caller picks it
// (at most get_num_threads(), read once) and sizes its barrier for it.
typedef void (*TaskFn)(void* ctx, int tid, int n);
void parallel_run(int n, TaskFn task, void* ctx);

// The part of [0, total) that thread `tid` of `n` owns (contiguous, as even as possible).
inline void split_range(int64_t total, int tid, int n, int64_t* begin, int64_t* end) {
  const int64_t q = total / n, r = total % n;
  *begin = tid * q + (tid < r ? tid : r);
  *end = *begin + q + (tid < r ? 1 : 0);
}

}  // namespace gatedkernels
