// gatedkernels: fused LSTM / GRU / Elman-RNN kernels. The public C++ interface.
//
// This header is what the Cython binding (gatedkernels/_ext.pxd) mirrors one to one. It includes
// no Python or NumPy header; the library builds and runs on its own.
//
// Notation (shared by every header in csrc/):
//   T  time steps          N  batch rows          I  input features
//   H  hidden units        P  projection size (LSTM proj_size > 0, else P == H)
//   G  gates per cell: LSTM 4 (i, f, g, o), GRU 3 (r, z, n), RNN 1
//   L  layers              D  directions (2 when bidirectional)
//   VB hidden units per packed block (one SIMD register or more; see kernel.h)
// Arrays are C-ordered, rightmost index fastest; shapes are written [N, H].
//
// Raw weights use PyTorch's layout: w_ih [G*H, I], w_hh [G*H, P], b_ih/b_hh [G*H] (rows stacked
// gate by gate in the order above), w_hr [P, H]. Kernels never read raw weights on the hot path
// of a module: `pack_layer` turns them once into gate-interleaved panels (layout in kernel.h).
//
// Aliasing: no output may alias an input unless a comment says so. Kernels never allocate: every
// call takes a caller-owned workspace whose size the matching *_workspace_size() returns
// (in elements of the dtype).
//
// Template parameter `T` is float or double; both are explicitly instantiated in kernels.cc.
#pragma once

#include <cstdint>

namespace gatedkernels {

enum CellKind : int { kLSTM = 0, kGRU = 1, kRNN = 2 };

// What kind of cell, and its compile-time variant. The dispatch in kernels.cc turns the two
// booleans into template arguments once, so no variant flag is tested inside a hot loop.
struct CellSpec {
  int kind;                  // CellKind
  bool linear_before_reset;  // GRU: true = PyTorch/cuDNN form, false = Cho et al. / ONNX default
  bool relu;                 // RNN: true = relu, false = tanh
};

// Sizes of one layer-direction of weights. I is the layer's input width (D*P above layer 0).
struct LayerDims {
  int64_t I, H, P;
};

// A whole (possibly multi-layer, bidirectional) sequence call.
struct SeqShape {
  int64_t T, N, I, H, P, L, D;
  bool batch_first;  // x/y are [N, T, *] instead of [T, N, *]
};

// Raw (unpacked) weights of one cell in PyTorch layout, all C-contiguous. Biases and w_hr may be
// null (zero bias / no projection).
template <typename T>
struct RawWeights {
  const T* w_ih;  // [G*H, I]
  const T* w_hh;  // [G*H, P]
  const T* b_ih;  // [G*H] or null
  const T* b_hh;  // [G*H] or null
  const T* w_hr;  // [P, H] or null
};

inline int gate_count(int kind) { return kind == kLSTM ? 4 : kind == kGRU ? 3 : 1; }

// Instruction-set builds compiled into this library, indexed 0 .. isa_count()-1 from the most
// portable to the fastest: "generic" (SSE2 / NEON), then on x86-64 "avx2" (AVX2 + FMA) and
// "avx512" (AVX-512 F/BW/DQ/VL). Every function below takes the index of the build to run; packed
// weights depend on the build (its block width), so a packed buffer must always be used with the
// build that packed it.
int isa_count();
const char* isa_name(int isa);
bool isa_supported(int isa);  // this CPU and OS can run it
int isa_best();               // the fastest supported build

// Hidden units per packed block for dtype T in build `isa`.
template <typename T>
int64_t block_width(int isa);

// Packed weights of one layer-direction (all panels, folded biases) in one buffer.
template <typename T>
int64_t packed_layer_size(int isa, const CellSpec& spec, const LayerDims& dims);

// Packs raw PyTorch-layout weights into `out` ([packed_layer_size] elements, written whole).
template <typename T>
void pack_layer(int isa, const CellSpec& spec, const LayerDims& dims, const RawWeights<T>& raw, T* out);

// One time step with packed weights (a module's cell call).
//   x  [N, I]     input                  h  [N, P]  previous hidden state
//   c  [N, H]     previous cell state (LSTM only; null otherwise)
//   h1 [N, P]     new hidden state       c1 [N, H]  new cell state (LSTM only; null otherwise)
//   ws [step_workspace_size] scratch
//   backward  visit the hidden blocks last to first (on one thread; the results are the same).
//             A stream alternates it, so that each step starts on the weights the step before
//             read last, which are still in L1: measured 0.1 us of a 1.7 us step at H=64.
// h1/c1 must not alias x, h or c.
template <typename T>
int64_t step_workspace_size(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N);
template <typename T>
void step_forward(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N, const T* packed,
                  const T* x, const T* h, const T* c, T* h1, T* c1, T* ws, bool backward = false);

// One time step reading raw PyTorch-layout weights directly: for functional calls, which must
// not pay for packing the weights on every call. Same arguments as step_forward.
template <typename T>
int64_t raw_step_workspace_size(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N);
template <typename T>
void raw_step_forward(int isa, const CellSpec& spec, const LayerDims& dims, int64_t N,
                      const RawWeights<T>& raw, const T* x, const T* h, const T* c, T* h1, T* c1,
                      T* ws);

// A whole sequence: L layers, D directions, optional per-row lengths, in one call.
//   packed   [L*D] pointers to packed_layer buffers, ordered layer-major then direction; layer l
//            was packed with LayerDims{l == 0 ? I : D*P, H, P}
//   x        [T, N, I] ([N, T, I] if batch_first)
//   lengths  [N] valid steps per row, 1 <= lengths[n] <= T, or null (all T)
//   h0       [L*D, N, P]  initial hidden states, or null (zeros)
//   c0       [L*D, N, H]  initial cell states (LSTM), or null (zeros)
//   y        [T, N, D*P]  ([N, T, D*P] if batch_first) output; rows past a length are zero
//   hn       [L*D, N, P]  final hidden states (after each row's last valid step)
//   cn       [L*D, N, H]  final cell states (LSTM only; null otherwise)
//   ws       [sequence_workspace_size] scratch
template <typename T>
int64_t sequence_workspace_size(int isa, const CellSpec& spec, const SeqShape& shape);
template <typename T>
void sequence_forward(int isa, const CellSpec& spec, const SeqShape& shape, const T* const* packed,
                      const T* x, const int64_t* lengths, const T* h0, const T* c0, T* y, T* hn,
                      T* cn, T* ws);

// How sequence_forward will share that call among threads, at the current get_num_threads():
// returns the thread count (one below a work threshold) and sets *by_rows: each thread steps a
// share of the batch rows through the whole sequence, or (false) every thread takes a share of
// the hidden blocks of every time step. The results are bitwise the same either way.
template <typename T>
int sequence_threads(int isa, const CellSpec& spec, const SeqShape& shape, bool* by_rows);

// The activations the kernels use, applied elementwise (for tests and accuracy sweeps).
// which: 0 sigmoid, 1 tanh. y may alias x.
template <typename T>
void activation_forward(int isa, int which, const T* x, int64_t n, T* y);


}  // namespace gatedkernels
