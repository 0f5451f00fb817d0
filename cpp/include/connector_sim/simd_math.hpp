// Branch-free elementwise math that gcc vectorises inside `#pragma omp simd`
// loops: the activations of the low-rank RNN (tanh approximations, relu,
// identity) and the log / cos / sin that Box-Muller needs.
//
// No libm calls on the hot paths: scalar libm calls would stop vectorisation.
// Integer work on float bits uses only operations AVX2 has (32/64-bit add,
// logical shifts, 32-bit arithmetic shifts, int32 <-> float conversions), so
// the AVX2 clones of the kernels keep everything in ymm registers (and the
// AVX-512 clones in zmm registers: 16 float or 8 double lanes).
//
// Specification: connector_sim/_kernels/fast_math.py (tanh) and
// connector_sim/_kernels/counter_rng.py (Box-Muller); softplus and sigmoid
// approximate np.logaddexp(0, x) and 1 / (1 + np.exp(-x))
// (connector_sim.activations.apply_activation).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__) || defined(__clang__)
#define CONNECTOR_SIM_ALWAYS_INLINE inline __attribute__((always_inline))
#define CONNECTOR_SIM_LAMBDA_INLINE __attribute__((always_inline))
#define CONNECTOR_SIM_PREFETCH_FOR_WRITE(address) __builtin_prefetch((address), 1, 3)
#else
#define CONNECTOR_SIM_ALWAYS_INLINE inline
#define CONNECTOR_SIM_LAMBDA_INLINE
#define CONNECTOR_SIM_PREFETCH_FOR_WRITE(address)
#endif

// Runtime dispatch between the AVX-512, AVX2 and baseline clones of the
// kernels: CONNECTOR_SIM_MULTIVERSION in isa.hpp. Define
// CONNECTOR_SIM_NO_TARGET_CLONES to build the baseline only.
#include "connector_sim/isa.hpp"

