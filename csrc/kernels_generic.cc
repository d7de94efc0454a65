// The portable build of the kernels: plain C++ with 16-byte vector types, which the compiler maps
// to the baseline target of the wheel (SSE2 on x86-64, NEON on aarch64).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gatedkernels/ops.h"

#define GK_ISA generic
#define GK_VB_BYTES 16   // one SSE2 / NEON register: 4 floats, 2 doubles
#if defined(__aarch64__)
// Of 32 NEON registers. A tile of R rows and G gates holds R*G accumulators, G weight vectors and
// R broadcasts per k. Sized with llvm-mca 19's models of this build's inner loops (GCC 12 -O3;
// no ARM hardware was at hand to time them), LSTM tiles, FMAs per cycle on Neoverse N1 / V1 /
// V2 / Apple M1: 3 rows (12) 1.98 / 2.96 / 3.92 / 2.55, where 12 chains cannot cover 4 pipes
// of latency 4; 4 rows (16) 1.98 / 3.94 / 3.94 / 2.80; 5 rows (20) 1.99 / 3.95 / 3.95 / 2.98
// alone, but GCC 12 then stores the accumulators to the stack at every k in the steps' tiles
// (tests/test_native.py checks that no FMA loop does). GRU 5 rows: 1.98 / 3.69 / 3.94 / 2.71.
#define GK_ACC_REGS 16
#else
#define GK_ACC_REGS 12   // of 16 SSE2 registers
#endif
#include "gatedkernels/kernel.h"
#include "gatedkernels/raw_step.h"
#include "gatedkernels/ops_impl.h"

GK_DEFINE_OPS(generic)
