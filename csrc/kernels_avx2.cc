// The AVX2 + FMA build of the kernels (x86-64 only; chosen at run time when the CPU has it).
// The target is set with a pragma around the included kernel source, so no per-file compiler
// flag is needed and nothing outside namespace gatedkernels::avx2 is compiled for AVX2.
#if defined(__x86_64__) || defined(_M_X64)
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gatedkernels/ops.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#define GK_ISA avx2
#define GK_VB_BYTES 32   // one ymm register: 8 floats, 4 doubles
#define GK_ACC_REGS 12   // of 16 ymm registers
#define GK_PREFETCH_WEIGHTS 0  // kernel.h, kPrefetchTile
#define GK_PREFETCH_NEXT 1     // kernel.h, Ahead (the lean pull of the next block)
#define GK_VEC_REGS 16         // kernel.h, kBroadcastFirst
#define GK_K_UNROLL 4          // kernel.h, tile_dot_block
// Input projection chunks of 512 KiB (kernel.h, projection_steps), not 2 MiB: on a core with
// 512 KiB of L2 (AMD EPYC Zen 3, family 25 model 1) a 2 MiB chunk is written to L3 and read
// back from there by the steps. Measured there (a C++ driver alternating the two sizes call by
// call in one process, median of 21 paired ratios, one thread, T = 100): LSTM N = 16 and 64 at
// H = 128 1.11-1.14x, at H = 256 1.03-1.12x; H = 512 and 1024, N = 1-4, GRU (its H <= 256
// sequences take their projection tile by tile) 0.98-1.04x, the spread of a null A/B.
#define GK_PROJECTION_BYTES (int64_t(512) << 10)
#include "gatedkernels/kernel.h"
#include "gatedkernels/raw_step.h"
#include "gatedkernels/ops_impl.h"

GK_DEFINE_OPS(avx2)

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
