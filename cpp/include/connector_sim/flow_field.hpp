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
// Cost. P * N evaluations of phi. For tanh the kernel is bound by the
// throughput of the SIMD tanh, provided each load of the loadings serves many
// points: points are taken POINT_BLOCK at a time, and for each point block
// the neurons are walked in chunks of CHUNK whose loadings (and n converted
// to float64 once per chunk) stay in L1 while the chunk is evaluated against
// every point of the block. The neuron data is read once per point block.
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
constexpr std::int64_t POINT_BLOCK = 8;
static_assert(BLOCK_SIZE % CHUNK == 0 && CHUNK % LANES == 0 && LANES % 4 == 0,
              "chunks must tile blocks, lanes must tile chunks, quads of lanes must tile lanes");

// Loadings (neuron-contiguous), points and output of one call.
template <typename T>
struct FlowFieldArgs {
  const T* m_T;  // (R, N)
  const T* n_T;  // (R, N)
  const T* I_T;  // (D, N)
  const T* b;    // (N,)
  std::int64_t N, R, D;
  int activation;        // simd::Activation code
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
// order, b first; the last row is fused with phi so that a rank-R network
// with D inputs costs C passes over the chunk, not C + 2.
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
  for (std::int64_t j = 0; j < len; ++j) rate[j] = static_cast<double>(simd::activation<activation>(z[j] + c_last * last[j]));
}

// Four float64 lanes as one value: gcc and clang map it to a ymm register
// (two xmm registers in the baseline clone). The accumulation below is
// written with it because the vectoriser, left to itself, either chains all
// FMAs of a row through 4 registers (latency bound) or interleaves the rows
// with shuffles.
typedef double Double4 __attribute__((vector_size(32)));
constexpr int QUADS = LANES / 4;

// Unaligned loads and stores (by reference: returning a vector type by value
// would depend on the AVX calling convention).
CONNECTOR_SIM_ALWAYS_INLINE void load4(Double4& v, const double* p) { std::memcpy(&v, p, sizeof v); }

CONNECTOR_SIM_ALWAYS_INLINE void store4(double* p, const Double4& v) { std::memcpy(p, &v, sizeof v); }

// lanes[r, j % LANES] += rate[j] * n64[r, j] for the chunk (float64; the
// chunk starts at a multiple of LANES from its block's start). Rows r are
// taken two at a time: 2 x LANES / 4 independent accumulators hide the FMA
// latency.
CONNECTOR_SIM_ALWAYS_INLINE void accumulate_chunk(double* __restrict lanes, const double* __restrict rate,
                                                  const double* __restrict n64, std::int64_t R, std::int64_t len) {
  const std::int64_t full = len - len % LANES;
  std::int64_t r = 0;
  for (; r + 2 <= R; r += 2) {
    const double* __restrict row0 = n64 + r * CHUNK;
    const double* __restrict row1 = row0 + CHUNK;
    Double4 acc0[QUADS], acc1[QUADS];
    for (int q = 0; q < QUADS; ++q) {
      load4(acc0[q], lanes + r * LANES + 4 * q);
      load4(acc1[q], lanes + (r + 1) * LANES + 4 * q);
    }
    for (std::int64_t j = 0; j < full; j += LANES) {
      for (int q = 0; q < QUADS; ++q) {
        Double4 x, n0, n1;
        load4(x, rate + j + 4 * q);
        load4(n0, row0 + j + 4 * q);
        load4(n1, row1 + j + 4 * q);
        acc0[q] += x * n0;
        acc1[q] += x * n1;
      }
    }
    for (int q = 0; q < QUADS; ++q) {
      store4(lanes + r * LANES + 4 * q, acc0[q]);
      store4(lanes + (r + 1) * LANES + 4 * q, acc1[q]);
    }
  }
  if (r < R) {
    const double* __restrict row = n64 + r * CHUNK;
    Double4 acc[QUADS];
    for (int q = 0; q < QUADS; ++q) load4(acc[q], lanes + r * LANES + 4 * q);
    for (std::int64_t j = 0; j < full; j += LANES) {
      for (int q = 0; q < QUADS; ++q) {
        Double4 x, n;
        load4(x, rate + j + 4 * q);
        load4(n, row + j + 4 * q);
        acc[q] += x * n;
      }
    }
    for (int q = 0; q < QUADS; ++q) store4(lanes + r * LANES + 4 * q, acc[q]);
  }
  // the last len % LANES neurons of the chunk (end of the network only)
  for (r = 0; r < R; ++r) {
    for (std::int64_t j = full; j < len; ++j) lanes[r * LANES + j % LANES] += rate[j] * n64[r * CHUNK + j];
  }
}

// out[p0 : p0 + count] for count <= POINT_BLOCK points.
template <typename T, int activation>
CONNECTOR_SIM_ALWAYS_INLINE void point_block(const FlowFieldArgs<T>& a, std::int64_t p0, std::int64_t count,
                                             Workspace<T>& w) {
  const std::int64_t N = a.N, R = a.R, D = a.D, C = D + R;
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
      for (std::int64_t d = 0; d < D; ++d) w.rows[d] = a.I_T + d * N + c0;
      for (std::int64_t r = 0; r < R; ++r) w.rows[D + r] = a.m_T + r * N + c0;
      // n64 = n_T[:, chunk].astype(float64), shared by the points of the block
      for (std::int64_t r = 0; r < R; ++r) {
        const T* __restrict row = a.n_T + r * N + c0;
        double* __restrict dst = w.n64.data() + r * CHUNK;
#pragma omp simd
        for (std::int64_t j = 0; j < len; ++j) dst[j] = static_cast<double>(row[j]);
      }
      for (std::int64_t p = 0; p < count; ++p) {
        // rate = phi(v[p] @ I_T[:, chunk] + kappa[p] @ m_T[:, chunk] + b[chunk])   (in T, stored as float64)
        rates_chunk<T, activation>(w.rate.data(), w.z.data(), w.coef.data() + p * C, a.b + c0, w.rows.data(), C,
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
  switch (a.activation) {
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
  switch (a.activation) {
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
  check_arguments(a.N, a.R, a.D, a.P, a.activation, n_threads);
  const std::int64_t n_point_blocks = (a.P + POINT_BLOCK - 1) / POINT_BLOCK;
#pragma omp parallel num_threads(n_threads)
  {
    Workspace<T> w(a.R, a.D);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t pb = 0; pb < n_point_blocks; ++pb) {
      const std::int64_t p0 = pb * POINT_BLOCK;
      point_block(a, p0, std::min(POINT_BLOCK, a.P - p0), w);
    }
  }
}

}  // namespace flow_field
}  // namespace connector_sim