namespace connector_sim {
namespace simd {

// Integer codes of the built-in activations (connector_sim.activations.BUILTIN_ACTIVATIONS).
enum Activation : int { tanh_code = 0, relu_code = 1, identity_code = 2, softplus_code = 3, sigmoid_code = 4 };

// Whether `code` names a built-in activation, and the message for one that does not.
inline bool is_activation_code(int code) { return code >= tanh_code && code <= sigmoid_code; }
#define CONNECTOR_SIM_ACTIVATION_CODES "(0 tanh, 1 relu, 2 identity, 3 softplus, 4 sigmoid)"

template <typename To, typename From>
CONNECTOR_SIM_ALWAYS_INLINE To bit_cast(From value) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  To result;
  std::memcpy(&result, &value, sizeof(To));
  return result;
}

// Coefficients of the float32 tanh, ascending powers of s = x^2 (fast_math.py
// TANH_F32_P / TANH_F32_Q). Rounded double -> float like np.float32(c).
constexpr float TANH_F32_CLAMP = 9.0f;
constexpr float TANH_F32_P[5] = {
    static_cast<float>(1.0), static_cast<float>(0.13380268798061937), static_cast<float>(0.0034946994348717814),
    static_cast<float>(2.0595083954388026e-05), static_cast<float>(1.3336644121529628e-08)};
constexpr float TANH_F32_Q[5] = {
    static_cast<float>(1.0), static_cast<float>(0.4671358624021135), static_cast<float>(0.02587357033918656),
    static_cast<float>(0.0003284206711100211), static_cast<float>(7.768884004494183e-07)};

// ln 2 = LN2_HI + LN2_LO, LN2_HI with 32 significant bits so that n * LN2_HI
// is exact for |n| < 2^21 (Cody-Waite reduction).
constexpr double LN2 = 0.6931471805599453;
constexpr double LN2_HI = 0x1.62e42feep-1;
constexpr double LN2_LO = 0x1.a39ef35793c76p-33;
constexpr double LOG2E = 1.4426950408889634;
constexpr double TWO_PI = 6.283185307179586;
// Adding 1.5 * 2^52 (2^23 for float) rounds to an integer, which then sits in
// the low mantissa bits.
constexpr double ROUND_SHIFT_F64 = 0x1.8p52;
constexpr float ROUND_SHIFT_F32 = 0x1.8p23f;
constexpr std::uint32_t SQRT_HALF_BITS_F32 = 0x3f3504f3u;  // float bits of sqrt(1/2)
constexpr std::uint64_t SQRT_HALF_BITS_F64 = 0x3fe6a09e667f3bcdull;

constexpr double factorial(int k) { return k <= 1 ? 1.0 : k * factorial(k - 1); }

// 1 / k!, k = 0 .. 12: the degree-12 Taylor polynomial of exp.
constexpr double EXP_TAYLOR[13] = {
    1.0 / factorial(0), 1.0 / factorial(1), 1.0 / factorial(2),  1.0 / factorial(3),  1.0 / factorial(4),
    1.0 / factorial(5), 1.0 / factorial(6), 1.0 / factorial(7),  1.0 / factorial(8),  1.0 / factorial(9),
    1.0 / factorial(10), 1.0 / factorial(11), 1.0 / factorial(12)};

// 1 / k!, k = 0 .. 7, in float: the float exp's Taylor polynomial (its
// truncation error on |r| <= ln2 / 2 is r^8 / 8! < 5e-9, below float rounding).
constexpr float EXP_TAYLOR_F32[8] = {
    static_cast<float>(1.0 / factorial(0)), static_cast<float>(1.0 / factorial(1)),
    static_cast<float>(1.0 / factorial(2)), static_cast<float>(1.0 / factorial(3)),
    static_cast<float>(1.0 / factorial(4)), static_cast<float>(1.0 / factorial(5)),
    static_cast<float>(1.0 / factorial(6)), static_cast<float>(1.0 / factorial(7))};
// ln 2 = LN2_HI_F32 + LN2_LO_F32 in float, LN2_HI_F32 with 12 significant bits
// so that n * LN2_HI_F32 is exact for |n| <= 126.
constexpr float LN2_HI_F32 = 0x1.63p-1f;
constexpr float LN2_LO_F32 = static_cast<float>(LN2 - 0x1.63p-1);

// 1 / (2k + 1): log(1 + f) = 2 atanh(s) = 2 (s + s^3 / 3 + s^5 / 5 + ...), s = f / (2 + f).
constexpr double ATANH_TAYLOR_F64[11] = {1.0,        1.0 / 3.0,  1.0 / 5.0,  1.0 / 7.0,  1.0 / 9.0, 1.0 / 11.0,
                                         1.0 / 13.0, 1.0 / 15.0, 1.0 / 17.0, 1.0 / 19.0, 1.0 / 21.0};
constexpr float ATANH_TAYLOR_F32[5] = {1.0f, 1.0f / 3.0f, 1.0f / 5.0f, 1.0f / 7.0f, 1.0f / 9.0f};

// (-1)^k / (2k + 1)!: sin(y) = y (1 - y^2 / 3! + y^4 / 5! - ...).
constexpr double SIN_TAYLOR_F64[11] = {
    1.0 / factorial(1),   -1.0 / factorial(3),  1.0 / factorial(5),  -1.0 / factorial(7),
    1.0 / factorial(9),   -1.0 / factorial(11), 1.0 / factorial(13), -1.0 / factorial(15),
    1.0 / factorial(17),  -1.0 / factorial(19), 1.0 / factorial(21)};
// sin(y) ~= y P(y^2) for |y| <= pi/2 in float: a minimax fit with error
// below 2e-8 before rounding (counter_rng.py SIN_F32; the Taylor polynomial of
// the same degree errs by 3.5e-6, so float needed two more terms of it).
constexpr float SIN_F32[5] = {1.0f, static_cast<float>(-0.16666656732559204), static_cast<float>(0.008333017118275166),
                              static_cast<float>(-0.0001980661618290469), static_cast<float>(2.600056177470833e-06)};

// sum_k c[k] y^k by Horner's rule (the loop is unrolled: n is a constant).
template <typename T, int n>
CONNECTOR_SIM_ALWAYS_INLINE T horner(const T (&c)[n], T y) {
  T p = c[n - 1];
  for (int k = n - 2; k >= 0; --k) p = p * y + c[k];
  return p;
}

// cond ? a : b with both a and b already computed, by a bit mask: gcc does
// not if-convert a floating-point `cond ? a : b` whose operands it would have
// to compute speculatively (default -ftrapping-math), and a loop with a
// branch stays scalar ("control flow in loop"); the mask makes it a blend.
CONNECTOR_SIM_ALWAYS_INLINE float select(bool cond, float a, float b) {
  const std::uint32_t mask = std::uint32_t{0} - static_cast<std::uint32_t>(cond);
  return bit_cast<float>((bit_cast<std::uint32_t>(a) & mask) | (bit_cast<std::uint32_t>(b) & ~mask));
}

CONNECTOR_SIM_ALWAYS_INLINE double select(bool cond, double a, double b) {
  const std::uint64_t mask = std::uint64_t{0} - static_cast<std::uint64_t>(cond);
  return bit_cast<double>((bit_cast<std::uint64_t>(a) & mask) | (bit_cast<std::uint64_t>(b) & ~mask));
}

// np.clip(x, -c, c) for c > 0 (NaN stays NaN), by integer operations on the
// bits: with gcc's default -ftrapping-math a floating-point select such as
// std::min(std::max(x, -c), c) is turned into branches that the vectoriser
// rejects ("control flow in loop"), leaving the whole tanh loop scalar.
CONNECTOR_SIM_ALWAYS_INLINE float clip_symmetric(float x, float c) {
  const std::uint32_t bits = bit_cast<std::uint32_t>(x);
  const std::uint32_t magnitude = bits & 0x7fffffffu, limit = bit_cast<std::uint32_t>(c);
  const std::uint32_t clipped = magnitude > 0x7f800000u ? magnitude : std::min(magnitude, limit);
  return bit_cast<float>(clipped | (bits & 0x80000000u));
}

CONNECTOR_SIM_ALWAYS_INLINE double clip_symmetric(double x, double c) {
  const std::uint64_t bits = bit_cast<std::uint64_t>(x);
  const std::uint64_t magnitude = bits & 0x7fffffffffffffffull, limit = bit_cast<std::uint64_t>(c);
  const std::uint64_t clipped = magnitude > 0x7ff0000000000000ull ? magnitude : std::min(magnitude, limit);
  return bit_cast<double>(clipped | (bits & 0x8000000000000000ull));
}

// np.tanh(x) ~= x P(x^2) / Q(x^2) with x clipped to [-9, 9]
// (fast_math.tanh_f32_reference): absolute error <= 3.5e-7.
CONNECTOR_SIM_ALWAYS_INLINE float tanh_approx(float x) {
  const float xc = clip_symmetric(x, TANH_F32_CLAMP);
  const float s = xc * xc;
  return xc * horner(TANH_F32_P, s) / horner(TANH_F32_Q, s);
}

// np.exp(y) with y clipped to [-708, 708] (so 2^n stays a normal double):
// y = n ln2 + r, |r| <= ln2 / 2, exp(y) = 2^n * (degree-12 Taylor of e^r).
// Relative error ~2e-16.
CONNECTOR_SIM_ALWAYS_INLINE double exp_approx(double y) {
  y = clip_symmetric(y, 708.0);
  const double shifted = y * LOG2E + ROUND_SHIFT_F64;
  const double n = shifted - ROUND_SHIFT_F64;
  const double r = (y - n * LN2_HI) - n * LN2_LO;
  // n as an integer is the difference of the mantissa bits; (n + 1023) << 52
  // is the bit pattern of 2^n.
  const std::uint64_t n_bits = bit_cast<std::uint64_t>(shifted) - bit_cast<std::uint64_t>(ROUND_SHIFT_F64);
  const double two_to_n = bit_cast<double>((n_bits + 1023u) << 52);
  return horner(EXP_TAYLOR, r) * two_to_n;
}

// np.tanh(x) = sign(x) (1 - 2 / (exp(2 |x|) + 1)): absolute error < 1e-15.
CONNECTOR_SIM_ALWAYS_INLINE double tanh_approx(double x) {
  const double e = exp_approx(2.0 * std::fabs(x));
  return std::copysign(1.0 - 2.0 / (e + 1.0), x);
}

// np.exp(y) in float with y clipped to [-87, 87] (2^n stays a normal float):
// y = n ln2 + r, exp(y) = 2^n * (degree-7 Taylor of e^r). Relative error
// a few float ulps.
CONNECTOR_SIM_ALWAYS_INLINE float exp_approx(float y) {
  y = clip_symmetric(y, 87.0f);
  const float shifted = y * static_cast<float>(LOG2E) + ROUND_SHIFT_F32;
  const float n = shifted - ROUND_SHIFT_F32;
  const float r = (y - n * LN2_HI_F32) - n * LN2_LO_F32;
  const std::uint32_t n_bits = bit_cast<std::uint32_t>(shifted) - bit_cast<std::uint32_t>(ROUND_SHIFT_F32);
  const float two_to_n = bit_cast<float>((n_bits + 127u) << 23);
  return horner(EXP_TAYLOR_F32, r) * two_to_n;
}

// np.log(x) for a normal float x > 0, given also x_minus_one = x - 1 to full
// precision (np.log1p(x_minus_one) when x rounds near 1; pass x - 1 if x is
// all there is). x = 2^k m, m in [sqrt(1/2), sqrt(2)), log x = k ln2 +
// log(1 + f) with f = m - 1, or f = x_minus_one when k = 0.
CONNECTOR_SIM_ALWAYS_INLINE float log_approx(float x, float x_minus_one) {
  const std::uint32_t bits = bit_cast<std::uint32_t>(x);
  const std::int32_t k = static_cast<std::int32_t>(bits - SQRT_HALF_BITS_F32) >> 23;
  const float m = bit_cast<float>(bits - (static_cast<std::uint32_t>(k) << 23));
  const float f = select(k == 0, x_minus_one, m - 1.0f);
  const float s = f / (2.0f + f);
  return static_cast<float>(k) * static_cast<float>(LN2) + 2.0f * s * horner(ATANH_TAYLOR_F32, s * s);
}

// As the float version, in double. k is found with logical shifts (AVX2 has
// no 64-bit arithmetic shift nor int64 -> double conversion): the biased
// k + 1024 is positive and below 2^52, so OR-ing it into the mantissa of 2^52
// converts it.
CONNECTOR_SIM_ALWAYS_INLINE double log_approx(double x, double x_minus_one) {
  const std::uint64_t bits = bit_cast<std::uint64_t>(x);
  const std::uint64_t k_biased = (bits - SQRT_HALF_BITS_F64 + (std::uint64_t{1024} << 52)) >> 52;
  const double k = (bit_cast<double>(k_biased | bit_cast<std::uint64_t>(0x1p52)) - 0x1p52) - 1024.0;
  const double m = bit_cast<double>(bits - ((k_biased - 1024u) << 52));
  const double f = select(k_biased == 1024u, x_minus_one, m - 1.0);
  const double s = f / (2.0 + f);
  return k * LN2_HI + (k * LN2_LO + 2.0 * s * horner(ATANH_TAYLOR_F64, s * s));
}

// np.log(x) for a normal x > 0.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE T log_approx(T x) {
  return log_approx(x, x - T(1));
}

