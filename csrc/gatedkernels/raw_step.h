// One time step that reads raw PyTorch-layout weights: what the functional calls
// (gk.lstm_cell, ...) use, since they get new weight arrays on every call and must not pay for
// packing them. The loop runs over blocks of VB hidden units outside and groups of batch rows
// inside, so a block's G*VB weight rows are read from memory once and then from cache for every
// group; the epilogue runs on vectors of VB units, as the packed kernels' do.
//
// Included inside namespace gatedkernels::GK_ISA, like kernel.h (no include guard on purpose).

#ifndef GK_ISA
#error "define GK_ISA (the ISA namespace) before including raw_step.h"
#endif

#include <type_traits>
#include <utility>

namespace gatedkernels {
namespace GK_ISA {

// ---- Products of raw weight rows with input rows ------------------------------------------
// A weight row and an input row are both contiguous in K, so each pre-activation is a dot
// product. Summing each one across its vector's lanes on its own (a shuffle-and-add tree per
// output) cost more than its FMAs at K = 64-384. Instead VB weight rows are taken at a time
// against up to kRawRows input rows: each (weight row, input row) pair keeps one vector of lane
// partial sums (lane l adds k = l, l + VB, ... in order, over the whole vectors of K), and the
// VB partial vectors of an input row are then folded into one vector of VB sums by a fixed tree
// of two-source shuffles (lane_sums): about 3 operations per sum instead of 8, and the sums come
// out lane by unit, ready for the vectorized epilogue; the last K % VB k follow by FMA (see
// raw_sums). The folds are two-source shuffles (fold_half). The arithmetic of
// every sum is the same whatever the batch size and wherever its row falls in a group, so
// results do not depend on N.

template <typename T>
using RawLane = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;

// One half of a fold level: a and b hold groups of 2W lanes; output lane i takes lane
// (i / W) * 2W + i % W (+ W for the high half) of the pair a:b (b's lanes numbered from VB).
// GCC's __builtin_shuffle takes the lanes as a mask vector, Clang's __builtin_shufflevector as
// constants (GCC has the latter only from version 12); the same permutation either way.
template <typename T, int W, int High, size_t... I>
GK_INLINE Vec<T> fold_half(const Vec<T>& a, const Vec<T>& b, std::index_sequence<I...>) {
#if defined(__clang__)
  return __builtin_shufflevector(a, b, int((I / W) * 2 * W + I % W + High * W)...);
#else
  constexpr IntVec<T> mask{static_cast<RawLane<T>>((I / W) * 2 * W + I % W + High * W)...};
  return __builtin_shuffle(a, b, mask);
#endif
}

// Output group g of W lanes: a's group g folded in half if g < VB/(2W), else b's group g - VB/(2W).
template <typename T, int W>
GK_INLINE Vec<T> fold(const Vec<T>& a, const Vec<T>& b) {
  constexpr auto lanes = std::make_index_sequence<Tile<T>::VB>{};
  return fold_half<T, W, 0>(a, b, lanes) + fold_half<T, W, 1>(a, b, lanes);
}

template <typename T, int W>
GK_INLINE void fold_level(Vec<T>* v, int count) {
  for (int i = 0; i < count / 2; ++i) v[i] = fold<T, W>(v[2 * i], v[2 * i + 1]);
}

// Lane q of the result = the sum of v[q]'s VB lanes (v is overwritten).
template <typename T>
GK_INLINE Vec<T> lane_sums(Vec<T>* v) {
  constexpr int VB = Tile<T>::VB;
  static_assert(VB >= 2 && VB <= 16 && (VB & (VB - 1)) == 0, "VB: a power of two, 2 to 16");
  fold_level<T, VB / 2>(v, VB);
  if constexpr (VB >= 4) fold_level<T, VB / 4>(v, VB / 2);
  if constexpr (VB >= 8) fold_level<T, VB / 8>(v, VB / 4);
  if constexpr (VB >= 16) fold_level<T, 1>(v, 2);
  return v[0];
}

// Input rows per group, and the weight rows whose accumulators (RW x RX) fit the registers with
// the loads: 24 of the 32 AVX-512 registers, 12 of the 16 elsewhere.
constexpr int kRawRows = 3;
template <typename T, int RX>
constexpr int raw_weight_rows() {
  constexpr int acc = GK_VB_BYTES == 64 ? 24 : 12, VB = Tile<T>::VB;
  int rw = VB;
  while (rw * RX > acc && rw > 1) rw /= 2;
  return rw;
}

// acc[n][q] = the lane partial sums of w[q] . x[n] over k < K (a multiple of VB; see above).
template <typename T, int RW, int RX>
GK_INLINE void raw_partials(const T* const* w, const T* const* x, int64_t K,
                            Vec<T> (&acc)[RX][RW]) {
  constexpr int VB = Tile<T>::VB;
  for (int n = 0; n < RX; ++n)
    for (int q = 0; q < RW; ++q) acc[n][q] = Vec<T>{};
  for (int64_t k = 0; k < K; k += VB) {
    Vec<T> xv[RX];
    for (int n = 0; n < RX; ++n) xv[n] = vload(x[n] + k);
    for (int q = 0; q < RW; ++q) {
      Vec<T> wv = vload(w[q] + k);
      // One load into a register, shared by the RX FMAs (GCC would fold it into each FMA as a
      // memory operand: RX loads of the same vector).
#ifdef GK_X86
      if constexpr (RX > 1) asm("" : "+v"(wv));
#endif
      for (int n = 0; n < RX; ++n) acc[n][q] = vfmadd<T>(wv, xv[n], acc[n][q]);
    }
  }
}

// out[n] lane q = W[r0 + q] . x[n] + bias[r0 + q] (no bias: + 0 is skipped) for q < nr <= VB
// (lanes past nr: 0), n < RX. W is row-major [*, K]; x[n] points at input row n.
// The whole vectors of K go through lane partials and lane_sums; the last K % VB k are then
// added to those sums one k at a time, by FMA, in k order, so each of their products is exact
// until it is added (spread over lanes, each would be rounded on its own first: at K < VB that
// read up to 5x the error of NumPy's float32 matmul, against 1x for a sequential sum).
template <typename T, int RX>
GK_INLINE void raw_sums(const T* W, int64_t K, int64_t r0, int64_t nr, const T* const* x,
                        const T* bias, Vec<T> (&out)[RX]) {
  constexpr int VB = Tile<T>::VB, RW = raw_weight_rows<T, RX>();
  const int64_t K1 = K - K % VB;
  Vec<T> part[RX][VB];
  for (int q0 = 0; q0 < VB; q0 += RW) {
    if (q0 >= nr || K1 == 0) {
      for (int n = 0; n < RX; ++n)
        for (int q = 0; q < RW; ++q) part[n][q0 + q] = Vec<T>{};
      continue;
    }
    const T* w[RW];
    for (int q = 0; q < RW; ++q)  // rows past nr read row nr - 1; their sums are dropped
      w[q] = W + (r0 + (q0 + q < nr ? q0 + q : nr - 1)) * K;
    Vec<T> acc[RX][RW];
    raw_partials<T, RW, RX>(w, x, K1, acc);
    for (int n = 0; n < RX; ++n)
      for (int q = 0; q < RW; ++q) part[n][q0 + q] = q0 + q < nr ? acc[n][q] : Vec<T>{};
  }
  // The last K % VB columns of the block's rows, one vector per k. Only those are written and
  // read (GCC cannot see that the two loops agree; zeroing all VB first cost 1 KiB of stores per
  // call, 40% of a small step).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
  Vec<T> col[VB];
  for (int64_t t = 0; t < K - K1; ++t) {
    alignas(64) T b[VB];
    for (int q = 0; q < VB; ++q) b[q] = q < nr ? W[(r0 + q) * K + K1 + t] : T(0);
    col[t] = vload(b);
  }
  Vec<T> bv = Vec<T>{};
  if (bias) {
    alignas(64) T b[VB];
    load_lanes(bias + r0, nr, b);
    bv = vload(b);
  }
  for (int n = 0; n < RX; ++n) {
    Vec<T> sum = lane_sums<T>(part[n]);
    for (int64_t t = 0; t < K - K1; ++t) sum = vfmadd<T>(col[t], splat(x[n][K1 + t]), sum);
    out[n] = bias ? sum + bv : sum;
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

// A vector of `lanes` values at p (zeros past them), and back.
template <typename T>
GK_INLINE Lanes<T, 1> raw_load(const T* p, int64_t lanes) {
  alignas(64) T b[Tile<T>::VB];
  load_lanes(p, lanes, b);
  Lanes<T, 1> r;
  r.v[0] = vload(b);
  return r;
}
template <typename T>
GK_INLINE void raw_store(const Lanes<T, 1>& v, int64_t lanes, T* p) {
  alignas(64) T b[Tile<T>::VB];
  vstore(v.v[0], b);
  store_lanes(b, lanes, p);
}
template <typename T>
GK_INLINE Lanes<T, 1> as_lanes(const Vec<T>& v) {
  Lanes<T, 1> r;
  r.v[0] = v;
  return r;
}

// Batch rows are taken kRawChunk at a time; within a chunk, one gate's block of weight rows at a
// time against every row group of the chunk, so that block (VB rows of K) is read from memory
// once and from L1 by the chunk's other groups. (Groups outside, gates inside, read every
// block from L2 again for each group of 3 rows: 2x slower at N = 4-8, H = 256.)
constexpr int kRawChunk = 24;

// sums[n][g] lane q = W[g * H + j0 + q] . a[c0 + n] (+ bias) for q < nr, g < G, n < m rows of
// a [*, lda] (m <= kRawChunk). Not inlined: one copy per (T, G) serves every call site (the
// cells call it 13 times), which keeps the three ISA builds' compile time down; a call per block
// and chunk costs nothing measurable.
template <typename T, int G>
__attribute__((noinline)) void raw_block(const T* W, int64_t K, int64_t H, int64_t j0, int64_t nr, const T* bias,
                         const T* a, int64_t lda, int64_t m, Vec<T> (&sums)[kRawChunk][G]) {
  for (int g = 0; g < G; ++g)
    for (int64_t n0 = 0; n0 < m; n0 += kRawRows) {
      const T* rows[kRawRows];
      for (int i = 0; i < kRawRows; ++i) rows[i] = a + (n0 + i < m ? n0 + i : m - 1) * lda;
      auto run = [&](auto rx) __attribute__((always_inline)) {
        constexpr int RX = decltype(rx)::value;
        Vec<T> out[RX];
        raw_sums<T, RX>(W, K, g * H + j0, nr, rows, bias, out);
        for (int n = 0; n < RX; ++n) sums[n0 + n][g] = out[n];
      };
      if (m - n0 >= 3) run(std::integral_constant<int, 3>{});
      else if (m - n0 == 2) run(std::integral_constant<int, 2>{});
      else run(std::integral_constant<int, 1>{});
    }
}

// Calls f(j0, nr, c0, m) for each block of VB hidden units [j0, j0 + nr) of H and each chunk of
// batch rows [c0, c0 + m) of N.
template <typename T, class F>
GK_INLINE void raw_blocks(int64_t H, int64_t N, const F& f) {
  constexpr int VB = Tile<T>::VB;
  for (int64_t j0 = 0; j0 < H; j0 += VB)
    for (int64_t c0 = 0; c0 < N; c0 += kRawChunk)
      f(j0, H - j0 < VB ? H - j0 : VB, c0, N - c0 < kRawChunk ? N - c0 : kRawChunk);
}

template <typename T>
int64_t raw_ws(const CellSpec& spec, const LayerDims& d, int64_t N) {
  if (spec.kind == kLSTM && d.P != d.H) return N * d.H;                 // o*tanh(c')
  if (spec.kind == kGRU && !spec.linear_before_reset) return 2 * N * d.H;  // r*h, z
  return 0;
}

template <typename T>
void raw_lstm(const LayerDims& d, int64_t N, const RawWeights<T>& w, const T* x, const T* h,
              const T* c, T* h1, T* c1, T* ws) {
  const int64_t H = d.H;
  T* hout = w.w_hr ? ws : h1;
  raw_blocks<T>(H, N, [&](int64_t j0, int64_t nr, int64_t c0, int64_t m) {
    Vec<T> xs[kRawChunk][4], hs[kRawChunk][4];
    raw_block<T, 4>(w.w_ih, d.I, H, j0, nr, w.b_ih, x + c0 * d.I, d.I, m, xs);
    raw_block<T, 4>(w.w_hh, d.P, H, j0, nr, w.b_hh, h + c0 * d.P, d.P, m, hs);
    for (int64_t n = 0; n < m; ++n) {
      const int64_t o = (c0 + n) * H + j0;
      Lanes<T, 1> c_new, h_new;
      lstm_pointwise(as_lanes<T>(xs[n][0] + hs[n][0]), as_lanes<T>(xs[n][1] + hs[n][1]),
                     as_lanes<T>(xs[n][2] + hs[n][2]), as_lanes<T>(xs[n][3] + hs[n][3]),
                     raw_load(c + o, nr), c_new, h_new);
      raw_store(c_new, nr, c1 + o);
      raw_store(h_new, nr, hout + o);
    }
  });
  if (w.w_hr)  // h1 = W_hr (o * tanh(c'))
    raw_blocks<T>(d.P, N, [&](int64_t p0, int64_t nr, int64_t c0, int64_t m) {
      Vec<T> out[kRawChunk][1];
      raw_block<T, 1>(w.w_hr, H, 0, p0, nr, nullptr, ws + c0 * H, H, m, out);
      for (int64_t n = 0; n < m; ++n) raw_store(as_lanes<T>(out[n][0]), nr, h1 + (c0 + n) * d.P + p0);
    });
}

template <typename T, bool kLinearBeforeReset>
void raw_gru(const LayerDims& d, int64_t N, const RawWeights<T>& w, const T* x, const T* h,
             T* h1, T* ws) {
  const int64_t H = d.H;
  T* rh = ws;  // reset-before only: r * h, then z
  T* zs = ws + N * H;
  constexpr int G = kLinearBeforeReset ? 3 : 2;
  raw_blocks<T>(H, N, [&](int64_t j0, int64_t nr, int64_t c0, int64_t m) {
    Vec<T> xs[kRawChunk][G], hs[kRawChunk][G];
    raw_block<T, G>(w.w_ih, d.I, H, j0, nr, w.b_ih, x + c0 * d.I, d.I, m, xs);
    raw_block<T, G>(w.w_hh, H, H, j0, nr, w.b_hh, h + c0 * H, H, m, hs);
    for (int64_t n = 0; n < m; ++n) {
      const int64_t o = (c0 + n) * H + j0;
      const Lanes<T, 1> pre_r = as_lanes<T>(xs[n][0] + hs[n][0]);
      const Lanes<T, 1> pre_z = as_lanes<T>(xs[n][1] + hs[n][1]);
      const Lanes<T, 1> hv = raw_load(h + o, nr);
      if constexpr (kLinearBeforeReset) {
        raw_store(gru_lbr_pointwise(pre_r, pre_z, as_lanes<T>(xs[n][2]), as_lanes<T>(hs[n][2]),
                                    hv), nr, h1 + o);
      } else {
        Lanes<T, 1> r_h, z;
        gru_rz(pre_r, pre_z, hv, r_h, z);
        raw_store(r_h, nr, rh + o);
        raw_store(z, nr, zs + o);
      }
    }
  });
  if constexpr (!kLinearBeforeReset)  // n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)
    raw_blocks<T>(H, N, [&](int64_t j0, int64_t nr, int64_t c0, int64_t m) {
      Vec<T> xn[kRawChunk][1], hn[kRawChunk][1];
      raw_block<T, 1>(w.w_ih, d.I, 0, 2 * H + j0, nr, w.b_ih, x + c0 * d.I, d.I, m, xn);
      raw_block<T, 1>(w.w_hh, H, 0, 2 * H + j0, nr, w.b_hh, rh + c0 * H, H, m, hn);
      for (int64_t n = 0; n < m; ++n) {
        const int64_t o = (c0 + n) * H + j0;
        raw_store(gru_n_blend(as_lanes<T>(xn[n][0] + hn[n][0]), raw_load(zs + o, nr),
                              raw_load(h + o, nr)), nr, h1 + o);
      }
    });
}

template <typename T, bool kRelu>
void raw_rnn(const LayerDims& d, int64_t N, const RawWeights<T>& w, const T* x, const T* h,
             T* h1) {
  raw_blocks<T>(d.H, N, [&](int64_t j0, int64_t nr, int64_t c0, int64_t m) {
    Vec<T> xs[kRawChunk][1], hs[kRawChunk][1];
    raw_block<T, 1>(w.w_ih, d.I, d.H, j0, nr, w.b_ih, x + c0 * d.I, d.I, m, xs);
    raw_block<T, 1>(w.w_hh, d.H, d.H, j0, nr, w.b_hh, h + c0 * d.H, d.H, m, hs);
    for (int64_t n = 0; n < m; ++n)
      raw_store(rnn_pointwise<Lanes<T, 1>, kRelu>(as_lanes<T>(xs[n][0] + hs[n][0])), nr,
                h1 + (c0 + n) * d.H + j0);
  });
}

}  // namespace GK_ISA
}  // namespace gatedkernels
