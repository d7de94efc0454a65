// Activations: sigmoid, tanh and relu, float and double, on Lanes of SIMD registers (simd.h),
// branch-free (every select is per lane).
//
// float:  exp is a Cephes-style range reduction (n = round(x / ln 2), r = x - n ln 2 in two
//         parts) with a degree-6 polynomial; 2^n is built from exponent bits, offset so that
//         results fall gracefully (one rounding) into the subnormal range. sigmoid is
//         computed from e = exp(-|x|) <= 1 and tanh from exp(-2|x|) (tanh_f), neither of which
//         overflows, so both saturate over the whole float range and a finite input never gives
//         NaN or Inf. NaN propagates. tanh never forms a subnormal (the clamp at |x| = 20), so
//         it never pays the microcode assist one costs: a large cell state stays fast.
//         Maximum error (tests/test_activations.py sweeps every float in the range and holds it):
//         sigmoid <= 3 ulp, tanh <= 3 ulp, relative to the correctly rounded result.
// double: the same construction with an expm1 kernel (Taylor series to degree 13), branch-free
//         so it vectorizes too; <= 3 ulp (tests/test_activations.py holds it).
// No include guard: included by kernel.h inside namespace gatedkernels::GK_ISA, so each
// instruction-set build has its own copy and the linker can never merge two of them.
#ifndef GK_ISA
#error "include kernel.h, not this header"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

