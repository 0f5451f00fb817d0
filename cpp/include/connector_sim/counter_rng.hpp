// Counter-based random numbers keyed by (seed, trial, step, unit).
//
// Specification: connector_sim/_kernels/counter_rng.py. The same key gives the
// same 64 bits here, in the NumPy reference and in the numba kernels; all
// arithmetic is modulo 2^64 (unsigned wrap-around).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "connector_sim/simd_math.hpp"

namespace connector_sim {

constexpr std::uint64_t GOLDEN = 0x9E3779B97F4A7C15ull;

// counter_rng.mix64: SplitMix64's output function.
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// counter_rng.step_key: mix64(mix64(seed + GOLDEN (trial + 1)) + GOLDEN (step + 1)).
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t step_key(std::uint64_t seed, std::int64_t trial, std::int64_t step) {
  const std::uint64_t trial_key = mix64(seed + GOLDEN * (static_cast<std::uint64_t>(trial) + 1u));
  return mix64(trial_key + GOLDEN * (static_cast<std::uint64_t>(step) + 1u));
}

// counter_rng.unit_bits(key, n)[unit]: mix64(key + GOLDEN (unit + 1)).
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t unit_bits(std::uint64_t key, std::int64_t unit) {
  return mix64(key + GOLDEN * (static_cast<std::uint64_t>(unit) + 1u));
}

// GOLDEN * j (mod 2^64) for j < n. Consecutive units differ by GOLDEN in the
// counter, unit_bits(key, first + j) = mix64(unit_counter(key, first) +
// golden_steps<n>.value[j]), so a loop over units adds a table entry where it
// would multiply: AVX2 has no 64-bit multiply, and gcc emulates each one with
// three 32-bit multiplies.
template <std::size_t n>
struct GoldenSteps {
  std::uint64_t value[n];
  constexpr GoldenSteps() : value() {
    for (std::size_t j = 0; j < n; ++j) value[j] = GOLDEN * j;
  }
};

template <std::size_t n>
inline constexpr GoldenSteps<n> golden_steps{};

// The counter of unit `first` under `key`: key + GOLDEN (first + 1).
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t unit_counter(std::uint64_t key, std::int64_t first) {
  return key + GOLDEN * (static_cast<std::uint64_t>(first) + 1u);
}

// counter_rng.bits_to_normal in precision T:
//     u1 = (hi + 0.5) 2^-32, u2 = (lo + 0.5) 2^-32,
//     xi = sqrt(-2 log u1) cos(2 pi u2).
// The halves are read as signed int32 (exact int32 -> T conversions): then
// v = (int32 + 0.5) 2^-32 lies in (-1/2, 1/2) and equals u (v > 0) or u - 1
// (v < 0). cos has period 1 in u2 (and v2 needs no further reduction), and
// for u1 near 1 the log receives u1 - 1 = v directly, so the float32 result
// keeps float precision where u1 itself would round to 1. v is computed as
// int32 2^-32 + 2^-33, which rounds as (int32 + 0.5) 2^-32 does: scaling by a
// power of two commutes with rounding.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE T standard_normal_from_bits(std::uint64_t bits) {
  constexpr T two_to_minus_32 = T(0x1p-32), two_to_minus_33 = T(0x1p-33);
  const std::int32_t hi = static_cast<std::int32_t>(static_cast<std::uint32_t>(bits >> 32));
  const std::int32_t lo = static_cast<std::int32_t>(static_cast<std::uint32_t>(bits));
  const T v1 = static_cast<T>(hi) * two_to_minus_32 + two_to_minus_33;
  const T v2 = static_cast<T>(lo) * two_to_minus_32 + two_to_minus_33;
  // v1 > 0 exactly when hi >= 0; simd::select keeps the loop branch-free.
  const bool positive = hi >= 0;
  const T u1 = simd::select(positive, v1, v1 + T(1));
  const T u1_minus_one = simd::select(positive, v1 - T(1), v1);
  return std::sqrt(T(-2) * simd::log_approx(u1, u1_minus_one)) * simd::cos_2pi_reduced(v2);
}

}  // namespace connector_sim
