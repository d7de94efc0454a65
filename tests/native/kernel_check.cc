// The C++ library alone, without Python: every instruction-set build this CPU can run, float and
// double, every cell variant, against a plain scalar reference written here from SPEC §2-§3.
//
// Why: the Python tests check the same kernels through the binding, but only on the machine they
// run on (x86-64). This program needs nothing but a C++ compiler, so it also runs where no
// Python with NumPy is at hand: tests/test_native.py cross-compiles it for aarch64 (the NEON
// build of kernels_generic.cc) and runs it under qemu-user. Exit status 0 when every check holds.
//
// Checked per (build, dtype, cell variant, shape):
//   step_forward (packed weights; blocks in both orders, bitwise the same) and raw_step_forward
//   (PyTorch-layout weights) against one reference step, with and without biases;
//   sequence_forward (2 layers, both directions, ragged lengths, both layouts, given or zero
//   initial states) against the reference sequence; the sequence and a large step on 1 and 2
//   threads, bitwise equal (SPEC §6: the thread count changes no bit), the 2 threads of a
//   sequence splitting the hidden blocks of every step or (N = 48) the batch rows.
// Tolerances are SPEC §6's: float64 per element |got - oracle| <= 1e-12 |oracle| + 1e-14;
// float32 max |got - oracle| <= 2 max |ref32 - oracle| + 1e-6, ref32 being the same reference
// computed in float (the oracle is it in double, on the same float weights and inputs).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gatedkernels/gatedkernels.h"
#include "gatedkernels/threads.h"

using namespace gatedkernels;

namespace {

// ---- Inputs: a fixed pseudo-random stream (splitmix64), the same on every platform. ----------
struct Rng {
  uint64_t s;
  double uniform(double lo, double hi) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * double(z >> 11) * (1.0 / 9007199254740992.0);
  }
  int64_t below(int64_t n) { return int64_t(uniform(0, double(n))) % n; }
};

template <typename T>
std::vector<T> random_vec(Rng& rng, int64_t n, double scale) {
  std::vector<T> v(n);
  for (auto& e : v) e = T(rng.uniform(-scale, scale));
  return v;
}

struct Variant {
  const char* name;
  CellSpec spec;
  bool proj;  // LSTM with proj_size
};
const Variant kVariants[] = {
    {"lstm", {kLSTM, true, false}, false},
    {"lstm_proj", {kLSTM, true, false}, true},
    {"gru", {kGRU, true, false}, false},
    {"gru_reset_before", {kGRU, false, false}, false},
    {"rnn_tanh", {kRNN, true, false}, false},
    {"rnn_relu", {kRNN, true, true}, false},
};

// One layer-direction's raw weights (PyTorch layout), in the kernel's dtype T.
template <typename T>
struct Layer {
  int64_t I, H, P;
  std::vector<T> w_ih, w_hh, b_ih, b_hh, w_hr;
  RawWeights<T> raw() const {  // a layer without biases passes null ones (SPEC §2: zero)
    return RawWeights<T>{w_ih.data(), w_hh.data(), b_ih.empty() ? nullptr : b_ih.data(),
                         b_hh.empty() ? nullptr : b_hh.data(), w_hr.empty() ? nullptr : w_hr.data()};
  }
  double bias_ih(int64_t r) const { return b_ih.empty() ? 0.0 : double(b_ih[r]); }
  double bias_hh(int64_t r) const { return b_hh.empty() ? 0.0 : double(b_hh[r]); }
};

template <typename T>
Layer<T> random_layer(Rng& rng, int kind, int64_t I, int64_t H, int64_t P, bool proj,
                      bool bias = true) {
  const int64_t G = gate_count(kind);
  const double s = 1.0 / std::sqrt(double(H));
  Layer<T> l{I, H, P, random_vec<T>(rng, G * H * I, s), random_vec<T>(rng, G * H * P, s), {}, {}, {}};
  if (bias) {
    l.b_ih = random_vec<T>(rng, G * H, s);
    l.b_hh = random_vec<T>(rng, G * H, s);
  }
  if (proj) l.w_hr = random_vec<T>(rng, P * H, s);
  return l;
}

