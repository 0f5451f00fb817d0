// Dense low-rank RNN time loops: full state and latent path.
//
// Specification: the NumPy references full_path_reference and
// latent_path_reference in connector_sim/_kernels/simulate_dense.py. Per step:
//
//   full path (x of shape (B, N)):
//     krec  = n^T phi(x_t) / N                         float64 sums
//     kappa = (1 - alpha) kappa + alpha krec           float64
//     x     = x + alpha ((krec @ m + u_t @ I + b) - x) [+ noise_scale xi_t]
//   latent path (x never stored):
//     z     = kappa @ m + v_t @ I + b [+ decay_t xperp]
//     kappa = (1 - alpha) kappa + alpha n^T phi(z) / N
//
// Layout. Neurons are split into blocks of BLOCK_SIZE, and blocks into chunks
// of CHUNK neurons. A chunk is processed for all B trials before the next one:
// its loadings (and n in float64) stay in L1, so each read of m, n, I, b from
// memory serves B trials, and the short passes over a chunk (drive, update,
// rates, sums) run from L1. On the full path one sweep over the neurons per
// step both updates x_t -> x_{t+1} and sums n^T phi(x_{t+1}) for the next step
// (a pre-pass sums n^T phi(x_0)).
//
// Vectorisation. Every loop over neurons is a `#pragma omp simd` loop without
// branches (see simd::select) and, for whole chunks, with a constant trip
// count; the noise adds a table of counter increments instead of multiplying
// 64-bit integers (golden_steps), and a chunk is one pair block of the noise
// (counter_rng.hpp PairBlock): after two short passes that hash the 64 pairs
// and compute their radii, one loop over the pairs updates units j (cosine)
// and j + 64 (sine).
//
// Sums and determinism. Every block sums its neurons into LANES float64
// partial sums (neuron i of the block into lane i % LANES; each chunk's
// products are first summed per lane in T, at most CHUNK / LANES = 8 terms,
// see lane_sums.hpp), adds the lanes in order into one partial per (trial,
// r), and the partials are added in block order; the compiler's
// vectorisation choices and the number of threads change nothing.
//
// Dispatch. OpenMP outlines a parallel region into its own function before
// gcc makes target clones, so the clones (AVX-512, AVX2+FMA and baseline) are
// placed on the per-block functions that the parallel region calls, not on
// the time loops.
//
// Trial groups (the avx512 clone's float32 tanh latent path). With B >= 4,
// whole chunks go four trials at a time (latent_chunk_group) through a
// register-resident pass per trial and chunk (latent_chunk_trial_avx512):
// z, tanh(z) and the lane products never go to memory (the per-trial passes
// store z and the rates of every trial to L1 and read them back: with
// phi = identity alone that took as long per step as the tanh), and the
// chunk's 8 vectors go through each step together. The pass carries out each
// trial's operations in the per-trial order, so results are bit for bit
// those of the per-trial passes and of the other clones
// (tests/kernels/test_isa_clones.py); it is compiled into the avx512 clone
// only (CONNECTOR_SIM_MULTIVERSION_WIDE), leaving the AVX2 clone's code as it
// was (grouping there, with 16 vector registers, made it slower).
// Measured on an AMD EPYC (Zen 5, 3.4-3.7 GHz by a chain of dependent adds;
// R = 2, K = 3): 12.5-13.1 cycles per 16 neuron-trials from L1 with the rows
// 16 bytes past a cache line, as NumPy allocates them, and 11.9-12.0 with
// the rows on a cache line, as LowRankRNN stores them (_memory.aligned_empty;
// a 64-byte load spanning two lines halves the load rate), against 14 for the earlier pass that
// shared each 16 neurons' loads of m, I, b and n between four trials; at
// N = 1e6 and B = 8 about 10% less time per step. The arithmetic's floor is
// ~8.5 cycles: 15 multiplies or FMAs on the two FMA pipes, and the division,
// which holds one of them ~1 cycle (the additions, min and max run on the
// two other pipes). Since then two changes with the same operations (same
// bits) took ~10% off the pass from L1 (paired, 151 repetitions each, R = 2,
// K = 3, aligned rows: 8.8-10.3 against 9.7-11.8 cycles per 16 neuron-trials
// by an uncalibrated-frequency count, median ratio ~0.88): the lanes' float32
// -> float64 conversion as two 8-wide conversions (gcc 12 had made four
// 4-wide ones and shuffles of the vector extensions' convertvector; ~9%),
// and the tanh in two halves of 4 vectors (with all 8, xc, s, p and q fill the
// 32 registers: spills; ~2%).
//
// Float64 (the avx512 clone's float64 tanh latent path, every B): whole
// chunks go trial by trial through latent_chunk_trial_f64_avx512, the same
// kind of register-resident pass, with a hand-written 8-lane copy of
// simd::tanh_approx(double) (same operations, same bits; the other clones'
// loops are unchanged). Measured on the same Zen 5 at R = 2, K = 3, B = 1:
// 0.67 against 1.08 ns a neuron with the network in L2 (N = 8192), and at
// N = 1e6 1.20-1.22 against 1.38-1.53 ms a step: 48 MB read at 39-40 GB/s,
// the one-thread DRAM read rate of this machine (33-37 GB/s for NumPy's
// streaming reads in the same runs), so the step is now bound by memory.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "connector_sim/counter_rng.hpp"
#include "connector_sim/dense_network.hpp"
#include "connector_sim/lane_sums.hpp"
#include "connector_sim/simd_math.hpp"

#ifdef CONNECTOR_SIM_ISA_CLONES
#include <immintrin.h>
#endif

namespace connector_sim {

// Neurons per reduction block; equals connector_sim._kernels.simulate_dense.BLOCK_SIZE.
constexpr std::int64_t BLOCK_SIZE = 4096;
// Neurons per chunk: the L1-resident unit of work (128 measured faster than
// 64 or 256 on the full and latent paths at N = 1e6).
constexpr std::int64_t CHUNK = 128;
// Fixed float64 partial sums per block and (trial, r).
using lane_sums::LANES;
static_assert(BLOCK_SIZE % CHUNK == 0 && CHUNK % LANES == 0, "chunks must tile blocks, lanes must tile chunks");
static_assert(CHUNK == PAIR_BLOCK, "a chunk is one pair block of the noise (counter_rng.hpp)");

// Numerical outcome of a time loop (memory-safety problems throw instead).
enum class Status : int {
  ok = 0,
  non_finite = 1,  // kappa ended non-finite: the state blew up
};

// phi(x_i) is replaced by value[i] where mask[i], at clamp_start <= t < clamp_stop.
template <typename T>
struct Clamp {
  const std::uint8_t* mask;  // (N,), or nullptr: no clamping
  const T* value;            // (N,)
  std::int64_t start, stop;