// np.maximum(x, 0) (NaN and -0 stay as they are), by integer operations on
// the bits for the reason given at clip_symmetric: x < 0 exactly when the
// sign bit is set and 0 < |x| <= inf, and then all bits are cleared.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE T relu(T x) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "relu of float or double");
  using U = typename std::conditional<sizeof(T) == 4, std::uint32_t, std::uint64_t>::type;
  constexpr int sign_shift = 8 * sizeof(T) - 1;
  constexpr U infinity = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  const U bits = bit_cast<U>(x);
  const U magnitude = bits & ~(U(1) << sign_shift);
  const U negative = (bits >> sign_shift) & U(magnitude - 1 < infinity);
  return bit_cast<T>(bits & (negative - 1));
}

// sigmoid(x) = 1 / (1 + exp(-x)), from e = exp(-|x|) in (0, 1]: 1 / (1 + e)
// for x >= 0 and e / (1 + e) below (no cancellation on either side; NaN
// stays NaN). Relative error ~1e-16 (double) and a few ulps (float); for
// x < -708 (double) or -87 (float) e stops decreasing, an absolute error
// below 1e-307 (1e-37).
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE T sigmoid(T x) {
  const T e = exp_approx(-std::fabs(x));
  const T s = T(1) / (T(1) + e);
  return select(x >= T(0), s, e * s);
}

// softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), the log1p by
// log_approx(1 + e, e) (full precision for small e). Absolute error ~2e-16
// (double) and ~2e-7 relative to max(1, |x|) (float); for very negative x see
// sigmoid.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE T softplus(T x) {
  const T e = exp_approx(-std::fabs(x));
  return relu(x) + log_approx(T(1) + e, e);
}

// np.cos(2 pi s) for |s| <= 1/2: sin(2 pi c), c = 1/4 - |s| in [-1/4, 1/4],
// by an odd polynomial on [-pi/2, pi/2] (float: SIN_F32, double: Taylor to
// degree 21; accuracy: see sin_2pi_reduced).
CONNECTOR_SIM_ALWAYS_INLINE float cos_2pi_reduced(float s) {
  const float y = static_cast<float>(TWO_PI) * (0.25f - std::fabs(s));
  return y * horner(SIN_F32, y * y);
}

CONNECTOR_SIM_ALWAYS_INLINE double cos_2pi_reduced(double s) {
  const double y = TWO_PI * (0.25 - std::fabs(s));
  return y * horner(SIN_TAYLOR_F64, y * y);
}

// np.sin(2 pi s) for |s| <= 1/2, by symmetric reduction to the polynomial of
// cos_2pi_reduced: sin(2 pi s) = sign(s) sin(2 pi w) with w = |s| for
// |s| <= 1/4 and w = 1/2 - |s| above (sin(pi - y) = sin(y); 1/2 - |s| is then
// exact), w in [0, 1/4]. Same accuracy as cos_2pi_reduced: the polynomials'
// own error on [-pi/2, pi/2] is below 2e-8 (float, SIN_F32) and 1e-16 (double,
// Taylor); the rest is rounding (of 2 pi w and in the polynomial).
// Measured for both functions against long double cosl / sinl of the same
// argument, s = int32 2^-32 + 2^-33 for every 13th int32 (the Box-Muller
// angles): max abs error 1.6e-7 in float and 2.8e-16 in double with FMA
// (AVX2 clone), 1.7e-7 and 3.2e-16 without (baseline).
CONNECTOR_SIM_ALWAYS_INLINE float sin_2pi_reduced(float s) {
  const float a = std::fabs(s);
  const float y = static_cast<float>(TWO_PI) * select(a > 0.25f, 0.5f - a, a);
  return std::copysign(y * horner(SIN_F32, y * y), s);
}

