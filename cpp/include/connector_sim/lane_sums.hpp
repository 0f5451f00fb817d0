// Deterministic sums of n^T phi over a chunk of neurons: the reduction that
// the dense simulator, the sparse simulator and the flow field share.
//
//   lanes[r, l] += sum over j < len with j = l (mod LANES) of rate[j] * n[r, j]
//
// The chunk starts at a multiple of LANES from its block's start. The
// products and the chunk's terms of each lane are summed in T, in vector
// registers (a quad of four 32-byte vectors: 4 W = 32 float or 16 double
// partial sums per row, two rows per pass over rate), then added to the
// float64 lane partials once per chunk: with float32 loadings at most
// chunk_length / LANES terms are summed in float32 before float64 takes
// over. The order of every addition is fixed by the code, not by the
// compiler or the number of threads.
#pragma once

#include <cstdint>
#include <cstring>

#include "connector_sim/simd_math.hpp"

namespace connector_sim {
namespace lane_sums {

// Fixed float64 partial sums per block and r.
constexpr int LANES = 16;

// A 32-byte vector of T (ymm register with AVX2, xmm pair in the baseline
// clone).
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int width = 32 / sizeof(T);
};

// Four vectors as named members: gcc keeps them in registers, where an array
// of accumulators in a loop nest ends up on the stack, behind store-to-load
// forwarding.
template <typename T>
struct Quad {
  typename Vec<T>::type v0, v1, v2, v3;
};

// Unaligned load of one vector (by reference: returning a vector type by
// value would depend on the AVX calling convention).
template <typename V, typename T>
CONNECTOR_SIM_ALWAYS_INLINE void load_vector(V& v, const T* p) {
  std::memcpy(&v, p, sizeof v);
}

template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void load_quad(Quad<T>& q, const T* p) {
  constexpr int W = Vec<T>::width;
  load_vector(q.v0, p);
  load_vector(q.v1, p + W);
  load_vector(q.v2, p + 2 * W);
  load_vector(q.v3, p + 3 * W);
}

// acc.vq += x.vq * row[q W : (q + 1) W], q < 4
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void fma_quad(Quad<T>& acc, const Quad<T>& x, const T* __restrict row) {
  Quad<T> y;
  load_quad(y, row);
  acc.v0 += x.v0 * y.v0;
  acc.v1 += x.v1 * y.v1;
  acc.v2 += x.v2 * y.v2;
  acc.v3 += x.v3 * y.v3;
}

// lanes[l] += float64(lane l of the quad + tail[l]). Element e of vector q
// holds the terms j = q W + e (mod 4 W); lane l takes j = l (mod LANES):
// 4 W = LANES for double, 2 LANES for float (lane l then adds elements l and
// l + LANES of the quad, in that order).
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void add_quad_to_lanes(double* __restrict lanes, const Quad<T>& acc,
                                                   const T* __restrict tail) {
  constexpr int W = Vec<T>::width;
  static_assert(4 * W == LANES || 4 * W == 2 * LANES, "a quad holds one or two lane groups");
  alignas(32) T flat[4 * W];
  std::memcpy(flat, &acc.v0, sizeof acc.v0);
  std::memcpy(flat + W, &acc.v1, sizeof acc.v1);
  std::memcpy(flat + 2 * W, &acc.v2, sizeof acc.v2);
  std::memcpy(flat + 3 * W, &acc.v3, sizeof acc.v3);
  if constexpr (4 * W == 2 * LANES) {
#pragma omp simd
    for (int l = 0; l < LANES; ++l) lanes[l] += static_cast<double>((flat[l] + flat[l + LANES]) + tail[l]);
  } else {
#pragma omp simd
    for (int l = 0; l < LANES; ++l) lanes[l] += static_cast<double>(flat[l] + tail[l]);
  }
}

// lanes[r, l] += sum over j < len, j = l (mod LANES) of rate[j] * n[r * stride + j]
// for r < R (see the top of this file for the order of the additions).
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void accumulate_chunk(double* __restrict lanes, const T* __restrict rate,
                                                  const T* __restrict n, std::int64_t stride, std::int64_t R,
                                                  std::int64_t len) {
  constexpr int STEP = 4 * Vec<T>::width;
  static_assert(STEP % LANES == 0, "a quad covers whole lane groups");
  const std::int64_t full = len - len % STEP;
  for (std::int64_t r = 0; r < R; r += 2) {
    const bool pair = r + 1 < R;
    const T* __restrict row0 = n + r * stride;
    const T* __restrict row1 = n + (pair ? r + 1 : r) * stride;
    Quad<T> a{}, b{};
    for (std::int64_t j = 0; j < full; j += STEP) {
      Quad<T> x;
      load_quad(x, rate + j);
      fma_quad(a, x, row0 + j);
      if (pair) fma_quad(b, x, row1 + j);
    }
    // the last len % STEP neurons of the chunk
    T tail0[LANES] = {}, tail1[LANES] = {};
    for (std::int64_t j = full; j < len; ++j) {
      tail0[j % LANES] += rate[j] * row0[j];
      tail1[j % LANES] += rate[j] * row1[j];
    }
    add_quad_to_lanes(lanes + r * LANES, a, tail0);
    if (pair) add_quad_to_lanes(lanes + (r + 1) * LANES, b, tail1);
  }
}

}  // namespace lane_sums
}  // namespace connector_sim
