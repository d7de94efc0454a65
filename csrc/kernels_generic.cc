// The portable build of the kernels: plain C++ with 16-byte vector types, which the compiler maps
// to the baseline target of the wheel (SSE2 on x86-64, NEON on aarch64).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gatedkernels/ops.h"

#define GK_ISA generic
#define GK_VB_BYTES 16   // one SSE2 / NEON register: 4 floats, 2 doubles
#define GK_ACC_REGS 12   // of 16 vector registers
#include "gatedkernels/kernel.h"
#include "gatedkernels/raw_step.h"
#include "gatedkernels/ops_impl.h"

GK_DEFINE_OPS(generic)