  bool active(std::int64_t t) const { return mask != nullptr && start <= t && t < stop; }
};

template <typename T>
struct FullPathArgs {
  DenseNetwork<T> net;
  T* x;                            // (B, N): x_0, overwritten with x_T
  const T* u;                      // (u_rows, n_steps, D), u_rows = 1 (shared) or B
  std::int64_t u_rows;
  double alpha, noise_scale;
  std::uint64_t seed;              // noise of trial b: counter_rng trial trial_offset + b
  std::int64_t trial_offset;
  std::int64_t step_offset;        // noise of step t: counter_rng step step_offset + t (runs in chunks of steps)
  std::int64_t unit_offset = 0;    // noise of unit i: counter_rng unit unit_offset + i (a slice of a larger
                                   // network, a multiple of BLOCK_SIZE; see full_path_step)
  const std::int64_t* record_idx;  // (K,)
  std::int64_t K;
  double* kappa;                   // (B, R): kappa_0, overwritten with kappa_T
  double* kappa_out;               // (B, n_steps + 1, R)
  T* record_out;                   // (B, n_steps + 1, K)
  Clamp<T> clamp;
  std::int64_t B, n_steps;
};

template <typename T>
struct LatentPathArgs {
  DenseNetwork<T> net;
  const double* v;      // (v_rows, n_steps + 1, D), v_rows = 1 (shared) or B
  std::int64_t v_rows;
  const T* xperp;       // (B, N), or nullptr: none
  const double* decay;  // (n_steps + 1,), (1 - alpha)^t
  double alpha;
  double* kappa;        // (B, R): kappa_0, overwritten with kappa_T
  double* kappa_out;    // (B, n_steps + 1, R)
  Clamp<T> clamp;
  std::int64_t B, n_steps;
};

// The recorded units grouped by block, so that each block writes its own.
struct RecordPlan {
  std::vector<std::int64_t> order;        // record columns k by increasing record_idx[k]
  std::vector<std::int64_t> block_start;  // block blk records order[block_start[blk] : block_start[blk + 1]]
};

inline std::int64_t n_blocks_of(std::int64_t N) { return (N + BLOCK_SIZE - 1) / BLOCK_SIZE; }

inline RecordPlan plan_records(const std::int64_t* record_idx, std::int64_t K, std::int64_t N) {
  for (std::int64_t k = 0; k < K; ++k) {
    if (record_idx[k] < 0 || record_idx[k] >= N) {
      throw std::invalid_argument("record_idx holds " + std::to_string(record_idx[k]) +
                                  ", outside the neuron range [0, " + std::to_string(N) + ")");
    }
  }
  RecordPlan plan;
  plan.order.resize(K);
  std::iota(plan.order.begin(), plan.order.end(), std::int64_t{0});
  std::stable_sort(plan.order.begin(), plan.order.end(),
                   [record_idx](std::int64_t a, std::int64_t b) { return record_idx[a] < record_idx[b]; });
  const std::int64_t n_blocks = n_blocks_of(N);
  plan.block_start.resize(n_blocks + 1);
  for (std::int64_t blk = 0; blk <= n_blocks; ++blk) {
    plan.block_start[blk] =
        std::partition_point(plan.order.begin(), plan.order.end(),
                             [record_idx, blk](std::int64_t k) { return record_idx[k] < blk * BLOCK_SIZE; }) -
        plan.order.begin();
  }
  return plan;
}

inline void check_threads_and_activation(int n_threads, int activation) {
  if (n_threads < 1) {
    throw std::invalid_argument("n_threads must be at least 1, got " + std::to_string(n_threads));
  }
  if (!simd::is_activation_code(activation)) {
    throw std::invalid_argument("unknown activation code " + std::to_string(activation) +
                                " " CONNECTOR_SIM_ACTIVATION_CODES);
  }
}

// Per-thread work space of the block passes.
template <typename T>
class Scratch {
 public:
  Scratch(const DenseNetwork<T>& net, std::int64_t B)
      : storage_(B * net.R * LANES + 8), keys_(B), rows_(net.R + net.D), coef_(B * (net.R + net.D)) {
    // 64-byte aligned: whole numbers of cache lines.
    const std::uintptr_t address = reinterpret_cast<std::uintptr_t>(storage_.data());
    lanes = storage_.data() + ((64 - address % 64) % 64) / sizeof(double);
    keys = keys_.data();
    // rows = [m_T[0], ..., m_T[R - 1], I_T[0], ..., I_T[D - 1]]
    for (std::int64_t r = 0; r < net.R; ++r) rows_[r] = net.m_T + r * net.N;
    for (std::int64_t d = 0; d < net.D; ++d) rows_[net.R + d] = net.I_T + d * net.N;
    rows = rows_.data();
    coef = coef_.data();
  }
  Scratch(const Scratch&) = delete;  // the pointers point into this object
  Scratch& operator=(const Scratch&) = delete;
  double* lanes;        // (B, R, LANES): partial sums of the current block
  std::uint64_t* keys;  // (B,): noise keys of the current step
  const T* const* rows;  // (R + D,): the rows of m_T and I_T
  T* coef;              // (B, R + D): their coefficients in the current step

 private:
  std::vector<double> storage_;
  std::vector<std::uint64_t> keys_;
  std::vector<const T*> rows_;
  std::vector<T> coef_;
};

namespace detail {

// Asks for the cache lines of row[c0 + CHUNK : c0 + 2 CHUNK] (the next chunk
// of the block), to be written, while this chunk is computed.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void prefetch_next_chunk(const T* row, std::int64_t c0, std::int64_t hi) {
  constexpr std::int64_t per_line = 64 / sizeof(T);
  const std::int64_t stop = std::min(c0 + 2 * CHUNK, hi);
  for (std::int64_t i = c0 + CHUNK; i < stop; i += per_line) CONNECTOR_SIM_PREFETCH_FOR_WRITE(row + i);
}

// z[:len] (+)= sum over k < n of coef[k] * rows[k][c0 : c0 + len], the
// terms added in row order: one pass over z for n rows.
template <int n, bool add, typename T>
CONNECTOR_SIM_ALWAYS_INLINE void matvec_rows(T* __restrict z, const T* coef, const T* const* rows, std::int64_t c0,
                                             std::int64_t len) {
  const T* row[n];
  T c[n];
  for (int k = 0; k < n; ++k) {
    row[k] = rows[k] + c0;
    c[k] = coef[k];
  }
#pragma omp simd
  for (std::int64_t j = 0; j < len; ++j) {
    T s = add ? z[j] + c[0] * row[0][j] : c[0] * row[0][j];
    for (int k = 1; k < n; ++k) s += c[k] * row[k][j];
    z[j] = s;
  }
}

// z[:len] = (coef @ rows[:, c0 : c0 + len]) for the K rows (z = 0 if K = 0),
// the terms added in row order, up to four rows per pass over z.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void matvec_chunk(T* __restrict z, const T* coef, const T* const* rows, std::int64_t K,
                                              std::int64_t c0, std::int64_t len) {
  switch (K) {
    case 0:
      std::fill(z, z + len, T(0));
      return;
    case 1:
      return matvec_rows<1, false>(z, coef, rows, c0, len);
    case 2:
      return matvec_rows<2, false>(z, coef, rows, c0, len);
    case 3:
      return matvec_rows<3, false>(z, coef, rows, c0, len);
    default:
      matvec_rows<4, false>(z, coef, rows, c0, len);
  }
  std::int64_t k = 4;
  for (; k + 4 <= K; k += 4) matvec_rows<4, true>(z, coef + k, rows + k, c0, len);
  switch (K - k) {
    case 1:
      return matvec_rows<1, true>(z, coef + k, rows + k, c0, len);
    case 2:
      return matvec_rows<2, true>(z, coef + k, rows + k, c0, len);
    case 3:
      return matvec_rows<3, true>(z, coef + k, rows + k, c0, len);
    default:
      return;
  }
}

