// Packed weights, the fused step of every cell and the sequence driver.
//
// This header has no include guard on purpose: a translation unit includes it once, inside the
// namespace of the instruction set it is compiled for (kernels_generic.cc defines
// GK_ISA = generic), so every ISA gets its own copy of every symbol and none can be merged with
// another by the linker. It must not instantiate anything from the standard library.
//
// Packed panel of a weight matrix W [G*H, K] whose rows are stacked gate by gate:
//   nb = ceil(H / VB) blocks of VB hidden units; block b is [K][G][VB], contiguous:
//   panel[((b*K + k)*G + g)*VB + l] = W[g*H + b*VB + l, k]   (0 where b*VB + l >= H)
// so one pass over k streams the weights of all G gates of VB units once, and the G*VB
// accumulators of each batch row stay in registers until the cell's pointwise epilogue.
// Bias panels are [nb][G][VB] in the same order. The input projection of a whole sequence is
// written in the same [rows][nb][G][VB] order, so the step reads one contiguous G*VB chunk.

#ifndef GK_ISA
#error "define GK_ISA (the ISA namespace) before including kernel.h"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#include "gatedkernels/gatedkernels.h"
#include "gatedkernels/threads.h"
#include "gatedkernels/simd.h"
#include "gatedkernels/activations.h"
#include "gatedkernels/cells.h"