// ---- The reference: SPEC §2 in scalar code, computed in R (double: the oracle; float: what a
// plain float32 implementation gets). Weights and inputs are the kernel's T values. ------------
template <typename R>
R sigmoid_ref(R x) {
  return R(1) / (R(1) + std::exp(-x));
}

template <typename R, typename T>
R dot(const T* w, const R* v, int64_t n) {
  R s = 0;
  for (int64_t k = 0; k < n; ++k) s += R(w[k]) * v[k];
  return s;
}

// One step of rows x [N, I], h [N, P], c [N, H] -> h1 [N, P], c1 [N, H].
template <typename R, typename T>
void ref_step(const CellSpec& spec, const Layer<T>& w, int64_t N, const R* x, const R* h,
              const R* c, R* h1, R* c1) {
  const int64_t I = w.I, H = w.H, P = w.P, G = gate_count(spec.kind);
  std::vector<R> gx(G * H), gh(G * H), m(H), rh(P);  // m: LSTM o*tanh(c'), GRU r
  for (int64_t n = 0; n < N; ++n) {
    const R* xn = x + n * I;
    const R* hn = h + n * P;
    for (int64_t r = 0; r < G * H; ++r) {
      gx[r] = dot<R>(&w.w_ih[r * I], xn, I) + R(w.bias_ih(r));
      gh[r] = dot<R>(&w.w_hh[r * P], hn, P) + R(w.bias_hh(r));
    }
    if (spec.kind == kLSTM) {
      for (int64_t j = 0; j < H; ++j) {
        const R i = sigmoid_ref(gx[j] + gh[j]), f = sigmoid_ref(gx[H + j] + gh[H + j]);
        const R g = std::tanh(gx[2 * H + j] + gh[2 * H + j]);
        const R o = sigmoid_ref(gx[3 * H + j] + gh[3 * H + j]);
        c1[n * H + j] = f * c[n * H + j] + i * g;
        m[j] = o * std::tanh(c1[n * H + j]);
      }
      for (int64_t p = 0; p < P; ++p)
        h1[n * P + p] = w.w_hr.empty() ? m[p] : dot<R>(&w.w_hr[p * H], m.data(), H);
    } else if (spec.kind == kGRU) {
      for (int64_t j = 0; j < H; ++j) {  // r, and r * h for the reset-before form's W_hn
        m[j] = sigmoid_ref(gx[j] + gh[j]);
        rh[j] = m[j] * hn[j];
      }
      for (int64_t j = 0; j < H; ++j) {
        const R r = m[j], z = sigmoid_ref(gx[H + j] + gh[H + j]);
        const R hn_part = spec.linear_before_reset
                              ? r * gh[2 * H + j]
                              : dot<R>(&w.w_hh[(2 * H + j) * P], rh.data(), P) +
                                    R(w.bias_hh(2 * H + j));
        const R nn = std::tanh(gx[2 * H + j] + hn_part);
        h1[n * H + j] = (R(1) - z) * nn + z * hn[j];
      }
    } else {
      for (int64_t j = 0; j < H; ++j) {
        const R a = gx[j] + gh[j];
        h1[n * H + j] = spec.relu ? (a > 0 ? a : R(0)) : std::tanh(a);
      }
    }
  }
}