// rate = np.where(mask, value, rate)
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void clamp_chunk(T* __restrict rate, const std::uint8_t* __restrict mask,
                                             const T* __restrict value, std::int64_t len) {
#pragma omp simd
  for (std::int64_t j = 0; j < len; ++j) rate[j] = simd::select(mask[j] != 0, value[j], rate[j]);
}

// partial[r] = lanes[r].sum(), lanes added in order
CONNECTOR_SIM_ALWAYS_INLINE void sum_lanes(const double* lanes, std::int64_t R, double* partial) {
  for (std::int64_t r = 0; r < R; ++r) {
    double s = 0.0;
    for (int l = 0; l < LANES; ++l) s += lanes[r * LANES + l];
    partial[r] = s;
  }
}

// out = partial.sum(axis=0) / N for partial of shape (n_blocks, n), blocks added in order
inline void sum_blocks(const double* partial, std::int64_t n_blocks, std::int64_t n, std::int64_t N, double* out) {
  for (std::int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (std::int64_t blk = 0; blk < n_blocks; ++blk) s += partial[blk * n + i];
    out[i] = s / static_cast<double>(N);
  }
}

// One block of neurons for all trials, full path. With t >= 0: x_t -> x_{t+1}
// (krec of shape (B, R) is krec_t in T) and record x_{t+1}. With accumulate:
// partial[b, r] = sum over the block of n[r, i] phi(x[b, i]) (the rates of
// step t + 1, clamped by the window at t + 1). t = -1 is the pre-pass over x_0.
// Chunk by chunk, each chunk's loadings serve all B trials from L1.
template <typename T, int activation>
CONNECTOR_SIM_ALWAYS_INLINE void full_path_block(const FullPathArgs<T>& a, const RecordPlan& records,
                                                 std::int64_t block, std::int64_t t, const T* krec, bool accumulate,
                                                 Scratch<T>& scratch, double* partial) {
  const DenseNetwork<T>& net = a.net;
  const std::int64_t N = net.N, R = net.R, D = net.D, B = a.B;
  const std::int64_t lo = block * BLOCK_SIZE, hi = std::min(lo + BLOCK_SIZE, N);
  const bool update = t >= 0;
  const bool noisy = update && a.noise_scale != 0.0;
  const bool clamp_rates = a.clamp.active(t + 1);
  const T alpha = static_cast<T>(a.alpha);
  const T noise_scale = static_cast<T>(a.noise_scale);
  alignas(64) T drive[CHUNK];
  alignas(64) T rate[CHUNK];
  if (accumulate) std::fill(scratch.lanes, scratch.lanes + B * R * LANES, 0.0);
  const std::int64_t K = R + D;
  for (std::int64_t b = 0; b < B && update; ++b) {
    // coef[b] = [krec[b], u[b, t]]
    const T* u_bt = a.u + ((a.u_rows == 1 ? 0 : b) * a.n_steps + t) * D;
    std::copy(krec + b * R, krec + (b + 1) * R, scratch.coef + b * K);
    std::copy(u_bt, u_bt + D, scratch.coef + b * K + R);
    if (noisy) scratch.keys[b] = step_key(a.seed, a.trial_offset + b, a.step_offset + t);
  }
  // The passes over one chunk; whole chunks get a constant length (loops
  // without remainder handling), the last chunk of the last block its own.
  const auto chunk = [&](std::int64_t c0, auto len) CONNECTOR_SIM_LAMBDA_INLINE {
    for (std::int64_t b = 0; b < B; ++b) {
      T* __restrict xc = a.x + b * N + c0;
      // B interleaved streams of x are more than the hardware prefetcher follows
      if (B > 1) prefetch_next_chunk(a.x + b * N, c0, hi);
      if (update) {
        // drive = krec[b].astype(T) @ m_T + u[b, t] @ I_T (this chunk)
        matvec_chunk(drive, scratch.coef + b * K, scratch.rows, K, c0, len);
        const T* __restrict bias = net.b + c0;
        if (noisy) {
          // x += alpha * ((drive + b) - x); then
          // x += noise_scale * counter_rng.standard_normal(seed, trial_offset + b, t, N)[chunk]
          // The chunk is one pair block (c0 is a multiple of CHUNK = PAIR_BLOCK): pair j
          // gives unit c0 + j its cosine and unit c0 + 64 + j its sine.
          PairBlock<T> pairs;
          pairs.draw(block_counter(scratch.keys[b], a.unit_offset + c0));
          if constexpr (std::is_same_v<decltype(len), std::integral_constant<std::int64_t, CHUNK>>) {
#pragma omp simd
            for (std::int64_t j = 0; j < PAIR_HALF; ++j) {
              const T x0 = xc[j], x1 = xc[j + PAIR_HALF];
              const T updated0 = x0 + alpha * ((drive[j] + bias[j]) - x0);
              const T updated1 = x1 + alpha * ((drive[j + PAIR_HALF] + bias[j + PAIR_HALF]) - x1);
              xc[j] = updated0 + noise_scale * pairs.cosine(j);
              xc[j + PAIR_HALF] = updated1 + noise_scale * pairs.sine(j);
            }
          } else {
            // The network's last, partial chunk: the block's normals, then its units.
            alignas(64) T noise[CHUNK];
            pairs.normals(noise);
#pragma omp simd
            for (std::int64_t j = 0; j < len; ++j) {
              const T updated = xc[j] + alpha * ((drive[j] + bias[j]) - xc[j]);
              xc[j] = updated + noise_scale * noise[j];
            }
          }
        } else {
          // x += alpha * ((drive + b) - x)
#pragma omp simd
          for (std::int64_t j = 0; j < len; ++j) xc[j] += alpha * ((drive[j] + bias[j]) - xc[j]);
        }
      }
      if (accumulate) {
        // rate = phi(x); in the clamp window
        // rate = np.where(clamp_mask, clamp_value, rate)
#pragma omp simd
        for (std::int64_t j = 0; j < len; ++j) rate[j] = simd::activation<activation>(xc[j]);
        if (clamp_rates) clamp_chunk(rate, a.clamp.mask + c0, a.clamp.value + c0, len);
        // lanes[b] += rate * n (this chunk)
        lane_sums::accumulate_chunk(scratch.lanes + b * R * LANES, rate, net.n_T + c0, N, R, len);
      }
    }
  };
  for (std::int64_t c0 = lo; c0 < hi; c0 += CHUNK) {
    if (hi - c0 >= CHUNK) {
      chunk(c0, std::integral_constant<std::int64_t, CHUNK>{});
    } else {
      chunk(c0, hi - c0);
    }
  }
  for (std::int64_t b = 0; b < B; ++b) {
    if (accumulate) sum_lanes(scratch.lanes + b * R * LANES, R, partial + b * R);
    if (update) {
      // record_out[b, t + 1, k] = x[b, record_idx[k]] for the recorded units of this block
      const T* xb = a.x + b * N;
      T* record_row = a.record_out + (b * (a.n_steps + 1) + t + 1) * a.K;
      for (std::int64_t e = records.block_start[block]; e < records.block_start[block + 1]; ++e) {
        const std::int64_t k = records.order[e];
        record_row[k] = xb[a.record_idx[k]];
      }
    }
  }
}

#ifdef CONNECTOR_SIM_ISA_CLONES
// Trials per call of latent_chunk_group on the avx512 clone's float32 tanh
// latent path; B >= GROUP sends whole chunks there (see
// latent_chunk_group_avx512).
constexpr std::int64_t GROUP = 4;

