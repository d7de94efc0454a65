// SIMD values for the kernels: one register of the ISA (Vec<T>) and M independent registers
// processed together (Lanes<T, M>), plus the few operations the activations need on Lanes, so
// that each activation is written once (activations.h) for any M.
//
// Why Lanes: an activation is a chain of ~20 dependent operations (exp's polynomial, then a
// division). One register at a time, a row of the LSTM epilogue is latency-bound: the out-of-order
// window holds about one row's chain, so the cores idle between steps of it (measured: the
// epilogue took 20% of an LSTM step at N=64, H=256, for ~8% of its instructions). Every operator
// of Lanes<T, M> emits M independent instructions next to each other, which is the interleaving
// (unroll-and-jam) the compiler does not do by itself. GCC's own over-wide vector types would say
// the same in fewer lines, but GCC 12 scalarizes their selects.
//
// No include guard: included by kernel.h inside namespace gatedkernels::GK_ISA (see there).
#ifndef GK_ISA
#error "include kernel.h, not this header"
#endif

#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // vfmadd (fmadd); vmaxps/pd (at_least); vscalef (times_pow2, AVX-512)
#define GK_X86 1
#if GK_VB_BYTES == 64
#define GK_HAVE_SCALEF 1
#endif
#if GK_VB_BYTES >= 32  // the AVX2 and AVX-512 builds; the x86-64 baseline (SSE2) has no FMA
#define GK_HAVE_FMA 1
#endif
#elif defined(__aarch64__)
#include <arm_neon.h>  // vfmaq (fmadd): every AArch64 core has FMA
#define GK_HAVE_FMA 1
#endif

namespace gatedkernels {
namespace GK_ISA {

#ifndef GK_INLINE
#define GK_INLINE inline __attribute__((always_inline))
#endif

// One SIMD register of T (GCC/Clang vector extension), GK_VB_BYTES wide: 16 bytes for the
// baseline (SSE2 / NEON), 32 for AVX2, 64 for AVX-512.
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(GK_VB_BYTES)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

// The unsigned integer vector of the same lane count and width (bit operations).
template <typename T>
struct IntVecOf;
template <>
struct IntVecOf<float> {
  typedef uint32_t type __attribute__((vector_size(GK_VB_BYTES)));
};
template <>
struct IntVecOf<double> {
  typedef uint64_t type __attribute__((vector_size(GK_VB_BYTES)));
};
template <typename T>
using IntVec = typename IntVecOf<T>::type;

template <typename T>
GK_INLINE Vec<T> vload(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
GK_INLINE void vstore(const Vec<T>& v, T* p) {
  std::memcpy(p, &v, sizeof v);
}

// a * b + c, rounded once where the build has FMA (AVX2, AVX-512, AArch64), else twice.
// Every multiply-add of the kernels is written with it: the library is compiled with
// -ffp-contract=off (setup.py), so the compiler fuses nothing on its own. Where GCC may fuse a
// product into an add (-ffp-contract=fast) depends on the code around it after inlining (it
// only fuses within one basic block, for instance), so two instantiations of the same code
// could round differently. Seen on AArch64 (NEON, GCC 12, -O2): the RNN step's copy in the
// two-thread sequence computed tanh with separate multiplies and adds where the one-thread copy
// fused them, and the thread count changed the last bit of ~25% of the outputs
// (tests/native/kernel_check.cc, run under qemu, found it).
template <typename T>
GK_INLINE Vec<T> vfmadd(const Vec<T>& a, const Vec<T>& b, const Vec<T>& c) {
#if defined(GK_HAVE_FMA) && defined(GK_X86)
  constexpr bool f = sizeof(T) == 4;
  if constexpr (GK_VB_BYTES == 64)
    return f ? (Vec<T>)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c)
             : (Vec<T>)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
  else
    return f ? (Vec<T>)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c)
             : (Vec<T>)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#elif defined(GK_HAVE_FMA)  // AArch64: vfmaq(c, a, b) = c + a * b, fused
  if constexpr (sizeof(T) == 4)
    return (Vec<T>)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);
  else
    return (Vec<T>)vfmaq_f64((float64x2_t)c, (float64x2_t)a, (float64x2_t)b);
#else
  return a * b + c;
#endif
}