namespace gatedkernels {
namespace GK_ISA {

template <typename T>
struct Tile {
  static constexpr int VB = GK_VB_BYTES / sizeof(T);  // hidden units per block = vector lanes
  // Batch rows per register tile for G gates: G*BT accumulators must fit in the GK_ACC_REGS
  // registers left after the weight loads and broadcasts.
  static constexpr int bt(int G) { return GK_ACC_REGS / G < 1 ? 1 : GK_ACC_REGS / G > 8 ? 8 : GK_ACC_REGS / G; }
};

template <typename T>
constexpr int64_t nblocks(int64_t H) {
  return (H + Tile<T>::VB - 1) / Tile<T>::VB;
}

template <typename T>
constexpr int64_t panel_size(int64_t H, int G, int64_t K) {
  return nblocks<T>(H) * K * G * Tile<T>::VB;
}

inline int64_t round_up(int64_t n) { return (n + 15) / 16 * 16; }  // keep 64-byte offsets

// The register tiles of a pass over `rows` batch rows of G-gate tiles, at most bt rows each:
// whole tiles of bt rows and a last one of rows % bt; or, for G >= 2 on AVX-512 (bt = 6 for
// the LSTM, 8 for the GRU), where that last one would have bt / 2 rows or fewer, as many tiles
// of even heights (13 rows of 6-row tiles: 5, 4, 4, not 6, 6, 1). A tile of 1-3 rows reads all
// of a block's weights for its few FMAs, at the rate of its loads. Measured (AVX-512, Xeon
// family 6 model 207, bench/ab_builds.py, 7 alternated rounds, one thread): LSTM T=100
// sequences N = 13, 19 at H = 128-256 1.04-1.05x, GRU N = 17 1.07x, N = 9-11 1.09-1.20x,
// LSTM and GRU steps (13, 256, 256) and (17, 128, 256) 1.09x. Whole tiles are kept for
// one-gate tiles (the RNN, the GRU's W_hn pass, the LSTM's W_hr): RNN N = 9-17 lost 20-38%
// with even ones; and in the AVX2 and baseline builds, whose tiles are 3-4 rows: there even
// tiles read 0.96-0.99x for the LSTM and 0.77x for a GRU N = 5. A function of rows, bt, G and
// the build only, and the row chunks of several threads are whole tiles (Par::blocks), so the
// tiles, and every bit of the results, are those of one thread.
struct Tiling {
  int64_t rows, count;  // `count` tiles: the first `nbig` of `big` rows, the rest of `small`
  int64_t big, nbig, small;
  int64_t start(int64_t i) const { return i < nbig ? i * big : nbig * big + (i - nbig) * small; }
  int64_t height(int64_t n0) const { return n0 < nbig * big ? big : small; }  // tile at row n0
  int64_t min_rows() const { return count > nbig ? small : big; }
  int64_t index(int64_t n0) const {  // of the tile at row n0 (count at rows)
    return n0 < nbig * big ? n0 / big : nbig + (n0 - nbig * big) / small;
  }
};
inline Tiling tiling(int64_t rows, int bt, int G) {
  Tiling t;
  t.rows = rows;
  t.count = (rows + bt - 1) / bt;
  const int64_t tail = rows % bt;
  if (tail == 0 || 2 * tail > bt || G < 2 || GK_VB_BYTES < 64) {  // whole tiles
    t.big = bt;
    t.nbig = tail ? t.count - 1 : t.count;
    t.small = tail ? tail : bt;
  } else {
    t.small = rows / t.count;
    t.nbig = rows % t.count;
    t.big = t.small + 1;
  }
  return t;
}

// This thread's share of a parallel kernel call. The work of a pass (the hidden blocks of a time
// step, and row chunks of them when the blocks alone are too few to balance) is dealt out
// dynamically by `each` (threads.h: each thread takes its own items first, then steals), and all
// threads meet at the barrier where one pass needs another's output. Static ranges (`range`)
// remain for the small per-sequence copies. Every item is computed by the same code, with the
// same register tiles, whichever thread runs it, so the results depend neither on the thread
// count nor on the scheduling, to the bit.
struct Par {
  int tid, n;
  Sched* sched;
  // Visit the hidden blocks last to first (same results): one thread, all of them; several
  // threads, each its own range (work_next's reverse), stealing from the others' fronts.
  bool backward = false;
  void range(int64_t total, int64_t* b0, int64_t* b1) const { split_range(total, tid, n, b0, b1); }
  void sync() const {
    if (n > 1) barrier_wait(&sched->bar);
  }
  // Runs f(i) for the items i in [0, count) this thread takes; over all threads, every item runs
  // exactly once. A pass must be followed by sync() before the next one.
  template <class F>
  void each(int64_t count, F&& f) const {
    if (n <= 1) {
      for (int64_t i = 0; i < count; ++i) f(i);
      return;
    }
    work_open(sched, tid, n, count);
    int cursor = 0;
    for (int64_t i; (i = work_next(sched, tid, n, count, &cursor, backward)) >= 0;) f(i);
  }
  // A pass over `blocks` hidden blocks of the rows of tiling tl: runs f(b, r0, r1) for items
  // of one block and a chunk of whole tiles, rows [r0, r1). One chunk (all rows) per block
  // unless the blocks alone would give each thread fewer than 8 items; then the tiles are
  // split, as long as an item keeps ~2e5 flops (`flops_row` flops per row of a block). Items
  // are numbered block-major, so a thread's own range is whole blocks.
  template <class F>
  void blocks(int64_t blocks, const Tiling& tl, double flops_row, F&& f) const {
    const int64_t rows = tl.rows;
    if (n <= 1) {
      for (int64_t i = 0; i < blocks; ++i) f(backward ? blocks - 1 - i : i, int64_t(0), rows);
      return;
    }
    int64_t chunk = tl.count;  // tiles
    if (blocks < 8 * n && tl.count > 1) {
      const int64_t want = (8 * n + blocks - 1) / blocks;  // chunks per block
      int64_t by_flops = static_cast<int64_t>(2e5 / (flops_row > 1 ? flops_row : 1)) + 1;
      int64_t c = (rows + want - 1) / want;
      if (c < by_flops) c = by_flops;
      c = (c + tl.big - 1) / tl.big;  // in tiles: the tiles do not change
      if (c < tl.count) chunk = c;
    }
    if (chunk < 1) chunk = 1;
    const int64_t chunks = (tl.count + chunk - 1) / chunk;
    each(blocks * chunks, [&](int64_t i) {
      const int64_t b = i / chunks, t0 = (i % chunks) * chunk;
      f(b, tl.start(t0), tl.start(t0 + chunk < tl.count ? t0 + chunk : tl.count));
    });
  }
};

// What a sequence does with a finished item of a step (output copy, length masking); nothing for
// a single step. on_h(r0, r1, j0, j1): rows [r0, r1), columns [j0, j1) of the new hidden state
// are final; on_c(...) the same for the new cell state.
struct NoEpilogue {
  void on_h(int64_t, int64_t, int64_t, int64_t) const {}
  void on_c(int64_t, int64_t, int64_t, int64_t) const {}
};

template <typename T>
inline T at_or_zero(const T* p, int64_t i) {
  return p ? p[i] : T(0);
}

// Packs rows [row0 + g*H + j] of W [*, K] for gates g < G, units j < H, into a panel; units past
// H are zero. A transpose, done kPackK k at a time: the G*VB rows of a block are each read a
// cache line at a time and the kPackK packed rows they fill (4 KiB) stay in L1 until they are
// complete. (Whole rows at a time wrote each packed line once per unit, from L2 for a block
// past L1: 0.55 ms to pack an LSTM of I = 128, H = 256.)
constexpr int64_t kPackK = 16;
template <typename T>
void pack_panel(const T* W, int64_t row0, int64_t H, int G, int64_t K, T* out) {
  constexpr int VB = Tile<T>::VB;
  for (int64_t b = 0; b < nblocks<T>(H); ++b) {
    T* block = out + b * K * G * VB;
    for (int64_t k0 = 0; k0 < K; k0 += kPackK) {
      const int64_t k1 = K - k0 < kPackK ? K : k0 + kPackK;
      for (int g = 0; g < G; ++g)
        for (int l = 0; l < VB; ++l) {
          const int64_t j = b * VB + l;
          T* dst = block + g * VB + l;
          if (j < H) {
            const T* src = W + (row0 + g * H + j) * K;
            for (int64_t k = k0; k < k1; ++k) dst[k * G * VB] = src[k];
          } else {
            for (int64_t k = k0; k < k1; ++k) dst[k * G * VB] = T(0);
          }
        }
    }
  }
}

// Where each part of a packed layer lives in its buffer (offsets in elements).
struct LayerLayout {
  int G;
  int64_t w_ih, w_hh, w_hh_n, bias, b_hn, w_hr, total;  // -1: absent
};

inline LayerLayout layer_layout_f(const CellSpec& spec, const LayerDims& d, int64_t vb_elems) {
  // vb_elems is passed in so this helper needs no template: sizes in units of the dtype.
  LayerLayout L{};
  L.G = gate_count(spec.kind);
  const int64_t nb = (d.H + vb_elems - 1) / vb_elems, nbp = (d.P + vb_elems - 1) / vb_elems;
  const int64_t unit = nb * vb_elems;
  int64_t off = 0;
  L.w_ih = off;
  off += round_up(unit * d.I * L.G);
  L.w_hh = off;
  L.w_hh_n = -1;
  if (spec.kind == kGRU && !spec.linear_before_reset) {
    // r and z read h; n reads r*h, which exists only after r: two panels, two passes.
    off += round_up(unit * d.P * 2);
    L.w_hh_n = off;
    off += round_up(unit * d.P);
  } else {
    off += round_up(unit * d.P * L.G);
  }
  L.bias = off;
  off += round_up(unit * L.G);
  L.b_hn = -1;
  if (spec.kind == kGRU && spec.linear_before_reset) {
    L.b_hn = off;
    off += round_up(unit);
  }
  L.w_hr = -1;
  if (spec.kind == kLSTM && d.P != d.H) {
    L.w_hr = off;
    off += round_up(nbp * vb_elems * d.H);
  }
  L.total = off;
  return L;
}

template <typename T>
LayerLayout layer_layout(const CellSpec& spec, const LayerDims& d) {
  return layer_layout_f(spec, d, Tile<T>::VB);
}

template <typename T>
struct PackedView {
  const T* w_ih;    // panel, G gates, K = I
  const T* w_hh;    // panel, G gates (GRU reset-before: r, z only), K = P
  const T* w_hh_n;  // GRU reset-before: panel of W_hn, K = H; else null
  const T* bias;    // [nb][G][VB] input-side bias with every foldable recurrent bias added
  const T* b_hn;    // GRU reset-after: [nb][VB] b_hn; else null
  const T* w_hr;    // LSTM projection: panel of W_hr (P rows, 1 gate, K = H); else null
};

template <typename T>
PackedView<T> view_layer(const CellSpec& spec, const LayerDims& d, const T* buf) {
  const LayerLayout L = layer_layout<T>(spec, d);
  auto part = [buf](int64_t off) { return off < 0 ? nullptr : buf + off; };
  return PackedView<T>{part(L.w_ih), part(L.w_hh), part(L.w_hh_n),
                       part(L.bias), part(L.b_hn), part(L.w_hr)};
}

template <typename T>
void pack_layer_impl(const CellSpec& spec, const LayerDims& d, const RawWeights<T>& raw, T* out) {
  constexpr int VB = Tile<T>::VB;
  const LayerLayout L = layer_layout<T>(spec, d);
  for (int64_t i = 0; i < L.total; ++i) out[i] = T(0);
  const int G = L.G;
  const int64_t H = d.H;
  pack_panel(raw.w_ih, 0, H, G, d.I, out + L.w_ih);
  if (L.w_hh_n >= 0) {
    pack_panel(raw.w_hh, 0, H, 2, d.P, out + L.w_hh);
    pack_panel(raw.w_hh, 2 * H, H, 1, d.P, out + L.w_hh_n);
  } else {
    pack_panel(raw.w_hh, 0, H, G, d.P, out + L.w_hh);
  }
  // Folded bias: b_ih + b_hh, except b_hn of the reset-after GRU, which is multiplied by r.
  T* bias = out + L.bias;
  for (int64_t b = 0; b < nblocks<T>(H); ++b)
    for (int g = 0; g < G; ++g)
      for (int l = 0; l < VB; ++l) {
        const int64_t j = b * VB + l, row = g * H + j;
        if (j >= H) continue;
        const bool keep_hh_apart = L.b_hn >= 0 && g == 2;
        bias[(b * G + g) * VB + l] =
            at_or_zero(raw.b_ih, row) + (keep_hh_apart ? T(0) : at_or_zero(raw.b_hh, row));
        if (keep_hh_apart) out[L.b_hn + b * VB + l] = at_or_zero(raw.b_hh, row);
      }
  if (L.w_hr >= 0) pack_panel(raw.w_hr, 0, d.P, 1, H, out + L.w_hr);
}

// Dot products are summed in blocks of kSumBlock k: each block's sum starts from zero and is
// then added to the total, so a float32 sum over a long K gathers rounding error like
// kSumBlock + K / kSumBlock terms rather than K (one accumulator over K = 1100 inputs missed
// SPEC section 6's float32 bound against the BLAS-summed reference). K <= kSumBlock is one block.
constexpr int64_t kSumBlock = 256;

// A tile of several rows reads its weights once per k and, for a block of K > ~160 (48 KiB: a
// whole L1d), from L2 or L3: the hardware prefetchers bring them to L1 too late to keep both FMA
// ports busy (measured on AVX-512, Xeon family 6 model 207: a 6-row LSTM tile at 85% of the FMA
// peak with its weights in L2, 100% in L1). So each k prefetches the weights kPrefetchK k
// further on into L1. Measured (bench/ab_builds.py, 11 alternated rounds, against a null A/B of
// the same build at 0.97-1.01x): T = 10, N = 64, H = 1024 sequences 1.09x (LSTM and GRU); H = 256
// and 512 and cell steps unchanged. A one-row tile (the streaming case) is bound by its loads,
// not its FMAs, and four more per k made it 5-9% slower: it is left to the hardware, as is a
// per-k footprint under one cache line (the baseline build with few gates).
constexpr int64_t kPrefetchK = 8;
// Whether the build prefetches weights at all (see kPrefetchTile), and whether it pulls the next
// block only from a block's first tile (see Ahead).
#ifndef GK_PREFETCH_WEIGHTS
#define GK_PREFETCH_WEIGHTS 1
#endif
#ifndef GK_PREFETCH_NEXT
#define GK_PREFETCH_NEXT 0
#endif
static_assert(!(GK_PREFETCH_WEIGHTS && GK_PREFETCH_NEXT), "one way of pulling the next block");
template <typename T, int kCount>
GK_INLINE void prefetch_weights(const T* p) {
  constexpr int kBytes = kCount * int(sizeof(T));
  if constexpr (kBytes >= 64)
    for (int o = 0; o < kBytes; o += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(p) + o, 0, 3);
}

// The next hidden block's weights, pulled from L3 (or memory) into L2 while this block's tiles
// run, per_k cache lines per k of a tile. A block of a large layer is read by its first tile from
// L3, at a rate the FMAs outrun, and by the rest from L2; spread over the k loops of a block's
// tiles, the next block is in L2 when its first tile starts (one burst per tile instead was
// slower: it filled the miss queues the tile's own loads wait in). Measured on AVX-512, Xeon
// family 6 model 207 (bench/ab_builds.py, 7 alternated rounds, bitwise equal outputs): LSTM
// T=50 N=64 H=1024 (16 MiB of W_hh) 1.076x, T=100 N=64 H=512 1.065x, N=16 H=512 1.085x; GRU
// H=1024 and H=512 1.05x; H <= 256 unchanged, and a threshold of 512 KiB (kAheadBytes) gained
// nothing there. A one-row tile (a stream) is bound by its loads and pulls nothing.
//
// Builds that leave per-k prefetching off (GK_PREFETCH_WEIGHTS 0) can pull the next block the
// lean way instead (GK_PREFETCH_NEXT 1): the block's first tile, if it has >= 3 rows (kPullNext),
// prefetches at each of its k the same k's weights of the next block (two lines per k from a
// pointer held in a register, no count), and the tiles after it pull nothing. An item of fewer
// than kPullNextTiles tiles pulls only in a layer of more than kPullNextBytes. The AVX2 build
// does this. Measured on AMD EPYC Zen 3 (family 25 model 1: 512 KiB of L2, 32 MiB of L3 shared
// with other tenants; bench/ab_kernels.py, 15-25 paired rounds, null A/Bs of 0.97-1.09, bitwise
// equal outputs), one thread: T = 100 sequences at H = 512, LSTM N = 16 1.01-1.09x, N = 32
// 1.03-1.05x, N = 64 0.99-1.05x, GRU N = 16 1.04-1.14x; H = 1024: LSTM T = 20-50 N = 64
// 1.00-1.03x, N = 3 1.16-1.20x, GRU N = 4 1.16-1.24x, RNN N = 16 1.04-1.07x; steps GRU (4, 256,
// 1024) 1.20-1.41x, LSTM (4, 256, 1024) 1.09x. Two threads: 0.97-1.12x against 0.98-1.07 of the
// null. Items of 1-2 tiles in layers of 3-4 MiB lost 5-7% with it (LSTM and GRU N = 4-5,
// H = 512; steps (3, 512, 512), (4, 512, 512)), hence kPullNextTiles; a 2-row tile, bound by its
// weight loads, 15% (LSTM N = 2, H = 512), hence the 3 rows. Pulling from the second tile instead
// of the first gained less (GRU 1.08x, LSTM 1.02x); kAheadBytes of 512 KiB, nothing at H = 256
// (LSTM step N = 8 0.93x). Ahead::pull's count and loop per k cost that core 15-17%.
struct Ahead {
  const char* p = nullptr;
  int64_t left = 0;  // lines still to pull
  int per_k = 0;
  GK_INLINE void pull() {
    for (int i = 0; i < per_k; ++i)
      if (left > 0) {
        __builtin_prefetch(p, 0, 2);  // to L2 (and L3), not L1
        p += 64;
        --left;
      }
  }
};

// Layers whose weights take more than this many bytes pull the next block ahead (Ahead): a
// smaller one stays in L2 from step to step (2 MiB on the machines measured).
constexpr double kAheadBytes = double(2 << 20);
// The lean pull (GK_PREFETCH_NEXT) of a block's item of fewer than kPullNextTiles tiles, only in
// a layer of more than kPullNextBytes (see Ahead).
constexpr int64_t kPullNextTiles = 3;
constexpr double kPullNextBytes = double(8 << 20);

// The Ahead of an item of block b in [0, nb) of a panel of nb blocks of `block` elements each,
// rows [q0, q1) of the tiles tl over K k: the block this thread most likely takes next (its
// own range runs forwards, or backwards in a backward pass).
template <typename T>
GK_INLINE Ahead ahead_of(const Par& par, const T* panel, int64_t nb, int64_t block, int64_t b,
                         const Tiling& tl, int64_t q0, int64_t q1, int64_t K) {
  const int64_t next = par.backward ? b - 1 : b + 1, tiles = tl.index(q1) - tl.index(q0);
  Ahead a;
  const double bytes = double(nb) * block * sizeof(T);
  if (!(GK_PREFETCH_WEIGHTS || GK_PREFETCH_NEXT) || bytes <= kAheadBytes || next < 0 ||
      next >= nb || tiles < 1 || K < 1 ||
      (GK_PREFETCH_NEXT && tiles < kPullNextTiles && bytes <= kPullNextBytes))
    return a;
  a.p = reinterpret_cast<const char*>(panel + next * block);
  a.left = block * int64_t(sizeof(T)) / 64;
  a.per_k = static_cast<int>((a.left + tiles * K - 1) / (tiles * K));  // spread over the tiles
  return a;
}

// out[r][*] (+)= row r of A [k0:k1) . panel block (G*VB columns) for R rows (a[r] points at each
// row's k = 0), accumulated in registers: per k, G weight vectors are loaded once and reused by
// all R rows. With few rows (the streaming case) G*R chains of dependent FMAs cannot hide the
// FMA latency, so k is dealt round-robin to S sets of accumulators, summed at the end in a
// fixed order (deterministic). add: out += the sum (otherwise out = the sum).
//
// GS >= G is the panel's gate count: a tile of G < GS gates (a gate-split pass, see
// tile_dot_split) reads G of the GS gate vectors at each k, starting at `block`.
// bias (G*VB values, or null): added to each row's finished sum as it is stored, the same
// rounding as adding it afterwards, without a pass over the tile through memory.
constexpr int kChains = 8;  // FMA latency x throughput on current x86 and Arm cores
// The accumulator sets S of a tile of R rows and G gates (below): k is dealt round-robin to
// them and their sums are folded at the end, so a row's bits depend on S, not on R itself.
inline int64_t sets_of(int G, int64_t R) {
  const int64_t acc = G * R;
  return acc >= kChains ? 1 : (kChains + acc - 1) / acc;
}
// Whether the rows [r0, r0 + part.rows) of a pass tiled as `whole` (g_whole gates a tile) are
// summed with the same accumulator sets when they are tiled alone as `part` (g_part gates): then
// a step over those rows alone gives them the bits they get in the whole batch (rows_split).
inline bool same_sets(const Tiling& whole, int g_whole, const Tiling& part, int g_part,
                      int64_t r0) {
  for (int64_t n = 0; n < part.rows; ++n)
    if (sets_of(g_part, part.height(n)) != sets_of(g_whole, whole.height(r0 + n))) return false;
  return true;
}
// Whether a tile of R rows prefetches its weights (prefetch_weights, Ahead): the
// build's choice (GK_PREFETCH_WEIGHTS, default 1). The AVX2 build does not: measured on AMD
// EPYC Zen 3 (family 25 model 1; a C++ driver alternating builds call by call in one process,
// median of 21-31 paired ratios; a null A/B of the same source read 0.98-1.06, 0.91-0.94 at
// H >= 512, where L3 is shared). That machine runs in two states for seconds at a time: a slow
// one (LSTM sequences ~45 GFLOP/s) and a fast one (~75). In the slow one, without the
// prefetches: T = 100 LSTM sequences N = 4-64, H = 128-256 1.10-1.21x, GRU H = 512-1024
// 1.07-1.16x, Cho GRU 1.21x, RNN 1.11-1.30x, steps N = 8 1.09-1.18x; in the fast one
// 0.99-1.03x, GRU H = 512 0.92-0.99x. The LSTM's tile (3 rows x 4 gates: 17 of 16 ymm
// registers, so it reloaded one weight vector per row) issued 9 loads per 12 FMAs without them,
// 11 with; the loads, not the FMAs, set its pace there. Re-measured with the k loop unrolled
// (GK_K_UNROLL): prefetching again gained in the fast state at H = 512 (LSTM N = 16 1.10x, GRU
// 1.08x) but lost at H = 256 (0.95-0.98x) and on steps (N = 8 0.87x); prefetching only in
// layers past kAheadBytes read 0.86-1.01x in a slower state. So still none
// within a block; it pulls the next block the lean way instead (GK_PREFETCH_NEXT, see Ahead).
template <int R>
constexpr bool kPrefetchTile = R > 1 && GK_PREFETCH_WEIGHTS;
// Whether a tile holds its R row broadcasts in registers and loads its G weight vectors one at
// a time, instead of holding the G weight vectors and broadcasting one row at a time: where
// G*R accumulators, G weights and a broadcast overflow the GK_VEC_REGS vector registers (set
// by a build that measured this) and G*R accumulators, R broadcasts and a weight do not. The
// AVX2 LSTM tile, 3 rows x 4 gates: the other order needs 17 of 16 ymm registers, and GCC
// reloaded one weight vector per row, 9 loads per 12 FMAs; this one has 7. The same FMAs into
// the same accumulators in the same k order: bitwise equal. Measured on AMD EPYC Zen 3 with
// bench/ab_kernels.py (21 rounds, null 0.98-1.03): in the machine's slow state, T = 100 LSTM
// sequences N = 16-64 1.09-1.12x, H = 512 1.12x, step N = 64 1.11x, N = 8 1.07x, N = 1 1.02x;
// in its fast state 0.99-1.01x.
#ifdef GK_VEC_REGS
template <int G, int R>
constexpr bool kBroadcastFirst = G * R + G + 1 > GK_VEC_REGS && G * R + R + 1 <= GK_VEC_REGS;
#else
template <int G, int R>
constexpr bool kBroadcastFirst = false;
#endif
// How many k steps (of S each) the compiler unrolls the main loop of a tile by: the build's
// choice (GK_K_UNROLL; unset or 1: left to the compiler, which does not unroll it at -O3). The
// AVX2 build unrolls by 4: the same FMAs in the same order, bitwise equal. Why it pays there is
// not pinned down (unrolled, the loads take fixed offsets and one pointer update per 4 k).
// Measured on AMD EPYC Zen 3 (bench/ab_kernels.py, two runs of 21 rounds, a null A/B of the same
// source at 0.96-1.04): T = 100 sequences, LSTM N = 4-64 1.03-1.11x, GRU and Cho GRU
// 1.00-1.08x, RNN 1.02-1.07x; LSTM step (8, 128, 256) 1.10-1.14x; N = 1 0.98-1.02x. Unrolling
// by 2 or 8 gave the same as 4; the baseline build (SSE2) gained nothing from it.
#ifndef GK_K_UNROLL
#define GK_K_UNROLL 1
#endif
#define GK_STRINGIFY(x) #x
#define GK_PRAGMA_UNROLL(n) _Pragma(GK_STRINGIFY(GCC unroll n))
// Whether a tile of R rows can pull the next block the lean way (GK_PREFETCH_NEXT, see Ahead).
template <int R>
constexpr bool kPullNext = GK_PREFETCH_NEXT && R >= 3;
// tile_dot_block below; kNext: prefetch, at each k, the same k's weights of the next block (next).
template <typename T, int G, int R, int GS, bool kNext>
GK_INLINE void tile_dot_block_at(const T* const* a, const T* block, int64_t k0, int64_t k1,
                                 T* out, int64_t stride, bool add, const T* bias, Ahead* ahead,
                                 const char* next) {
  constexpr int VB = Tile<T>::VB;
  constexpr int64_t kBytesK = int64_t(GS) * VB * sizeof(T);  // of the panel, per k
  constexpr int S = G * R >= kChains ? 1 : (kChains + G * R - 1) / (G * R);
  Vec<T> acc[S][R][G];
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) acc[s][r][g] = Vec<T>{};
  int64_t k = k0;
#if GK_K_UNROLL > 1
  GK_PRAGMA_UNROLL(GK_K_UNROLL)
#endif
  for (; k + S <= k1; k += S)
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) {
      if constexpr (kPrefetchTile<R>) {
        prefetch_weights<T, G * VB>(block + (k + s + kPrefetchK) * GS * VB);
        if (ahead) ahead->pull();
      }
      if constexpr (kNext) {
        const char* q = next + (k + s) * kBytesK;
        __builtin_prefetch(q, 0, 2);
        if constexpr (kBytesK > 64) __builtin_prefetch(q + 64, 0, 2);
      }
      if constexpr (kBroadcastFirst<G, R>) {
        Vec<T> b[R];
        for (int r = 0; r < R; ++r) b[r] = splat(a[r][k + s]);
        for (int g = 0; g < G; ++g) {
          const Vec<T> w = vload(block + ((k + s) * GS + g) * VB);
          for (int r = 0; r < R; ++r) acc[s][r][g] = vfmadd<T>(b[r], w, acc[s][r][g]);
        }
      } else {
        Vec<T> w[G];
        for (int g = 0; g < G; ++g) w[g] = vload(block + ((k + s) * GS + g) * VB);
        for (int r = 0; r < R; ++r) {
          const Vec<T> b = splat(a[r][k + s]);
          for (int g = 0; g < G; ++g) acc[s][r][g] = vfmadd<T>(b, w[g], acc[s][r][g]);
        }
      }
    }
  // The last k1 - k < S k, k + s to set s. Both loops over s are unrolled by pragma and this one
  // has a constant bound: with the sets indexed at run time (the remainder loop counting s up
  // from 0), or the main loop left for GCC to unroll, GCC 12 for AArch64 kept the accumulators
  // of the loop above in memory, loading and storing every one at every k (324 of the 439 FMA
  // loops of the AArch64 build; now none of the kernels'). The x86 builds kept them in registers
  // either way and compile to the same arithmetic: bitwise equal results, same speed.
#pragma GCC unroll 16
  for (int s = 0; s + 1 < S; ++s) {
    if (k + s >= k1) break;
    Vec<T> w[G];
    for (int g = 0; g < G; ++g) w[g] = vload(block + ((k + s) * GS + g) * VB);
    for (int r = 0; r < R; ++r) {
      const Vec<T> b = splat(a[r][k + s]);
      for (int g = 0; g < G; ++g) acc[s][r][g] = vfmadd<T>(b, w[g], acc[s][r][g]);
    }
  }
  for (int s = 1; s < S; ++s)
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) acc[0][r][g] += acc[s][r][g];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) {
      T* o = out + r * stride + g * VB;
      Vec<T> v = add ? vload(o) + acc[0][r][g] : acc[0][r][g];
      if (bias) v = v + vload(bias + g * VB);
      vstore(v, o);
    }
}
template <typename T, int G, int R, int GS>
GK_INLINE void tile_dot_block(const T* const* a, const T* block, int64_t k0, int64_t k1,
                              T* out, int64_t stride, bool add, const T* bias = nullptr,
                              Ahead* ahead = nullptr) {
  if constexpr (kPullNext<R>) {
    if (ahead && ahead->p) {  // two copies of the loop: no per-k test
      tile_dot_block_at<T, G, R, GS, true>(a, block, k0, k1, out, stride, add, bias, ahead,
                                           ahead->p);
      return;
    }
  }
  tile_dot_block_at<T, G, R, GS, false>(a, block, k0, k1, out, stride, add, bias, ahead,
                                        nullptr);
}