// simd::tanh_approx of V vectors of 16 floats with AVX-512, each step for
// all V vectors before the next one (independent work side by side for the
// two FMA pipes, whose latency is 4 cycles): the same operations in the same
// order as simd::tanh_approx, so the same bits (clip, s = xc^2, the Horner
// steps as fused multiply-adds, xc P(s) rounded, then the division; checked
// for all 2^32 float inputs, NaN giving NaN). The clip as
// simd::clip_symmetric, by min(9, max(-9, x)): vmaxps and vminps return their
// second operand when it is NaN, and keep -0 and +0 apart, so NaN and signed
// zeros pass unchanged. (The masked forms, all lanes: gcc 12 warns about the
// unmasked ones.)
template <int V>
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE void tanh_approx_avx512(__m512* x) {
  const __mmask16 all = 0xffff;
  const __m512 upper = _mm512_set1_ps(simd::TANH_F32_CLAMP), lower = _mm512_set1_ps(-simd::TANH_F32_CLAMP);
  __m512 xc[V], s[V], p[V], q[V];
  for (int v = 0; v < V; ++v) {
    xc[v] = _mm512_mask_min_ps(upper, all, upper, _mm512_mask_max_ps(lower, all, lower, x[v]));
    s[v] = _mm512_mul_ps(xc[v], xc[v]);
    p[v] = _mm512_set1_ps(simd::TANH_F32_P[4]);
    q[v] = _mm512_set1_ps(simd::TANH_F32_Q[4]);
  }
  for (int k = 3; k >= 0; --k) {
    for (int v = 0; v < V; ++v) {
      p[v] = _mm512_fmadd_ps(p[v], s[v], _mm512_set1_ps(simd::TANH_F32_P[k]));
      q[v] = _mm512_fmadd_ps(q[v], s[v], _mm512_set1_ps(simd::TANH_F32_Q[k]));
    }
  }
  for (int v = 0; v < V; ++v) x[v] = _mm512_div_ps(_mm512_mul_ps(xc[v], p[v]), q[v]);
}

// One whole chunk (CHUNK neurons from c0) of the latent path for one trial,
// float32, phi = tanh, no clamp window, R <= 2 and 2 <= K = R + D <= 4: the
// chunk's 8 vectors of 16 neurons go through each step together (the 8 z,
// then the tanh of the 8, then the lane products), in registers. Every
// operation of the per-trial passes (matvec_chunk, the rate loop,
// lane_sums::accumulate_chunk) is carried out in the same order, so the
// lanes get the same bits as there:
//   z    = coef[0] m_0 + coef[1] m_1 + ... (matvec_rows: the first product
//          added into the second by a fused multiply-add, then one per row;
//          gcc's contraction of matvec_rows, which the clone tests check.
//          With K = 1, R = 1 and no inputs, the per-trial passes round z
//          otherwise: that shape is left to them)
//   rate = tanh((z + b) [+ decay xperp])
//   element e of the lane accumulators lo (e < 16) and hi sums the products
//   of neurons e and e + 16 (mod 32) of the chunk, as a quad of 32-byte
//   vectors does, and lanes[l] += float64((lo[l] + hi[l]) + 0).
// lanes: (R, LANES) float64 partials; coef: (K,); xperp: the trial's row at
// c0 (read only with with_xperp).
// A function of its own, not inlined into a loop over trials: measured on
// Zen 5, that loop (its constants then held across trials, spilling) and
// every variant sharing the loads of m, I, b and n between trials in
// registers (two to four trials, 16 neurons or whole chunks at a time) ran
// 10-30% slower than this.
template <int R, int K, bool with_xperp>
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) void latent_chunk_trial_avx512(
    double* __restrict lanes, const float* coef, const float* const* rows, const float* __restrict bias,
    const float* __restrict n_T, std::int64_t N, const float* __restrict xperp, float decay, std::int64_t c0) {
  static_assert(CHUNK % 32 == 0 && LANES == 16, "a chunk is whole 32-neuron lane groups of 16 lanes");
  constexpr int W = 16;
  constexpr int V = CHUNK / W;
  __m512 c[K];
  for (int k = 0; k < K; ++k) c[k] = _mm512_set1_ps(coef[k]);
  __m512 z[V];
  for (int v = 0; v < V; ++v) {
    const std::int64_t j = c0 + v * W;
    z[v] = _mm512_fmadd_ps(c[0], _mm512_loadu_ps(rows[0] + j), _mm512_mul_ps(c[1], _mm512_loadu_ps(rows[1] + j)));
  }
  for (int k = 2; k < K; ++k) {
    for (int v = 0; v < V; ++v) z[v] = _mm512_fmadd_ps(c[k], _mm512_loadu_ps(rows[k] + c0 + v * W), z[v]);
  }
  for (int v = 0; v < V; ++v) z[v] = _mm512_add_ps(z[v], _mm512_loadu_ps(bias + c0 + v * W));
  if constexpr (with_xperp) {
    const __m512 decay_x16 = _mm512_set1_ps(decay);
    for (int v = 0; v < V; ++v) z[v] = _mm512_fmadd_ps(decay_x16, _mm512_loadu_ps(xperp + v * W), z[v]);
  }
  // z holds the rates from here on. Two halves of V / 2 vectors: with all V
  // at once, xc, s, p and q of the 8 vectors fill the 32 registers (gcc 12
  // spilled two); measured ~2% faster per call.
  tanh_approx_avx512<V / 2>(z);
  tanh_approx_avx512<V / 2>(z + V / 2);
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int v = 0; v < V; ++v) {
    for (int r = 0; r < R; ++r) {
      acc[r][v % 2] = _mm512_fmadd_ps(z[v], _mm512_loadu_ps(n_T + r * N + c0 + v * W), acc[r][v % 2]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_setzero_ps());
    double* lane = lanes + r * LANES;
    // lane[:8] += float64(sum[:8]); lane[8:] += float64(sum[8:]), one
    // 8-float -> 8-double conversion per half (gcc 12 compiled the vector
    // extensions' __builtin_convertvector into four 4-wide conversions and
    // the shuffles joining them: ~9% of the call). The zero-masked forms,
    // all lanes: gcc 12 warns about the unmasked ones.
    const __mmask8 all8 = 0xff;
    const __m512d low = _mm512_maskz_cvtps_pd(all8, _mm512_maskz_extractf32x8_ps(all8, sum, 0));
    const __m512d high = _mm512_maskz_cvtps_pd(all8, _mm512_maskz_extractf32x8_ps(all8, sum, 1));
    _mm512_storeu_pd(lane, _mm512_add_pd(_mm512_loadu_pd(lane), low));
    _mm512_storeu_pd(lane + 8, _mm512_add_pd(_mm512_loadu_pd(lane + 8), high));
  }
}

// latent_chunk_trial_avx512 for GROUP trials. lanes: (GROUP, R, LANES);
// coef: (GROUP, K); xperp: the first trial's row at c0 (trial g at
// xperp + g N), or nullptr.
template <int R, int K>
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE void latent_chunk_group_avx512(
    double* __restrict lanes, const float* coef, const float* const* rows, const float* __restrict bias,
    const float* __restrict n_T, std::int64_t N, const float* __restrict xperp, float decay, std::int64_t c0) {
  for (int g = 0; g < GROUP; ++g) {
    if (xperp != nullptr) {
      latent_chunk_trial_avx512<R, K, true>(lanes + g * R * LANES, coef + g * K, rows, bias, n_T, N, xperp + g * N,
                                            decay, c0);
    } else {
      latent_chunk_trial_avx512<R, K, false>(lanes + g * R * LANES, coef + g * K, rows, bias, n_T, N, nullptr, decay,
                                             c0);
    }
  }
}

