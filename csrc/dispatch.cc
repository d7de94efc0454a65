// The public functions of gatedkernels.h, forwarded to the kernel table of the build in use.
#include "gatedkernels/gatedkernels.h"
#include "gatedkernels/ops.h"

namespace gatedkernels {

namespace {
template <typename T>
const KernelOps<T>& ops();
template <>
const KernelOps<float>& ops<float>() {
  return generic::ops_f32();
}
template <>
const KernelOps<double>& ops<double>() {
  return generic::ops_f64();
}
}  // namespace

int gate_count(int kind) { return kind == kLSTM ? 4 : kind == kGRU ? 3 : 1; }

const char* kernel_build() { return ops<float>().isa; }

template <typename T>
int64_t block_width() {
  return ops<T>().block_width;
}

template <typename T>
int64_t packed_layer_size(const CellSpec& spec, const LayerDims& dims) {
  return ops<T>().packed_layer_size(spec, dims);
}

template <typename T>
void pack_layer(const CellSpec& spec, const LayerDims& dims, const RawWeights<T>& raw, T* out) {
  ops<T>().pack_layer(spec, dims, raw, out);
}

template <typename T>
int64_t step_workspace_size(const CellSpec& spec, const LayerDims& dims, int64_t N) {
  return ops<T>().step_workspace_size(spec, dims, N);
}

template <typename T>
void step_forward(const CellSpec& spec, const LayerDims& dims, int64_t N, const T* packed,
                  const T* x, const T* h, const T* c, T* h1, T* c1, T* ws) {
  ops<T>().step_forward(spec, dims, N, packed, x, h, c, h1, c1, ws);
}

template <typename T>
int64_t raw_step_workspace_size(const CellSpec& spec, const LayerDims& dims, int64_t N) {
  return ops<T>().raw_step_workspace_size(spec, dims, N);
}

template <typename T>
void raw_step_forward(const CellSpec& spec, const LayerDims& dims, int64_t N,
                      const RawWeights<T>& raw, const T* x, const T* h, const T* c, T* h1, T* c1,
                      T* ws) {
  ops<T>().raw_step_forward(spec, dims, N, raw, x, h, c, h1, c1, ws);
}

template <typename T>
int64_t sequence_workspace_size(const CellSpec& spec, const SeqShape& shape) {
  return ops<T>().sequence_workspace_size(spec, shape);
}

template <typename T>
void sequence_forward(const CellSpec& spec, const SeqShape& shape, const T* const* packed,
                      const T* x, const int64_t* lengths, const T* h0, const T* c0, T* y, T* hn,
                      T* cn, T* ws) {
  ops<T>().sequence_forward(spec, shape, packed, x, lengths, h0, c0, y, hn, cn, ws);
}

template <typename T>
void activation_forward(int which, const T* x, int64_t n, T* y) {
  ops<T>().activation_forward(which, x, n, y);
}

#define GK_INSTANTIATE(T)                                                                      \
  template int64_t block_width<T>();                                                           \
  template int64_t packed_layer_size<T>(const CellSpec&, const LayerDims&);                    \
  template void pack_layer<T>(const CellSpec&, const LayerDims&, const RawWeights<T>&, T*);    \
  template int64_t step_workspace_size<T>(const CellSpec&, const LayerDims&, int64_t);         \
  template void step_forward<T>(const CellSpec&, const LayerDims&, int64_t, const T*, const T*, \
                                const T*, const T*, T*, T*, T*);                               \
  template int64_t raw_step_workspace_size<T>(const CellSpec&, const LayerDims&, int64_t);     \
  template void raw_step_forward<T>(const CellSpec&, const LayerDims&, int64_t,                \
                                    const RawWeights<T>&, const T*, const T*, const T*, T*,    \
                                    T*, T*);                                                   \
  template void activation_forward<T>(int, const T*, int64_t, T*);                             \
  template int64_t sequence_workspace_size<T>(const CellSpec&, const SeqShape&);               \
  template void sequence_forward<T>(const CellSpec&, const SeqShape&, const T* const*,         \
                                    const T*, const int64_t*, const T*, const T*, T*, T*, T*,  \
                                    T*);

GK_INSTANTIATE(float)
GK_INSTANTIATE(double)

}  // namespace gatedkernels