CONNECTOR_SIM_ALWAYS_INLINE double sin_2pi_reduced(double s) {
  const double a = std::fabs(s);
  const double y = TWO_PI * select(a > 0.25, 0.5 - a, a);
  return std::copysign(y * horner(SIN_TAYLOR_F64, y * y), s);
}

// np.cos(2 pi u) for |u| < 2^22: cos_2pi_reduced(u - round(u)).
CONNECTOR_SIM_ALWAYS_INLINE float cos_2pi(float u) {
  return cos_2pi_reduced(u - ((u + ROUND_SHIFT_F32) - ROUND_SHIFT_F32));
}

CONNECTOR_SIM_ALWAYS_INLINE double cos_2pi(double u) {
  return cos_2pi_reduced(u - ((u + ROUND_SHIFT_F64) - ROUND_SHIFT_F64));
}

// phi(x) of a built-in activation; `code` is a compile-time constant, so the
// kernels instantiate one loop per activation.
template <int code, typename T>
CONNECTOR_SIM_ALWAYS_INLINE T activation(T x) {
  static_assert(code >= tanh_code && code <= sigmoid_code, "unknown activation code");
  if constexpr (code == tanh_code) {
    return tanh_approx(x);
  } else if constexpr (code == relu_code) {
    return relu(x);
  } else if constexpr (code == softplus_code) {
    return softplus(x);
  } else if constexpr (code == sigmoid_code) {
    return sigmoid(x);
  } else {
    return x;
  }
}

}  // namespace simd
}  // namespace connector_sim