// A whole sequence (SPEC §3), x [T, N, I] (or [N, T, I] if batch_first).
template <typename R, typename T>
void ref_sequence(const CellSpec& spec, const SeqShape& s, const std::vector<Layer<T>>& layers,
                  const std::vector<R>& x, const int64_t* lengths, const R* h0, const R* c0,
                  std::vector<R>& y, std::vector<R>& hn, std::vector<R>& cn) {
  const int64_t T_ = s.T, N = s.N, H = s.H, P = s.P, DP = s.D * s.P;
  const bool lstm = spec.kind == kLSTM;
  auto at = [&](int64_t t, int64_t n) { return s.batch_first ? n * T_ + t : t * N + n; };
  std::vector<R> in(x), out;
  int64_t in_w = s.I;
  hn.assign(s.L * s.D * N * P, 0);
  cn.assign(lstm ? s.L * s.D * N * H : 0, 0);
  for (int64_t l = 0; l < s.L; ++l) {
    out.assign(T_ * N * DP, 0);
    for (int64_t dir = 0; dir < s.D; ++dir) {
      const int64_t ld = l * s.D + dir;
      const Layer<T>& w = layers[ld];
      for (int64_t n = 0; n < N; ++n) {
        const int64_t len = lengths ? lengths[n] : T_;
        std::vector<R> h(P, 0), c(H, 0), h1(P), c1(H);
        if (h0) std::copy(h0 + (ld * N + n) * P, h0 + (ld * N + n + 1) * P, h.begin());
        if (lstm && c0) std::copy(c0 + (ld * N + n) * H, c0 + (ld * N + n + 1) * H, c.begin());
        for (int64_t k = 0; k < len; ++k) {
          const int64_t t = dir == 0 ? k : len - 1 - k;
          ref_step<R>(spec, w, 1, &in[at(t, n) * in_w], h.data(), c.data(), h1.data(), c1.data());
          h = h1;
          if (lstm) c = c1;
          std::copy(h.begin(), h.end(), &out[at(t, n) * DP + dir * P]);
        }
        std::copy(h.begin(), h.end(), &hn[(ld * N + n) * P]);
        if (lstm) std::copy(c.begin(), c.end(), &cn[(ld * N + n) * H]);
      }
    }
    in = out;
    in_w = DP;
  }
  y = out;
}

// ---- Comparison (SPEC §6) ---------------------------------------------------------------------
int g_checks = 0, g_failures = 0;

template <typename T>
void expect_close(const std::string& what, const std::vector<T>& got, const std::vector<double>& oracle,
                  const std::vector<float>& ref32) {
  ++g_checks;
  bool ok = got.size() == oracle.size();
  double err = 0, base = 0, bound = 0;
  for (size_t i = 0; ok && i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - oracle[i]);
    if (!(d == d)) ok = false;  // NaN
    if (d > err) err = d;
    if (sizeof(T) == 8) {
      if (!(d <= 1e-12 * std::fabs(oracle[i]) + 1e-14)) ok = false;
    } else {
      const double b = std::fabs(double(ref32[i]) - oracle[i]);
      if (b > base) base = b;
    }
  }
  if (sizeof(T) == 4) {
    bound = 2 * base + 1e-6;
    if (!(err <= bound)) ok = false;
  }
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s: %zu values, max |diff| %.3g (float32 reference %.3g, bound %.3g)\n",
                what.c_str(), got.size(), err, base, bound);
  }
}

template <typename T>
void expect_equal(const std::string& what, const std::vector<T>& a, const std::vector<T>& b) {
  ++g_checks;
  if (a.size() != b.size()) {
    ++g_failures;
    std::printf("FAIL %s: %zu values, expected %zu\n", what.c_str(), a.size(), b.size());
    return;
  }
  size_t differ = 0, first = 0;
  for (size_t i = a.size(); i-- > 0;)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) ++differ, first = i;
  if (differ) {
    ++g_failures;
    std::printf("FAIL %s: %zu of %zu values not bitwise equal, the first at %zu: %.17g vs %.17g\n",
                what.c_str(), differ, a.size(), first, double(a[first]), double(b[first]));
  }
}

template <typename R, typename T>
std::vector<R> cast(const std::vector<T>& v) {
  return std::vector<R>(v.begin(), v.end());
}

// ---- The checks -------------------------------------------------------------------------------
struct Shape {
  int64_t N, I, H, P;  // P < H: the projection size of lstm_proj (the others have P = H)
};

