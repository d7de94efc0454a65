// The table of kernel entry points one instruction-set build provides. Every ISA translation unit
// (kernels_<isa>.cc) fills one table per dtype; dispatch.cc picks a table once and forwards the
// public functions of gatedkernels.h to it. Arguments are those of gatedkernels.h.
#pragma once

#include "gatedkernels/gatedkernels.h"

namespace gatedkernels {

template <typename T>
struct KernelOps {
  const char* isa;  // "generic", ...
  int64_t block_width;
  int64_t (*packed_layer_size)(const CellSpec&, const LayerDims&);
  void (*pack_layer)(const CellSpec&, const LayerDims&, const RawWeights<T>&, T*);
  int64_t (*step_workspace_size)(const CellSpec&, const LayerDims&, int64_t);
  void (*step_forward)(const CellSpec&, const LayerDims&, int64_t, const T*, const T*, const T*,
                       const T*, T*, T*, T*, bool);
  int64_t (*raw_step_workspace_size)(const CellSpec&, const LayerDims&, int64_t);
  void (*raw_step_forward)(const CellSpec&, const LayerDims&, int64_t, const RawWeights<T>&,
                           const T*, const T*, const T*, T*, T*, T*);
  int64_t (*sequence_workspace_size)(const CellSpec&, const SeqShape&);
  void (*activation_forward)(int, const T*, int64_t, T*);
  void (*sequence_forward)(const CellSpec&, const SeqShape&, const T* const*, const T*,
                           const int64_t*, const T*, const T*, T*, T*, T*, T*);
  int (*sequence_threads)(const CellSpec&, const SeqShape&, bool*);
};

// One pair of tables per ISA translation unit. avx2 / avx512 exist only on x86-64.
#define GK_DECLARE_OPS(ns)              \
  namespace ns {                        \
  const KernelOps<float>& ops_f32();    \
  const KernelOps<double>& ops_f64();   \
  }
GK_DECLARE_OPS(generic)
#if defined(__x86_64__) || defined(_M_X64)
#define GK_HAVE_X86_BUILDS 1
GK_DECLARE_OPS(avx2)
GK_DECLARE_OPS(avx512)
#endif
#undef GK_DECLARE_OPS

}  // namespace gatedkernels
