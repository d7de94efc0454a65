// The driver of bench/ab_kernels.py: times kernel builds against each other in one process,
// call by call. Each build is a copy of one kernels_<isa>.cc compiled into its own namespace
// (ab_0 = the base, then the others), listed at compile time as
//   -DGK_AB_BUILDS="X(ab_0) X(ab_1) ..."
// All builds run on the same packed weights (one buffer, when they pack them to the same bytes)
// and the same inputs, so what differs between them is their code only.
//
//   ab_kernels PAIRS SAMPLE_MS CASE...     CASE: seq:KIND:T:N:H (I = H) or step:KIND:N:I:H,
//                                          KIND: lstm, gru (reset after), gru_cho, rnn
//
// Prints one line per case: "case base_seconds gflops ratio_1 equal_1 ratio_2 equal_2 ...",
// ratio_i the median over PAIRS rounds of base time / build i time, each round timing every
// build once, in an order that rotates from round to round; equal_i whether build i's outputs
// are bitwise equal to the base's.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gatedkernels/ops.h"

#ifndef GK_AB_BUILDS
#error "define GK_AB_BUILDS (see bench/ab_kernels.py)"
#endif

#define X(ns) \
  namespace gatedkernels { namespace ns { const KernelOps<float>& ops_f32(); } }
GK_AB_BUILDS
#undef X

using gatedkernels::KernelOps;