template <typename T>
void check_step(int isa, const Variant& v, const Shape& sh, bool bias, Rng& rng) {
  const CellSpec& spec = v.spec;
  const int64_t N = sh.N, I = sh.I, H = sh.H, P = v.proj ? sh.P : sh.H;
  const bool lstm = spec.kind == kLSTM;
  const LayerDims d{I, H, P};
  const Layer<T> w = random_layer<T>(rng, spec.kind, I, H, P, v.proj, bias);
  const std::vector<T> x = random_vec<T>(rng, N * I, 1.0), h = random_vec<T>(rng, N * P, 1.0),
                       c = random_vec<T>(rng, N * H, 2.0);
  std::vector<double> oh(N * P), oc(N * H);
  std::vector<float> rh(N * P), rc(N * H);
  ref_step<double>(spec, w, N, cast<double>(x).data(), cast<double>(h).data(),
                   cast<double>(c).data(), oh.data(), oc.data());
  ref_step<float>(spec, w, N, cast<float>(x).data(), cast<float>(h).data(), cast<float>(c).data(),
                  rh.data(), rc.data());

  char name[160];
  std::snprintf(name, sizeof name, "%s %s %s N=%lld I=%lld H=%lld P=%lld%s", isa_name(isa),
                sizeof(T) == 4 ? "float32" : "float64", v.name, (long long)N, (long long)I,
                (long long)H, (long long)P, bias ? "" : " no bias");
  const std::string base(name);

  std::vector<T> packed(packed_layer_size<T>(isa, spec, d));
  pack_layer<T>(isa, spec, d, w.raw(), packed.data());
  // Both orders of the hidden blocks (gatedkernels.h: a stream alternates them): the same bits.
  std::vector<T> hb[2], cb[2];
  for (int backward = 0; backward < 2; ++backward) {
    std::vector<T> h1(N * P), c1(lstm ? N * H : 0), ws(step_workspace_size<T>(isa, spec, d, N) + 1);
    step_forward<T>(isa, spec, d, N, packed.data(), x.data(), h.data(), lstm ? c.data() : nullptr,
                    h1.data(), lstm ? c1.data() : nullptr, ws.data(), backward != 0);
    hb[backward] = h1;
    cb[backward] = c1;
  }
  expect_close(base + " step h", hb[0], oh, rh);
  if (lstm) expect_close(base + " step c", cb[0], oc, rc);
  expect_equal(base + " step h, blocks in backward order", hb[1], hb[0]);
  if (lstm) expect_equal(base + " step c, blocks in backward order", cb[1], cb[0]);
  std::vector<T> h1(N * P), c1(lstm ? N * H : 0), ws(raw_step_workspace_size<T>(isa, spec, d, N) + 1);
  raw_step_forward<T>(isa, spec, d, N, w.raw(), x.data(), h.data(), lstm ? c.data() : nullptr,
                      h1.data(), lstm ? c1.data() : nullptr, ws.data());
  expect_close(base + " raw step h", h1, oh, rh);
  if (lstm) expect_close(base + " raw step c", c1, oc, rc);
}

template <typename T>
struct SeqOut {
  std::vector<T> y, hn, cn;
};

template <typename T>
SeqOut<T> run_sequence(int isa, const CellSpec& spec, const SeqShape& s,
                       const std::vector<std::vector<T>>& packed, const std::vector<T>& x,
                       const int64_t* lengths, const T* h0, const T* c0) {
  const bool lstm = spec.kind == kLSTM;
  SeqOut<T> o;
  o.y.assign(s.T * s.N * s.D * s.P, T(-7));  // garbage: every element must be written
  o.hn.assign(s.L * s.D * s.N * s.P, T(-7));
  o.cn.assign(lstm ? s.L * s.D * s.N * s.H : 0, T(-7));
  std::vector<const T*> ptrs;
  for (const auto& p : packed) ptrs.push_back(p.data());
  std::vector<T> ws(sequence_workspace_size<T>(isa, spec, s) + 1);
  sequence_forward<T>(isa, spec, s, ptrs.data(), x.data(), lengths, h0, c0, o.y.data(),
                      o.hn.data(), lstm ? o.cn.data() : nullptr, ws.data());
  return o;
}

