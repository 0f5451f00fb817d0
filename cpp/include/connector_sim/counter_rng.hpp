// Counter-based random numbers keyed by (seed, trial, step, unit).
//
// Specification: connector_sim/_kernels/counter_rng.py. The same key gives the
// same 64 bits here, in the NumPy reference and in the numba kernels; all
// arithmetic is modulo 2^64 (unsigned wrap-around). One draw serves a pair of
// units (k, k + 64) of each block of 128: Box-Muller's cosine and sine.
#pragma once

#include <algorithm>
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

// Units per pair block (counter_rng.PAIR_BLOCK): unit i at position
// k = i % PAIR_BLOCK takes the cosine (k < PAIR_HALF) or the sine output of
// pair (i / PAIR_BLOCK) PAIR_HALF + k % PAIR_HALF.
constexpr std::int64_t PAIR_BLOCK = 128;
constexpr std::int64_t PAIR_HALF = PAIR_BLOCK / 2;

// counter_rng.pair_index(unit): (unit // 128) * 64 + unit % 64, for unit >= 0.
CONNECTOR_SIM_ALWAYS_INLINE std::int64_t pair_index(std::int64_t unit) {
  return (unit / PAIR_BLOCK) * PAIR_HALF + unit % PAIR_HALF;
}

// counter_rng.pair_bits(key, n)[pair]: mix64(key + GOLDEN (pair + 1)).
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t pair_bits(std::uint64_t key, std::int64_t pair) {
  return mix64(key + GOLDEN * (static_cast<std::uint64_t>(pair) + 1u));
}

// counter_rng.unit_bits(key, n)[unit]: the draw of the unit's pair.
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t unit_bits(std::uint64_t key, std::int64_t unit) {
  return pair_bits(key, pair_index(unit));
}

// GOLDEN * j (mod 2^64) for j < n. Consecutive pairs differ by GOLDEN in the
// counter, pair_bits(key, first + j) = mix64(pair_counter(key, first) +
// golden_steps<n>.value[j]), so a loop over pairs adds a table entry where it
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

// The counter of pair `first` under `key`: key + GOLDEN (first + 1).
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t pair_counter(std::uint64_t key, std::int64_t first) {
  return key + GOLDEN * (static_cast<std::uint64_t>(first) + 1u);
}

// The counter of the pair block that starts at unit `first_unit` (a multiple
// of PAIR_BLOCK): its pair j draws mix64(block_counter + GOLDEN j), j < PAIR_HALF.
CONNECTOR_SIM_ALWAYS_INLINE std::uint64_t block_counter(std::uint64_t key, std::int64_t first_unit) {
  return pair_counter(key, first_unit / PAIR_BLOCK * PAIR_HALF);
}

// counter_rng.bits_to_normals in precision T, in two steps:
//     u1 = (hi + 0.5) 2^-32, u2 = (lo + 0.5) 2^-32, r = sqrt(-2 log u1),
//     cosine = r cos(2 pi u2), sine = r sin(2 pi u2).
// The halves are read as signed int32 (exact int32 -> T conversions): then
// v = (int32 + 0.5) 2^-32 lies in (-1/2, 1/2) and equals u (v > 0) or u - 1
// (v < 0). cos and sin have period 1 in u2 (and v2 needs no further
// reduction), and for u1 near 1 the log receives u1 - 1 = v directly, so the
// float32 result keeps float precision where u1 itself would round to 1. v is
// computed as int32 2^-32 + 2^-33, which rounds as (int32 + 0.5) 2^-32 does:
// scaling by a power of two commutes with rounding.
//
// radius_and_angle_from_bits: radius = r and v2 (the angle in turns).
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void radius_and_angle_from_bits(std::uint64_t bits, T& radius, T& v2) {
  constexpr T two_to_minus_32 = T(0x1p-32), two_to_minus_33 = T(0x1p-33);
  const std::int32_t hi = static_cast<std::int32_t>(static_cast<std::uint32_t>(bits >> 32));
  const std::int32_t lo = static_cast<std::int32_t>(static_cast<std::uint32_t>(bits));
  const T v1 = static_cast<T>(hi) * two_to_minus_32 + two_to_minus_33;
  v2 = static_cast<T>(lo) * two_to_minus_32 + two_to_minus_33;
  // v1 > 0 exactly when hi >= 0; simd::select keeps the loop branch-free.
  const bool positive = hi >= 0;
  const T u1 = simd::select(positive, v1, v1 + T(1));
  const T u1_minus_one = simd::select(positive, v1 - T(1), v1);
  radius = std::sqrt(T(-2) * simd::log_approx(u1, u1_minus_one));
}