namespace gatedkernels {
namespace GK_ISA {

// The activations and the cells' pointwise math are always inlined (GK_INLINE, simd.h): GCC's
// size heuristics may otherwise leave them as calls in some instantiations (measured, when they
// were still written per lane: a scalar call per lane made a step 3x slower).

// Each function below is written once, for Lanes<T, M> (simd.h): the packed kernels' epilogues
// run them several registers at a time, raw_step.h one register at a time, and the activations'
// entry point (ops_impl.h, which tests/test_activations.py sweeps) as the epilogues do. Every
// operation is per lane, so M does not change a bit.

template <class X>
GK_INLINE X relu(X x) {
  // x > 0 ? x : 0 would turn NaN into 0; IEEE says NaN in, NaN out.
  return at_least(x, X(0));
}

// expm1(r) where y = n ln 2 + r, |r| <= ln2/2 (Cephes-style reduction: n = round(y / ln 2), r in
// two parts, then a degree-6 polynomial read as expm1(r) = r + r^2 p(r)); n is returned too.
// For y in [-104, 0].
template <class X>
GK_INLINE X expm1_reduced_f(X y, X& n) {
  const float kShift = 12582912.0f;              // 1.5 * 2^23: adding it rounds to an integer
  n = fmadd(y, X(1.44269504088896341f), X(kShift)) - kShift;
  X r = fmadd(n, X(-0.693359375f), y);           // ln 2 split so n * hi is exact
  r = fmadd(n, X(2.12194440e-4f), r);
  X p = 1.9875691500e-4f;
  p = fmadd(p, r, X(1.3981999507e-3f));
  p = fmadd(p, r, X(8.3334519073e-3f));
  p = fmadd(p, r, X(4.1665795894e-2f));
  p = fmadd(p, r, X(1.6666665459e-1f));
  p = fmadd(p, r, X(5.0000001201e-1f));
  return fmadd(p, r * r, r);
}

// exp(x) for x <= 0, float. Valid on [-inf, 0]; exact 0 below about -103.97.
template <class X>
GK_INLINE X exp_nonpos_f(X x) {
  X n;
  const X em1 = expm1_reduced_f(at_least(x, X(-104.0f)), n);  // NaN passes through
  return times_pow2(em1 + 1.0f, n);  // (1 + expm1(r)) * 2^n, n in [-150, 0], rounded once (simd.h)
}

template <class X>
GK_INLINE X sigmoid_f(X x) {
  X e = exp_nonpos_f(neg_abs_of(x));
  // Select the numerator, then divide once: a select between two quotients would compute both
  // (the vectorized loop if-converts it), and a division is the slowest instruction here.
  const X num = if_less(x, X(0.0f), e, X(1.0f));
  return num / (1.0f + e);
}

// tanh(|x|) = (1 - e^y) / (1 + e^y), y = -2|x|, with e^y = 2^n (1 + expm1(r)) from
// expm1_reduced_f (the reduction and polynomial of exp_nonpos_f). The
// numerator (1 - 2^n) - 2^n expm1(r) and the denominator 2^n expm1(r) + (2^n + 1) are each one
// FMA, so each is rounded once: near 0 (n = 0) the numerator keeps the relative accuracy of
// expm1, where 1 - e^y computed from e^y would cancel; near 1 neither side loses bits. One
// formula over the whole range, where a polynomial for small |x| selected against the exp form
// computed both (about 30% more instructions).
template <class X>
GK_INLINE X tanh_f(X x) {
  X y = -2.0f * abs_of(x);
  y = at_least(y, X(-40.0f));                    // tanh(20) rounds to 1; NaN passes through
  X n;
  const X em1 = expm1_reduced_f(y, n);
  const X s = times_pow2(X(1.0f), n);            // 2^n, n in [-58, 0]: s - 1 and s + 1 exact
  const X num = fmadd(-s, em1, 1.0f - s);
  const X den = fmadd(s, em1, s + 1.0f);
  return copysign_of(num / den, x);              // tanh(-0) = -0
}

// exp and expm1 of y <= 0, double: y = n ln2 + r with |r| <= ln2/2, expm1(r) by its Taylor series to
// degree 13 (truncation < 2e-16 relative), then expm1(y) = 2^n expm1(r) + (2^n - 1), which has no
// cancellation for n = 0 (small |y|) and no large terms for n < 0. Exact -1 below about -745.
// Branch-free and NaN-propagating like the float version.
template <class X>
struct ExpParts {
  X scale, em1;  // exp(y) = scale * (1 + em1), expm1(y) = scale * em1 + (scale - 1)
};

template <class X>
GK_INLINE ExpParts<X> exp_parts_nonpos(X y) {
  y = at_least(y, X(-746.0));
  const double kShift = 6755399441055744.0;  // 1.5 * 2^52
  X n = fmadd(y, X(1.4426950408889634074), X(kShift)) - kShift;
  X r = fmadd(n, X(-6.93147180369123816490e-01), y);  // ln 2, high part (n * it exact, |n| < 2^11)
  r = fmadd(n, X(-1.90821492927058770002e-10), r);    // ln 2, low part
  X p = 1.0 / 6227020800.0;                           // 1/13!
  p = fmadd(p, r, X(1.0 / 479001600.0));
  p = fmadd(p, r, X(1.0 / 39916800.0));
  p = fmadd(p, r, X(1.0 / 3628800.0));
  p = fmadd(p, r, X(1.0 / 362880.0));
  p = fmadd(p, r, X(1.0 / 40320.0));
  p = fmadd(p, r, X(1.0 / 5040.0));
  p = fmadd(p, r, X(1.0 / 720.0));
  p = fmadd(p, r, X(1.0 / 120.0));
  p = fmadd(p, r, X(1.0 / 24.0));
  p = fmadd(p, r, X(1.0 / 6.0));
  p = fmadd(p, r, X(0.5));
  const X em1 = fmadd(p, r * r, r);  // expm1(r)
  return ExpParts<X>{times_pow2(X(1.0), n), em1};  // 2^n, n in [-1077, 0], rounded once
}

template <class X>
GK_INLINE X sigmoid_d(X x) {
  const ExpParts<X> p = exp_parts_nonpos(neg_abs_of(x));
  const X e = p.scale * (1.0 + p.em1);  // exp(-|x|) <= 1, accurate into the subnormals
  const X num = if_less(x, X(0.0), e, X(1.0));  // one division, as in the float version
  return num / (1.0 + e);
}

// tanh(|x|) = -expm1(-2|x|) / (expm1(-2|x|) + 2): accurate near 0 (expm1 keeps its relative
// accuracy there) and saturating to exactly 1.
template <class X>
GK_INLINE X tanh_d(X x) {
  const ExpParts<X> p = exp_parts_nonpos(-2.0 * abs_of(x));
  const X e = fmadd(p.scale, p.em1, p.scale - 1.0);  // expm1(-2|x|)
  const X t = -e / (e + 2.0);
  return copysign_of(t, x);
}

template <class X>
GK_INLINE X sigmoid(X x) {
  if constexpr (sizeof(typename ElemOf<X>::type) == 4)
    return sigmoid_f(x);
  else
    return sigmoid_d(x);
}

template <class X>
GK_INLINE X tanh_act(X x) {
  if constexpr (sizeof(typename ElemOf<X>::type) == 4)
    return tanh_f(x);
  else
    return tanh_d(x);
}

}  // namespace GK_ISA
}  // namespace gatedkernels
