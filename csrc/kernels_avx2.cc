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
