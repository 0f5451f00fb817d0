// Flow field of a sampled low-rank RNN at P latent points.
//
// Specification: flow_field_reference in connector_sim/_kernels/flow_field.py:
//
//   z[p, i]   = m_i^T kappa_p + I_i^T v_p + b_i     (never stored whole)
//   out[p, :] = sum_i n_i phi(z[p, i]) / N          (float64 sums)
//
// The neuron-wise arithmetic (z and phi) runs in T, the dtype of the
// loadings; kappa_p and v_p are cast to T as in the simulator's latent path.
//
// Cost. P * N evaluations of phi, each with C = R + D multiply-adds before it
// and R multiply-adds after it. The loadings are read once per block of
// POINT_BLOCK points: for each point block the neurons are walked in chunks
// of CHUNK whose loadings stay in L1 while the chunk is evaluated against
// every point of the block, in two passes over L1 (phi(z) into a buffer in T,
// then the products with n summed in vector registers in T). With AVX2 and
// float32 the SIMD tanh is about 60% of the time (benchmarks/compare_flow_field.py).
//
// Sums and determinism. For each point and r, the products of a chunk are
// summed in T into LANES lane partials (neuron i into lane i % LANES, at
// most CHUNK / LANES terms each), which are then added to LANES float64
// partials of the block; the float64 lanes are added in order, and the block
// sums in block order. So a float32 network sums at most CHUNK / LANES = 32
// terms in float32 before float64 takes over (error bound in
// tests/kernels/test_flow_field.py). A point's result depends on its own
// kappa_p and v_p only, not on the point block it falls in nor on the thread
// that runs it: the parallel loop over point blocks gives bitwise identical
// results for any thread count.
//
// Dispatch. As in simulate_dense.hpp, the target clones (AVX2+FMA and
// baseline) sit on the per-point-block function that the OpenMP region calls.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "connector_sim/dense_network.hpp"
#include "connector_sim/lane_sums.hpp"
#include "connector_sim/simd_math.hpp"

namespace connector_sim {
namespace flow_field {

// Neurons per reduction block.
constexpr std::int64_t BLOCK_SIZE = 4096;
// Neurons per L1-resident pass inside a block (512 measured faster than 256
// or 1024 for R = 2 float32 at N = 1e5).
constexpr std::int64_t CHUNK = 512;
// Fixed float64 partial sums per block, point and r.
using lane_sums::LANES;
// Points evaluated against one chunk of neurons while it sits in L1.
constexpr std::int64_t POINT_BLOCK = 16;
static_assert(BLOCK_SIZE % CHUNK == 0 && CHUNK % LANES == 0, "chunks must tile blocks, lanes must tile chunks");

// Loadings (neuron-contiguous), points and output of one call.
template <typename T>
struct FlowFieldArgs {
  DenseNetwork<T> net;
  const double* kappa;   // (P, R)
  const double* v;       // (P, D)
  double* out;           // (P, R)
  std::int64_t P;
};

// Per-thread scratch: L1 buffers of one chunk and the sums of one point block.
template <typename T>
struct Workspace {
  std::vector<T> coef;          // (POINT_BLOCK, D + R): [v_p, kappa_p] in T
  std::vector<const T*> rows;   // (D + R,): the chunk's rows of [I_T; m_T]
  std::vector<T> z;             // (CHUNK,)
  std::vector<T> rate;          // (CHUNK,): phi(z)
  std::vector<double> lanes;    // (POINT_BLOCK, R, LANES)
  std::vector<double> total;    // (POINT_BLOCK, R): sums over the blocks done so far