// The whole K, block by block (see kSumBlock). add: out += the dot products (a gate-split
// tile's later blocks, see tile_dot_split: the same sums as in one call). bias: added to the
// total once it is complete (the last block's store).
template <typename T, int G, int R, int GS = G>
GK_INLINE void tile_dot_fixed(const T* const* a, const T* block, int64_t K, T* out,
                              int64_t stride, bool add = false, const T* bias = nullptr,
                              Ahead* ahead = nullptr) {
  int64_t k0 = 0;
  do {  // K = 0 still writes its (zero) sums
    const int64_t k1 = K - k0 < kSumBlock ? K : k0 + kSumBlock;
    tile_dot_block<T, G, R, GS>(a, block, k0, k1, out, stride, add || k0 > 0,
                                k1 == K ? bias : nullptr, ahead);
    k0 = k1;
  } while (k0 < K);
  if (GK_PREFETCH_NEXT && ahead) ahead->p = nullptr;  // pulled by the block's first tile only
}

// The same for any rows <= BT(G) (a[0..rows) point at them): a full tile or the matching
// smaller one (never computing rows that are not there, which matters at N = 1).
// Rows of acc are `stride` values apart (G*VB, or GS*VB for a gate-split pass).
template <typename T, int G, int BT, int GS = G, int MinRows = 1>
GK_INLINE void tile_dot_rows(const T* const* a, int64_t rows, const T* block, int64_t K, T* out,
                             int64_t stride, bool add = false, const T* bias = nullptr,
                             Ahead* ahead = nullptr) {
  switch (rows) {
#define GK_TILE_CASE(R)                                                              \
  case R:                                                                            \
    if constexpr (R <= BT && R >= MinRows)                                           \
      tile_dot_fixed<T, G, R, GS>(a, block, K, out, stride, add, bias, ahead);       \
    break;
    GK_TILE_CASE(1) GK_TILE_CASE(2) GK_TILE_CASE(3) GK_TILE_CASE(4)
    GK_TILE_CASE(5) GK_TILE_CASE(6) GK_TILE_CASE(7) GK_TILE_CASE(8)
    GK_TILE_CASE(9)
#undef GK_TILE_CASE
    default:
      break;
  }
}
template <typename T, int G, int BT>
GK_INLINE void tile_dot_rows(const T* const* a, int64_t rows, const T* block, int64_t K,
                             T (&acc)[BT][G * Tile<T>::VB], const T* bias = nullptr,
                             Ahead* ahead = nullptr) {
  tile_dot_rows<T, G, BT>(a, rows, block, K, &acc[0][0], G * Tile<T>::VB, false, bias, ahead);
}