// simd::tanh_approx(double) of V vectors of 8 doubles with AVX-512, each
// step for all V vectors before the next one: the same operations in the same
// order as that function (as gcc contracts it in the other clones), so the
// same bits:
//   y = min(708, 2 |x|)  (clip_symmetric of a y >= 0: vminpd returns its
//       second operand, y, when y is NaN)
//   shifted = y log2(e) + 1.5 2^52 (fused), n = shifted - 1.5 2^52
//   r = (y - n LN2_HI) - n LN2_LO (two fused negated multiply-adds)
//   2^n from the bits of shifted; e = horner(EXP_TAYLOR, r) 2^n (12 fused steps)
//   tanh = copysign(1 - 2 / (e + 1), x)
template <int V>
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE void tanh_approx_avx512(__m512d* x) {
  const __mmask8 all = 0xff;  // the masked forms, all lanes: gcc 12 warns about the unmasked ones
  const __m512d sign_bit = _mm512_set1_pd(-0.0);
  const __m512d limit = _mm512_set1_pd(708.0), two = _mm512_set1_pd(2.0), one = _mm512_set1_pd(1.0);
  const __m512d shift = _mm512_set1_pd(simd::ROUND_SHIFT_F64);
  const __m512i shift_bits = _mm512_castpd_si512(shift), bias = _mm512_set1_epi64(1023);
  __m512d y[V], r[V], p[V];
  for (int v = 0; v < V; ++v) {
    y[v] = _mm512_mask_min_pd(limit, all, limit, _mm512_mul_pd(two, _mm512_andnot_pd(sign_bit, x[v])));
    const __m512d shifted = _mm512_fmadd_pd(y[v], _mm512_set1_pd(simd::LOG2E), shift);
    const __m512d n = _mm512_sub_pd(shifted, shift);
    r[v] = _mm512_fnmadd_pd(n, _mm512_set1_pd(simd::LN2_HI), y[v]);
    r[v] = _mm512_fnmadd_pd(n, _mm512_set1_pd(simd::LN2_LO), r[v]);
    // y holds 2^n from here on
    const __m512i n_bits = _mm512_sub_epi64(_mm512_castpd_si512(shifted), shift_bits);
    y[v] = _mm512_castsi512_pd(_mm512_maskz_slli_epi64(all, _mm512_add_epi64(n_bits, bias), 52));
    p[v] = _mm512_set1_pd(simd::EXP_TAYLOR[12]);
  }
  for (int k = 11; k >= 0; --k) {
    for (int v = 0; v < V; ++v) p[v] = _mm512_fmadd_pd(p[v], r[v], _mm512_set1_pd(simd::EXP_TAYLOR[k]));
  }
  for (int v = 0; v < V; ++v) {
    const __m512d e = _mm512_mul_pd(p[v], y[v]);
    const __m512d magnitude = _mm512_sub_pd(one, _mm512_div_pd(two, _mm512_add_pd(e, one)));
    // copysign: bit by bit, sign_bit ? x : magnitude (vpternlogq truth table 0xca)
    x[v] = _mm512_castsi512_pd(_mm512_ternarylogic_epi64(_mm512_castpd_si512(sign_bit), _mm512_castpd_si512(x[v]),
                                                         _mm512_castpd_si512(magnitude), 0xca));
  }
}