template <typename T>
void check_sequence(int isa, const Variant& v, const Shape& sh, int64_t steps, bool batch_first,
                    bool ragged, bool states, bool bias, Rng& rng) {
  const CellSpec& spec = v.spec;
  const bool lstm = spec.kind == kLSTM;
  const SeqShape s{steps, sh.N, sh.I, sh.H, v.proj ? sh.P : sh.H, 2, 2, batch_first};
  std::vector<Layer<T>> layers;
  std::vector<std::vector<T>> packed;
  for (int64_t ld = 0; ld < s.L * s.D; ++ld) {
    const LayerDims d{ld < s.D ? s.I : s.D * s.P, s.H, s.P};
    layers.push_back(random_layer<T>(rng, spec.kind, d.I, d.H, d.P, v.proj, bias));
    packed.emplace_back(packed_layer_size<T>(isa, spec, d));
    pack_layer<T>(isa, spec, d, layers.back().raw(), packed.back().data());
  }
  const std::vector<T> x = random_vec<T>(rng, s.T * s.N * s.I, 1.0);
  const std::vector<T> h0 = random_vec<T>(rng, s.L * s.D * s.N * s.P, 1.0);
  const std::vector<T> c0 = random_vec<T>(rng, s.L * s.D * s.N * s.H, 1.0);
  std::vector<int64_t> lengths(s.N);
  for (auto& len : lengths) len = 1 + rng.below(s.T);
  lengths[0] = s.T;
  const int64_t* lens = ragged ? lengths.data() : nullptr;
  const T* ph0 = states ? h0.data() : nullptr;
  const T* pc0 = states && lstm ? c0.data() : nullptr;

  SeqOut<double> oracle;
  ref_sequence<double>(spec, s, layers, cast<double>(x), lens,
                       states ? cast<double>(h0).data() : nullptr,
                       states ? cast<double>(c0).data() : nullptr, oracle.y, oracle.hn, oracle.cn);
  SeqOut<float> r32;
  ref_sequence<float>(spec, s, layers, cast<float>(x), lens,
                      states ? cast<float>(h0).data() : nullptr,
                      states ? cast<float>(c0).data() : nullptr, r32.y, r32.hn, r32.cn);

  char name[200];
  std::snprintf(name, sizeof name,
                "%s %s %s sequence T=%lld N=%lld I=%lld H=%lld P=%lld%s%s%s%s", isa_name(isa),
                sizeof(T) == 4 ? "float32" : "float64", v.name, (long long)s.T, (long long)s.N,
                (long long)s.I, (long long)s.H, (long long)s.P, batch_first ? " batch_first" : "",
                ragged ? " lengths" : "", states ? " h0" : "", bias ? "" : " no bias");
  const std::string base(name);
  set_num_threads(1);
  const SeqOut<T> got = run_sequence<T>(isa, spec, s, packed, x, lens, ph0, pc0);
  expect_close(base + " y", got.y, oracle.y, r32.y);
  expect_close(base + " h_n", got.hn, oracle.hn, r32.hn);
  if (lstm) expect_close(base + " c_n", got.cn, oracle.cn, r32.cn);
  set_num_threads(2);
  const SeqOut<T> two = run_sequence<T>(isa, spec, s, packed, x, lens, ph0, pc0);
  set_num_threads(1);
  expect_equal(base + " y on 2 threads", two.y, got.y);
  expect_equal(base + " h_n on 2 threads", two.hn, got.hn);
  if (lstm) expect_equal(base + " c_n on 2 threads", two.cn, got.cn);
}

// A step large enough to run on 2 threads (kernel.h: threads_for, 1.5e6 flops per thread for every
// variant here): bitwise the same as on one.
template <typename T>
void check_step_threads(int isa, const Variant& v, Rng& rng) {
  const CellSpec& spec = v.spec;
  const bool lstm = spec.kind == kLSTM;
  const int64_t N = 16, I = 128, H = 260, P = v.proj ? 72 : H;
  const LayerDims d{I, H, P};
  const Layer<T> w = random_layer<T>(rng, spec.kind, I, H, P, v.proj);
  const std::vector<T> x = random_vec<T>(rng, N * I, 1.0), h = random_vec<T>(rng, N * P, 1.0),
                       c = random_vec<T>(rng, N * H, 1.0);
  std::vector<T> packed(packed_layer_size<T>(isa, spec, d));
  pack_layer<T>(isa, spec, d, w.raw(), packed.data());
  std::vector<T> h1[2], c1[2];
  for (int t = 0; t < 2; ++t) {
    set_num_threads(t + 1);
    h1[t].assign(N * P, T(0));
    c1[t].assign(lstm ? N * H : 0, T(0));
    std::vector<T> ws(step_workspace_size<T>(isa, spec, d, N) + 1);
    step_forward<T>(isa, spec, d, N, packed.data(), x.data(), h.data(), lstm ? c.data() : nullptr,
                    h1[t].data(), lstm ? c1[t].data() : nullptr, ws.data());
  }
  set_num_threads(1);
  std::string base = std::string(isa_name(isa)) + (sizeof(T) == 4 ? " float32 " : " float64 ") +
                     v.name + " step N=16 I=128 H=260";
  expect_equal(base + " h on 2 threads", h1[1], h1[0]);
  if (lstm) expect_equal(base + " c on 2 threads", c1[1], c1[0]);
}