  Workspace(std::int64_t R, std::int64_t D)
      : coef(POINT_BLOCK * (D + R)), rows(D + R), z(CHUNK), rate(CHUNK),
        lanes(POINT_BLOCK * R * LANES), total(POINT_BLOCK * R) {}
};

namespace detail {

// rate[:len] = phi(b + coef @ rows) over the chunk (in T), where rows are
// the C = D + R loading rows [I_T; m_T] (row k at rows[k], already offset to
// the chunk) and coef = [v_p, kappa_p] in T. The terms are added in row
// order, b first; the last row is fused with phi (and, for C <= 2, all rows)
// so that a rank-R network with D inputs costs max(1, C - 1) passes over the
// chunk, not C + 2.
template <typename T, int activation>
CONNECTOR_SIM_ALWAYS_INLINE void rates_chunk(T* __restrict rate, T* __restrict z, const T* __restrict coef,
                                             const T* __restrict bias, const T* const* rows, std::int64_t C,
                                             std::int64_t len) {
  const T* __restrict last = rows[C - 1];
  const T c_last = coef[C - 1];
  if (C == 1) {
    // rate = phi(b + coef[0] * rows[0])
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      rate[j] = simd::activation<activation>(bias[j] + c_last * last[j]);
    }
    return;
  }
  if (C == 2) {
    // rate = phi((b + coef[0] * rows[0]) + coef[1] * rows[1])
    const T c_first = coef[0];
    const T* __restrict first = rows[0];
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      rate[j] = simd::activation<activation>((bias[j] + c_first * first[j]) + c_last * last[j]);
    }
    return;
  }
  {
    // z = b + coef[0] * rows[0]
    const T c = coef[0];
    const T* __restrict row = rows[0];
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) z[j] = bias[j] + c * row[j];
  }
  for (std::int64_t k = 1; k + 1 < C; ++k) {
    // z += coef[k] * rows[k]
    const T c = coef[k];
    const T* __restrict row = rows[k];
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) z[j] += c * row[j];
  }
  // rate = phi(z + coef[-1] * rows[-1])
#pragma omp simd
  for (std::int64_t j = 0; j < len; ++j) {
    rate[j] = simd::activation<activation>(z[j] + c_last * last[j]);
  }
}

// out[p0 : p0 + count] for count <= POINT_BLOCK points.
template <typename T, int activation>
CONNECTOR_SIM_ALWAYS_INLINE void point_block(const FlowFieldArgs<T>& a, std::int64_t p0, std::int64_t count,
                                             Workspace<T>& w) {
  const std::int64_t N = a.net.N, R = a.net.R, D = a.net.D, C = D + R;
  // coef[p] = np.concatenate([v[p0 + p], kappa[p0 + p]]).astype(T)
  for (std::int64_t p = 0; p < count; ++p) {
    for (std::int64_t d = 0; d < D; ++d) w.coef[p * C + d] = static_cast<T>(a.v[(p0 + p) * D + d]);
    for (std::int64_t r = 0; r < R; ++r) w.coef[p * C + D + r] = static_cast<T>(a.kappa[(p0 + p) * R + r]);
  }
  std::fill(w.total.begin(), w.total.end(), 0.0);
  for (std::int64_t lo = 0; lo < N; lo += BLOCK_SIZE) {
    const std::int64_t hi = std::min(lo + BLOCK_SIZE, N);
    std::fill(w.lanes.begin(), w.lanes.end(), 0.0);
    for (std::int64_t c0 = lo; c0 < hi; c0 += CHUNK) {
      const std::int64_t len = std::min(CHUNK, hi - c0);
      // rows = [I_T[:, chunk], m_T[:, chunk]]
      for (std::int64_t d = 0; d < D; ++d) w.rows[d] = a.net.I_T + d * N + c0;
      for (std::int64_t r = 0; r < R; ++r) w.rows[D + r] = a.net.m_T + r * N + c0;
      for (std::int64_t p = 0; p < count; ++p) {
        // rate = phi(v[p] @ I_T[:, chunk] + kappa[p] @ m_T[:, chunk] + b[chunk])   (in T)
        rates_chunk<T, activation>(w.rate.data(), w.z.data(), w.coef.data() + p * C, a.net.b + c0, w.rows.data(), C,
                                   len);
        // lanes[p] += rate * n (lane partials of the chunk in T)
        lane_sums::accumulate_chunk(w.lanes.data() + p * R * LANES, w.rate.data(), a.net.n_T + c0, N, R, len);
      }
    }
    // total[p, r] += lanes[p, r].sum()   (lanes in order, then blocks in order)
    for (std::int64_t p = 0; p < count; ++p) {
      for (std::int64_t r = 0; r < R; ++r) {
        const double* lane = w.lanes.data() + (p * R + r) * LANES;
        double s = 0.0;
        for (int l = 0; l < LANES; ++l) s += lane[l];
        w.total[p * R + r] += s;
      }
    }
  }
  // out[p0 + p] = total[p] / N
  for (std::int64_t p = 0; p < count; ++p) {
    for (std::int64_t r = 0; r < R; ++r) a.out[(p0 + p) * R + r] = w.total[p * R + r] / static_cast<double>(N);
  }
}

}  // namespace detail