// The same for rows A, A + lda, ...
template <typename T, int G, int BT>
GK_INLINE void tile_dot(const T* A, int64_t lda, int64_t rows, const T* block, int64_t K,
                        T (&acc)[BT][G * Tile<T>::VB], const T* bias = nullptr,
                        Ahead* ahead = nullptr) {
  const T* a[BT];
  for (int r = 0; r < BT; ++r) a[r] = A + r * lda;
  tile_dot_rows<T, G, BT>(a, rows, block, K, acc, bias, ahead);
}

// The same in Passes passes of G / Passes gates each (a gate-split tile): a tile of BT rows then
// needs BT * G / Passes accumulators, so it can be taller than a whole-gate tile of bt(G) rows,
// and a step whose rows are a little over one such tile reads its weights once instead of twice
// (see Lstm::step). A long K is taken a summation block (kSumBlock) at a time, each by every pass
// in turn, so the later passes read weights the first one just brought into cache. A tile of
// >= kMin rows has one accumulator set, as a whole-gate tile of >= 2 rows has, and the blocks
// are the same: each gate's sums are those of tile_dot, bitwise.
template <typename T, int G, int BT, int Passes>
GK_INLINE void tile_dot_split(const T* A, int64_t lda, int64_t rows, const T* block, int64_t K,
                              T (&acc)[BT][G * Tile<T>::VB], const T* bias = nullptr,
                              Ahead* ahead = nullptr) {
  if constexpr (Passes == 1) {
    tile_dot<T, G, BT>(A, lda, rows, block, K, acc, bias, ahead);
  } else {
    static_assert(G % Passes == 0, "gate-split passes must divide the gates");
    constexpr int VB = Tile<T>::VB, GP = G / Passes, W = G * VB;
    constexpr int kMin = (8 + GP - 1) / GP;  // rows for one accumulator set (tile_dot_block)
    const T* a[BT];
    for (int r = 0; r < BT; ++r) a[r] = A + r * lda;
    if (rows < kMin) {  // not taken by Lstm::step; whole-gate tiles, for completeness
      tile_dot_rows<T, G, kMin - 1>(a, rows, block, K, &acc[0][0], W, false, bias, ahead);
      return;
    }
    int64_t k0 = 0;
    do {
      const int64_t k1 = K - k0 < kSumBlock ? K : k0 + kSumBlock;
      for (int r = 0; r < BT; ++r) a[r] = A + r * lda + k0;
      for (int p = 0; p < Passes; ++p)
        tile_dot_rows<T, GP, BT, G, kMin>(a, rows, block + (k0 * G + p * GP) * VB, k1 - k0,
                                          &acc[0][p * GP * VB], W, k0 > 0,
                                          bias && k1 == K ? bias + p * GP * VB : nullptr, ahead);
      k0 = k1;
    } while (k0 < K);
  }
}

// out[q][b][G][VB] = row q . panel + bias for the rows q < R (row_of(q) points at each): the
// input projection of many rows of a sequence in one GEMM. The tiles store straight into `out`,
// the bias added as they do (tile_dot_block).
template <typename T, int G, class RowOf>
void project_packed(const RowOf& row_of, int64_t R, int64_t K, const T* panel, const T* bias,
                    int64_t nb, T* out, const Par& par) {
  constexpr int VB = Tile<T>::VB, BT = Tile<T>::bt(G), W = G * VB;
  const Tiling tl = tiling(R, BT, G);
  par.blocks(nb, tl, 2.0 * K * W, [&](int64_t b, int64_t q0, int64_t q1) {
    const T* block = panel + b * K * W;
    Ahead ahead = ahead_of(par, panel, nb, K * W, b, tl, q0, q1, K);
    for (int64_t r0 = q0, rows; r0 < q1; r0 += rows) {
      rows = tl.height(r0);
      const T* a[BT];
      for (int r = 0; r < BT; ++r) a[r] = row_of(r0 + (r < rows ? r : 0));
      tile_dot_rows<T, G, BT>(a, rows, block, K, out + (r0 * nb + b) * W, nb * W, false,
                              bias + b * W, &ahead);
    }
  });
}

// out[r, :Hout] = A[r, :K] . panel (one gate, Hout rows of W), dense [R, Hout]: the LSTM
// projection h = W_hr m.
// `epi.on_h` is told of every finished item.
template <typename T, class Epi>
void project_dense(const T* A, int64_t lda, int64_t R, int64_t K, const T* panel, int64_t Hout,
                   T* out, const Par& par, const Epi& epi) {
  constexpr int VB = Tile<T>::VB, BT = Tile<T>::bt(1);
  const Tiling tl = tiling(R, BT, 1);
  par.blocks(nblocks<T>(Hout), tl, 2.0 * K * VB, [&](int64_t b, int64_t q0, int64_t q1) {
    const int64_t j0 = b * VB, lanes = Hout - j0 < VB ? Hout - j0 : VB;
    for (int64_t r0 = q0, rows; r0 < q1; r0 += rows) {
      rows = tl.height(r0);
      T acc[BT][VB];
      tile_dot<T, 1, BT>(A + r0 * lda, lda, rows, panel + b * K * VB, K, acc);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t l = 0; l < lanes; ++l) out[(r0 + r) * Hout + j0 + l] = acc[r][l];
    }
    epi.on_h(q0, q1, j0, j0 + lanes);
  });
}

// Pull a tile's rows of the input projection (and of c) towards the core while its dot
// products run. The epilogue reads those rows once per step, G*VB values at a 4*H stride, which
// the hardware prefetchers do not follow: without this it stalls on memory (perf: ~30% of an
// LSTM step at N=64, H=256 was spent on that one load).
template <typename T>
GK_INLINE void prefetch_rows(const T* p, int64_t stride, int64_t rows, int64_t count) {
  const int64_t bytes = count * int64_t(sizeof(T));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < bytes; o += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(p + r * stride) + o, 0, 3);
}

// Where a fused step reads its input projection (x W_ih^T + the folded biases), a tile at a time:
// tile<BT>(b, n0, rows, buf, &stride) returns the G*VB gate values of hidden block b for batch
// row n0 (the next row `stride` further on).
//   XRows: a sequence has projected every row of every step in one GEMM beforehand.
//   XTile: a single step projects each tile right before its recurrent product, with the same
//          arithmetic as project_packed (so the results do not change): no pass over a
//          workspace, and with several threads no barrier between the projection and the step.
template <typename T, int G>
struct XRows {
  static constexpr bool kReadsWeights = false;
  const T* xp;
  int64_t stride;
  template <int BT, int Passes = 1>
  GK_INLINE const T* tile(int64_t b, int64_t n0, int64_t rows, T (&)[BT][G * Tile<T>::VB],
                          int64_t* s) const {
    const T* p = xp + n0 * stride + b * G * Tile<T>::VB;
    prefetch_rows(p, stride, rows, G * Tile<T>::VB);
    *s = stride;
    return p;
  }
};

template <typename T, int G>
struct XTile {
  static constexpr bool kReadsWeights = true;
  const T* x;      // row 0 of [N, I], rows ldx apart
  int64_t ldx, I;
  const T* panel;  // packed W_ih, G gates
  const T* bias;   // [nb][G][VB]
  template <int BT, int Passes = 1>
  GK_INLINE const T* tile(int64_t b, int64_t n0, int64_t rows, T (&buf)[BT][G * Tile<T>::VB],
                          int64_t* s) const {
    constexpr int W = G * Tile<T>::VB;
    tile_dot_split<T, G, BT, Passes>(x + n0 * ldx, ldx, rows, panel + b * I * W, I, buf,
                                     bias + b * W);
    *s = W;
    return &buf[0][0];
  }
};

// A tile's input projection (xs.tile) and recurrent product acc = A . panel block. In backward
// order (Par::backward) an XTile reads W_hh before W_ih, the reverse of forward order, so that a
// step after a forward one starts on what that one read last.
template <typename T, int G, int BT, class X, int Passes = 1>
GK_INLINE const T* x_and_h_tiles(const X& xs, bool backward, int64_t b, int64_t n0, int64_t rows,
                                 T (&xbuf)[BT][G * Tile<T>::VB], int64_t* x_stride, const T* A,
                                 int64_t lda, const T* block, int64_t K,
                                 T (&acc)[BT][G * Tile<T>::VB], Ahead* ahead = nullptr) {
  if (X::kReadsWeights && backward) {
    tile_dot_split<T, G, BT, Passes>(A, lda, rows, block, K, acc, nullptr, ahead);
    return xs.template tile<BT, Passes>(b, n0, rows, xbuf, x_stride);
  }
  const T* xt = xs.template tile<BT, Passes>(b, n0, rows, xbuf, x_stride);
  tile_dot_split<T, G, BT, Passes>(A, lda, rows, block, K, acc, nullptr, ahead);
  return xt;
}

// Copies `lanes` values of a row into a VB-wide local (zeros past them), and back. Every block
// but the last is full: one vector move. (Left to itself, GCC turns the variable-length store
// loop into a call to memcpy, two per row of every block: 10% of a small step.)
template <typename T>
GK_INLINE void load_lanes(const T* src, int64_t lanes, T* dst) {
  constexpr int VB = Tile<T>::VB;
  if (lanes == VB) {
    std::memcpy(dst, src, sizeof(T) * VB);
    return;
  }
  for (int l = 0; l < VB; ++l) dst[l] = l < lanes ? src[l] : T(0);
}
template <typename T>
GK_INLINE void store_lanes(const T* src, int64_t lanes, T* dst) {
  constexpr int VB = Tile<T>::VB;
  if (lanes == VB) {
    std::memcpy(dst, src, sizeof(T) * VB);
    return;
  }
#if defined(__clang__)
  // Clang turns a loop to `lanes` into a call to memcpy, and a call in a kernel's loop makes the
  // loop save and reload its vector registers around it; unrolled to VB, it stays inline.
  for (int l = 0; l < VB; ++l)
    if (l < lanes) dst[l] = src[l];
#else
  for (int64_t l = 0; l < lanes; ++l) dst[l] = src[l];
#endif
}

// M rows of a [*, stride] state, `lanes` columns each (zeros past them), as Lanes; and back.
template <class L, typename T>
GK_INLINE L load_rows(const T* p, int64_t stride, int64_t lanes) {
  if (lanes == Tile<T>::VB) return L::load(p, stride);
  L v;
  for (int m = 0; m < L::size; ++m) {
    T buf[Tile<T>::VB];
    load_lanes(p + m * stride, lanes, buf);
    v.v[m] = vload(buf);
  }
  return v;
}
template <typename T, int M>
GK_INLINE void store_rows(const Lanes<T, M>& v, int64_t lanes, T* p, int64_t stride) {
  if (lanes == Tile<T>::VB) return v.store(p, stride);
  for (int m = 0; m < M; ++m) {
    T buf[Tile<T>::VB];
    vstore(v.v[m], buf);
    store_lanes(buf, lanes, p + m * stride);
  }
}

// Runs f(RowGroup<M>{}, r) for the rows [r, r + M) of a tile, in groups of M = kRowJam (each
// group's activations interleaved, see simd.h), then of 1 for the rest.
template <int M>
struct RowGroup {
  static constexpr int size = M;
};
constexpr int kRowJam = 2;
template <class F>
GK_INLINE void each_row_group(int64_t rows, const F& f) {
  int64_t r = 0;
  for (; r + kRowJam <= rows; r += kRowJam) f(RowGroup<kRowJam>{}, r);
  for (; r < rows; ++r) f(RowGroup<1>{}, r);
}