// One 64-bit draw -> its pair of standard normals (r cos(2 pi u2), r sin(2 pi u2)).
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void normal_pair_from_bits(std::uint64_t bits, T& cosine, T& sine) {
  T radius, v2;
  radius_and_angle_from_bits(bits, radius, v2);
  cosine = radius * simd::cos_2pi_reduced(v2);
  sine = radius * simd::sin_2pi_reduced(v2);
}

// The 64 pairs of one pair block, whose counter is `counter` (block_counter):
// draw() hashes them and computes radius[j] and angle[j] in two short
// `omp simd` loops; cosine(j) and sine(j), called in the caller's simd loop,
// finish normal_pair_from_bits(pair_bits of pair j) with the same operations.
// Splitting the work into passes over short arrays is faster than one loop
// (measured 1.1 against 1.5 ns per unit, float32, AVX2): each iteration of the
// single loop carries a long dependency chain (64-bit multiplies, divide,
// polynomial, square root, polynomial) and few of them fit in the
// out-of-order window at once.
template <typename T>
struct PairBlock {
  alignas(64) T radius[PAIR_HALF];
  alignas(64) T angle[PAIR_HALF];

  CONNECTOR_SIM_ALWAYS_INLINE void draw(std::uint64_t counter) {
    const std::uint64_t* __restrict steps = golden_steps<PAIR_HALF>.value;
    alignas(64) std::uint64_t bits[PAIR_HALF];
    // bits[j] = pair_bits(key, first_pair + j)
#pragma omp simd
    for (std::int64_t j = 0; j < PAIR_HALF; ++j) bits[j] = mix64(counter + steps[j]);
#pragma omp simd
    for (std::int64_t j = 0; j < PAIR_HALF; ++j) radius_and_angle_from_bits<T>(bits[j], radius[j], angle[j]);
  }
  CONNECTOR_SIM_ALWAYS_INLINE T cosine(std::int64_t j) const { return radius[j] * simd::cos_2pi_reduced(angle[j]); }
  CONNECTOR_SIM_ALWAYS_INLINE T sine(std::int64_t j) const { return radius[j] * simd::sin_2pi_reduced(angle[j]); }

  // out[j] = cosine(j), out[j + 64] = sine(j): the units of the block in order.
  CONNECTOR_SIM_ALWAYS_INLINE void normals(T* __restrict out) const {
#pragma omp simd
    for (std::int64_t j = 0; j < PAIR_HALF; ++j) {
      out[j] = cosine(j);
      out[j + PAIR_HALF] = sine(j);
    }
  }
};

// out[j] = counter_rng.standard_normal(seed, trial, step, N)[first + j] for
// j < n, key = step_key(seed, trial, step), first a multiple of PAIR_BLOCK,
// block by block; a last partial block goes through a buffer.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void fill_standard_normal(std::uint64_t key, std::int64_t first, std::int64_t n,
                                                      T* __restrict out) {
  PairBlock<T> pairs;
  std::int64_t c0 = 0;
  for (; c0 + PAIR_BLOCK <= n; c0 += PAIR_BLOCK) {
    pairs.draw(block_counter(key, first + c0));
    pairs.normals(out + c0);
  }
  if (c0 < n) {
    alignas(64) T buffer[PAIR_BLOCK];
    pairs.draw(block_counter(key, first + c0));
    pairs.normals(buffer);
    std::copy(buffer, buffer + (n - c0), out + c0);
  }
}

// fill_standard_normal with runtime dispatch (AVX-512 / AVX2+FMA clone where the CPU
// has it), for callers compiled without vectorisation.
CONNECTOR_SIM_ALWAYS_INLINE void fill_standard_normal_f32_body(std::uint64_t key, std::int64_t first,
                                                                 std::int64_t n, float* out) {
  fill_standard_normal(key, first, n, out);
}
CONNECTOR_SIM_MULTIVERSION(void, fill_standard_normal_f32,
                           (std::uint64_t key, std::int64_t first, std::int64_t n, float* out),
                           (key, first, n, out))

CONNECTOR_SIM_ALWAYS_INLINE void fill_standard_normal_f64_body(std::uint64_t key, std::int64_t first,
                                                                 std::int64_t n, double* out) {
  fill_standard_normal(key, first, n, out);
}
CONNECTOR_SIM_MULTIVERSION(void, fill_standard_normal_f64,
                           (std::uint64_t key, std::int64_t first, std::int64_t n, double* out),
                           (key, first, n, out))

inline void fill_standard_normal_dispatch(std::uint64_t key, std::int64_t first, std::int64_t n, float* out) {
  fill_standard_normal_f32(key, first, n, out);
}

inline void fill_standard_normal_dispatch(std::uint64_t key, std::int64_t first, std::int64_t n, double* out) {
  fill_standard_normal_f64(key, first, n, out);
}

}  // namespace connector_sim