// One point block with runtime dispatch (AVX-512 / AVX2+FMA clone where the CPU has
// it); one loop nest per activation.
CONNECTOR_SIM_ALWAYS_INLINE void point_block_f32_body(const FlowFieldArgs<float>& a, std::int64_t p0,
                                                        std::int64_t count, Workspace<float>& w) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::point_block<float, simd::tanh_code>(a, p0, count, w);
    case simd::relu_code:
      return detail::point_block<float, simd::relu_code>(a, p0, count, w);
    case simd::softplus_code:
      return detail::point_block<float, simd::softplus_code>(a, p0, count, w);
    case simd::sigmoid_code:
      return detail::point_block<float, simd::sigmoid_code>(a, p0, count, w);
    default:
      return detail::point_block<float, simd::identity_code>(a, p0, count, w);
  }
}
CONNECTOR_SIM_MULTIVERSION(void, point_block_f32,
                           (const FlowFieldArgs<float>& a, std::int64_t p0, std::int64_t count, Workspace<float>& w),
                           (a, p0, count, w))

CONNECTOR_SIM_ALWAYS_INLINE void point_block_f64_body(const FlowFieldArgs<double>& a, std::int64_t p0,
                                                        std::int64_t count, Workspace<double>& w) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::point_block<double, simd::tanh_code>(a, p0, count, w);
    case simd::relu_code:
      return detail::point_block<double, simd::relu_code>(a, p0, count, w);
    case simd::softplus_code:
      return detail::point_block<double, simd::softplus_code>(a, p0, count, w);
    case simd::sigmoid_code:
      return detail::point_block<double, simd::sigmoid_code>(a, p0, count, w);
    default:
      return detail::point_block<double, simd::identity_code>(a, p0, count, w);
  }
}
CONNECTOR_SIM_MULTIVERSION(void, point_block_f64,
                           (const FlowFieldArgs<double>& a, std::int64_t p0, std::int64_t count, Workspace<double>& w),
                           (a, p0, count, w))

inline void point_block(const FlowFieldArgs<float>& a, std::int64_t p0, std::int64_t count, Workspace<float>& w) {
  point_block_f32(a, p0, count, w);
}

inline void point_block(const FlowFieldArgs<double>& a, std::int64_t p0, std::int64_t count,
                        Workspace<double>& w) {
  point_block_f64(a, p0, count, w);
}

inline void check_arguments(std::int64_t N, std::int64_t R, std::int64_t D, std::int64_t P, int activation,
                            int n_threads) {
  if (n_threads < 1) {
    throw std::invalid_argument("n_threads must be at least 1, got " + std::to_string(n_threads));
  }
  if (!simd::is_activation_code(activation)) {
    throw std::invalid_argument("unknown activation code " + std::to_string(activation) +
                                " " CONNECTOR_SIM_ACTIVATION_CODES);
  }
  if (N < 1 || R < 1 || D < 0 || P < 0) {
    throw std::invalid_argument("need N >= 1 neurons, rank R >= 1, D >= 0 inputs and P >= 0 points, got N = " +
                                std::to_string(N) + ", R = " + std::to_string(R) + ", D = " + std::to_string(D) +
                                ", P = " + std::to_string(P));
  }
}

// flow_field_reference: fills a.out (P, R). Results do not depend on n_threads.
template <typename T>
void flow_field(const FlowFieldArgs<T>& a, int n_threads = 1) {
  check_arguments(a.net.N, a.net.R, a.net.D, a.P, a.net.activation, n_threads);
  const std::int64_t n_point_blocks = (a.P + POINT_BLOCK - 1) / POINT_BLOCK;
#pragma omp parallel num_threads(n_threads)
  {
    Workspace<T> w(a.net.R, a.net.D);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t pb = 0; pb < n_point_blocks; ++pb) {
      const std::int64_t p0 = pb * POINT_BLOCK;
      point_block(a, p0, std::min(POINT_BLOCK, a.P - p0), w);
    }
  }
}

}  // namespace flow_field
}  // namespace connector_sim