// M registers, one from each of M blocks' tiles: ptrs[m] + offset.
template <class L, typename T>
GK_INLINE L gather_blocks(const T* const* ptrs, int64_t offset) {
  L v;
  for (int m = 0; m < L::size; ++m) v.v[m] = vload(ptrs[m] + offset);
  return v;
}

// A step of one batch row (a stream, N = 1), for the cells whose step reads its input projection
// tile by tile (kFusedInput). The epilogue of one row of one block is a single chain of dependent
// operations (two activations deep for the LSTM), which the core runs at its latency; the next
// block's dot products only partly hide it. So the hidden blocks are taken J at a time: the
// input projection tiles (xs) and recurrent products (K = the width of h) of J blocks one after
// the other, then one epilogue for all of them, whose chains run side by side as kRowJam rows'
// do in a tile (Lanes, simd.h):
//   f(RowGroup<M>{}, j, lanes, xt, acc): M blocks from column j (VB apart), the last of them
//     `lanes` wide; xt[m], acc[m] their G*VB gate values of x and of h. M = J, or 1 for the
//     blocks of a short last group and for a partial last block.
//   done(j0, j1): columns [j0, j1) finished (the epilogue's on_h / on_c).
// Work items are the groups. The arithmetic of every value is step_tiles': the same bits.
// Measured (AVX-512, Xeon family 6 model 207, bench/ab_builds.py, 15 alternated rounds, J = 2):
// steps (1,64,64) RNN 1.17x, GRU 1.06x, LSTM 1.02x; (1,128,256) RNN 1.03x, GRU 1.03x, LSTM 0.99x;
// T = 100 sequences at H = 256 RNN 1.09x, GRU and LSTM 1.00x. J = 4 was no better than 2.
template <typename T, int G, int J, class X, class F, class Done>
GK_INLINE void one_row_groups(int64_t H, int64_t K, const X& xs, const T* h, const T* w_hh,
                              const Par& par, const F& f, const Done& done) {
  constexpr int VB = Tile<T>::VB, W = G * VB;
  const int64_t nb = nblocks<T>(H), groups = (nb + J - 1) / J;
  par.blocks(groups, tiling(1, 1, 1), 2.0 * K * W * J, [&](int64_t grp, int64_t, int64_t) {
    const int64_t b0 = grp * J, nj = nb - b0 < J ? nb - b0 : J;
    T acc[J][1][W], xbuf[J][1][W];
    const T* xt[J];
    const T* at[J];
    for (int64_t i = 0; i < nj; ++i) {
      const int64_t m = par.backward ? nj - 1 - i : i, b = b0 + m;
      int64_t x_stride;
      xt[m] = x_and_h_tiles<T, G, 1, X>(xs, par.backward, b, 0, 1, xbuf[m], &x_stride, h, K,
                                        w_hh + b * K * W, K, acc[m]);
      at[m] = &acc[m][0][0];
    }
    const int64_t j0 = b0 * VB, j1 = (b0 + nj) * VB < H ? (b0 + nj) * VB : H;
    if (nj == J && j1 - j0 == J * VB) {
      f(RowGroup<J>{}, j0, int64_t(VB), xt, at);
    } else {
      for (int64_t m = 0; m < nj; ++m) {
        const int64_t j = j0 + m * VB;
        f(RowGroup<1>{}, j, H - j < VB ? H - j : int64_t(VB), xt + m, at + m);
      }
    }
    done(j0, j1);
  });
}

// ---------------------------------------------------------------------------------------------
// Fused steps. Each computes, for every hidden block and batch tile, the recurrent product into
// registers and finishes the cell there: no [N, G*H] gates tensor is written to memory.
//   xs        the input projection of this step, tile by tile (XRows or XTile above)
//   h [N, P], c [N, H] in; h1 [N, P], c1 [N, H] out; scratch sized by Cell::scratch().
// ---------------------------------------------------------------------------------------------

// Columns [c0, c1) of a [*, H] state whose blocks this thread computes.
template <typename T>
inline void owned_columns(int64_t H, const Par& par, int64_t* c0, int64_t* c1) {
  constexpr int VB = Tile<T>::VB;
  int64_t b0, b1;
  par.range(nblocks<T>(H), &b0, &b1);
  *c0 = b0 * VB;
  *c1 = b1 * VB < H ? b1 * VB : H;
}

template <typename T>
struct Lstm {
  static constexpr int G = 4;
  static constexpr bool kHasC = true;
  static constexpr bool kFusedInput = true;  // a single step can take XTile
  static int64_t scratch(const LayerDims& d, int64_t N) { return d.P != d.H ? N * d.H : 0; }

  template <class X, class Epi>
  static void step(const LayerDims& d, int64_t N, const PackedView<T>& w, const X& xs,
                   const T* h, const T* c, T* h1, T* c1, T* scratch, const Par& par,
                   const Epi& epi) {
    // Whole-gate tiles of bt(4) rows (6 on AVX-512), except when N is a little over one such
    // tile and the recurrent weights fit in L2 (1 MiB: Zen 4's; Emerald Rapids has 2): then a
    // second, short tile would read all the weights again from L2 for its few rows, at a rate
    // its few FMAs per weight vector cannot hide, and one gate-split tile of all N rows reads
    // them once. Measured (AVX-512, Xeon family 6 model 207, A/B): N = 7-9, H = 256 steps
    // 8-25% faster; H = 512 (4 MiB of W_hh) no change; H = 1024 (16 MiB) 10% slower.
    // Taller gate-split tiles lost to whole-gate ones (N = 10-16: 2-13% slower): each of their
    // FMAs needs a broadcast of its own.
    constexpr int BT = Tile<T>::bt(G);
    if (N == 1)
      step_one_row(d, w, xs, h, c, h1, c1, scratch, par, epi);
    else if (split_tile(d, N))
      step_tiles<kSplitRows, 2>(d, N, w, xs, h, c, h1, c1, scratch, par, epi);
    else
      step_tiles<BT, 1>(d, N, w, xs, h, c, h1, c1, scratch, par, epi);
  }
  static constexpr int kSplitRows = Tile<T>::bt(G) + Tile<T>::bt(G) / 2;
  static bool split_tile(const LayerDims& d, int64_t N) {
    const double w_hh_bytes = double(nblocks<T>(d.H)) * d.P * G * Tile<T>::VB * sizeof(T);
    return N > Tile<T>::bt(G) && N <= kSplitRows && w_hh_bytes <= double(1 << 20);
  }
  // Rows of the shortest register tile of a step of N rows.
  static int64_t min_tile_rows(const LayerDims& d, int64_t N) {
    return split_tile(d, N) ? N : tiling(N, Tile<T>::bt(G), G).min_rows();
  }
  // Whether rows [r0, r1) of a step of N rows, stepped alone, get the bits they get in the
  // whole step: the same accumulator sets (same_sets) in every pass, the gate tiles (a
  // gate-split tile: one tile of G / 2 gates a pass) and W_hr's.
  static bool rows_alone(const LayerDims& d, int64_t N, int64_t r0, int64_t r1) {
    if (N < 2 || r1 - r0 < 2) return false;  // the one-row step
    auto gates = [&](int64_t rows, int* g) {
      *g = split_tile(d, rows) ? G / 2 : G;
      return split_tile(d, rows) ? tiling(rows, int(rows), G) : tiling(rows, Tile<T>::bt(G), G);
    };
    int gw, gp;
    const Tiling whole = gates(N, &gw), part = gates(r1 - r0, &gp);
    return same_sets(whole, gw, part, gp, r0) &&
           (d.P == d.H || same_sets(tiling(N, Tile<T>::bt(1), 1), 1,
                                    tiling(r1 - r0, Tile<T>::bt(1), 1), 1, r0));
  }

  template <int BT, int Passes, class X, class Epi>
  static void step_tiles(const LayerDims& d, int64_t N, const PackedView<T>& w, const X& xs,
                         const T* h, const T* c, T* h1, T* c1, T* scratch, const Par& par,
                         const Epi& epi) {
    constexpr int VB = Tile<T>::VB;
    const int64_t H = d.H, P = d.P, nb = nblocks<T>(H);
    T* hout = w.w_hr ? scratch : h1;  // o*tanh(c') before the projection, [N, H]
    const Tiling tl = tiling(N, BT, G);
    par.blocks(nb, tl, 2.0 * P * G * VB, [&](int64_t b, int64_t q0, int64_t q1) {
      const int64_t j0 = b * VB, lanes = H - j0 < VB ? H - j0 : VB;
      Ahead ahead = ahead_of(par, w.w_hh, nb, P * G * VB, b, tl, q0, q1, P);
      for (int64_t n0 = q0, rows; n0 < q1; n0 += rows) {
        rows = tl.height(n0);
        T acc[BT][G * VB], xbuf[BT][G * VB];
        int64_t x_stride;
        prefetch_rows(c + n0 * H + j0, H, rows, VB);
        const T* xt = x_and_h_tiles<T, G, BT, X, Passes>(xs, par.backward, b, n0, rows, xbuf,
                                                         &x_stride, h + n0 * P, P,
                                                         w.w_hh + b * P * G * VB, P, acc, &ahead);
        each_row_group(rows, [&](auto group, int64_t r) __attribute__((always_inline)) {
          typedef Lanes<T, decltype(group)::size> L;
          const T* x = xt + r * x_stride;
          const T* a = acc[r];
          const int64_t at = (n0 + r) * H + j0;
          L pre[G];
          for (int g = 0; g < G; ++g)
            pre[g] = L::load(x + g * VB, x_stride) + L::load(a + g * VB, G * VB);
          L c1v, h1v;
          lstm_pointwise(pre[0], pre[1], pre[2], pre[3], load_rows<L>(c + at, H, lanes), c1v, h1v);
          store_rows(c1v, lanes, c1 + at, H);
          store_rows(h1v, lanes, hout + at, H);
        });
      }
      epi.on_c(q0, q1, j0, j0 + lanes);
      if (!w.w_hr) epi.on_h(q0, q1, j0, j0 + lanes);
    });
    if (w.w_hr) {
      par.sync();  // the projection reads all of o*tanh(c')
      project_dense(scratch, H, N, H, w.w_hr, P, h1, par, epi);
    }
  }

  // One batch row: see one_row_groups.
  template <class X, class Epi>
  static void step_one_row(const LayerDims& d, const PackedView<T>& w, const X& xs, const T* h,
                           const T* c, T* h1, T* c1, T* scratch, const Par& par,
                           const Epi& epi) {
    constexpr int VB = Tile<T>::VB;
    T* hout = w.w_hr ? scratch : h1;
    one_row_groups<T, G, kRowJam>(
        d.H, d.P, xs, h, w.w_hh, par,
        [&](auto group, int64_t j, int64_t lanes, const T* const* xt, const T* const* acc)
            __attribute__((always_inline)) {
          typedef Lanes<T, decltype(group)::size> L;
          L pre[G], c1v, h1v;
          for (int g = 0; g < G; ++g)
            pre[g] = gather_blocks<L>(xt, g * VB) + gather_blocks<L>(acc, g * VB);
          lstm_pointwise(pre[0], pre[1], pre[2], pre[3], load_rows<L>(c + j, VB, lanes), c1v, h1v);
          store_rows(c1v, lanes, c1 + j, VB);
          store_rows(h1v, lanes, hout + j, VB);
        },
        [&](int64_t j0, int64_t j1) {
          epi.on_c(0, 1, j0, j1);
          if (!w.w_hr) epi.on_h(0, 1, j0, j1);
        });
    if (w.w_hr) {
      par.sync();  // the projection reads all of o*tanh(c')
      project_dense(scratch, d.H, 1, d.H, w.w_hr, d.P, h1, par, epi);
    }
  }