// All lanes = v, as one broadcast (folded into the FMA's memory operand). v - 0 is v for every
// v, so the compiler drops the subtraction; v + 0 is not (-0 + 0 = +0) and costs a scalar add
// before every broadcast.
template <typename T>
GK_INLINE Vec<T> splat(T v) {
  return v - Vec<T>{};
}

// M registers of T, one operation on all of them at a time (see the top of this file).
// Scalars convert implicitly (broadcast), so the activations' constants work unchanged.
template <typename T, int M>
struct Lanes {
  static constexpr int size = M;
  Vec<T> v[M];
  GK_INLINE Lanes() = default;
  GK_INLINE Lanes(T s) {  // NOLINT: implicit on purpose, like a float converting to double
    for (int m = 0; m < M; ++m) v[m] = splat(s);
  }
  // M registers at p, p + stride, ... (stride in elements).
  static GK_INLINE Lanes load(const T* p, int64_t stride) {
    Lanes r;
    for (int m = 0; m < M; ++m) r.v[m] = vload(p + m * stride);
    return r;
  }
  GK_INLINE void store(T* p, int64_t stride) const {
    for (int m = 0; m < M; ++m) vstore(v[m], p + m * stride);
  }
#define GK_LANES_OP(op)                                                       \
  friend GK_INLINE Lanes operator op(const Lanes& a, const Lanes& b) {        \
    Lanes r;                                                                  \
    for (int m = 0; m < M; ++m) r.v[m] = a.v[m] op b.v[m];                    \
    return r;                                                                 \
  }
  GK_LANES_OP(+)
  GK_LANES_OP(-)
  GK_LANES_OP(*)
  GK_LANES_OP(/)
#undef GK_LANES_OP
  friend GK_INLINE Lanes operator-(const Lanes& a) {
    Lanes r;
    for (int m = 0; m < M; ++m) r.v[m] = -a.v[m];
    return r;
  }
};

// The element type of Lanes.
template <class X>
struct ElemOf;
template <typename T, int M>
struct ElemOf<Lanes<T, M>> {
  typedef T type;
};

// ---- The operations the activations use besides + - * /, on Lanes. ---------------------------

// a * b + c: see vfmadd.
template <typename T, int M>
GK_INLINE Lanes<T, M> fmadd(const Lanes<T, M>& a, const Lanes<T, M>& b, const Lanes<T, M>& c) {
  Lanes<T, M> r;
  for (int m = 0; m < M; ++m) r.v[m] = vfmadd<T>(a.v[m], b.v[m], c.v[m]);
  return r;
}

// a < b ? x : y (NaN compares false: y).
template <typename T, int M>
GK_INLINE Lanes<T, M> if_less(const Lanes<T, M>& a, const Lanes<T, M>& b, const Lanes<T, M>& x,
                              const Lanes<T, M>& y) {
  Lanes<T, M> r;
  for (int m = 0; m < M; ++m) r.v[m] = a.v[m] < b.v[m] ? x.v[m] : y.v[m];
  return r;
}

template <typename T>
GK_INLINE IntVec<T> sign_mask() {
  IntVec<T> m = IntVec<T>{} + 1;
  return m << (8 * sizeof(T) - 1);
}
// Lanes with a bit operation op(bits, m) applied to each register m.
template <typename T, int M, class F>
GK_INLINE Lanes<T, M> map_bits(const Lanes<T, M>& x, const F& op) {
  Lanes<T, M> r;
  for (int m = 0; m < M; ++m) {
    IntVec<T> b;
    std::memcpy(&b, &x.v[m], sizeof b);
    b = op(b, m);
    std::memcpy(&r.v[m], &b, sizeof b);
  }
  return r;
}
template <typename T, int M>
GK_INLINE Lanes<T, M> abs_of(const Lanes<T, M>& x) {
  return map_bits(x, [](IntVec<T> b, int) __attribute__((always_inline)) {
    return b & ~sign_mask<T>();
  });
}
template <typename T, int M>
GK_INLINE Lanes<T, M> copysign_of(const Lanes<T, M>& x, const Lanes<T, M>& s) {
  return map_bits(x, [&s](IntVec<T> b, int m) __attribute__((always_inline)) {
    IntVec<T> bs;
    std::memcpy(&bs, &s.v[m], sizeof bs);
    return (b & ~sign_mask<T>()) | (bs & sign_mask<T>());
  });
}

