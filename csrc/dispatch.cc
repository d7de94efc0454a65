// The public functions of gatedkernels.h: CPU feature detection, and forwarding to the kernel
// table of the requested instruction-set build. This file is compiled for the baseline target,
// and it never calls into a build the CPU cannot run (not even to read its table).
#include <cstdlib>
#include <cstring>

#include "gatedkernels/gatedkernels.h"
#include "gatedkernels/ops.h"

namespace gatedkernels {

namespace {

struct IsaEntry {
  const char* name;
  const KernelOps<float>& (*f32)();
  const KernelOps<double>& (*f64)();
};

const IsaEntry kIsas[] = {
    {"generic", generic::ops_f32, generic::ops_f64},
#ifdef GK_HAVE_X86_BUILDS
    {"avx2", avx2::ops_f32, avx2::ops_f64},
    {"avx512", avx512::ops_f32, avx512::ops_f64},
#endif
};
constexpr int kIsaCount = sizeof(kIsas) / sizeof(kIsas[0]);

bool cpu_supports(int isa) {
#ifdef GK_HAVE_X86_BUILDS
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
  __builtin_cpu_init();
  switch (isa) {
    case 1:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 2:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default:
      return isa == 0;
  }
#else
  return isa == 0;
#endif
}

// A bad index or an unsupported build never reaches a kernel: it falls back to the portable
// build. (The binding checks indices first and raises; this is the last line of defence.)
int checked(int isa) { return isa >= 0 && isa < kIsaCount && cpu_supports(isa) ? isa : 0; }

template <typename T>
const KernelOps<T>& ops(int isa);
template <>
const KernelOps<float>& ops<float>(int isa) {
  return kIsas[checked(isa)].f32();
}
template <>
const KernelOps<double>& ops<double>(int isa) {
  return kIsas[checked(isa)].f64();
}

}  // namespace

int isa_count() { return kIsaCount; }

const char* isa_name(int isa) { return isa >= 0 && isa < kIsaCount ? kIsas[isa].name : ""; }

bool isa_supported(int isa) { return isa >= 0 && isa < kIsaCount && cpu_supports(isa); }

int isa_best() {
  int best = 0;
  for (int i = 0; i < kIsaCount; ++i)
    if (cpu_supports(i)) best = i;
  return best;
}

template <typename T>
int64_t block_width(int isa) {
  return ops<T>(isa).block_width;
}

template <typename T>
int64_t packed_layer_size(int isa, const CellSpec& spec, const LayerDims& dims) {
  return ops<T>(isa).packed_layer_size(spec, dims);
}

template <typename T>
void pack_layer(int isa, const CellSpec& spec, const LayerDims& dims, const RawWeights<T>& raw,
                T* out) {
  ops<T>(isa).pack_layer(spec, dims, raw, out);
}

template <typename T>
int64_t step_workspace_size(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N) {
  return ops<T>(isa).step_workspace_size(spec, dims, N);
}

template <typename T>
void step_forward(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N,
                  const T* packed, const T* x, const T* h, const T* c, T* h1, T* c1, T* ws,
                  bool backward) {
  ops<T>(isa).step_forward(spec, dims, N, packed, x, h, c, h1, c1, ws, backward);
}

template <typename T>
int64_t raw_step_workspace_size(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N) {
  return ops<T>(isa).raw_step_workspace_size(spec, dims, N);
}

template <typename T>
void raw_step_forward(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N,
                      const RawWeights<T>& raw, const T* x, const T* h, const T* c, T* h1, T* c1,
                      T* ws) {
  ops<T>(isa).raw_step_forward(spec, dims, N, raw, x, h, c, h1, c1, ws);
}

template <typename T>
int64_t sequence_workspace_size(int isa, const CellSpec& spec, const SeqShape& shape) {
  return ops<T>(isa).sequence_workspace_size(spec, shape);
}

template <typename T>
void sequence_forward(int isa, const CellSpec& spec, const SeqShape& shape,
                      const T* const* packed, const T* x, const int64_t* lengths, const T* h0,
                      const T* c0, T* y, T* hn, T* cn, T* ws) {
  ops<T>(isa).sequence_forward(spec, shape, packed, x, lengths, h0, c0, y, hn, cn, ws);
}

template <typename T>
int sequence_threads(int isa, const CellSpec& spec, const SeqShape& shape, bool* by_rows) {
  return ops<T>(isa).sequence_threads(spec, shape, by_rows);
}

template <typename T>
void activation_forward(int isa, int which, const T* x, int64_t n, T* y) {
  ops<T>(isa).activation_forward(which, x, n, y);
}

#define GK_INSTANTIATE(T)                                                                     \
  template int64_t block_width<T>(int);                                                       \
  template int64_t packed_layer_size<T>(int, const CellSpec&, const LayerDims&);              \
  template void pack_layer<T>(int, const CellSpec&, const LayerDims&, const RawWeights<T>&,   \
                              T*);                                                            \
  template int64_t step_workspace_size<T>(int, const CellSpec&, const LayerDims&, int64_t);   \
  template void step_forward<T>(int, const CellSpec&, const LayerDims&, int64_t, const T*,    \
                                const T*, const T*, const T*, T*, T*, T*, bool);              \
  template int64_t raw_step_workspace_size<T>(int, const CellSpec&, const LayerDims&,         \
                                              int64_t);                                       \
  template void raw_step_forward<T>(int, const CellSpec&, const LayerDims&, int64_t,          \
                                    const RawWeights<T>&, const T*, const T*, const T*, T*,   \
                                    T*, T*);                                                  \
  template int64_t sequence_workspace_size<T>(int, const CellSpec&, const SeqShape&);         \
  template void sequence_forward<T>(int, const CellSpec&, const SeqShape&, const T* const*,   \
                                    const T*, const int64_t*, const T*, const T*, T*, T*, T*, \
                                    T*);                                                      \
  template int sequence_threads<T>(int, const CellSpec&, const SeqShape&, bool*);             \
  template void activation_forward<T>(int, int, const T*, int64_t, T*);

GK_INSTANTIATE(float)
GK_INSTANTIATE(double)

}  // namespace gatedkernels