// The float64 counterpart of latent_chunk_trial_avx512: one whole chunk of
// the latent path for one trial, phi = tanh, no clamp window, R <= 2 and
// 2 <= K <= 4, in registers: the chunk's 16 vectors of 8 neurons in four
// parts of 4 (z, tanh, then the products with n). The operations of the
// per-trial passes in their order, so the lanes get the same bits:
//   z and the rate as in latent_chunk_trial_avx512, in double;
//   lane l < 8 sums the products of vectors 0, 2, .., 14 and lane l >= 8
//   those of vectors 1, 3, .., 15 (neurons j = l mod 16), in order, from 0,
//   by fused multiply-adds, as the quads of lane_sums::accumulate_chunk do;
//   then lanes[l] += (that sum + 0).
// Used for every B (B = 1 included): in float64 the per-trial passes (z and
// the rates stored to L1 and read back, the tanh a loop of its own) took
// about 0.4 ns a neuron besides the tanh.
template <int R, int K, bool with_xperp>
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) void latent_chunk_trial_f64_avx512(
    double* __restrict lanes, const double* coef, const double* const* rows, const double* __restrict bias,
    const double* __restrict n_T, std::int64_t N, const double* __restrict xperp, double decay, std::int64_t c0) {
  static_assert(CHUNK % 16 == 0 && LANES == 16, "a chunk is whole 16-neuron lane groups of 16 lanes");
  constexpr int W = 8;
  constexpr int V = CHUNK / W;
  constexpr int PART = 4;
  __m512d c[K];
  for (int k = 0; k < K; ++k) c[k] = _mm512_set1_pd(coef[k]);
  __m512d acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_pd();
  for (int v0 = 0; v0 < V; v0 += PART) {
    __m512d z[PART];
    for (int v = 0; v < PART; ++v) {
      const std::int64_t j = c0 + (v0 + v) * W;
      z[v] = _mm512_fmadd_pd(c[0], _mm512_loadu_pd(rows[0] + j), _mm512_mul_pd(c[1], _mm512_loadu_pd(rows[1] + j)));
    }
    for (int k = 2; k < K; ++k) {
      for (int v = 0; v < PART; ++v) {
        z[v] = _mm512_fmadd_pd(c[k], _mm512_loadu_pd(rows[k] + c0 + (v0 + v) * W), z[v]);
      }
    }
    for (int v = 0; v < PART; ++v) z[v] = _mm512_add_pd(z[v], _mm512_loadu_pd(bias + c0 + (v0 + v) * W));
    if constexpr (with_xperp) {
      const __m512d decay_x8 = _mm512_set1_pd(decay);
      for (int v = 0; v < PART; ++v) z[v] = _mm512_fmadd_pd(decay_x8, _mm512_loadu_pd(xperp + (v0 + v) * W), z[v]);
    }
    tanh_approx_avx512<PART>(z);
    for (int v = 0; v < PART; ++v) {
      for (int r = 0; r < R; ++r) {
        acc[r][(v0 + v) % 2] =
            _mm512_fmadd_pd(z[v], _mm512_loadu_pd(n_T + r * N + c0 + (v0 + v) * W), acc[r][(v0 + v) % 2]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    double* lane = lanes + r * LANES;
    for (int h = 0; h < 2; ++h) {
      const __m512d sum = _mm512_add_pd(acc[r][h], _mm512_setzero_pd());
      _mm512_storeu_pd(lane + 8 * h, _mm512_add_pd(_mm512_loadu_pd(lane + 8 * h), sum));
    }
  }
}

// The (R, K) shapes the register-resident latent passes take, float32 and
// float64 alike: CASE(R, K) for each (R <= 2, 2 <= K = R + D <= 4).
#define CONNECTOR_SIM_REGISTER_PASS_SHAPES(CASE) CASE(1, 2) CASE(1, 3) CASE(2, 2) CASE(2, 3) CASE(2, 4)

// latent_chunk_trial_f64_avx512 for the R and K of the network; false
// (nothing done) for a shape it does not cover. A function of its own, for
// the same reason as latent_chunk_group.
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline bool latent_chunk_trial_f64(
    std::int64_t R, std::int64_t K, double* lanes, const double* coef, const double* const* rows, const double* bias,
    const double* n_T, std::int64_t N, const double* xperp, double decay, std::int64_t c0) {
#define CONNECTOR_SIM_TRIAL_CASE(r, k)                                                               \
  case r * 8 + k:                                                                                    \
    if (xperp != nullptr) {                                                                          \
      latent_chunk_trial_f64_avx512<r, k, true>(lanes, coef, rows, bias, n_T, N, xperp, decay, c0);  \
    } else {                                                                                         \
      latent_chunk_trial_f64_avx512<r, k, false>(lanes, coef, rows, bias, n_T, N, nullptr, decay, c0); \
    }                                                                                                \
    return true;
  switch (R * 8 + K) {
    CONNECTOR_SIM_REGISTER_PASS_SHAPES(CONNECTOR_SIM_TRIAL_CASE)
    default:
      return false;
  }
#undef CONNECTOR_SIM_TRIAL_CASE
}

// latent_chunk_group_avx512 for the R and K of the network; false (nothing
// done) for a shape it does not cover. A function of its own (called once per
// chunk and group): the lambdas of latent_path_block have no target
// attribute, so they cannot inline AVX-512 code.
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline bool latent_chunk_group(
    std::int64_t R, std::int64_t K, double* lanes, const float* coef, const float* const* rows, const float* bias,
    const float* n_T, std::int64_t N, const float* xperp, float decay, std::int64_t c0) {
#define CONNECTOR_SIM_GROUP_CASE(r, k)                                                                 \
  case r * 8 + k:                                                                                      \
    latent_chunk_group_avx512<r, k>(lanes, coef, rows, bias, n_T, N, xperp, decay, c0);                \
    return true;
  switch (R * 8 + K) {
    CONNECTOR_SIM_REGISTER_PASS_SHAPES(CONNECTOR_SIM_GROUP_CASE)
    default:
      return false;
  }
#undef CONNECTOR_SIM_GROUP_CASE
}
#undef CONNECTOR_SIM_REGISTER_PASS_SHAPES
#endif

// One block of neurons for all trials, latent path at step t:
// partial[b, r] = sum over the block of n[r, i] phi(z[b, i]), with kappa (B, R)
// and v (B, D) of step t in T. Chunk by chunk, as full_path_block.
//
// With `wide` (the avx512 clone only), float32 and phi = tanh, whole chunks go
// GROUP trials at a time through latent_chunk_group_avx512 (same bits).
template <typename T, int activation, bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void latent_path_block(const LatentPathArgs<T>& a, std::int64_t block, std::int64_t t,
                                                   const T* kappa, const T* v, T decay, Scratch<T>& scratch,
                                                   double* partial) {
  const DenseNetwork<T>& net = a.net;
  const std::int64_t N = net.N, R = net.R, D = net.D, B = a.B;
  const std::int64_t lo = block * BLOCK_SIZE, hi = std::min(lo + BLOCK_SIZE, N);
  const bool clamp_rates = a.clamp.active(t);
  alignas(64) T z[CHUNK];
  alignas(64) T rate[CHUNK];
  const std::int64_t K = R + D;
  std::fill(scratch.lanes, scratch.lanes + B * R * LANES, 0.0);
  for (std::int64_t b = 0; b < B; ++b) {
    // coef[b] = [kappa[b], v[b]]
    std::copy(kappa + b * R, kappa + (b + 1) * R, scratch.coef + b * K);
    std::copy(v + b * D, v + (b + 1) * D, scratch.coef + b * K + R);
  }
  // The passes over one chunk; whole chunks get a constant length (loops
  // without remainder handling), the last chunk of the last block its own.
  const auto chunk = [&](std::int64_t c0, auto len) CONNECTOR_SIM_LAMBDA_INLINE {
    const T* __restrict bias = net.b + c0;
    std::int64_t b = 0;
#ifdef CONNECTOR_SIM_ISA_CLONES
    if constexpr (wide && std::is_same_v<T, double> && activation == simd::tanh_code &&
                  std::is_same_v<decltype(len), std::integral_constant<std::int64_t, CHUNK>>) {
      if (!clamp_rates) {
        for (; b < B; ++b) {
          const double* xperp = a.xperp != nullptr ? a.xperp + b * N + c0 : nullptr;
          if (!latent_chunk_trial_f64(R, K, scratch.lanes + b * R * LANES, scratch.coef + b * K, scratch.rows,
                                      net.b, net.n_T, N, xperp, decay, c0)) {
            break;
          }
        }
      }
    }
    if constexpr (wide && std::is_same_v<T, float> && activation == simd::tanh_code &&
                  std::is_same_v<decltype(len), std::integral_constant<std::int64_t, CHUNK>>) {
      if (!clamp_rates && B >= GROUP) {
        for (; b + GROUP <= B; b += GROUP) {
          const float* xperp = a.xperp != nullptr ? a.xperp + b * N + c0 : nullptr;
          if (!latent_chunk_group(R, K, scratch.lanes + b * R * LANES, scratch.coef + b * K, scratch.rows,
                                      net.b, net.n_T, N, xperp, decay, c0)) {
            break;
          }
        }
      }
    }
#endif
    for (; b < B; ++b) {
      // z = kappa[b].astype(T) @ m_T + v[b, t].astype(T) @ I_T (this chunk)
      matvec_chunk(z, scratch.coef + b * K, scratch.rows, K, c0, len);
      if (a.xperp != nullptr) {
        // rate = phi((z + b) + decay[t] * xperp[b])
        const T* __restrict xperp = a.xperp + b * N + c0;
#pragma omp simd
        for (std::int64_t j = 0; j < len; ++j) {
          rate[j] = simd::activation<activation>((z[j] + bias[j]) + decay * xperp[j]);
        }
      } else {
        // rate = phi(z + b)
#pragma omp simd
        for (std::int64_t j = 0; j < len; ++j) {
          rate[j] = simd::activation<activation>(z[j] + bias[j]);
        }
      }
      // in the clamp window rate = np.where(clamp_mask, clamp_value, rate)
      if (clamp_rates) clamp_chunk(rate, a.clamp.mask + c0, a.clamp.value + c0, len);
      // lanes[b] += rate * n (this chunk)
      lane_sums::accumulate_chunk(scratch.lanes + b * R * LANES, rate, net.n_T + c0, N, R, len);
    }
  };
  for (std::int64_t c0 = lo; c0 < hi; c0 += CHUNK) {
    if (hi - c0 >= CHUNK) {
      chunk(c0, std::integral_constant<std::int64_t, CHUNK>{});
    } else {
      chunk(c0, hi - c0);
    }
  }
  for (std::int64_t b = 0; b < B; ++b) sum_lanes(scratch.lanes + b * R * LANES, R, partial + b * R);
}

}  // namespace detail

// The per-block passes with runtime dispatch (AVX-512 / AVX2+FMA clone where the CPU
// has it); each instantiates one loop nest per activation.
CONNECTOR_SIM_ALWAYS_INLINE void full_path_block_f32_body(const FullPathArgs<float>& a, const RecordPlan& records,
                                                            std::int64_t block, std::int64_t t, const float* krec,
                                                            bool accumulate, Scratch<float>& scratch, double* partial) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::full_path_block<float, simd::tanh_code>(a, records, block, t, krec, accumulate, scratch, partial);
    case simd::relu_code:
      return detail::full_path_block<float, simd::relu_code>(a, records, block, t, krec, accumulate, scratch, partial);
    case simd::softplus_code:
      return detail::full_path_block<float, simd::softplus_code>(a, records, block, t, krec, accumulate, scratch, partial);
    case simd::sigmoid_code:
      return detail::full_path_block<float, simd::sigmoid_code>(a, records, block, t, krec, accumulate, scratch, partial);
    default:
      return detail::full_path_block<float, simd::identity_code>(a, records, block, t, krec, accumulate, scratch,
                                                                 partial);
  }
}
CONNECTOR_SIM_MULTIVERSION(void, full_path_block_f32,
                           (const FullPathArgs<float>& a, const RecordPlan& records, std::int64_t block,
                            std::int64_t t, const float* krec, bool accumulate, Scratch<float>& scratch,
                            double* partial),
                           (a, records, block, t, krec, accumulate, scratch, partial))