  // Columns of the state this thread initializes and copies out at the ends of a sequence (a
  // static split; the steps in between are scheduled dynamically).
  static void owned(const LayerDims& d, const Par& par, int64_t* h0, int64_t* h1, int64_t* c0,
                    int64_t* c1) {
    constexpr int VB = Tile<T>::VB;
    int64_t b0, b1;
    par.range(nblocks<T>(d.P), &b0, &b1);
    *h0 = b0 * VB;
    *h1 = b1 * VB < d.P ? b1 * VB : d.P;
    par.range(nblocks<T>(d.H), &b0, &b1);
    *c0 = b0 * VB;
    *c1 = b1 * VB < d.H ? b1 * VB : d.H;
  }
};

template <typename T, bool kLinearBeforeReset>
struct Gru {
  static constexpr int G = 3;
  static constexpr bool kHasC = false;
  static constexpr bool kFusedInput = kLinearBeforeReset;
  static int64_t scratch(const LayerDims& d, int64_t N) {
    return kLinearBeforeReset ? 0 : 2 * N * d.H;
  }

  static int64_t min_tile_rows(const LayerDims&, int64_t N) {
    return tiling(N, Tile<T>::bt(G), G).min_rows();
  }
  static bool rows_alone(const LayerDims&, int64_t N, int64_t r0, int64_t r1) {  // see Lstm
    if (N < 2 || r1 - r0 < 2) return false;
    auto same = [&](int g) {
      return same_sets(tiling(N, Tile<T>::bt(g), g), g, tiling(r1 - r0, Tile<T>::bt(g), g), g, r0);
    };
    return kLinearBeforeReset ? same(G) : same(2) && same(1);
  }

  // The Cho GRU reads its input projection in two passes (r, z, then n): only XRows.
  template <class X, class Epi>
  static void step(const LayerDims& d, int64_t N, const PackedView<T>& w, const X& xs,
                   const T* h, const T*, T* h1, T*, T* scratch, const Par& par,
                   const Epi& epi) {
    if constexpr (kLinearBeforeReset)
      step_reset_after(d, N, w, xs, h, h1, par, epi);
    else
      step_reset_before(d, N, w, xs.xp, xs.stride, h, h1, scratch, par, epi);
  }

  static void owned(const LayerDims& d, const Par& par, int64_t* h0, int64_t* h1, int64_t* c0,
                    int64_t* c1) {
    owned_columns<T>(d.H, par, h0, h1);
    *c0 = *c1 = 0;
  }

  template <class X, class Epi>
  static void step_reset_after(const LayerDims& d, int64_t N, const PackedView<T>& w,
                               const X& xs, const T* h, T* h1, const Par& par,
                               const Epi& epi) {
    constexpr int VB = Tile<T>::VB, BT = Tile<T>::bt(G);
    const int64_t H = d.H, nb = nblocks<T>(H);
    if (N == 1) {  // a stream's one row: see one_row_groups
      one_row_groups<T, G, kRowJam>(
          H, H, xs, h, w.w_hh, par,
          [&](auto group, int64_t j, int64_t lanes, const T* const* xt, const T* const* acc)
              __attribute__((always_inline)) {
            typedef Lanes<T, decltype(group)::size> L;
            const L h1v = gru_lbr_pointwise(
                gather_blocks<L>(xt, 0) + gather_blocks<L>(acc, 0),
                gather_blocks<L>(xt, VB) + gather_blocks<L>(acc, VB), gather_blocks<L>(xt, 2 * VB),
                gather_blocks<L>(acc, 2 * VB) + L::load(w.b_hn + j, VB),
                load_rows<L>(h + j, VB, lanes));
            store_rows(h1v, lanes, h1 + j, VB);
          },
          [&](int64_t j0, int64_t j1) { epi.on_h(0, 1, j0, j1); });
      return;
    }
    const Tiling tl = tiling(N, BT, G);
    par.blocks(nb, tl, 2.0 * H * G * VB, [&](int64_t b, int64_t q0, int64_t q1) {
      const int64_t j0 = b * VB, lanes = H - j0 < VB ? H - j0 : VB;
      const T* bhn = w.b_hn + b * VB;
      Ahead ahead = ahead_of(par, w.w_hh, nb, H * G * VB, b, tl, q0, q1, H);
      for (int64_t n0 = q0, rows; n0 < q1; n0 += rows) {
        rows = tl.height(n0);
        T acc[BT][G * VB], xbuf[BT][G * VB];
        int64_t x_stride;
        const T* xt = x_and_h_tiles<T, G, BT>(xs, par.backward, b, n0, rows, xbuf, &x_stride,
                                              h + n0 * H, H, w.w_hh + b * H * G * VB, H, acc,
                                              &ahead);
        each_row_group(rows, [&](auto group, int64_t r) __attribute__((always_inline)) {
          typedef Lanes<T, decltype(group)::size> L;
          const T* x = xt + r * x_stride;
          const T* a = acc[r];
          const int64_t at = (n0 + r) * H + j0;
          const L h1v = gru_lbr_pointwise(
              L::load(x, x_stride) + L::load(a, G * VB),
              L::load(x + VB, x_stride) + L::load(a + VB, G * VB), L::load(x + 2 * VB, x_stride),
              L::load(a + 2 * VB, G * VB) + L::load(bhn, 0), load_rows<L>(h + at, H, lanes));
          store_rows(h1v, lanes, h1 + at, H);
        });
      }
      epi.on_h(q0, q1, j0, j0 + lanes);
    });
  }

  template <class Epi>
  static void step_reset_before(const LayerDims& d, int64_t N, const PackedView<T>& w,
                                const T* xp, int64_t xp_stride, const T* h, T* h1, T* scratch,
                                const Par& par, const Epi& epi) {
    constexpr int VB = Tile<T>::VB, BT = Tile<T>::bt(2), BT1 = Tile<T>::bt(1);
    const int64_t H = d.H, nb = nblocks<T>(H);
    T* rh = scratch;         // r * h, [N, H]
    T* zs = scratch + N * H; // z, [N, H]
    const Tiling tl = tiling(N, BT, 2);
    par.blocks(nb, tl, 2.0 * H * 2 * VB, [&](int64_t b, int64_t q0, int64_t q1) {
      const int64_t j0 = b * VB, lanes = H - j0 < VB ? H - j0 : VB;
      Ahead ahead = ahead_of(par, w.w_hh, nb, H * 2 * VB, b, tl, q0, q1, H);
      for (int64_t n0 = q0, rows; n0 < q1; n0 += rows) {
        rows = tl.height(n0);
        T acc[BT][2 * VB];
        prefetch_rows(xp + n0 * xp_stride + b * G * VB, xp_stride, rows, 2 * VB);
        tile_dot<T, 2, BT>(h + n0 * H, H, rows, w.w_hh + b * H * 2 * VB, H, acc, nullptr, &ahead);
        each_row_group(rows, [&](auto group, int64_t r) __attribute__((always_inline)) {
          typedef Lanes<T, decltype(group)::size> L;
          const T* x = xp + (n0 + r) * xp_stride + b * G * VB;
          const T* a = acc[r];
          const int64_t at = (n0 + r) * H + j0;
          L rhv, zv;
          gru_rz(L::load(x, xp_stride) + L::load(a, 2 * VB),
                 L::load(x + VB, xp_stride) + L::load(a + VB, 2 * VB),
                 load_rows<L>(h + at, H, lanes), rhv, zv);
          store_rows(rhv, lanes, rh + at, H);
          store_rows(zv, lanes, zs + at, H);
        });
      }
    });
    par.sync();  // W_hn reads all of r*h
    const Tiling tl1 = tiling(N, BT1, 1);
    par.blocks(nb, tl1, 2.0 * H * VB, [&](int64_t b, int64_t q0, int64_t q1) {
      const int64_t j0 = b * VB, lanes = H - j0 < VB ? H - j0 : VB;
      Ahead ahead = ahead_of(par, w.w_hh_n, nb, H * VB, b, tl1, q0, q1, H);
      for (int64_t n0 = q0, rows; n0 < q1; n0 += rows) {
        rows = tl1.height(n0);
        T acc[BT1][VB];
        prefetch_rows(xp + n0 * xp_stride + b * G * VB + 2 * VB, xp_stride, rows, VB);
        tile_dot<T, 1, BT1>(rh + n0 * H, H, rows, w.w_hh_n + b * H * VB, H, acc, nullptr, &ahead);
        each_row_group(rows, [&](auto group, int64_t r) __attribute__((always_inline)) {
          typedef Lanes<T, decltype(group)::size> L;
          const T* x = xp + (n0 + r) * xp_stride + b * G * VB + 2 * VB;
          const int64_t at = (n0 + r) * H + j0;
          const L h1v = gru_n_blend(L::load(x, xp_stride) + L::load(acc[r], VB),
                                    load_rows<L>(zs + at, H, lanes), load_rows<L>(h + at, H, lanes));
          store_rows(h1v, lanes, h1 + at, H);
        });
      }
      epi.on_h(q0, q1, j0, j0 + lanes);
    });
  }
};

template <typename T, bool kRelu>
struct Rnn {
  static constexpr int G = 1;
  static constexpr bool kHasC = false;
  static constexpr bool kFusedInput = true;
  static int64_t scratch(const LayerDims&, int64_t) { return 0; }
  static int64_t min_tile_rows(const LayerDims&, int64_t N) {
    return tiling(N, Tile<T>::bt(G), G).min_rows();
  }
  static bool rows_alone(const LayerDims&, int64_t N, int64_t r0, int64_t r1) {  // see Lstm
    return N >= 2 && r1 - r0 >= 2 &&
           same_sets(tiling(N, Tile<T>::bt(G), G), G, tiling(r1 - r0, Tile<T>::bt(G), G), G, r0);
  }

  static void owned(const LayerDims& d, const Par& par, int64_t* h0, int64_t* h1, int64_t* c0,
                    int64_t* c1) {
    owned_columns<T>(d.H, par, h0, h1);
    *c0 = *c1 = 0;
  }

  template <class X, class Epi>
  static void step(const LayerDims& d, int64_t N, const PackedView<T>& w, const X& xs,
                   const T* h, const T*, T* h1, T*, T*, const Par& par, const Epi& epi) {
    constexpr int VB = Tile<T>::VB, BT = Tile<T>::bt(1);
    const int64_t H = d.H, nb = nblocks<T>(H);
    if (N == 1) {  // a stream's one row: see one_row_groups
      one_row_groups<T, G, kRowJam>(
          H, H, xs, h, w.w_hh, par,
          [&](auto group, int64_t j, int64_t lanes, const T* const* xt, const T* const* acc)
              __attribute__((always_inline)) {
            typedef Lanes<T, decltype(group)::size> L;
            const L pre = gather_blocks<L>(xt, 0) + gather_blocks<L>(acc, 0);
            store_rows(rnn_pointwise<L, kRelu>(pre), lanes, h1 + j, VB);
          },
          [&](int64_t j0, int64_t j1) { epi.on_h(0, 1, j0, j1); });
      return;
    }
    const Tiling tl = tiling(N, BT, G);
    par.blocks(nb, tl, 2.0 * H * VB, [&](int64_t b, int64_t q0, int64_t q1) {
      const int64_t j0 = b * VB, lanes = H - j0 < VB ? H - j0 : VB;
      Ahead ahead = ahead_of(par, w.w_hh, nb, H * VB, b, tl, q0, q1, H);
      for (int64_t n0 = q0, rows; n0 < q1; n0 += rows) {
        rows = tl.height(n0);
        T acc[BT][VB], xbuf[BT][VB];
        int64_t x_stride;
        const T* xt = x_and_h_tiles<T, 1, BT>(xs, par.backward, b, n0, rows, xbuf, &x_stride,
                                              h + n0 * H, H, w.w_hh + b * H * VB, H, acc, &ahead);
        each_row_group(rows, [&](auto group, int64_t r) __attribute__((always_inline)) {
          typedef Lanes<T, decltype(group)::size> L;
          const L pre = L::load(xt + r * x_stride, x_stride) + L::load(acc[r], VB);
          store_rows(rnn_pointwise<L, kRelu>(pre), lanes, h1 + (n0 + r) * H + j0, H);
        });
      }
      epi.on_h(q0, q1, j0, j0 + lanes);
    });
  }
};

