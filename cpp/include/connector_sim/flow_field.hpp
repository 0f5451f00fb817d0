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
// Cost. P * N evaluations of phi, each with C = R + D multiply-adds in T
// before it and R float64 multiply-adds after it. The loadings are read once
// per block of POINT_BLOCK points: for each point block the neurons are
// walked in chunks of CHUNK whose loadings (and n converted to float64 once
// per chunk) stay in L1 while the chunk is evaluated against every point of
// the block, in passes over L1 buffers (z in T, then phi(z) in float64, then
// the float64 accumulation). With AVX2 the SIMD tanh alone is about 40% of
// the time (benchmarks/compare_flow_field.py); the passes' loads and stores
// and the float64 sums take the rest.
//
// Determinism. For each point, each block of BLOCK_SIZE neurons is summed
// into LANES float64 partial sums per r (neuron i of the block into lane
// i % LANES), the lanes are added in order, and the block sums in block
// order. A point's result depends on its own kappa_p and v_p only, not on the
// point block it falls in nor on the thread that runs it: the parallel loop
// over point blocks gives bitwise identical results for any thread count.
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
#include "connector_sim/simd_math.hpp"

namespace connector_sim {
namespace flow_field {

// Neurons per reduction block.
constexpr std::int64_t BLOCK_SIZE = 4096;
// Neurons per L1-resident pass inside a block.
constexpr std::int64_t CHUNK = 256;
// Fixed float64 partial sums per block, point and r.
constexpr int LANES = 16;
// Points evaluated against one chunk of neurons while it sits in L1.
constexpr std::int64_t POINT_BLOCK = 16;
static_assert(BLOCK_SIZE % CHUNK == 0 && CHUNK % LANES == 0 && LANES % 4 == 0,
              "chunks must tile blocks, lanes must tile chunks, quads of lanes must tile lanes");

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
  std::vector<double> rate;     // (CHUNK,): phi(z) in float64
  std::vector<double> n64;      // (R, CHUNK): n of the chunk in float64
  std::vector<double> lanes;    // (POINT_BLOCK, R, LANES)
  std::vector<double> total;    // (POINT_BLOCK, R): sums over the blocks done so far

