// Fills the KernelOps tables of one ISA: turns the runtime CellSpec into template arguments once
// per call (never inside a loop). Included at the end of an ISA translation unit, inside nothing,
// after kernel.h and raw_step.h; GK_ISA names the namespace.

#ifndef GK_ISA
#error "define GK_ISA (the ISA namespace) before including ops_impl.h"
#endif

namespace gatedkernels {
namespace GK_ISA {

// Calls f.template operator()<Cell>() with the cell type that `spec` names.
template <typename T, class F>
auto with_cell(const CellSpec& spec, F&& f) {
  switch (spec.kind) {
    case kLSTM:
      return f(Lstm<T>{});
    case kGRU:
      return spec.linear_before_reset ? f(Gru<T, true>{}) : f(Gru<T, false>{});
    default:
      return spec.relu ? f(Rnn<T, true>{}) : f(Rnn<T, false>{});
  }
}

template <typename T>
int64_t packed_layer_size_t(const CellSpec& spec, const LayerDims& d) {
  return layer_layout<T>(spec, d).total;
}

template <typename T>
int64_t step_ws_t(const CellSpec& spec, const LayerDims& d, int64_t N) {
  return with_cell<T>(spec, [&](auto cell) { return step_ws<decltype(cell), T>(d, N); });
}

template <typename T>
void step_t(const CellSpec& spec, const LayerDims& d, int64_t N, const T* packed, const T* x,
            const T* h, const T* c, T* h1, T* c1, T* ws, bool backward) {
  with_cell<T>(spec, [&](auto cell) {
    step_impl<decltype(cell), T>(spec, d, N, packed, x, h, c, h1, c1, ws, backward);
    return 0;
  });
}

template <typename T>
int64_t raw_ws_t(const CellSpec& spec, const LayerDims& d, int64_t N) {
  return raw_ws<T>(spec, d, N);
}

template <typename T>
void raw_step_t(const CellSpec& spec, const LayerDims& d, int64_t N, const RawWeights<T>& w,
                const T* x, const T* h, const T* c, T* h1, T* c1, T* ws) {
  switch (spec.kind) {
    case kLSTM:
      raw_lstm(d, N, w, x, h, c, h1, c1, ws);
      break;
    case kGRU:
      if (spec.linear_before_reset)
        raw_gru<T, true>(d, N, w, x, h, h1, ws);
      else
        raw_gru<T, false>(d, N, w, x, h, h1, ws);
      break;
    default:
      if (spec.relu)
        raw_rnn<T, true>(d, N, w, x, h, h1);
      else
        raw_rnn<T, false>(d, N, w, x, h, h1);
  }
}

template <typename T>
int64_t seq_ws_t(const CellSpec& spec, const SeqShape& s) {
  return with_cell<T>(spec, [&](auto cell) { return sequence_ws<decltype(cell), T>(s); });
}

template <typename T>
int seq_plan_t(const CellSpec& spec, const SeqShape& s, bool* by_rows) {
  int64_t at[kMaxThreads + 1];
  return with_cell<T>(spec,
                      [&](auto cell) { return sequence_plan<decltype(cell), T>(s, by_rows, at); });
}

template <typename T>
void seq_t(const CellSpec& spec, const SeqShape& s, const T* const* packed, const T* x,
           const int64_t* lengths, const T* h0, const T* c0, T* y, T* hn, T* cn, T* ws) {
  with_cell<T>(spec, [&](auto cell) {
    sequence_impl<decltype(cell), T>(spec, s, packed, x, lengths, h0, c0, y, hn, cn, ws);
    return 0;
  });
}

// The activations exactly as the kernels' epilogues run them (Lanes of kRowJam registers, then
// one), so that the tests' ulp sweep holds the code the kernels use.
template <typename T>
void activation_t(int which, const T* x, int64_t n, T* y) {
  constexpr int VB = Tile<T>::VB;
  auto run = [&](auto group, int64_t i, int64_t lanes) __attribute__((always_inline)) {
    typedef Lanes<T, decltype(group)::size> L;
    const L v = load_rows<L>(x + i, VB, lanes);
    store_rows(which == 0 ? sigmoid(v) : tanh_act(v), lanes, y + i, VB);
  };
  int64_t i = 0;
  for (; i + kRowJam * VB <= n; i += kRowJam * VB) run(RowGroup<kRowJam>{}, i, VB);
  for (; i < n; i += VB) run(RowGroup<1>{}, i, n - i < VB ? n - i : VB);
}

template <typename T>
KernelOps<T> make_ops(const char* name) {
  return KernelOps<T>{name,           Tile<T>::VB,      packed_layer_size_t<T>,
                      pack_layer_impl<T>, step_ws_t<T>, step_t<T>,
                      raw_ws_t<T>,    raw_step_t<T>,    seq_ws_t<T>,
                      activation_t<T>, seq_t<T>,        seq_plan_t<T>};
}

}  // namespace GK_ISA
}  // namespace gatedkernels

// Defines <ns>::ops_f32() / ops_f64() (declared in ops.h) for the ISA of this translation unit.
#define GK_DEFINE_OPS(ns)                                                   \
  namespace gatedkernels {                                                  \
  namespace ns {                                                            \
  const KernelOps<float>& ops_f32() {                                       \
    static const KernelOps<float> ops = make_ops<float>(#ns);               \
    return ops;                                                             \
  }                                                                         \
  const KernelOps<double>& ops_f64() {                                      \
    static const KernelOps<double> ops = make_ops<double>(#ns);             \
    return ops;                                                             \
  }                                                                         \
  }                                                                         \
  }