// ---------------------------------------------------------------------------------------------
// Drivers: one step (a module's cell call) and a whole sequence.
// ---------------------------------------------------------------------------------------------

// Threads for a call whose time steps each do `flops_per_step` of recurrent work: one below the
// threshold, never more than there are hidden blocks to share. A sequence wakes the pool once and
// then meets at a barrier every step (a microsecond or two; split by rows, see rows_split, only
// around its projection chunks): 2.5e5 flops per thread per step pay for that. A single step call pays the wake-up (about 9 us on the 2-vCPU CI machine) for one
// step: 1.5e6 flops per thread. Measured there, LSTM stream steps at 2 threads against 1 (min of
// 2 x 7 interleaved timeit runs): (N, I, H) = (4, 128, 256) 1.25x, (8, 128, 256) 1.55x,
// (16, 64, 128) 1.20x, (1, 256, 512) 2.62x; the earlier 4e6 kept all of these on one thread.
inline int threads_for(double flops_per_step, int64_t blocks, bool single_step = false) {
  const double min_flops_per_thread = single_step ? 1.5e6 : 2.5e5;
  int n = get_num_threads();
  const double by_work = flops_per_step / min_flops_per_thread;
  if (by_work < n) n = by_work < 1 ? 1 : static_cast<int>(by_work);
  if (blocks < n) n = static_cast<int>(blocks < 1 ? 1 : blocks);
  return n;
}

template <class Cell, typename T>
int64_t step_ws(const LayerDims& d, int64_t N) {
  return round_up(N * nblocks<T>(d.H) * Cell::G * Tile<T>::VB) + round_up(Cell::scratch(d, N));
}

template <class Cell, typename T>
struct StepArgs {
  const LayerDims* d;
  int64_t N;
  const PackedView<T>* w;
  const T *x, *h, *c;
  T *h1, *c1, *ws;
  Sched* sched;  // on the caller's stack (see step_impl)
  bool backward;
};

template <class Cell, typename T>
void step_thread(void* ctx, int tid, int n) {
  StepArgs<Cell, T>& a = *static_cast<StepArgs<Cell, T>*>(ctx);
  const Par par{tid, n, a.sched, a.backward};
  const LayerDims& d = *a.d;
  const int64_t nb = nblocks<T>(d.H), row = nb * Cell::G * Tile<T>::VB;
  T* scratch = a.ws + round_up(a.N * row);
  if constexpr (Cell::kFusedInput) {
    const XTile<T, Cell::G> xs{a.x, d.I, d.I, a.w->w_ih, a.w->bias};
    Cell::step(d, a.N, *a.w, xs, a.h, a.c, a.h1, a.c1, scratch, par, NoEpilogue{});
  } else {
    T* xp = a.ws;
    const T* x = a.x;
    const int64_t I = d.I;
    project_packed<T, Cell::G>([x, I](int64_t q) { return x + q * I; }, a.N, I, a.w->w_ih,
                               a.w->bias, nb, xp, par);
    par.sync();  // an item of the step may read a block another thread projected
    const XRows<T, Cell::G> xs{xp, row};
    Cell::step(d, a.N, *a.w, xs, a.h, a.c, a.h1, a.c1, scratch, par, NoEpilogue{});
  }
}

template <class Cell, typename T>
void step_impl(const CellSpec& spec, const LayerDims& d, int64_t N, const T* packed, const T* x,
               const T* h, const T* c, T* h1, T* c1, T* ws, bool backward) {
  const PackedView<T> w = view_layer<T>(spec, d, packed);
  Sched sched;  // not value-initialized (a 16 KiB memset per call): sched_init sets what n use
  StepArgs<Cell, T> a{&d, N, &w, x, h, c, h1, c1, ws, &sched, backward};
  const int n = threads_for(2.0 * N * Cell::G * d.H * (d.I + d.P), nblocks<T>(d.H), true);
  sched_init(&sched, n);
  if (n == 1)
    step_thread<Cell, T>(&a, 0, 1);
  else
    parallel_run(n, step_thread<Cell, T>, &a);
}