CONNECTOR_SIM_ALWAYS_INLINE void full_path_block_f64_body(const FullPathArgs<double>& a, const RecordPlan& records,
                                                            std::int64_t block, std::int64_t t, const double* krec,
                                                            bool accumulate, Scratch<double>& scratch, double* partial) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::full_path_block<double, simd::tanh_code>(a, records, block, t, krec, accumulate, scratch, partial);
    case simd::relu_code:
      return detail::full_path_block<double, simd::relu_code>(a, records, block, t, krec, accumulate, scratch, partial);
    case simd::softplus_code:
      return detail::full_path_block<double, simd::softplus_code>(a, records, block, t, krec, accumulate, scratch, partial);
    case simd::sigmoid_code:
      return detail::full_path_block<double, simd::sigmoid_code>(a, records, block, t, krec, accumulate, scratch, partial);
    default:
      return detail::full_path_block<double, simd::identity_code>(a, records, block, t, krec, accumulate, scratch,
                                                                  partial);
  }
}
CONNECTOR_SIM_MULTIVERSION(void, full_path_block_f64,
                           (const FullPathArgs<double>& a, const RecordPlan& records, std::int64_t block,
                            std::int64_t t, const double* krec, bool accumulate, Scratch<double>& scratch,
                            double* partial),
                           (a, records, block, t, krec, accumulate, scratch, partial))

template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void latent_path_block_f32_body(const LatentPathArgs<float>& a, std::int64_t block,
                                                              std::int64_t t, const float* kappa, const float* v,
                                                              float decay, Scratch<float>& scratch, double* partial) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::latent_path_block<float, simd::tanh_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    case simd::relu_code:
      return detail::latent_path_block<float, simd::relu_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    case simd::softplus_code:
      return detail::latent_path_block<float, simd::softplus_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    case simd::sigmoid_code:
      return detail::latent_path_block<float, simd::sigmoid_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    default:
      return detail::latent_path_block<float, simd::identity_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
  }
}
CONNECTOR_SIM_MULTIVERSION_WIDE(void, latent_path_block_f32,
                           (const LatentPathArgs<float>& a, std::int64_t block, std::int64_t t, const float* kappa,
                            const float* v, float decay, Scratch<float>& scratch, double* partial),
                           (a, block, t, kappa, v, decay, scratch, partial))

template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void latent_path_block_f64_body(const LatentPathArgs<double>& a, std::int64_t block,
                                                              std::int64_t t, const double* kappa, const double* v,
                                                              double decay, Scratch<double>& scratch, double* partial) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::latent_path_block<double, simd::tanh_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    case simd::relu_code:
      return detail::latent_path_block<double, simd::relu_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    case simd::softplus_code:
      return detail::latent_path_block<double, simd::softplus_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    case simd::sigmoid_code:
      return detail::latent_path_block<double, simd::sigmoid_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
    default:
      return detail::latent_path_block<double, simd::identity_code, wide>(a, block, t, kappa, v, decay, scratch, partial);
  }
}
CONNECTOR_SIM_MULTIVERSION_WIDE(void, latent_path_block_f64,
                           (const LatentPathArgs<double>& a, std::int64_t block, std::int64_t t, const double* kappa,
                            const double* v, double decay, Scratch<double>& scratch, double* partial),
                           (a, block, t, kappa, v, decay, scratch, partial))

inline void full_path_block(const FullPathArgs<float>& a, const RecordPlan& records, std::int64_t block,
                            std::int64_t t, const float* krec, bool accumulate, Scratch<float>& scratch, double* partial) {
  full_path_block_f32(a, records, block, t, krec, accumulate, scratch, partial);
}

inline void full_path_block(const FullPathArgs<double>& a, const RecordPlan& records, std::int64_t block,
                            std::int64_t t, const double* krec, bool accumulate, Scratch<double>& scratch, double* partial) {
  full_path_block_f64(a, records, block, t, krec, accumulate, scratch, partial);
}

inline void latent_path_block(const LatentPathArgs<float>& a, std::int64_t block, std::int64_t t, const float* kappa,
                              const float* v, float decay, Scratch<float>& scratch, double* partial) {
  latent_path_block_f32(a, block, t, kappa, v, decay, scratch, partial);
}

inline void latent_path_block(const LatentPathArgs<double>& a, std::int64_t block, std::int64_t t,
                              const double* kappa, const double* v, double decay, Scratch<double>& scratch, double* partial) {
  latent_path_block_f64(a, block, t, kappa, v, decay, scratch, partial);
}

// kappa_out[:, 0] as a (B, R) array.
inline std::vector<double> initial_kappa(const double* kappa_out, std::int64_t B, std::int64_t R, std::int64_t n_times) {
  std::vector<double> kappa(B * R);
  for (std::int64_t b = 0; b < B; ++b) {
    std::copy(kappa_out + b * n_times * R, kappa_out + (b * n_times + 1) * R, kappa.begin() + b * R);
  }
  return kappa;
}

inline bool all_finite(const double* values, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return false;
  }
  return true;
}

