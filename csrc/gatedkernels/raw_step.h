// One time step that reads raw PyTorch-layout weights: what the functional calls
// (gk.lstm_cell, ...) use, since they get new weight arrays on every call and must not pay for
// packing them. Weight rows are contiguous in K, so each pre-activation is a dot product; the loop
// runs over hidden units outside and batch rows inside, so the G weight rows of a unit are read
// from memory once and reused from L1 for every batch row.
//
// Included inside namespace gatedkernels::GK_ISA, like kernel.h (no include guard on purpose).

#ifndef GK_ISA
#error "define GK_ISA (the ISA namespace) before including raw_step.h"
#endif

namespace gatedkernels {
namespace GK_ISA {

// Dot product in this build's vector registers: two vector accumulators (so consecutive FMAs
// do not wait on each other), summed lane by lane in a fixed order at the end, so the result is
// the same on every call.
template <typename T>
inline T dot(const T* a, const T* b, int64_t K) {
  constexpr int VB = Tile<T>::VB;
  Vec<T> acc0 = Vec<T>{}, acc1 = Vec<T>{};
  int64_t k = 0;
  for (; k + 2 * VB <= K; k += 2 * VB) {
    acc0 += vload(a + k) * vload(b + k);
    acc1 += vload(a + k + VB) * vload(b + k + VB);
  }
  if (k + VB <= K) {
    acc0 += vload(a + k) * vload(b + k);
    k += VB;
  }
  acc0 += acc1;
  T s = T(0);
  for (int l = 0; l < VB; ++l) s += acc0[l];
  for (; k < K; ++k) s += a[k] * b[k];
  return s;
}

// W_i x + b_i and W_h h + b_h of row `row` (gate g, unit j: row = g*H + j) for batch row n.
template <typename T>
struct RawRows {
  const RawWeights<T>& w;
  const LayerDims& d;
  T x_part(int64_t row, const T* x) const {
    return dot(w.w_ih + row * d.I, x, d.I) + at_or_zero(w.b_ih, row);
  }
  T h_part(int64_t row, const T* h) const {
    return dot(w.w_hh + row * d.P, h, d.P) + at_or_zero(w.b_hh, row);
  }
  T pre(int64_t row, const T* x, const T* h) const { return x_part(row, x) + h_part(row, h); }
};

template <typename T>
int64_t raw_ws(const CellSpec& spec, const LayerDims& d, int64_t N) {
  if (spec.kind == kLSTM && d.P != d.H) return N * d.H;                 // o*tanh(c')
  if (spec.kind == kGRU && !spec.linear_before_reset) return 2 * N * d.H;  // r*h, z
  return 0;
}

template <typename T>
void raw_lstm(const LayerDims& d, int64_t N, const RawWeights<T>& w, const T* x, const T* h,
              const T* c, T* h1, T* c1, T* ws) {
  const RawRows<T> rr{w, d};
  const int64_t H = d.H;
  T* hout = w.w_hr ? ws : h1;
  for (int64_t j = 0; j < H; ++j)
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = x + n * d.I;
      const T* hn = h + n * d.P;
      lstm_pointwise(rr.pre(j, xn, hn), rr.pre(H + j, xn, hn), rr.pre(2 * H + j, xn, hn),
                     rr.pre(3 * H + j, xn, hn), c[n * H + j], c1[n * H + j], hout[n * H + j]);
    }
  if (w.w_hr)
    for (int64_t p = 0; p < d.P; ++p)
      for (int64_t n = 0; n < N; ++n) h1[n * d.P + p] = dot(w.w_hr + p * H, ws + n * H, H);
}

template <typename T, bool kLinearBeforeReset>
void raw_gru(const LayerDims& d, int64_t N, const RawWeights<T>& w, const T* x, const T* h,
             T* h1, T* ws) {
  const RawRows<T> rr{w, d};
  const int64_t H = d.H;
  if (kLinearBeforeReset) {
    for (int64_t j = 0; j < H; ++j)
      for (int64_t n = 0; n < N; ++n) {
        const T* xn = x + n * d.I;
        const T* hn = h + n * H;
        h1[n * H + j] = gru_lbr_pointwise(rr.pre(j, xn, hn), rr.pre(H + j, xn, hn),
                                          rr.x_part(2 * H + j, xn), rr.h_part(2 * H + j, hn),
                                          hn[j]);
      }
    return;
  }
  T* rh = ws;
  T* zs = ws + N * H;
  for (int64_t j = 0; j < H; ++j)
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = x + n * d.I;
      const T* hn = h + n * H;
      gru_rz(rr.pre(j, xn, hn), rr.pre(H + j, xn, hn), hn[j], rh[n * H + j], zs[n * H + j]);
    }
  for (int64_t j = 0; j < H; ++j)
    for (int64_t n = 0; n < N; ++n) {
      // h_part of row 2H+j applied to r*h: W_hn (r*h) + b_hn.
      const T pre = rr.x_part(2 * H + j, x + n * d.I) + rr.h_part(2 * H + j, rh + n * H);
      h1[n * H + j] = gru_n_blend(pre, zs[n * H + j], h[n * H + j]);
    }
}

template <typename T, bool kRelu>
void raw_rnn(const LayerDims& d, int64_t N, const RawWeights<T>& w, const T* x, const T* h,
             T* h1) {
  const RawRows<T> rr{w, d};
  for (int64_t j = 0; j < d.H; ++j)
    for (int64_t n = 0; n < N; ++n)
      h1[n * d.H + j] = rnn_pointwise<T, kRelu>(rr.pre(j, x + n * d.I, h + n * d.H));
}

}  // namespace GK_ISA
}  // namespace gatedkernels
