// The AVX-512 build of the kernels (x86-64 only; chosen at run time when the CPU and OS have
// AVX-512 F/BW/DQ/VL). See kernels_avx2.cc for how the target is set.
#if defined(__x86_64__) || defined(_M_X64)
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gatedkernels/ops.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif

#define GK_ISA avx512
#define GK_VB_BYTES 64   // one zmm register: 16 floats, 8 doubles
#define GK_ACC_REGS 24   // of 32 zmm registers
#include "gatedkernels/kernel.h"
#include "gatedkernels/raw_step.h"
#include "gatedkernels/ops_impl.h"

GK_DEFINE_OPS(avx512)

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