// full_path_reference: runs a.n_steps Euler steps of the B trials; updates
// a.x and a.kappa in place and fills a.kappa_out and a.record_out. Results do
// not depend on n_threads.
template <typename T>
Status full_path(const FullPathArgs<T>& a, int n_threads) {
  check_threads_and_activation(n_threads, a.net.activation);
  const RecordPlan records = plan_records(a.record_idx, a.K, a.net.N);
  const std::int64_t N = a.net.N, R = a.net.R, B = a.B, BR = B * R;
  const std::int64_t n_blocks = n_blocks_of(N);
  const std::int64_t n_times = a.n_steps + 1;
  // kappa_out[:, 0] = kappa; record_out[:, 0] = x[:, record_idx]
  for (std::int64_t b = 0; b < B; ++b) {
    std::copy(a.kappa + b * R, a.kappa + (b + 1) * R, a.kappa_out + b * n_times * R);
    for (std::int64_t k = 0; k < a.K; ++k) a.record_out[b * n_times * a.K + k] = a.x[b * N + a.record_idx[k]];
  }
  // Block partial sums of step t in partial[t % 2]: the blocks of step t + 1
  // write the other half while slower threads still read this one, so one
  // barrier per step suffices.
  std::vector<double> partial(2 * n_blocks * BR);
#pragma omp parallel num_threads(n_threads)
  {
    // Every thread computes kappa and krec from the same partials in the same
    // order (a few B * R numbers), so they need no broadcast. kappa_0 is read
    // from kappa_out: a.kappa is written only at the end.
    std::vector<double> kappa = initial_kappa(a.kappa_out, B, R, n_times);
    std::vector<double> krec(BR);
    std::vector<T> krec_T(BR);
    Scratch<T> scratch(a.net, B);
    // partial[0] = block sums of n^T phi(x_0)
#pragma omp for schedule(static)
    for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
      full_path_block(a, records, blk, -1, krec_T.data(), true, scratch, partial.data() + blk * BR);
    }
    for (std::int64_t t = 0; t < a.n_steps; ++t) {
      const double* sums = partial.data() + (t % 2) * n_blocks * BR;
      double* next = partial.data() + ((t + 1) % 2) * n_blocks * BR;
      // krec = n^T phi(x_t) / N; kappa = (1 - alpha) kappa + alpha krec
      detail::sum_blocks(sums, n_blocks, BR, N, krec.data());
      for (std::int64_t i = 0; i < BR; ++i) {
        kappa[i] = (1.0 - a.alpha) * kappa[i] + a.alpha * krec[i];
        krec_T[i] = static_cast<T>(krec[i]);
      }
#pragma omp master
      for (std::int64_t b = 0; b < B; ++b) {
        std::copy(kappa.begin() + b * R, kappa.begin() + (b + 1) * R, a.kappa_out + (b * n_times + t + 1) * R);
      }
      // x_t -> x_{t+1}, and the block sums of n^T phi(x_{t+1}) unless t is the last step
#pragma omp for schedule(static)
      for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
        full_path_block(a, records, blk, t, krec_T.data(), t + 1 < a.n_steps, scratch, next + blk * BR);
      }
    }
#pragma omp master
    std::copy(kappa.begin(), kappa.end(), a.kappa);
  }
  return all_finite(a.kappa, BR) ? Status::ok : Status::non_finite;
}

// latent_path_reference: runs a.n_steps steps of kappa for the B trials;
// updates a.kappa in place and fills a.kappa_out. Results do not depend on
// n_threads.
template <typename T>
Status latent_path(const LatentPathArgs<T>& a, int n_threads) {
  check_threads_and_activation(n_threads, a.net.activation);
  const std::int64_t N = a.net.N, R = a.net.R, D = a.net.D, B = a.B, BR = B * R;
  const std::int64_t n_blocks = n_blocks_of(N);
  const std::int64_t n_times = a.n_steps + 1;
  // kappa_out[:, 0] = kappa
  for (std::int64_t b = 0; b < B; ++b) {
    std::copy(a.kappa + b * R, a.kappa + (b + 1) * R, a.kappa_out + b * n_times * R);
  }
  // Double-buffered block sums, as in full_path: one barrier per step.
  std::vector<double> partial(2 * n_blocks * BR);
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> kappa = initial_kappa(a.kappa_out, B, R, n_times);
    std::vector<double> krec(BR);
    std::vector<T> kappa_T(BR);
    std::vector<T> v_T(B * D);
    Scratch<T> scratch(a.net, B);
    for (std::int64_t t = 0; t < a.n_steps; ++t) {
      // kappa.astype(T), v[:, t].astype(T), decay[t] in T
      for (std::int64_t i = 0; i < BR; ++i) kappa_T[i] = static_cast<T>(kappa[i]);
      for (std::int64_t b = 0; b < B; ++b) {
        const double* v_bt = a.v + ((a.v_rows == 1 ? 0 : b) * n_times + t) * D;
        for (std::int64_t d = 0; d < D; ++d) v_T[b * D + d] = static_cast<T>(v_bt[d]);
      }
      const T decay = static_cast<T>(a.decay[t]);
      double* sums = partial.data() + (t % 2) * n_blocks * BR;
#pragma omp for schedule(static)
      for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
        latent_path_block(a, blk, t, kappa_T.data(), v_T.data(), decay, scratch, sums + blk * BR);
      }
      // kappa = (1 - alpha) kappa + alpha n^T phi(z_t) / N
      detail::sum_blocks(sums, n_blocks, BR, N, krec.data());
      for (std::int64_t i = 0; i < BR; ++i) kappa[i] = (1.0 - a.alpha) * kappa[i] + a.alpha * krec[i];
#pragma omp master
      for (std::int64_t b = 0; b < B; ++b) {
        std::copy(kappa.begin() + b * R, kappa.begin() + (b + 1) * R, a.kappa_out + (b * n_times + t + 1) * R);
      }
    }
#pragma omp master
    std::copy(kappa.begin(), kappa.end(), a.kappa);
  }
  return all_finite(a.kappa, BR) ? Status::ok : Status::non_finite;
}

// One step of the full path on a slice of a network whose krec comes from
// outside (the distributed simulation: krec is combined across processes),
// full_path_step_reference in connector_sim/_kernels/distributed_step.py.
// With krec == nullptr, the pre-pass: partial[blk] = block sums of
// n^T phi(x_0) (clamp window at step 0). Otherwise x_0 -> x_1 with krec
// (B, R), the noise of counter_rng step a.step_offset and units
// a.unit_offset + i, x_1 recorded in record_out[:, 1], and (if accumulate)
// partial[blk] = block sums of n^T phi(x_1) (clamp window at step 1).
// partial is (n_blocks, B, R); a.n_steps must be 1.
template <typename T>
void full_path_step(const FullPathArgs<T>& a, const double* krec, bool accumulate, double* partial, int n_threads) {
  check_threads_and_activation(n_threads, a.net.activation);
  if (a.unit_offset % BLOCK_SIZE != 0) {
    throw std::invalid_argument("unit_offset must be a multiple of " + std::to_string(BLOCK_SIZE) + ", got " +
                                std::to_string(a.unit_offset));
  }
  const RecordPlan records = plan_records(a.record_idx, a.K, a.net.N);
  const std::int64_t BR = a.B * a.net.R;
  const std::int64_t n_blocks = n_blocks_of(a.net.N);
  const std::int64_t t = krec == nullptr ? -1 : 0;
  std::vector<T> krec_T(BR);
  for (std::int64_t i = 0; i < BR && krec != nullptr; ++i) krec_T[i] = static_cast<T>(krec[i]);
#pragma omp parallel num_threads(n_threads)
  {
    Scratch<T> scratch(a.net, a.B);
#pragma omp for schedule(static)
    for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
      full_path_block(a, records, blk, t, krec_T.data(), accumulate || t < 0, scratch, partial + blk * BR);
    }
  }
}

// One step of the latent path on a slice: partial[blk] = block sums of
// n^T phi(z) with z = kappa @ m + v @ I + b [+ decay xperp] (kappa (B, R),
// v (B, D), both already in T; clamp window at step 0),
// latent_path_step_reference in connector_sim/_kernels/distributed_step.py.
template <typename T>
void latent_path_step(const LatentPathArgs<T>& a, const T* kappa, const T* v, T decay, double* partial,
                      int n_threads) {
  check_threads_and_activation(n_threads, a.net.activation);
  const std::int64_t BR = a.B * a.net.R;
  const std::int64_t n_blocks = n_blocks_of(a.net.N);
#pragma omp parallel num_threads(n_threads)
  {
    Scratch<T> scratch(a.net, a.B);
#pragma omp for schedule(static)
    for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
      latent_path_block(a, blk, 0, kappa, v, decay, scratch, partial + blk * BR);
    }
  }
}

}  // namespace connector_sim