template <typename T>
inline void copy_n(const T* src, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
template <typename T>
inline void fill_n(T v, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = v;
}

// Time steps per chunk of the input projection. A sequence projects its inputs a chunk of steps
// at a time, right before those steps, into a buffer of about GK_PROJECTION_BYTES, which the
// steps then read back from cache. Projecting all T steps at once wrote and re-read
// T * N * G * H values through memory (26 MB for T=100, N=64, H=256; a gigabyte for T=1000,
// N=64, H=1024), and the stores alone took ~7% of the projection. A chunk keeps at least 96
// rows (16 full register tiles). The size is the build's (kernels_*.cc), never the machine's:
// the chunks decide the projection's register tiles, so a build gives the same bits on every
// machine it runs on. 2 MiB unless the build sets it: measured on AVX-512 (Xeon family 6 model
// 207, 2 MiB of L2 a core); the AVX2 build's is in kernels_avx2.cc.
#ifndef GK_PROJECTION_BYTES
#define GK_PROJECTION_BYTES (int64_t(2) << 20)
#endif
template <typename T>
int64_t projection_steps(const SeqShape& s, int64_t row) {
  const int64_t step_bytes = s.N * row * static_cast<int64_t>(sizeof(T));
  int64_t steps = int64_t(GK_PROJECTION_BYTES) / (step_bytes > 0 ? step_bytes : 1);
  const int64_t min_steps = (96 + s.N - 1) / s.N;
  if (steps < min_steps) steps = min_steps;
  if (steps > s.T) steps = s.T;
  return steps < 1 ? 1 : steps;
}

// Whether a sequence's steps take their input projection tile by tile, as a single step does
// (XTile: each register tile of a step computes x_t W_ih^T right before h W_hh^T, with the same
// arithmetic as the chunk GEMM), instead of from one GEMM per chunk of steps (XRows). XTile
// reads W_ih once per tile and step instead of once per chunk, but skips writing the
// projection to a workspace and reading it back, and a tile's two dot products are one pass
// over its rows. It pays where both weight matrices stay in L2 (kTileInputBytes) and every
// tile has rows enough for its FMAs to outrun its weight loads from L2 (kTileInputRows: at 16
// lanes, 4 rows; at 8 or 4 lanes, 3). Measured (Xeon family 6 model 207, T = 100, I = H, one
// thread, alternated runs): AVX-512 LSTM N = 4-16 H = 128 1.03-1.07x, N = 64 1.04x; GRU N =
// 16 and 64 H = 256 1.04x; RNN 1.05-1.10x; two threads 1.02-1.11x. Where it does not pay:
// 2 MiB of weights (LSTM H = 256) 1.00-1.03x, 4 MiB and more 0.85-0.97x; N = 2-3 (0.72-0.82x);
// a last tile of 1-3 rows (LSTM N = 13, 19, 25 in whole tiles, before Tiling evened them out:
// 0.96-0.99x). AVX2: 1.02-1.05x at H = 128, 0.90x at N = 2, 0.95x for LSTM H = 256.
constexpr double kTileInputBytes = double(3 << 19);  // 1.5 MiB
constexpr int kTileInputRows = GK_VB_BYTES >= 64 ? 4 : 3;
template <class Cell, typename T>
bool input_by_tiles(const LayerDims& d, int64_t N) {
  if constexpr (!Cell::kFusedInput) {
    return false;
  } else {
    const double bytes =
        double(nblocks<T>(d.H)) * Cell::G * Tile<T>::VB * (d.I + d.P) * sizeof(T);
    return bytes <= kTileInputBytes && Cell::min_tile_rows(d, N) >= kTileInputRows;
  }
}

template <class Cell, typename T>
int64_t sequence_ws(const SeqShape& s) {
  const LayerDims d{s.L > 1 ? (s.I > s.D * s.P ? s.I : s.D * s.P) : s.I, s.H, s.P};
  const int64_t R = s.T * s.N, row = nblocks<T>(s.H) * Cell::G * Tile<T>::VB;
  int64_t n = round_up(projection_steps<T>(s, row) * s.N * row);  // input projection chunk
  if (s.L > 1) n += 2 * round_up(R * s.D * s.P);                        // layer outputs
  n += 2 * round_up(s.N * s.P) + 2 * round_up(s.N * s.H);               // h, c double buffers
  n += round_up(Cell::scratch(d, s.N));
  return n;
}

template <typename T>
struct SeqArgs {
  const CellSpec* spec;
  const SeqShape* s;
  const T* const* packed;
  const T* x;
  const int64_t* lengths;
  const T *h0, *c0;
  T *y, *hn, *cn, *ws;
  Sched* sched;  // on the caller's stack (see step_impl)
  const int64_t* row_at;  // rows_split: thread i steps rows [row_at[i], row_at[i + 1]); or null
};

// A sequence's epilogue of an item of a step (see NoEpilogue): copies the new hidden state to
// the output, or, for rows past their length, holds the state and writes zeros (SPEC §3).
// dst[0, w) = src[0, w); one vector move when w is a whole block.
template <typename T>
inline void copy_cols(const T* src, int64_t w, T* dst) {
  if (w == Tile<T>::VB) std::memcpy(dst, src, sizeof(T) * Tile<T>::VB);
  else copy_n(src, w, dst);
}

template <typename T>
struct SeqEpilogue {
  const int64_t* lengths;
  int64_t t, P, H, y_row;  // y_row: elements between rows n and n+1 of y
  T* y;                     // y at (t, row 0), this direction's columns
  const T *h, *c;
  T *h_next, *c_next;
  bool has_c;
  bool past(int64_t n) const { return lengths && t >= lengths[n]; }
  void on_h(int64_t r0, int64_t r1, int64_t j0, int64_t j1) const {
    for (int64_t n = r0; n < r1; ++n) {
      T* yrow = y + n * y_row;
      if (!past(n)) {
        copy_cols(h_next + n * P + j0, j1 - j0, yrow + j0);
      } else {
        copy_cols(h + n * P + j0, j1 - j0, h_next + n * P + j0);
        fill_n(T(0), j1 - j0, yrow + j0);
      }
    }
  }
  void on_c(int64_t r0, int64_t r1, int64_t j0, int64_t j1) const {
    if (!has_c || !lengths) return;
    for (int64_t n = r0; n < r1; ++n)
      if (past(n)) copy_cols(c + n * H + j0, j1 - j0, c_next + n * H + j0);
  }
};

// The whole sequence as seen by one thread: it takes work items (hidden blocks, or row chunks of
// them) of every pass as they come (Par::each), initializes and copies out a fixed range of state
// columns, and meets the others once per time step (twice for the two-pass cells) and once per
// layer-direction.
template <class Cell, typename T>
void sequence_thread(void* ctx, int tid, int nthreads) {
  SeqArgs<T>& a = *static_cast<SeqArgs<T>*>(ctx);
  const Par par{tid, nthreads, a.sched};
  const SeqShape& s = *a.s;
  const int64_t T_ = s.T, N = s.N, H = s.H, P = s.P, DP = s.D * s.P, R = T_ * N;
  const int64_t nb = nblocks<T>(H), row = nb * Cell::G * Tile<T>::VB;
  const int64_t chunk = projection_steps<T>(s, row);
  T* xp = a.ws;  // the input projection of `chunk` steps: [step - first][n][nb][G][VB]
  T* p = a.ws + round_up(chunk * N * row);
  T* buf[2] = {nullptr, nullptr};
  if (s.L > 1) {
    buf[0] = p;
    buf[1] = p + round_up(R * DP);
    p += 2 * round_up(R * DP);
  }
  T* hs[2] = {p, p + round_up(N * P)};
  p += 2 * round_up(N * P);
  T* cs[2] = {p, p + round_up(N * H)};
  p += 2 * round_up(N * H);
  T* scratch = p;

  const bool by_rows = a.row_at != nullptr && nthreads > 1;  // see rows_split
  const int64_t r0 = by_rows ? a.row_at[tid] : 0, r1 = by_rows ? a.row_at[tid + 1] : N;
  const bool zigzag_threads =
      double(nb) * P * Cell::G * Tile<T>::VB * sizeof(T) > kAheadBytes;  // see the steps below
  // Row of (t, n) in x, y and the projection: the layout is the caller's, never transposed.
  const int64_t t_stride = s.batch_first ? 1 : N, n_stride = s.batch_first ? T_ : 1;

  for (int64_t l = 0; l < s.L; ++l) {
    const T* in = l == 0 ? a.x : buf[(l - 1) % 2];
    const int64_t in_w = l == 0 ? s.I : DP;
    T* out = l == s.L - 1 ? a.y : buf[l % 2];
    const LayerDims d{in_w, H, P};
    int64_t hc0, hc1, cc0, cc1;  // state columns this thread writes
    Cell::owned(d, par, &hc0, &hc1, &cc0, &cc1);
    for (int64_t dir = 0; dir < s.D; ++dir) {
      const int64_t ld = l * s.D + dir;
      const PackedView<T> w = view_layer<T>(*a.spec, d, a.packed[ld]);
      T* h = hs[0];
      T* h_next = hs[1];
      T* c = cs[0];
      T* c_next = cs[1];
      for (int64_t n = 0; n < N; ++n) {
        if (a.h0) copy_n(a.h0 + (ld * N + n) * P + hc0, hc1 - hc0, h + n * P + hc0);
        else fill_n(T(0), hc1 - hc0, h + n * P + hc0);
        if (Cell::kHasC) {
          if (a.c0) copy_n(a.c0 + (ld * N + n) * H + cc0, cc1 - cc0, c + n * H + cc0);
          else fill_n(T(0), cc1 - cc0, c + n * H + cc0);
        }
      }
      par.sync();  // every thread's step reads all of h
      const bool by_tiles = input_by_tiles<Cell, T>(d, N);  // XTile, not XRows
      for (int64_t step = 0; step < T_; ++step) {
        const int64_t t = dir == 0 ? step : T_ - 1 - step;
        if (!by_tiles && step % chunk == 0) {
          // The input projection of steps [step, step + chunk): after the previous step's
          // barrier, so nobody still reads the previous chunk.
          if (by_rows && step > 0) par.sync();  // rows: no barrier between steps
          const int64_t first = step, steps = T_ - step < chunk ? T_ - step : chunk;
          auto row_of = [&](int64_t q) {
            const int64_t st = first + q / N, tq = dir == 0 ? st : T_ - 1 - st;
            return in + (tq * t_stride + (q % N) * n_stride) * in_w;
          };
          project_packed<T, Cell::G>(row_of, steps * N, in_w, w.w_ih, w.bias, nb, xp, par);
          par.sync();  // an item of a step may read rows another thread projected
        }
        // Past a row's length the state holds (the reverse direction thus starts at its last
        // valid step) and the output is zero: done item by item by the epilogue. Rows [r0, r1)
        // (all of them unless by_rows) from here on.
        const int64_t M = r1 - r0;
        const SeqEpilogue<T> epi{a.lengths ? a.lengths + r0 : nullptr, t, P, H, n_stride * DP,
                                 out + (t * t_stride + r0 * n_stride) * DP + dir * P, h + r0 * P,
                                 c + r0 * H, h_next + r0 * P, c_next + r0 * H, Cell::kHasC};
        // A thread alone on its rows (one thread, or split by rows: the same tiles' arithmetic
        // as the whole batch, see rows_split, and no barrier, since each step reads only the
        // state rows this thread wrote the step before) steps every block of them at once.
        const bool alone = nthreads == 1 || by_rows;
        // Every other step visits the blocks last to first, so it starts on the weights the
        // step before read last, which are still in cache (see step_forward). With several
        // threads, each in its own range of blocks, and only for a layer of more than
        // kAheadBytes of recurrent weights: 2-thread LSTM T=100, N=1, H=512 1.20-1.35x, while
        // at H <= 256 (weights that stay in L2 in any order) it read 0.95-1.00x.
        Par zigzag = alone ? Par{0, 1, a.sched} : par;
        zigzag.backward = step % 2 == 1 && (alone || zigzag_threads);
        auto run = [&](const auto& xs) {
          if (alone) {  // whole rows at once: fewer, longer copies
            Cell::step(d, M, w, xs, h + r0 * P, c + r0 * H, h_next + r0 * P, c_next + r0 * H,
                       scratch + Cell::scratch(d, r0), zigzag, NoEpilogue{});
            epi.on_c(0, M, 0, H);
            epi.on_h(0, M, 0, P);
          } else {
            Cell::step(d, N, w, xs, h, c, h_next, c_next, scratch, zigzag, epi);
          }
        };
        const XRows<T, Cell::G> projected{xp + ((step % chunk) * N + r0) * row, row};
        if constexpr (Cell::kFusedInput) {
          if (by_tiles)
            run(XTile<T, Cell::G>{in + (t * t_stride + r0 * n_stride) * in_w, n_stride * in_w,
                                  in_w, w.w_ih, w.bias});
          else
            run(projected);
        } else {
          run(projected);
        }
        if (!by_rows) par.sync();  // h_next complete before anyone reads it as h
        T* tmp = h; h = h_next; h_next = tmp;
        tmp = c; c = c_next; c_next = tmp;
      }
      if (by_rows) par.sync();  // the copies below take columns of every row
      for (int64_t n = 0; n < N; ++n) {
        copy_n(h + n * P + hc0, hc1 - hc0, a.hn + (ld * N + n) * P + hc0);
        if (Cell::kHasC) copy_n(c + n * H + cc0, cc1 - cc0, a.cn + (ld * N + n) * H + cc0);
      }
      par.sync();  // the next direction / layer reuses xp and the state buffers, reads `out`
    }
  }
}

// Whether a sequence's threads split the batch rows (each steps its share of the rows through
// the whole sequence, every hidden block) instead of the hidden blocks of every step (all rows);
// if so, thread i's rows are [at[i], at[i + 1]). Rows need no barrier between time steps, and a
// thread reads only state rows it wrote itself, where blocks have every thread read the rows the
// others wrote, from their cores, every step: measured (2 threads, T = 100, N = 16-64, Xeon
// family 6 model 207) that cost 10-20% at H = 128 and 5-10% at H = 256. Rows read all the
// weights of a step per thread, not a share: they pay while a thread's rows do enough work per
// weight byte (kSplitBytesPerRow), so at least kSplitMinRows each. A share's rows must get the
// bits they get in the whole batch (Cell::rows_alone: the same accumulator sets in every tile),
// so that the results stay those of one thread: each boundary is the nearest to an even split
// that keeps that, within kSplitSkew of it.
constexpr int64_t kSplitMinRows = 4;
constexpr double kSplitBytesPerRow = double(256 << 10);
constexpr double kSplitSkew = 1.25;  // the largest share, over N / n
template <class Cell, typename T>
bool rows_split(const SeqShape& s, int n, int64_t* at) {
  const int64_t N = s.N;
  if (n < 2 || N < n * kSplitMinRows) return false;
  const LayerDims d{s.I, s.H, s.P};  // the tiles do not depend on a layer's input width
  const int64_t most = static_cast<int64_t>(kSplitSkew * double(N) / n);
  at[0] = 0;
  at[n] = N;
  for (int i = 1; i < n; ++i) {
    const int64_t ideal = (i * N + n / 2) / n;
    at[i] = -1;
    for (int64_t delta = 0; delta <= 16 && at[i] < 0; ++delta) {
      const int64_t candidates[2] = {ideal + delta, ideal - delta};
      for (int64_t b : candidates) {
        if (b - at[i - 1] < kSplitMinRows || b - at[i - 1] > most ||
            N - b < (n - i) * kSplitMinRows || !Cell::rows_alone(d, N, at[i - 1], b))
          continue;
        if (i == n - 1 && (N - b > most || !Cell::rows_alone(d, N, b, N))) continue;  // the last
        at[i] = b;
        break;
      }
    }
    if (at[i] < 0) return false;
  }
  int64_t rows = N;  // the fewest rows a thread gets
  for (int i = 0; i < n; ++i) rows = at[i + 1] - at[i] < rows ? at[i + 1] - at[i] : rows;
  for (int l = 0; l < (s.L > 1 ? 2 : 1); ++l) {  // the first layer, then the others' input
    const LayerDims dl{l == 0 ? s.I : s.D * s.P, s.H, s.P};
    const int64_t K = input_by_tiles<Cell, T>(dl, N) ? dl.I + dl.P : dl.P;  // weights per step
    if (rows * kSplitBytesPerRow < double(nblocks<T>(dl.H)) * Cell::G * Tile<T>::VB * K * sizeof(T))
      return false;
  }
  return true;
}

// Threads a sequence call runs on; sets *by_rows, and with it at[0..n], as rows_split does.
template <class Cell, typename T>
int sequence_plan(const SeqShape& s, bool* by_rows, int64_t* at) {
  const int n = threads_for(2.0 * s.N * Cell::G * s.H * (s.H + s.P),
                            nblocks<T>(s.P < s.H ? s.P : s.H));
  *by_rows = rows_split<Cell, T>(s, n, at);
  return n;
}

template <class Cell, typename T>
void sequence_impl(const CellSpec& spec, const SeqShape& s, const T* const* packed, const T* x,
                   const int64_t* lengths, const T* h0, const T* c0, T* y, T* hn, T* cn, T* ws) {
  Sched sched;
  bool by_rows;
  int64_t row_at[kMaxThreads + 1];
  const int n = sequence_plan<Cell, T>(s, &by_rows, row_at);
  SeqArgs<T> a{&spec, &s, packed, x, lengths, h0, c0, y, hn, cn, ws, &sched,
               by_rows ? row_at : nullptr};
  sched_init(&sched, n);
  if (n == 1)
    sequence_thread<Cell, T>(&a, 0, 1);
  else
    parallel_run(n, sequence_thread<Cell, T>, &a);
}

}  // namespace GK_ISA
}  // namespace gatedkernels