namespace {

#define X(ns) &gatedkernels::ns::ops_f32,
const KernelOps<float>& (*const kBuilds[])() = {GK_AB_BUILDS};
#undef X
constexpr int kCount = sizeof(kBuilds) / sizeof(kBuilds[0]);

struct Case {
  bool seq;
  gatedkernels::CellSpec spec;
  int64_t T, N, I, H;
};

bool parse(const char* text, Case* c) {
  char what[8], kind[16];
  long a, b, d;
  if (std::sscanf(text, "%7[a-z]:%15[a-z_]:%ld:%ld:%ld", what, kind, &a, &b, &d) != 5) return false;
  c->seq = !std::strcmp(what, "seq");
  if (!c->seq && std::strcmp(what, "step")) return false;
  const std::string k = kind;
  if (k == "lstm") c->spec = {gatedkernels::kLSTM, false, false};
  else if (k == "gru") c->spec = {gatedkernels::kGRU, true, false};
  else if (k == "gru_cho") c->spec = {gatedkernels::kGRU, false, false};
  else if (k == "rnn") c->spec = {gatedkernels::kRNN, false, false};
  else return false;
  if (c->seq) *c = {true, c->spec, a, b, d, d};
  else *c = {false, c->spec, 1, a, b, d};
  return c->T > 0 && c->N > 0 && c->I > 0 && c->H > 0;
}

// A deterministic fill in [-0.5, 0.5): the same numbers for every build.
void fill(std::vector<float>& v, uint32_t seed) {
  for (auto& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = float(seed >> 8) / float(1u << 24) - 0.5f;
  }
}

struct Run {
  const KernelOps<float>* ops;
  float* packed;
  std::vector<float> ws, y, hn, cn;
};

void call(const Case& c, const gatedkernels::LayerDims& d, const std::vector<float>& x,
          const std::vector<float>& h0, const std::vector<float>& c0, Run& r) {
  if (c.seq) {
    const gatedkernels::SeqShape s{c.T, c.N, c.I, c.H, c.H, 1, 1, false};
    const float* layers[1] = {r.packed};
    r.ops->sequence_forward(c.spec, s, layers, x.data(), nullptr, h0.data(), c0.data(),
                            r.y.data(), r.hn.data(), r.cn.data(), r.ws.data());
  } else {
    r.ops->step_forward(c.spec, d, c.N, r.packed, x.data(), h0.data(), c0.data(), r.hn.data(),
                        r.cn.data(), r.ws.data(), false);
  }
}

void time_case(const Case& c, int pairs, double sample_s, const char* label) {
  const gatedkernels::LayerDims d{c.I, c.H, c.H};
  const int G = gatedkernels::gate_count(c.spec.kind);
  std::vector<float> w_ih(size_t(G * c.H * c.I)), w_hh(size_t(G * c.H * c.H)), b_ih(G * c.H),
      b_hh(G * c.H), x(size_t(c.T * c.N * c.I)), h0(size_t(c.N * c.H)), c0(size_t(c.N * c.H));
  fill(w_ih, 1), fill(w_hh, 2), fill(b_ih, 3), fill(b_hh, 4), fill(x, 5), fill(h0, 6), fill(c0, 7);
  for (auto& v : w_ih) v *= 0.2f;
  for (auto& v : w_hh) v *= 0.2f;
  const gatedkernels::RawWeights<float> raw{w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data(),
                                            nullptr};
  std::vector<Run> runs(kCount);
  std::vector<std::vector<float>> bufs;
  for (int i = 0; i < kCount; ++i) {
    Run& r = runs[i];
    r.ops = &kBuilds[i]();
    const int64_t n = r.ops->packed_layer_size(c.spec, d);
    std::vector<float> mine(size_t(n) + 16);
    r.ops->pack_layer(c.spec, d, raw, mine.data());
    r.packed = nullptr;
    for (auto& b : bufs)  // share the weights of a build that packs them to the same bytes
      if (b.size() == mine.size() && !std::memcmp(b.data(), mine.data(), b.size() * 4))
        r.packed = b.data();
    if (!r.packed) {
      bufs.push_back(std::move(mine));
      r.packed = bufs.back().data();
    }
    const gatedkernels::SeqShape s{c.T, c.N, c.I, c.H, c.H, 1, 1, false};
    r.ws.resize(size_t(c.seq ? r.ops->sequence_workspace_size(c.spec, s)
                             : r.ops->step_workspace_size(c.spec, d, c.N)) + 16);
    r.y.resize(size_t(c.T * c.N * c.H));
    r.hn.resize(size_t(c.N * c.H));
    r.cn.resize(size_t(c.N * c.H));
    call(c, d, x, h0, c0, r);
  }
  // Calls per sample, from the base's time for one call.
  auto t0 = std::chrono::steady_clock::now();
  call(c, d, x, h0, c0, runs[0]);
  const double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int reps = std::max(1, int(sample_s / std::max(one, 1e-9)));
  std::vector<std::vector<double>> t(kCount);
  for (int p = 0; p <= pairs; ++p)
    for (int j = 0; j < kCount; ++j) {
      Run& r = runs[(j + p) % kCount];
      auto s0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) call(c, d, x, h0, c0, r);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
      if (p > 0) t[(j + p) % kCount].push_back(dt / reps);  // round 0 warms up
    }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double base = median(t[0]);
  const double flops = 2.0 * c.T * c.N * G * c.H * double(c.I + c.H);
  std::printf("%s %.9g %.2f", label, base, flops / base * 1e-9);
  for (int i = 1; i < kCount; ++i) {
    std::vector<double> ratio;
    for (size_t k = 0; k < t[0].size(); ++k) ratio.push_back(t[0][k] / t[i][k]);
    const bool equal = runs[i].y == runs[0].y && runs[i].hn == runs[0].hn &&
                       (c.spec.kind != gatedkernels::kLSTM || runs[i].cn == runs[0].cn);
    std::printf(" %.4f %d", median(ratio), int(equal));
  }
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s PAIRS SAMPLE_MS CASE...\n", argv[0]);
    return 2;
  }
  const int pairs = std::atoi(argv[1]);
  const double sample_s = std::atof(argv[2]) * 1e-3;
  for (int a = 3; a < argc; ++a) {
    Case c;
    if (!parse(argv[a], &c)) {
      std::fprintf(stderr, "bad case '%s': want seq:KIND:T:N:H or step:KIND:N:I:H\n", argv[a]);
      return 2;
    }
    time_case(c, pairs, sample_s, argv[a]);
  }
  return 0;
}