// -|x|: one OR of the sign bit, where negating abs_of is two operations.
template <typename T, int M>
GK_INLINE Lanes<T, M> neg_abs_of(const Lanes<T, M>& x) {
  return map_bits(x, [](IntVec<T> b, int) __attribute__((always_inline)) {
    return b | sign_mask<T>();
  });
}

// x < lo ? lo : x, a NaN x passing through: x86's max(lo, x) is exactly that (it returns its
// second operand when either is NaN), one instruction where GCC makes the select a compare and a
// masked move. Elsewhere the select.
template <typename T>
GK_INLINE Vec<T> max_keep_second_nan(const Vec<T>& lo, const Vec<T>& x) {
#ifdef GK_X86
  constexpr bool f = sizeof(T) == 4;
  if constexpr (GK_VB_BYTES == 64)  // the masked form: see times_pow2
    return f ? (Vec<T>)_mm512_mask_max_ps((__m512)lo, (__mmask16)-1, (__m512)lo, (__m512)x)
             : (Vec<T>)_mm512_mask_max_pd((__m512d)lo, (__mmask8)-1, (__m512d)lo, (__m512d)x);
  else if constexpr (GK_VB_BYTES == 32)
    return f ? (Vec<T>)_mm256_max_ps((__m256)lo, (__m256)x)
             : (Vec<T>)_mm256_max_pd((__m256d)lo, (__m256d)x);
  else
    return f ? (Vec<T>)_mm_max_ps((__m128)lo, (__m128)x)
             : (Vec<T>)_mm_max_pd((__m128d)lo, (__m128d)x);
#else
  return x < lo ? lo : x;
#endif
}
template <typename T, int M>
GK_INLINE Lanes<T, M> at_least(const Lanes<T, M>& x, const Lanes<T, M>& lo) {
  Lanes<T, M> r;
  for (int m = 0; m < M; ++m) r.v[m] = max_keep_second_nan<T>(lo.v[m], x.v[m]);
  return r;
}

// p * 2^n for an integer-valued n in [-150, 0] (float) or [-1077, 0] (double), rounded once
// (into the subnormals where it falls there). A NaN n comes with a NaN p and gives NaN.
// Portable form: 2^(n + 64) is a normal number, built exactly from its exponent bits, and only
// the final product by 2^-64 rounds. The exponent field n + 64 + bias is read off the low
// mantissa bits of n + (64 + bias) + 1.5 * 2^(mantissa bits), where adding the large constant
// puts the integer, exactly, and the shift moves it into place: no float-to-integer conversion,
// which AVX2 lacks for double. Four operations, on a Vec<T> (V) with the unsigned integer vector
// U of the same width.
// AVX-512: vscalef computes p * 2^floor(n) with one rounding, the same result in one operation.
template <typename T, class V, class U>
GK_INLINE V times_pow2_bits(V p, V n) {
  constexpr int kShift = sizeof(T) == 4 ? 23 : 52;
  const T offset = sizeof(T) == 4 ? T(64.0 + 127.0 + 12582912.0)           // 1.5 * 2^23
                                  : T(64.0 + 1023.0 + 6755399441055744.0);  // 1.5 * 2^52
  V t = n + offset;
  U bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits <<= kShift;
  std::memcpy(&t, &bits, sizeof t);
  return (p * t) * T(5.42101086242752217e-20);  // 2^-64
}
template <typename T, int M>
GK_INLINE Lanes<T, M> times_pow2(const Lanes<T, M>& p, const Lanes<T, M>& n) {
  Lanes<T, M> r;
  for (int m = 0; m < M; ++m) {
#ifdef GK_HAVE_SCALEF
    // The masked form with every lane selected is the same unmasked vscalef; the plain intrinsic
    // makes GCC 12 warn (falsely) about its undefined pass-through operand.
    if constexpr (sizeof(T) == 4)
      r.v[m] = (Vec<T>)_mm512_mask_scalef_ps((__m512)p.v[m], (__mmask16)-1, (__m512)p.v[m],
                                             (__m512)n.v[m]);
    else
      r.v[m] = (Vec<T>)_mm512_mask_scalef_pd((__m512d)p.v[m], (__mmask8)-1, (__m512d)p.v[m],
                                             (__m512d)n.v[m]);
#else
    r.v[m] = times_pow2_bits<T, Vec<T>, IntVec<T>>(p.v[m], n.v[m]);
#endif
  }
  return r;
}

}  // namespace GK_ISA
}  // namespace gatedkernels
