// The portable build of the kernels: plain C++ that the compiler vectorizes for the baseline
// target of the wheel (SSE2 on x86-64, NEON on aarch64).
#include "gatedkernels/ops.h"

#define GK_ISA generic
#define GK_VB_BYTES 32    // 8 floats / 4 doubles per block: two 16-byte vectors
#define GK_BATCH_TILE 2
#include "gatedkernels/kernel.h"
#include "gatedkernels/raw_step.h"
#include "gatedkernels/ops_impl.h"

namespace gatedkernels {
namespace generic {

const KernelOps<float>& ops_f32() {
  static const KernelOps<float> ops = make_ops<float>("generic");
  return ops;
}

const KernelOps<double>& ops_f64() {
  static const KernelOps<double> ops = make_ops<double>("generic");
  return ops;
}

}  // namespace generic
}  // namespace gatedkernels
