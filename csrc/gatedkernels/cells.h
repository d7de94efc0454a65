// The pointwise math of each cell, for one hidden unit: pre-activations in, new state out.
// This and gatedkernels/reference.py are the only two places the equations of SPEC §2 live.
// The fused kernels (kernel.h) and the raw-weight step (raw_step.h) call these on Lanes (simd.h):
// VB units per register, one or more registers at a time.
//
// Gate order (PyTorch / cuDNN): LSTM i, f, g, o; GRU r, z, n.
// Every "pre" argument already holds W_x x + W_h h plus the biases that may be folded.
// No include guard: included by kernel.h inside namespace gatedkernels::GK_ISA, so each
// instruction-set build has its own copy and the linker can never merge two of them.
#ifndef GK_ISA
#error "include kernel.h, not this header"
#endif

namespace gatedkernels {
namespace GK_ISA {

// LSTM: c' = f*c + i*g ; h' = o*tanh(c'). With a projection, `h1` receives o*tanh(c'), which the
// caller then multiplies by W_hr.
template <typename T>
GK_INLINE void lstm_pointwise(T pre_i, T pre_f, T pre_g, T pre_o, T c, T& c1, T& h1) {
  const T i = sigmoid(pre_i);
  const T f = sigmoid(pre_f);
  const T g = tanh_act(pre_g);
  const T o = sigmoid(pre_o);
  c1 = fmadd(f, c, i * g);
  h1 = o * tanh_act(c1);
}

// GRU blend h' = (1 - z) * n + z * h (the order of SPEC §2, ONNX Runtime and cuDNN).
template <typename T>
GK_INLINE T gru_blend(T z, T n, T h) {
  return fmadd(T(1) - z, n, z * h);
}

// GRU, linear_before_reset = true:  n = tanh(x_n + r * (W_hn h + b_hn)).
// `hn` is W_hn h + b_hn (b_hn stays outside the reset product).
template <typename T>
GK_INLINE T gru_lbr_pointwise(T pre_r, T pre_z, T xn, T hn, T h) {
  const T r = sigmoid(pre_r);
  const T z = sigmoid(pre_z);
  const T n = tanh_act(fmadd(r, hn, xn));
  return gru_blend(z, n, h);
}

// GRU, linear_before_reset = false, first half: the gates r and z (r * h feeds W_hn next).
template <typename T>
GK_INLINE void gru_rz(T pre_r, T pre_z, T h, T& rh, T& z) {
  rh = sigmoid(pre_r) * h;
  z = sigmoid(pre_z);
}

// GRU, linear_before_reset = false, second half: n = tanh(x_n + W_hn (r*h) + b_hn).
template <typename T>
GK_INLINE T gru_n_blend(T pre_n, T z, T h) {
  return gru_blend(z, tanh_act(pre_n), h);
}

// Elman RNN: h' = act(pre).
template <typename T, bool kRelu>
GK_INLINE T rnn_pointwise(T pre) {
  return kRelu ? relu(pre) : tanh_act(pre);
}

}  // namespace GK_ISA
}  // namespace gatedkernels