// Awkward shapes: N, I, H of 1; odd sizes; I != H; H across several blocks and not a multiple of
// any block width (4, 8, 16 floats; 2, 4, 8 doubles); N = 26, two row chunks of the raw-weight
// step (raw_step.h: 24 rows, in groups of 3) and tiles of every height.
const Shape kShapes[] = {
    {1, 1, 1, 1},    {1, 5, 3, 2},     {2, 8, 8, 3},   {3, 17, 33, 13},
    {5, 40, 24, 7},  {7, 9, 70, 31},   {26, 9, 40, 11},
};

template <typename T>
void check_dtype(int isa, Rng& rng) {
  for (const Variant& v : kVariants) {
    int i = 0;
    for (const Shape& sh : kShapes) {
      if (v.proj && sh.P >= sh.H) continue;  // proj_size < hidden_size (PyTorch's rule)
      const bool bias = i % 3 != 1;
      check_step<T>(isa, v, sh, true, rng);
      check_step<T>(isa, v, sh, false, rng);
      if (sh.N < 2) continue;  // a ragged batch needs rows to differ
      const bool bf = i % 2 == 1, states = i % 3 != 2;
      check_sequence<T>(isa, v, sh, 1 + (i % 2) * 4, bf, /*ragged=*/true, states, bias, rng);
      check_sequence<T>(isa, v, sh, 4, !bf, /*ragged=*/false, !states, !bias, rng);
      ++i;
    }
    // Large enough for 2 threads in the sequence (2.5e5 flops per thread and step).
    check_sequence<T>(isa, v, Shape{8, 24, 130, 50}, 3, false, true, true, true, rng);
    check_step_threads<T>(isa, v, rng);
    // N = 48 rows in whole tiles of every pass: the 2 threads split the batch rows (kernel.h,
    // rows_split), as sequence_threads must say, for every variant and build.
    const Shape rows{48, 24, 130, 50};
    const SeqShape s{3, rows.N, rows.I, rows.H, v.proj ? rows.P : rows.H, 2, 2, true};
    set_num_threads(2);
    bool by_rows = false;
    const int n = sequence_threads<T>(isa, v.spec, s, &by_rows);
    set_num_threads(1);
    ++g_checks;
    if (n != 2 || !by_rows) {
      ++g_failures;
      std::printf("FAIL %s %s %s sequence N=48 on 2 threads: %d threads%s, expected 2 on rows\n",
                  isa_name(isa), sizeof(T) == 4 ? "float32" : "float64", v.name, n,
                  by_rows ? " on rows" : " on hidden blocks");
    }
    check_sequence<T>(isa, v, rows, 3, true, true, true, true, rng);
  }
}

}  // namespace

int main() {
  Rng rng{12345};
  int builds = 0;
  for (int isa = 0; isa < isa_count(); ++isa) {
    if (!isa_supported(isa)) {
      std::printf("%s: not supported by this CPU, skipped\n", isa_name(isa));
      continue;
    }
    const int before = g_failures, checks = g_checks;
    check_dtype<float>(isa, rng);
    check_dtype<double>(isa, rng);
    std::printf("%s: %d checks, %d failed (block width: %lld floats, %lld doubles)\n",
                isa_name(isa), g_checks - checks, g_failures - before,
                (long long)block_width<float>(isa), (long long)block_width<double>(isa));
    ++builds;
  }
  std::printf("%s: %d builds, %d checks, %d failed\n", g_failures ? "FAILED" : "OK", builds,
              g_checks, g_failures);
  return g_failures || builds == 0 ? 1 : 0;
}
