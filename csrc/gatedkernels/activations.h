// Activations: sigmoid, tanh and relu, templated on the dtype, written branch-free so that the
// loops over a block of VB lanes in kernel.h vectorize.
//
// float:  exp is a Cephes-style range reduction (n = round(x / ln 2), r = x - n ln 2 in two
//         parts) with a degree-6 polynomial; 2^n is built from exponent bits, offset so that
//         results fall gracefully (one rounding) into the subnormal range. sigmoid and tanh
//         are computed from e = exp(-|x|) <= 1, which never overflows, so both saturate over
//         the whole float range and a finite input never gives NaN or Inf. NaN propagates.
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

// The activations and the cells' pointwise math are always inlined: the loops over VB lanes only
// vectorize when they are, and GCC's size heuristics may otherwise leave them as calls in some
// instantiations (measured: a scalar call per lane made a step 3x slower).
#ifndef GK_INLINE
#define GK_INLINE inline __attribute__((always_inline))
#endif

template <typename T>
GK_INLINE T relu(T x) {
  // x > 0 ? x : 0 would turn NaN into 0; IEEE says NaN in, NaN out.
  return x < T(0) ? T(0) : x;
}

// exp(x) for x <= 0, float. Valid on [-inf, 0]; exact 0 below about -103.97.
GK_INLINE float exp_nonpos(float x) {
  x = x < -104.0f ? -104.0f : x;                 // NaN passes through both selects
  const float kShift = 12582912.0f;              // 1.5 * 2^23: adding it rounds to an integer
  float n = (x * 1.44269504088896341f + kShift) - kShift;
  float r = x - n * 0.693359375f;                // ln 2 split so n * hi is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // p * 2^n with n in [-150, 0], rounded once: p * 2^(n+64) is a normal float (exact), and only
  // the final product by 2^-64 rounds into the subnormals.
  int32_t ni = static_cast<int32_t>(n == n ? n : 0.0f);
  int32_t bits = (ni + 64 + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return (p * scale) * 5.42101086242752217e-20f;  // 2^-64
}

GK_INLINE float sigmoid(float x) {
  float e = exp_nonpos(-std::fabs(x));
  // Select the numerator, then divide once: a select between two quotients would compute both
  // (the vectorized loop if-converts it), and a division is the slowest instruction here.
  const float num = x < 0.0f ? e : 1.0f;
  return num / (1.0f + e);
}

GK_INLINE float tanh_act(float x) {
  float a = std::fabs(x);
  // Small |x|: odd polynomial (Cephes tanhf form), accurate where 1 - 2/(e^2x + 1) cancels.
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = std::copysign(p * z * x + x, x);  // keeps tanh(-0) = -0
  float e = exp_nonpos(-2.0f * a);
  float big = (1.0f - e) / (1.0f + e);
  big = x < 0.0f ? -big : big;
  return a < 0.625f ? small : big;
}

// exp and expm1 of y <= 0, double: y = n ln2 + r with |r| <= ln2/2, expm1(r) by its Taylor series to
// degree 13 (truncation < 2e-16 relative), then expm1(y) = 2^n expm1(r) + (2^n - 1), which has no
// cancellation for n = 0 (small |y|) and no large terms for n < 0. Exact -1 below about -745.
// Branch-free and NaN-propagating like the float version.
struct ExpParts {
  double scale, em1;  // exp(y) = scale * (1 + em1), expm1(y) = scale * em1 + (scale - 1)
};

GK_INLINE ExpParts exp_parts_nonpos(double y) {
  y = y < -746.0 ? -746.0 : y;
  const double kShift = 6755399441055744.0;  // 1.5 * 2^52
  double n = (y * 1.4426950408889634074 + kShift) - kShift;
  double r = y - n * 6.93147180369123816490e-01;  // ln 2, high part (exact for |n| < 2^11)
  r = r - n * 1.90821492927058770002e-10;         // ln 2, low part
  double p = 1.0 / 6227020800.0;                  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  const double em1 = p * (r * r) + r;  // expm1(r)
  // 2^n for n in [-1077, 0], rounded once into the subnormals, as in exp_nonpos.
  int64_t ni = static_cast<int64_t>(n == n ? n : 0.0);
  int64_t bits = (ni + 64 + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return ExpParts{scale * 5.42101086242752217e-20, em1};  // 2^-64
}

GK_INLINE double expm1_nonpos(double y) {
  const ExpParts e = exp_parts_nonpos(y);
  return e.scale * e.em1 + (e.scale - 1.0);
}

GK_INLINE double sigmoid(double x) {
  const ExpParts p = exp_parts_nonpos(-std::fabs(x));
  const double e = p.scale * (1.0 + p.em1);  // exp(-|x|) <= 1, accurate into the subnormals
  const double num = x < 0.0 ? e : 1.0;  // one division, as in the float version
  return num / (1.0 + e);
}

// tanh(|x|) = -expm1(-2|x|) / (expm1(-2|x|) + 2): accurate near 0 (expm1 keeps its relative
// accuracy there) and saturating to exactly 1.
GK_INLINE double tanh_act(double x) {
  const double e = expm1_nonpos(-2.0 * std::fabs(x));
  const double t = -e / (e + 2.0);
  return std::copysign(t, x);
}

}  // namespace GK_ISA
}  // namespace gatedkernels