  Workspace(std::int64_t R, std::int64_t D)
      : coef(POINT_BLOCK * (D + R)), rows(D + R), z(CHUNK), rate(CHUNK), n64(R * CHUNK),
        lanes(POINT_BLOCK * R * LANES), total(POINT_BLOCK * R) {}
};

namespace detail {

// rate[:len] = float64(phi(b + coef @ rows)) over the chunk, where rows are
// the C = D + R loading rows [I_T; m_T] (row k at rows[k], already offset to
// the chunk) and coef = [v_p, kappa_p] in T. The terms are added in row
// order, b first; the last row is fused with phi (and, for C <= 2, all rows)
// so that a rank-R network with D inputs costs max(1, C - 1) passes over the
// chunk, not C + 2.
template <typename T, int activation>
CONNECTOR_SIM_ALWAYS_INLINE void rates_chunk(double* __restrict rate, T* __restrict z, const T* __restrict coef,
                                             const T* __restrict bias, const T* const* rows, std::int64_t C,
                                             std::int64_t len) {
  const T* __restrict last = rows[C - 1];
  const T c_last = coef[C - 1];
  if (C == 1) {
    // rate = phi(b + coef[0] * rows[0])
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      rate[j] = static_cast<double>(simd::activation<activation>(bias[j] + c_last * last[j]));
    }
    return;
  }
  if (C == 2) {
    // rate = phi((b + coef[0] * rows[0]) + coef[1] * rows[1])
    const T c_first = coef[0];
    const T* __restrict first = rows[0];
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      rate[j] = static_cast<double>(simd::activation<activation>((bias[j] + c_first * first[j]) + c_last * last[j]));
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
    rate[j] = static_cast<double>(simd::activation<activation>(z[j] + c_last * last[j]));
  }
}

// Four float64 lanes as one value: gcc and clang map it to a ymm register
// (two xmm registers in the baseline clone). The accumulation below is
// written with it because the vectoriser, left to itself, either chains all
// FMAs of a row through few registers (latency bound) or interleaves the
// rows with shuffles; named locals (not arrays) keep the accumulators in
// registers.
typedef double Double4 __attribute__((vector_size(32)));
static_assert(LANES == 16, "accumulate_chunk keeps LANES / 4 = 4 accumulators per row");

// double4 from 4 consecutive values (unaligned; by reference: returning a
// vector type by value would depend on the AVX calling convention).
CONNECTOR_SIM_ALWAYS_INLINE void load4(Double4& v, const double* p) { std::memcpy(&v, p, sizeof v); }

CONNECTOR_SIM_ALWAYS_INLINE void store4(double* p, const Double4& v) { std::memcpy(p, &v, sizeof v); }

// acc[q] += x[q] * row[4 q : 4 q + 4], q < 4
CONNECTOR_SIM_ALWAYS_INLINE void fma16(Double4& a0, Double4& a1, Double4& a2, Double4& a3, const Double4& x0,
                                       const Double4& x1, const Double4& x2, const Double4& x3,
                                       const double* __restrict row) {
  Double4 y0, y1, y2, y3;
  load4(y0, row);
  load4(y1, row + 4);
  load4(y2, row + 8);
  load4(y3, row + 12);
  a0 += x0 * y0;
  a1 += x1 * y1;
  a2 += x2 * y2;
  a3 += x3 * y3;
}

// lanes[r, j % LANES] += rate[j] * n64[r, j] for the chunk (float64; the
// chunk starts at a multiple of LANES from its block's start). Rows r are
// taken two at a time: 8 independent accumulators hide the FMA latency.
CONNECTOR_SIM_ALWAYS_INLINE void accumulate_chunk(double* __restrict lanes, const double* __restrict rate,
                                                  const double* __restrict n64, std::int64_t R, std::int64_t len) {
  const std::int64_t full = len - len % LANES;
  for (std::int64_t r = 0; r < R; r += 2) {
    const bool pair = r + 1 < R;
    double* lane0 = lanes + r * LANES;
    double* lane1 = lanes + (pair ? r + 1 : r) * LANES;
    const double* __restrict row0 = n64 + r * CHUNK;
    const double* __restrict row1 = n64 + (pair ? r + 1 : r) * CHUNK;
    Double4 a0, a1, a2, a3, b0, b1, b2, b3;
    load4(a0, lane0);
    load4(a1, lane0 + 4);
    load4(a2, lane0 + 8);
    load4(a3, lane0 + 12);
    load4(b0, lane1);
    load4(b1, lane1 + 4);
    load4(b2, lane1 + 8);
    load4(b3, lane1 + 12);
    for (std::int64_t j = 0; j < full; j += LANES) {
      Double4 x0, x1, x2, x3;
      load4(x0, rate + j);
      load4(x1, rate + j + 4);
      load4(x2, rate + j + 8);
      load4(x3, rate + j + 12);
      fma16(a0, a1, a2, a3, x0, x1, x2, x3, row0 + j);
      if (pair) fma16(b0, b1, b2, b3, x0, x1, x2, x3, row1 + j);
    }
    store4(lane0, a0);
    store4(lane0 + 4, a1);
    store4(lane0 + 8, a2);
    store4(lane0 + 12, a3);
    if (pair) {
      store4(lane1, b0);
      store4(lane1 + 4, b1);
      store4(lane1 + 8, b2);
      store4(lane1 + 12, b3);
    }
  }
  // the last len % LANES neurons of the chunk (end of the network only)
  for (std::int64_t r = 0; r < R; ++r) {
    for (std::int64_t j = full; j < len; ++j) {
      lanes[r * LANES + j % LANES] += rate[j] * n64[r * CHUNK + j];
    }
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
      // n64 = n_T[:, chunk].astype(float64), shared by the points of the block
      for (std::int64_t r = 0; r < R; ++r) {
        const T* __restrict row = a.net.n_T + r * N + c0;
        double* __restrict dst = w.n64.data() + r * CHUNK;
#pragma omp simd
        for (std::int64_t j = 0; j < len; ++j) dst[j] = static_cast<double>(row[j]);
      }
      for (std::int64_t p = 0; p < count; ++p) {
        // rate = phi(v[p] @ I_T[:, chunk] + kappa[p] @ m_T[:, chunk] + b[chunk])   (in T, stored as float64)
        rates_chunk<T, activation>(w.rate.data(), w.z.data(), w.coef.data() + p * C, a.net.b + c0, w.rows.data(), C,
                                   len);
        // lanes[p] += rate * n64
        accumulate_chunk(w.lanes.data() + p * R * LANES, w.rate.data(), w.n64.data(), R, len);
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

// One point block with runtime dispatch (AVX2+FMA clone where the CPU has
// it); one loop nest per activation.
CONNECTOR_SIM_TARGET_CLONES inline void point_block_f32(const FlowFieldArgs<float>& a, std::int64_t p0,
                                                        std::int64_t count, Workspace<float>& w) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::point_block<float, simd::tanh_code>(a, p0, count, w);
    case simd::relu_code:
      return detail::point_block<float, simd::relu_code>(a, p0, count, w);
    default:
      return detail::point_block<float, simd::identity_code>(a, p0, count, w);
  }
}

CONNECTOR_SIM_TARGET_CLONES inline void point_block_f64(const FlowFieldArgs<double>& a, std::int64_t p0,
                                                        std::int64_t count, Workspace<double>& w) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::point_block<double, simd::tanh_code>(a, p0, count, w);
    case simd::relu_code:
      return detail::point_block<double, simd::relu_code>(a, p0, count, w);
    default:
      return detail::point_block<double, simd::identity_code>(a, p0, count, w);
  }
}

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
  if (activation != simd::tanh_code && activation != simd::relu_code && activation != simd::identity_code) {
    throw std::invalid_argument("unknown activation code " + std::to_string(activation) +
                                " (0 tanh, 1 relu, 2 identity)");
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
