// Sparse low-rank RNN time loop and matrix-vector product.
//
// Specification: full_path_reference and matvec_reference in
// connector_sim/_kernels/simulate_sparse.py; the mask scheme in
// connector_sim/_kernels/sparse_mask.py. Per step, P_ij = w X_ij m_i . n_j:
//
//   pass A (blocks of neurons):  rate = phi(x_t) (clamped)
//                                y[j, b R + r] = rate[b, j] n[r, j]            (T)
//                                partial[blk, b, r] = sum_j rate n             (float64)
//   kappa = (1 - alpha) kappa + alpha gain sum(partial) / N                   (float64)
//   pass B (rows):               s[w] = sum over row i's columns j of y[j, w]  (float64)
//                                h = T(w sum_r m[r, i] s[b R + r])
//                                x[b, i] += alpha ((h + u_t . I_i + b_i) - x[b, i]) [+ noise]
//
// Pass B is the hot loop: one random gather of B R contiguous values per
// connection. The gathers are scalar loads: gcc's automatic AVX2 vector
// gathers were 1.6x slower on the development machine (shared/research/
// performance.md, section 2.2), and AVX2's gather instruction was slower
// than scalar loads in the tiled loop below too.
//
// Masks with exactly C columns per row ("fixed", stored or implicit) are
// summed in tiles, stratum by stratum. Column k of every row lies in stratum
// k, [lo_k, lo_{k+1}), so a pass over stratum k of a tile of rows gathers
// from N / C consecutive y rows only (20 KB at N = 1e6, C = 200, float32,
// B R = 1): from L1 instead of the whole of y, which does not fit in L2. A
// stored mask keeps its columns in that order, as offsets within the strata
// (SPARSE_TILE_ROWS below), read as one stream; an implicit mask hashes the
// offsets of a stratum pair for the rows of a subtile (vectorised across
// rows) into a small buffer first. Each row's sum runs over k = 0 .. C - 1
// in order in float64: the order of the NumPy reference, whatever the
// representation. Row by row, the gathers took 1.7 ns per connection against
// the 4 MB y; tile by tile 0.7-0.8 ns, below the 1.1 ns limit of random
// gathers (benchmarks/compare_sparse.py). The hash of an implicit mask, one
// 64-bit mix per two connections with AVX2's emulated 64-bit multiplies,
// adds about 0.4-0.5 ns per connection. It does not overlap the gathers
// (hashing eight rows then gathering them was slower than two passes), and
// even offsets with no generator at all, the range reduction and the buffer
// alone, cost 1.23-1.31x the stored mask on a quiet machine (1.13-1.21x when
// a loaded machine slows the stored gathers; benchmarks/implicit_mask_floor.cpp).
//
// Bernoulli masks (rows of different lengths, no strata) are summed row by
// row: connection k of a row goes to accumulator lane k % 4 and the lanes are
// added as (l0 + l1) + (l2 + l3), four float64 chains that hide the latency
// of the adds, with the y rows of the next row prefetched.
//
// Either way the order does not depend on the mask's representation, so
// stored and implicit masks give bitwise identical runs. An implicit mask
// regenerates the columns from the counter hash: "fixed" takes one column per
// stratum, two per 64-bit hash; "bernoulli" adds geometric gaps
// floor(log(U) / log_q), with the C library's log.
//
// Rows are independent, so the results do not depend on the number of threads
// (pass A reduces in fixed blocks as the dense kernels do).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdexcept>
#include <string>
#include <vector>

#include "connector_sim/counter_rng.hpp"
#include "connector_sim/simd_math.hpp"
#include "connector_sim/simulate_dense.hpp"

namespace connector_sim {

// How the kernels read the mask (simulate_sparse.MASK_MODES).
enum MaskMode : int { mask_csr = 0, mask_fixed = 1, mask_bernoulli = 2, mask_tiled = 3 };

// Rows handed to one thread at a time in pass B.
constexpr std::int64_t SPARSE_ROW_CHUNK = 512;
static_assert(SPARSE_ROW_CHUNK % PAIR_BLOCK == 0, "row chunks must start on pair blocks of the noise");

// Rows per tile of a fixed mask. A stored fixed mask keeps its columns tile
// by tile (mode "tiled", sparse_mask.TILE_ROWS) as offsets within the
// strata: tile t holds the rows [t T, min(N, (t + 1) T)), n_t of them, and
// column k of row t T + r is strata[k] + offsets[t T C + k n_t + r], so a
// stratum of a tile is n_t consecutive offsets, uint16 when the strata are at
// most 2^16 wide (half the bytes to stream: 20% faster than int32 columns on
// the development machine), else uint32. At N = 1e6, C = 200 a stratum pass makes 16384 gathers into the 5000
// y rows of its stratum: each cache line of y comes from L3 once and is then
// hit about 50 times.
constexpr std::int64_t SPARSE_TILE_ROWS = 16384;
static_assert(SPARSE_TILE_ROWS % SPARSE_ROW_CHUNK == 0, "tiles must hold whole row chunks");

struct SparseMaskView {
  int mode;
  std::int64_t N;
  std::uint64_t key;             // sparse_mask.mask_key(seed)
  const std::int64_t* strata;    // fixed, tiled: (C + 1,), strata[k] = floor(k N / C)
  std::int64_t C;                // fixed, tiled: connections per row (else 0)
  double log_q;                  // bernoulli: log1p(-p) < 0
  const std::int64_t* indptr;    // csr: (N + 1,)
  const std::int32_t* indices;   // csr: (nnz,)
  const void* offsets;           // tiled: (N C,) in tiles, uint16 or uint32
  int offset_bytes;              // tiled: 2 or 4
};

// f(offsets) with the offsets of a tiled mask at their type.
template <typename F>
CONNECTOR_SIM_ALWAYS_INLINE void with_offsets(const SparseMaskView& mask, F&& f) {
  if (mask.offset_bytes == 2) {
    f(static_cast<const std::uint16_t*>(mask.offsets));
  } else {
    f(static_cast<const std::uint32_t*>(mask.offsets));
  }
}

// Memory safety of a mask: every column the kernels can produce lies in [0, N).
inline void check_mask(const SparseMaskView& mask) {
  const std::int64_t N = mask.N;
  if (mask.mode == mask_csr) {
    if (mask.indptr[0] != 0) throw std::invalid_argument("indptr[0] must be 0");
    for (std::int64_t i = 0; i < N; ++i) {
      if (mask.indptr[i + 1] < mask.indptr[i]) throw std::invalid_argument("indptr must be non-decreasing");
    }
    const std::int64_t nnz = mask.indptr[N];
    std::int32_t lo = 0, hi = 0;
    for (std::int64_t k = 0; k < nnz; ++k) {
      lo = std::min(lo, mask.indices[k]);
      hi = std::max(hi, mask.indices[k]);
    }
    if (nnz > 0 && (lo < 0 || hi >= N)) {
      throw std::invalid_argument("indices must lie in [0, " + std::to_string(N) + "), got values in [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
  } else if (mask.mode == mask_fixed || mask.mode == mask_tiled) {
    if (mask.C < 1 || mask.strata[0] != 0 || mask.strata[mask.C] != N) {
      throw std::invalid_argument("strata must run from 0 to N = " + std::to_string(N));
    }
    for (std::int64_t k = 0; k < mask.C; ++k) {
      if (mask.strata[k + 1] <= mask.strata[k]) throw std::invalid_argument("strata must be increasing");
    }
    if (mask.mode == mask_tiled) {
      if (mask.offset_bytes != 2 && mask.offset_bytes != 4) throw std::invalid_argument("offsets must be uint16 or uint32");
      // Every offset lies within its stratum.
      with_offsets(mask, [&](const auto* offsets) {
        const std::int64_t C = mask.C;
        for (std::int64_t i0 = 0; i0 < N; i0 += SPARSE_TILE_ROWS) {
          const std::int64_t n = std::min(SPARSE_TILE_ROWS, N - i0);
          for (std::int64_t k = 0; k < C; ++k) {
            const auto* stratum = offsets + i0 * C + k * n;
            std::uint32_t largest = 0;
            for (std::int64_t r = 0; r < n; ++r) largest = std::max<std::uint32_t>(largest, stratum[r]);
            if (largest >= static_cast<std::uint64_t>(mask.strata[k + 1] - mask.strata[k])) {
              throw std::invalid_argument("offset " + std::to_string(largest) + " of stratum " + std::to_string(k) +
                                          " is not below its width " +
                                          std::to_string(mask.strata[k + 1] - mask.strata[k]));
            }
          }
        }
      });
    }
  } else if (mask.mode == mask_bernoulli) {
    if (!(mask.log_q < 0.0)) throw std::invalid_argument("log_q must be negative (log1p(-p) for p in (0, 1])");
  } else {
    throw std::invalid_argument("unknown mask mode " + std::to_string(mask.mode) +
                                " (0 csr, 1 fixed, 2 bernoulli, 3 tiled)");
  }
}

namespace detail {

// lane[w] += y[column, w] for one connection.
template <typename T, int WC>
CONNECTOR_SIM_ALWAYS_INLINE void gather_add(double* __restrict lane, const T* __restrict y, std::int64_t column,
                                            std::int64_t width) {
  const std::int64_t W = WC > 0 ? WC : width;
  const T* __restrict row = y + column * W;
  for (std::int64_t w = 0; w < W; ++w) lane[w] += static_cast<double>(row[w]);
}

// Four connections k .. k + 3 into lanes 0 .. 3.
template <typename T, int WC>
CONNECTOR_SIM_ALWAYS_INLINE void gather_add4(double* __restrict acc, const T* __restrict y, std::int64_t c0,
                                             std::int64_t c1, std::int64_t c2, std::int64_t c3, std::int64_t width) {
  const std::int64_t W = WC > 0 ? WC : width;
  gather_add<T, WC>(acc, y, c0, width);
  gather_add<T, WC>(acc + W, y, c1, width);
  gather_add<T, WC>(acc + 2 * W, y, c2, width);
  gather_add<T, WC>(acc + 3 * W, y, c3, width);
}

// sparse_mask "fixed": column of connection k from its half of the hash.
CONNECTOR_SIM_ALWAYS_INLINE std::int64_t stratum_column(const std::int64_t* strata, std::int64_t k,
                                                        std::uint64_t u32) {
  // col_k = lo_k + floor(u_k (lo_{k+1} - lo_k) / 2^32)
  return strata[k] + static_cast<std::int64_t>((u32 * static_cast<std::uint64_t>(strata[k + 1] - strata[k])) >> 32);
}

// cols[k] = column k of row i under the "fixed" scheme (k < C), and a
// prefetch of the y row it will gather (W values of T each), issued a row
// ahead of the gathers so that the hash work does not fill the out-of-order
// window that the gathers' cache misses need.
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void fixed_columns(const SparseMaskView& mask, std::int64_t i, std::int32_t* __restrict cols,
                                               const T* y, std::int64_t W) {
  // row_key = mix64(key + GOLDEN (i + 1)); draw p = mix64(row_key + GOLDEN (p + 1)) gives
  // connections 2p (high half) and 2p + 1 (low half).
  const std::uint64_t row_key = mix64(mask.key + GOLDEN * (static_cast<std::uint64_t>(i) + 1u));
  const std::int64_t* __restrict lo = mask.strata;
  const std::int64_t C = mask.C;
  std::uint64_t draw = row_key + GOLDEN;
  std::int64_t k = 0;
  for (; k + 2 <= C; k += 2) {
    const std::uint64_t bits = mix64(draw);
    draw += GOLDEN;
    const std::int64_t c0 = stratum_column(lo, k, bits >> 32);
    const std::int64_t c1 = stratum_column(lo, k + 1, bits & 0xFFFFFFFFull);
    cols[k] = static_cast<std::int32_t>(c0);
    cols[k + 1] = static_cast<std::int32_t>(c1);
    __builtin_prefetch(y + c0 * W);
    __builtin_prefetch(y + c1 * W);
  }
  if (k < C) {
    const std::int64_t c0 = stratum_column(lo, k, mix64(draw) >> 32);
    cols[k] = static_cast<std::int32_t>(c0);
    __builtin_prefetch(y + c0 * W);
  }
}

// out[w] = sum_k float64(y[cols[k], w]), connection k into lane k % 4, lanes
// added as (l0 + l1) + (l2 + l3). With a compile-time width WC the lanes live
// in registers; otherwise in `buffer` (4 W doubles).
template <typename T, int WC>
CONNECTOR_SIM_ALWAYS_INLINE void gather_columns(const std::int32_t* __restrict cols, std::int64_t n,
                                                const T* __restrict y, std::int64_t width, double* __restrict buffer,
                                                double* __restrict out) {
  const std::int64_t W = WC > 0 ? WC : width;
  double local[4 * (WC > 0 ? WC : 1)];
  double* __restrict acc = WC > 0 ? local : buffer;
  for (std::int64_t l = 0; l < 4 * W; ++l) acc[l] = 0.0;
  std::int64_t k = 0;
  for (; k + 4 <= n; k += 4) gather_add4<T, WC>(acc, y, cols[k], cols[k + 1], cols[k + 2], cols[k + 3], width);
  for (; k < n; ++k) gather_add<T, WC>(acc + (k & 3) * W, y, cols[k], width);
  for (std::int64_t w = 0; w < W; ++w) out[w] = (acc[w] + acc[W + w]) + (acc[2 * W + w] + acc[3 * W + w]);
}

// The same sum over the columns of row i under the "bernoulli" scheme:
// position = -1; G_k = floor(log(U_k) / log_q); stop at G_k >= N - 1 - position.
template <typename T, int WC>
CONNECTOR_SIM_ALWAYS_INLINE void gather_bernoulli(const SparseMaskView& mask, std::int64_t i, const T* __restrict y,
                                                  std::int64_t width, double* __restrict buffer,
                                                  double* __restrict out) {
  const std::int64_t W = WC > 0 ? WC : width;
  double local[4 * (WC > 0 ? WC : 1)];
  double* __restrict acc = WC > 0 ? local : buffer;
  for (std::int64_t l = 0; l < 4 * W; ++l) acc[l] = 0.0;
  const std::uint64_t row_key = mix64(mask.key + GOLDEN * (static_cast<std::uint64_t>(i) + 1u));
  std::int64_t position = -1;
  for (std::uint64_t k = 0;; ++k) {
    const std::uint64_t bits = mix64(row_key + GOLDEN * (k + 1u));
    const double uniform = (static_cast<double>(bits >> 11) + 0.5) * 0x1p-53;
    const double gap = std::floor(std::log(uniform) / mask.log_q);
    if (gap >= static_cast<double>(mask.N - 1 - position)) break;
    position += 1 + static_cast<std::int64_t>(gap);
    gather_add<T, WC>(acc + (k & 3) * W, y, position, width);
  }
  for (std::int64_t w = 0; w < W; ++w) out[w] = (acc[w] + acc[W + w]) + (acc[2 * W + w] + acc[3 * W + w]);
}

// Visits rows lo .. hi - 1 in order: s = the gathered sums of row i (W
// doubles), then row_done(i, s). `buffer` holds 5 W doubles, `cols` 2 C
// int32 for the "fixed" mode.
template <typename T, int WC, typename RowDone>
CONNECTOR_SIM_ALWAYS_INLINE void gather_rows(const SparseMaskView& mask, std::int64_t lo, std::int64_t hi,
                                             const T* __restrict y, std::int64_t width, double* buffer,
                                             std::int32_t* cols, RowDone&& row_done) {
  const std::int64_t W = WC > 0 ? WC : width;
  // The sums of one row: W doubles after the 4 W lanes of `buffer`.
  double* s = buffer + 4 * W;
  if (mask.mode == mask_csr) {
    for (std::int64_t i = lo; i < hi; ++i) {
      const std::int64_t start = mask.indptr[i], n = mask.indptr[i + 1] - start;
      // Prefetch the y rows of row i + 1 (as the "fixed" mode does).
      if (i + 1 < hi) {
        const std::int32_t* __restrict ahead = mask.indices + mask.indptr[i + 1];
        const std::int64_t n_ahead = mask.indptr[i + 2] - mask.indptr[i + 1];
        for (std::int64_t k = 0; k < n_ahead; ++k) __builtin_prefetch(y + static_cast<std::int64_t>(ahead[k]) * W);
      }
      gather_columns<T, WC>(mask.indices + start, n, y, width, buffer, s);
      row_done(i, s);
    }
  } else if (mask.mode == mask_fixed) {
    // Software pipeline: the columns of row i + 1 are generated (and their y
    // rows prefetched) before row i is gathered.
    std::int32_t* current = cols;
    std::int32_t* next = cols + mask.C;
    if (lo < hi) fixed_columns(mask, lo, current, y, W);
    for (std::int64_t i = lo; i < hi; ++i) {
      if (i + 1 < hi) fixed_columns(mask, i + 1, next, y, W);
      gather_columns<T, WC>(current, mask.C, y, width, buffer, s);
      row_done(i, s);
      std::swap(current, next);
    }
  } else if (mask.mode == mask_tiled) {
    // Row i's offsets are strided in its tile: its columns are copied first.
    for (std::int64_t i = lo; i < hi; ++i) {
      const std::int64_t i0 = i / SPARSE_TILE_ROWS * SPARSE_TILE_ROWS, n = std::min(SPARSE_TILE_ROWS, mask.N - i0);
      with_offsets(mask, [&](const auto* offsets) {
        const auto* first = offsets + i0 * mask.C + (i - i0);
        for (std::int64_t k = 0; k < mask.C; ++k) {
          cols[k] = static_cast<std::int32_t>(mask.strata[k] + static_cast<std::int64_t>(first[k * n]));
        }
      });
      gather_columns<T, WC>(cols, mask.C, y, width, buffer, s);
      row_done(i, s);
    }
  } else {
    for (std::int64_t i = lo; i < hi; ++i) {
      gather_bernoulli<T, WC>(mask, i, y, width, buffer, s);
      row_done(i, s);
    }
  }
}

// --- Tiles of the masks with C columns per row (see the top of the file) ---

// Rows summed at a time within a tile, for B R = width values per connection:
// their sums (rows x width float64) take at most 2 MB.
inline std::int64_t subtile_rows(std::int64_t width) {
  const std::int64_t rows = (std::int64_t(1) << 18) / std::max<std::int64_t>(width, 1);
  return std::clamp(rows / SPARSE_ROW_CHUNK * SPARSE_ROW_CHUNK, SPARSE_ROW_CHUNK, SPARSE_TILE_ROWS);
}

// The offsets within strata k and k + 1 (k even, k + 1 < C if out1) of the
// rows whose row keys are row_keys[0 .. n), by the "fixed" scheme: draw p =
// mix64(row_key + GOLDEN (p + 1)), p = k / 2, gives stratum k its high half
// and k + 1 its low half (as fixed_columns does row by row, which adds lo_k).
CONNECTOR_SIM_ALWAYS_INLINE void hash_stratum_pair(const SparseMaskView& mask,
                                                   const std::uint64_t* __restrict row_keys, std::int64_t n,
                                                   std::int64_t k, std::uint32_t* __restrict out0,
                                                   std::uint32_t* __restrict out1) {
  const std::int64_t* lo = mask.strata;
  const std::uint64_t counter = GOLDEN * (static_cast<std::uint64_t>(k / 2) + 1u);
  const std::uint64_t width0 = static_cast<std::uint32_t>(lo[k + 1] - lo[k]);
  if (out1 != nullptr) {
    const std::uint64_t width1 = static_cast<std::uint32_t>(lo[k + 2] - lo[k + 1]);
#pragma omp simd
    for (std::int64_t r = 0; r < n; ++r) {
      const std::uint64_t bits = mix64(row_keys[r] + counter);
      out0[r] = static_cast<std::uint32_t>((static_cast<std::uint32_t>(bits >> 32) * width0) >> 32);
      out1[r] = static_cast<std::uint32_t>((static_cast<std::uint32_t>(bits) * width1) >> 32);
    }
  } else {
#pragma omp simd
    for (std::int64_t r = 0; r < n; ++r) {
      const std::uint64_t bits = mix64(row_keys[r] + counter);
      out0[r] = static_cast<std::uint32_t>((static_cast<std::uint32_t>(bits >> 32) * width0) >> 32);
    }
  }
}

// sums[r W + w] += y0[o0[r] W + w], then += y1[o1[r] W + w] (if o1), r < n,
// with y0, y1 the first y rows of the two strata: two strata per pass over
// the sums halve their loads and stores.
template <typename T, int WC, typename Offset>
CONNECTOR_SIM_ALWAYS_INLINE void gather_stratum_pair(const Offset* __restrict o0, const Offset* __restrict o1,
                                                     std::int64_t n, const T* __restrict y0,
                                                     const T* __restrict y1, std::int64_t width,
                                                     double* __restrict sums) {
  const std::int64_t W = WC > 0 ? WC : width;
  if (o1 != nullptr) {
    for (std::int64_t r = 0; r < n; ++r) {
      const T* __restrict a = y0 + static_cast<std::int64_t>(o0[r]) * W;
      const T* __restrict b = y1 + static_cast<std::int64_t>(o1[r]) * W;
      double* __restrict s = sums + r * W;
      for (std::int64_t w = 0; w < W; ++w) s[w] = (s[w] + static_cast<double>(a[w])) + static_cast<double>(b[w]);
    }
  } else {
    for (std::int64_t r = 0; r < n; ++r) {
      const T* __restrict a = y0 + static_cast<std::int64_t>(o0[r]) * W;
      double* __restrict s = sums + r * W;
      for (std::int64_t w = 0; w < W; ++w) s[w] += static_cast<double>(a[w]);
    }
  }
}

}  // namespace detail

// The arguments of the dense full path (x, inputs, noise, recording, clamp,
// trials, steps) plus the mask and the scaling P_ij = weight X_ij m_i . n_j,
// with kappa's gain.
template <typename T>
struct SparsePathArgs : FullPathArgs<T> {
  SparseMaskView mask;
  double weight, gain;
};

namespace detail {

// Pass A over one block: y = n phi(x_t) (clamped at t) for every trial, and
// partial[b, r] = sum over the block of rate n (lane sums, lane_sums.hpp).
template <typename T, int activation>
CONNECTOR_SIM_ALWAYS_INLINE void sparse_rates_block(const SparsePathArgs<T>& a, std::int64_t block, std::int64_t t,
                                                    T* __restrict y, double* lanes, double* partial) {
  const DenseNetwork<T>& net = a.net;
  const std::int64_t N = net.N, R = net.R, W = a.B * R;
  const std::int64_t lo = block * BLOCK_SIZE, hi = std::min(lo + BLOCK_SIZE, N);
  const bool clamp_rates = a.clamp.active(t);
  alignas(64) T rate[CHUNK];
  for (std::int64_t b = 0; b < a.B; ++b) {
    const T* xb = a.x + b * N;
    std::fill(lanes, lanes + R * LANES, 0.0);
    for (std::int64_t c0 = lo; c0 < hi; c0 += CHUNK) {
      const std::int64_t len = std::min(CHUNK, hi - c0);
      // rate = phi(x); in the clamp window rate = np.where(clamp_mask, clamp_value, rate)
#pragma omp simd
      for (std::int64_t j = 0; j < len; ++j) rate[j] = simd::activation<activation>(xb[c0 + j]);
      if (clamp_rates) clamp_chunk(rate, a.clamp.mask + c0, a.clamp.value + c0, len);
      // y[j, b R + r] = rate[j] n[r, j]
      for (std::int64_t r = 0; r < R; ++r) {
        const T* __restrict n_row = net.n_T + r * N + c0;
        T* __restrict y_col = y + c0 * W + b * R + r;
        for (std::int64_t j = 0; j < len; ++j) y_col[j * W] = rate[j] * n_row[j];
      }
      lane_sums::accumulate_chunk(lanes, rate, net.n_T + c0, N, R, len);
    }
    sum_lanes(lanes, R, partial + b * R);
  }
}

// Rows [lo, hi) from x_t to x_{t+1}, given s[(i - lo) B R + b R + r], the
// gathered sums of row i (one copy of the update code, so every mask mode
// rounds alike). noise[b * SPARSE_ROW_CHUNK + i - lo] = counter_rng.standard_normal(
// seed, trial_offset + b, t, N)[i] (read only if noise_scale != 0).
template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void update_rows(const SparsePathArgs<T>& a, std::int64_t lo, std::int64_t hi,
                                             std::int64_t t, const double* s, const T* noise) {
  const DenseNetwork<T>& net = a.net;
  const std::int64_t N = net.N, R = net.R, D = net.D, W = a.B * R;
  const T alpha = static_cast<T>(a.alpha);
  const T noise_scale = static_cast<T>(a.noise_scale);
  const bool noisy = a.noise_scale != 0.0;
  for (std::int64_t i = lo; i < hi; ++i) {
    const double* sums = s + (i - lo) * W;
    for (std::int64_t b = 0; b < a.B; ++b) {
      // h = weight * sum_r m[r, i] s[b R + r] (float64), then T
      double h = 0.0;
      for (std::int64_t r = 0; r < R; ++r) h += static_cast<double>(net.m_T[r * N + i]) * sums[b * R + r];
      const T drive = static_cast<T>(a.weight * h);
      // ui = u[b, t] @ I[:, i]
      const T* u_bt = a.u + ((a.u_rows == 1 ? 0 : b) * a.n_steps + t) * D;
      T ui = T(0);
      for (std::int64_t d = 0; d < D; ++d) ui += u_bt[d] * net.I_T[d * N + i];
      // x += alpha ((h + ui + b) - x) [+ noise_scale xi]
      T xi = a.x[b * N + i];
      xi += alpha * ((drive + ui + net.b[i]) - xi);
      if (noisy) xi += noise_scale * noise[b * SPARSE_ROW_CHUNK + (i - lo)];
      a.x[b * N + i] = xi;
    }
  }
}

// Pass B over rows [lo, hi), row by row (Bernoulli masks).
template <typename T, int WC>
CONNECTOR_SIM_ALWAYS_INLINE void sparse_update_rows(const SparsePathArgs<T>& a, std::int64_t lo, std::int64_t hi,
                                                    std::int64_t t, const T* __restrict y, const T* noise,
                                                    double* acc, double* s, std::int32_t* cols) {
  const std::int64_t W = a.B * a.net.R;
  gather_rows<T, WC>(a.mask, lo, hi, y, W, acc, cols, [&](std::int64_t i, const double* sums) {
    for (std::int64_t w = 0; w < W; ++w) s[(i - lo) * W + w] = sums[w];
  });
  update_rows(a, lo, hi, t, s, noise);
}

}  // namespace detail

// Pass A with runtime dispatch (the activation vectorises with AVX-512 or AVX2).
CONNECTOR_SIM_ALWAYS_INLINE void sparse_rates_block_f32_body(const SparsePathArgs<float>& a, std::int64_t block,
                                                               std::int64_t t, float* y, double* lanes,
                                                               double* partial) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::sparse_rates_block<float, simd::tanh_code>(a, block, t, y, lanes, partial);
    case simd::relu_code:
      return detail::sparse_rates_block<float, simd::relu_code>(a, block, t, y, lanes, partial);
    case simd::softplus_code:
      return detail::sparse_rates_block<float, simd::softplus_code>(a, block, t, y, lanes, partial);
    case simd::sigmoid_code:
      return detail::sparse_rates_block<float, simd::sigmoid_code>(a, block, t, y, lanes, partial);
    default:
      return detail::sparse_rates_block<float, simd::identity_code>(a, block, t, y, lanes, partial);
  }
}
CONNECTOR_SIM_MULTIVERSION(void, sparse_rates_block_f32,
                           (const SparsePathArgs<float>& a, std::int64_t block, std::int64_t t, float* y,
                            double* lanes, double* partial),
                           (a, block, t, y, lanes, partial))

CONNECTOR_SIM_ALWAYS_INLINE void sparse_rates_block_f64_body(const SparsePathArgs<double>& a, std::int64_t block,
                                                               std::int64_t t, double* y, double* lanes,
                                                               double* partial) {
  switch (a.net.activation) {
    case simd::tanh_code:
      return detail::sparse_rates_block<double, simd::tanh_code>(a, block, t, y, lanes, partial);
    case simd::relu_code:
      return detail::sparse_rates_block<double, simd::relu_code>(a, block, t, y, lanes, partial);
    case simd::softplus_code:
      return detail::sparse_rates_block<double, simd::softplus_code>(a, block, t, y, lanes, partial);
    case simd::sigmoid_code:
      return detail::sparse_rates_block<double, simd::sigmoid_code>(a, block, t, y, lanes, partial);
    default:
      return detail::sparse_rates_block<double, simd::identity_code>(a, block, t, y, lanes, partial);
  }
}
CONNECTOR_SIM_MULTIVERSION(void, sparse_rates_block_f64,
                           (const SparsePathArgs<double>& a, std::int64_t block, std::int64_t t, double* y,
                            double* lanes, double* partial),
                           (a, block, t, y, lanes, partial))

inline void sparse_rates_block(const SparsePathArgs<float>& a, std::int64_t block, std::int64_t t, float* y,
                               double* lanes, double* partial) {
  sparse_rates_block_f32(a, block, t, y, lanes, partial);
}

inline void sparse_rates_block(const SparsePathArgs<double>& a, std::int64_t block, std::int64_t t, double* y,
                               double* lanes, double* partial) {
  sparse_rates_block_f64(a, block, t, y, lanes, partial);
}

// Pass B, specialised for the common widths B R = 1 and 2. The AVX2 and
// AVX-512 clones gain BMI2's non-destructive shifts for the hash;
// vectorisation is off so that the gathers stay scalar loads.
#if defined(__GNUC__) && !defined(__clang__)
#define CONNECTOR_SIM_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#else
#define CONNECTOR_SIM_NO_VECTORIZE
#endif

template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void sparse_update_rows_any(const SparsePathArgs<T>& a, std::int64_t lo, std::int64_t hi,
                                                        std::int64_t t, const T* y, const T* noise,
                                                        double* acc, double* s, std::int32_t* cols) {
  switch (a.B * a.net.R) {
    case 1:
      return detail::sparse_update_rows<T, 1>(a, lo, hi, t, y, noise, acc, s, cols);
    case 2:
      return detail::sparse_update_rows<T, 2>(a, lo, hi, t, y, noise, acc, s, cols);
    default:
      return detail::sparse_update_rows<T, 0>(a, lo, hi, t, y, noise, acc, s, cols);
  }
}

CONNECTOR_SIM_ALWAYS_INLINE void sparse_update_rows_f32_body(const SparsePathArgs<float>& a, std::int64_t lo,
                                                               std::int64_t hi, std::int64_t t, const float* y,
                                                               const float* noise, double* acc, double* s,
                                                               std::int32_t* cols) {
  sparse_update_rows_any(a, lo, hi, t, y, noise, acc, s, cols);
}
CONNECTOR_SIM_MULTIVERSION_ATTR(CONNECTOR_SIM_NO_VECTORIZE, void, sparse_update_rows_f32,
                                (const SparsePathArgs<float>& a, std::int64_t lo, std::int64_t hi, std::int64_t t,
                                 const float* y, const float* noise, double* acc, double* s, std::int32_t* cols),
                                (a, lo, hi, t, y, noise, acc, s, cols))

CONNECTOR_SIM_ALWAYS_INLINE void sparse_update_rows_f64_body(const SparsePathArgs<double>& a, std::int64_t lo,
                                                               std::int64_t hi, std::int64_t t, const double* y,
                                                               const double* noise, double* acc, double* s,
                                                               std::int32_t* cols) {
  sparse_update_rows_any(a, lo, hi, t, y, noise, acc, s, cols);
}
CONNECTOR_SIM_MULTIVERSION_ATTR(CONNECTOR_SIM_NO_VECTORIZE, void, sparse_update_rows_f64,
                                (const SparsePathArgs<double>& a, std::int64_t lo, std::int64_t hi, std::int64_t t,
                                 const double* y, const double* noise, double* acc, double* s, std::int32_t* cols),
                                (a, lo, hi, t, y, noise, acc, s, cols))

inline void sparse_update_rows(const SparsePathArgs<float>& a, std::int64_t lo, std::int64_t hi, std::int64_t t,
                               const float* y, const float* noise, double* acc, double* s,
                                                               std::int32_t* cols) {
  sparse_update_rows_f32(a, lo, hi, t, y, noise, acc, s, cols);
}

inline void sparse_update_rows(const SparsePathArgs<double>& a, std::int64_t lo, std::int64_t hi, std::int64_t t,
                               const double* y, const double* noise, double* acc, double* s,
                                                               std::int32_t* cols) {
  sparse_update_rows_f64(a, lo, hi, t, y, noise, acc, s, cols);
}

#ifdef CONNECTOR_SIM_ISA_CLONES
namespace detail {

// z * c mod 2^64 in each 64-bit lane: AVX2 has no 64-bit multiply. The
// low product z_lo c_lo is a vpmuludq; the two cross products only matter
// mod 2^32, so one vpmulld against c with its halves swapped gives both
// (z_lo c_hi, z_hi c_lo), which are added into the high half. Two multiplies
// instead of three vpmuludq: the implicit step was 7-10% faster
// (benchmarks/implicit_mask_floor.cpp).
__attribute__((target("avx2"))) inline __m256i multiply_u64(__m256i z, std::uint64_t c) {
  const __m256i c_low = _mm256_set1_epi64x(static_cast<std::int64_t>(c & 0xFFFFFFFFull));
  const __m256i c_swapped = _mm256_set1_epi64x(static_cast<std::int64_t>((c >> 32) | (c << 32)));
  const __m256i high_mask = _mm256_set1_epi64x(static_cast<std::int64_t>(0xFFFFFFFF00000000ull));
  const __m256i cross = _mm256_mullo_epi32(z, c_swapped);  // (z_lo c_hi, z_hi c_lo) mod 2^32
  const __m256i cross_high = _mm256_add_epi64(_mm256_slli_epi64(cross, 32), _mm256_and_si256(cross, high_mask));
  return _mm256_add_epi64(_mm256_mul_epu32(z, c_low), cross_high);
}

__attribute__((target("avx2"))) inline __m256i mix64_avx2(__m256i z) {
  z = multiply_u64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xBF58476D1CE4E5B9ull);
  z = multiply_u64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94D049BB133111EBull);
  return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}

// hash_stratum_pair, eight rows at a time: the columns of rows r .. r + 3
// come out of the multiply-high in the even 32-bit lanes, those of r + 4 ..
// r + 7 in the odd ones; a blend and a permutation put them in order.
__attribute__((target("avx2"))) inline void hash_stratum_pair_avx2(const SparseMaskView& mask,
                                                                   const std::uint64_t* row_keys, std::int64_t n,
                                                                   std::int64_t k, std::uint32_t* out0,
                                                                   std::uint32_t* out1) {
  const std::int64_t* lo = mask.strata;
  const __m256i counter = _mm256_set1_epi64x(static_cast<std::int64_t>(GOLDEN * (static_cast<std::uint64_t>(k / 2) + 1u)));
  const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i width0 = _mm256_set1_epi64x(lo[k + 1] - lo[k]);
  const __m256i width1 = _mm256_set1_epi64x(out1 != nullptr ? lo[k + 2] - lo[k + 1] : 0);
  std::int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    const __m256i a = mix64_avx2(_mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_keys + r)), counter));
    const __m256i b = mix64_avx2(_mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_keys + r + 4)), counter));
    // high halves -> stratum k: floor(u width0 / 2^32)
    const __m256i a0 = _mm256_srli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), width0), 32);
    const __m256i b0 = _mm256_mul_epu32(_mm256_srli_epi64(b, 32), width0);
    const __m256i c0 = _mm256_permutevar8x32_epi32(_mm256_blend_epi32(a0, b0, 0xAA), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out0 + r), c0);
    if (out1 != nullptr) {
      // low halves -> stratum k + 1
      const __m256i a1 = _mm256_srli_epi64(_mm256_mul_epu32(a, width1), 32);
      const __m256i b1 = _mm256_mul_epu32(b, width1);
      const __m256i c1 = _mm256_permutevar8x32_epi32(_mm256_blend_epi32(a1, b1, 0xAA), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out1 + r), c1);
    }
  }
  hash_stratum_pair(mask, row_keys + r, n - r, k, out0 + r, out1 != nullptr ? out1 + r : nullptr);
}

// gcc 12's _mm256_undefined_si256 (inside _mm512_cvtepi64_epi32) trips
// -Wmaybe-uninitialized (gcc bug 105593, fixed in 12.3).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// hash_stratum_pair_avx2 with AVX-512: vpmullq multiplies the 64-bit lanes
// directly and vpmovqd narrows the columns to 32 bits in order, eight rows
// per 512-bit vector (the same integer results).
CONNECTOR_SIM_TARGET_AVX512 inline __m512i mix64_avx512(__m512i z) {
  const __m512i c1 = _mm512_set1_epi64(static_cast<std::int64_t>(0xBF58476D1CE4E5B9ull));
  const __m512i c2 = _mm512_set1_epi64(static_cast<std::int64_t>(0x94D049BB133111EBull));
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), c1);
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), c2);
  return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

CONNECTOR_SIM_TARGET_AVX512 inline void hash_stratum_pair_avx512(const SparseMaskView& mask,
                                                                 const std::uint64_t* row_keys, std::int64_t n,
                                                                 std::int64_t k, std::uint32_t* out0,
                                                                 std::uint32_t* out1) {
  const std::int64_t* lo = mask.strata;
  const __m512i counter =
      _mm512_set1_epi64(static_cast<std::int64_t>(GOLDEN * (static_cast<std::uint64_t>(k / 2) + 1u)));
  const __m512i width0 = _mm512_set1_epi64(lo[k + 1] - lo[k]);
  const __m512i width1 = _mm512_set1_epi64(out1 != nullptr ? lo[k + 2] - lo[k + 1] : 0);
  std::int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    const __m512i a = mix64_avx512(_mm512_add_epi64(_mm512_loadu_si512(row_keys + r), counter));
    // high halves -> stratum k: floor(u width0 / 2^32)
    const __m512i c0 = _mm512_srli_epi64(_mm512_mul_epu32(_mm512_srli_epi64(a, 32), width0), 32);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out0 + r), _mm512_cvtepi64_epi32(c0));
    if (out1 != nullptr) {
      // low halves -> stratum k + 1
      const __m512i c1 = _mm512_srli_epi64(_mm512_mul_epu32(a, width1), 32);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out1 + r), _mm512_cvtepi64_epi32(c1));
    }
  }
  hash_stratum_pair(mask, row_keys + r, n - r, k, out0 + r, out1 != nullptr ? out1 + r : nullptr);
}
#pragma GCC diagnostic pop

}  // namespace detail
#endif

// hash_stratum_pair, vectorised across rows: by hand with AVX-512 or AVX2
// (gcc's own vectorisation of the 64-bit multiplies and of the narrowing to
// int32 was 2x slower with AVX2), else as the compiler vectorises it.
inline void hash_stratum_pair(const SparseMaskView& mask, const std::uint64_t* row_keys, std::int64_t n,
                              std::int64_t k, std::uint32_t* out0, std::uint32_t* out1) {
#ifdef CONNECTOR_SIM_ISA_CLONES
  switch (isa::level()) {
    case isa::level_avx512:
      return detail::hash_stratum_pair_avx512(mask, row_keys, n, k, out0, out1);
    case isa::level_avx2:
      return detail::hash_stratum_pair_avx2(mask, row_keys, n, k, out0, out1);
    default:
      break;
  }
#endif
  detail::hash_stratum_pair(mask, row_keys, n, k, out0, out1);
}

// row_keys[r] = mix64(key + GOLDEN (i0 + r + 1)), the row keys of the "fixed" scheme.
CONNECTOR_SIM_ALWAYS_INLINE void fill_row_keys_body(std::uint64_t key, std::int64_t i0, std::int64_t n,
                                                      std::uint64_t* row_keys) {
#pragma omp simd
  for (std::int64_t r = 0; r < n; ++r) row_keys[r] = mix64(key + GOLDEN * (static_cast<std::uint64_t>(i0 + r) + 1u));
}
CONNECTOR_SIM_MULTIVERSION(void, fill_row_keys,
                           (std::uint64_t key, std::int64_t i0, std::int64_t n, std::uint64_t* row_keys),
                           (key, i0, n, row_keys))

// gather_stratum_pair with the widths B R = 1 and 2 specialised, scalar loads.
template <typename T, typename Offset>
CONNECTOR_SIM_ALWAYS_INLINE void gather_stratum_pair_any(const Offset* o0, const Offset* o1, std::int64_t n,
                                                         const T* y0, const T* y1, std::int64_t width,
                                                         double* sums) {
  switch (width) {
    case 1:
      return detail::gather_stratum_pair<T, 1>(o0, o1, n, y0, y1, width, sums);
    case 2:
      return detail::gather_stratum_pair<T, 2>(o0, o1, n, y0, y1, width, sums);
    default:
      return detail::gather_stratum_pair<T, 0>(o0, o1, n, y0, y1, width, sums);
  }
}

#define CONNECTOR_SIM_GATHER_STRATUM_PAIR(T, Offset)                                                           \
  CONNECTOR_SIM_ALWAYS_INLINE void gather_stratum_pair_body(const Offset* o0, const Offset* o1, std::int64_t n,  \
                                                            const T* y0, const T* y1, std::int64_t width,        \
                                                            double* sums) {                                      \
    gather_stratum_pair_any(o0, o1, n, y0, y1, width, sums);                                                     \
  }                                                                                                              \
  CONNECTOR_SIM_MULTIVERSION_ATTR(CONNECTOR_SIM_NO_VECTORIZE, void, gather_stratum_pair,                         \
                                  (const Offset* o0, const Offset* o1, std::int64_t n, const T* y0, const T* y1, \
                                   std::int64_t width, double* sums),                                            \
                                  (o0, o1, n, y0, y1, width, sums))
CONNECTOR_SIM_GATHER_STRATUM_PAIR(float, std::uint16_t)
CONNECTOR_SIM_GATHER_STRATUM_PAIR(float, std::uint32_t)
CONNECTOR_SIM_GATHER_STRATUM_PAIR(double, std::uint16_t)
CONNECTOR_SIM_GATHER_STRATUM_PAIR(double, std::uint32_t)
#undef CONNECTOR_SIM_GATHER_STRATUM_PAIR

// A thread's buffers for the tiles of a fixed mask: the sums of a subtile,
// and for an implicit mask its row keys and the columns of one stratum pair
// (2 x 64 KB at most, in L2).
struct TileWorkspace {
  std::int64_t rows = 0;
  std::vector<double> sums;
  std::vector<std::uint64_t> row_keys;
  std::vector<std::uint32_t> cols;

  TileWorkspace(const SparseMaskView& mask, std::int64_t width) {
    if (mask.C < 1) return;
    rows = std::min(detail::subtile_rows(width), mask.N);
    sums.resize(rows * width);
    if (mask.mode == mask_fixed) {
      row_keys.resize(rows);
      cols.resize(2 * rows);
    }
  }
};

// Pass B over the rows [i0 + r0, i0 + r1) of the tile of n rows at i0: their
// sums, stratum pair by stratum pair (k in order for every row), then the
// update of each row chunk with its noise.
template <typename T>
void sparse_update_subtile(const SparsePathArgs<T>& a, std::int64_t i0, std::int64_t n, std::int64_t r0,
                           std::int64_t r1, std::int64_t t, const T* y, const std::uint64_t* keys,
                           TileWorkspace& ws, T* noise) {
  const SparseMaskView& mask = a.mask;
  const std::int64_t C = mask.C, W = a.B * a.net.R, m = r1 - r0;
  double* sums = ws.sums.data();
  std::fill(sums, sums + m * W, 0.0);
  const bool hashed = mask.mode == mask_fixed;
  if (hashed) fill_row_keys(mask.key, i0 + r0, m, ws.row_keys.data());
  for (std::int64_t k = 0; k < C; k += 2) {
    const bool pair = k + 1 < C;
    const T* y0 = y + mask.strata[k] * W;
    const T* y1 = pair ? y + mask.strata[k + 1] * W : nullptr;
    if (hashed) {
      std::uint32_t* out0 = ws.cols.data();
      std::uint32_t* out1 = pair ? out0 + m : nullptr;
      hash_stratum_pair(mask, ws.row_keys.data(), m, k, out0, out1);
      gather_stratum_pair(out0, static_cast<const std::uint32_t*>(out1), m, y0, y1, W, sums);
    } else {
      with_offsets(mask, [&](const auto* offsets) {
        const auto* o0 = offsets + i0 * C + k * n + r0;
        gather_stratum_pair(o0, pair ? o0 + n : nullptr, m, y0, y1, W, sums);
      });
    }
  }
  for (std::int64_t lo = i0 + r0; lo < i0 + r1; lo += SPARSE_ROW_CHUNK) {
    const std::int64_t hi = std::min(lo + SPARSE_ROW_CHUNK, i0 + r1);
    for (std::int64_t b = 0; b < a.B && a.noise_scale != 0.0; ++b) {
      fill_standard_normal_dispatch(keys[b], lo, hi - lo, noise + b * SPARSE_ROW_CHUNK);
    }
    detail::update_rows(a, lo, hi, t, sums + (lo - i0 - r0) * W, noise);
  }
}

// full_path_reference of simulate_sparse.py: a.n_steps Euler steps of the B
// trials; updates a.x and a.kappa in place, fills a.kappa_out and a.record_out.
template <typename T>
Status sparse_full_path(const SparsePathArgs<T>& a, int n_threads) {
  check_threads_and_activation(n_threads, a.net.activation);
  check_mask(a.mask);
  for (std::int64_t k = 0; k < a.K; ++k) {
    if (a.record_idx[k] < 0 || a.record_idx[k] >= a.net.N) {
      throw std::invalid_argument("record_idx holds " + std::to_string(a.record_idx[k]) +
                                  ", outside the neuron range [0, " + std::to_string(a.net.N) + ")");
    }
  }
  const std::int64_t N = a.net.N, R = a.net.R, B = a.B, BR = B * R;
  const std::int64_t n_blocks = n_blocks_of(N);
  const std::int64_t n_times = a.n_steps + 1;
  // kappa_out[:, 0] = kappa; record_out[:, 0] = x[:, record_idx]
  for (std::int64_t b = 0; b < B; ++b) {
    std::copy(a.kappa + b * R, a.kappa + (b + 1) * R, a.kappa_out + b * n_times * R);
    for (std::int64_t k = 0; k < a.K; ++k) a.record_out[b * n_times * a.K + k] = a.x[b * N + a.record_idx[k]];
  }
  std::vector<T> y(static_cast<std::size_t>(N * BR));
  std::vector<double> partial(n_blocks * BR);
  const bool noisy = a.noise_scale != 0.0;
  // Fixed masks (stored or implicit) in subtiles of whole tiles, the others in row chunks.
  const bool tiled = a.mask.C > 0;
  const std::int64_t part_rows = tiled ? std::min(detail::subtile_rows(BR), N) : SPARSE_ROW_CHUNK;
  const std::int64_t parts_per_tile = tiled ? (std::min(SPARSE_TILE_ROWS, N) + part_rows - 1) / part_rows : 1;
  const std::int64_t n_tiles = tiled ? (N + SPARSE_TILE_ROWS - 1) / SPARSE_TILE_ROWS : 0;
  const std::int64_t n_parts = tiled ? n_tiles * parts_per_tile : (N + SPARSE_ROW_CHUNK - 1) / SPARSE_ROW_CHUNK;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> kappa = initial_kappa(a.kappa_out, B, R, n_times);
    std::vector<double> krec(BR);
    std::vector<double> lanes(R * LANES);
    std::vector<double> acc(5 * BR), s(SPARSE_ROW_CHUNK * BR);
    std::vector<std::int32_t> cols(2 * a.mask.C);
    std::vector<std::uint64_t> keys(B);
    std::vector<T> noise(noisy ? B * SPARSE_ROW_CHUNK : 0);
    TileWorkspace tile(a.mask, BR);
    for (std::int64_t t = 0; t < a.n_steps; ++t) {
      // Pass A: y and the block sums of n^T phi(x_t)
#pragma omp for schedule(static)
      for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
        sparse_rates_block(a, blk, t, y.data(), lanes.data(), partial.data() + blk * BR);
      }
      // kappa = (1 - alpha) kappa + alpha gain n^T phi(x_t) / N (every thread, same order)
      detail::sum_blocks(partial.data(), n_blocks, BR, N, krec.data());
      for (std::int64_t i = 0; i < BR; ++i) kappa[i] = (1.0 - a.alpha) * kappa[i] + a.alpha * a.gain * krec[i];
      for (std::int64_t b = 0; b < B; ++b) keys[b] = step_key(a.seed, a.trial_offset + b, a.step_offset + t);
      // Pass B: the rows, in tiles ("fixed" masks) or in chunks of SPARSE_ROW_CHUNK rows
#pragma omp for schedule(static)
      for (std::int64_t part = 0; part < n_parts; ++part) {
        if (tiled) {
          const std::int64_t i0 = (part / parts_per_tile) * SPARSE_TILE_ROWS;
          const std::int64_t n = std::min(SPARSE_TILE_ROWS, N - i0);
          const std::int64_t r0 = (part % parts_per_tile) * part_rows;
          if (r0 < n) {
            sparse_update_subtile(a, i0, n, r0, std::min(r0 + part_rows, n), t, y.data(), keys.data(), tile,
                                  noise.data());
          }
          continue;
        }
        const std::int64_t lo = part * SPARSE_ROW_CHUNK, hi = std::min(lo + SPARSE_ROW_CHUNK, N);
        // noise[b] = counter_rng.standard_normal(seed, trial_offset + b, t, N)[lo:hi] (lo is a
        // multiple of PAIR_BLOCK: four whole pair blocks, or the network's last rows)
        for (std::int64_t b = 0; b < B && noisy; ++b) {
          fill_standard_normal_dispatch(keys[b], lo, hi - lo, noise.data() + b * SPARSE_ROW_CHUNK);
        }
        sparse_update_rows(a, lo, hi, t, y.data(), noise.data(), acc.data(), s.data(), cols.data());
      }
#pragma omp master
      {
        for (std::int64_t b = 0; b < B; ++b) {
          std::copy(kappa.begin() + b * R, kappa.begin() + (b + 1) * R, a.kappa_out + (b * n_times + t + 1) * R);
          T* record_row = a.record_out + (b * n_times + t + 1) * a.K;
          for (std::int64_t k = 0; k < a.K; ++k) record_row[k] = a.x[b * N + a.record_idx[k]];
        }
      }
      // No further barrier: every thread read partial before pass B's barrier, and the master's
      // recording only reads x, which the next pass A reads too.
    }
#pragma omp master
    std::copy(kappa.begin(), kappa.end(), a.kappa);
  }
  return all_finite(a.kappa, BR) ? Status::ok : Status::non_finite;
}

// matvec_reference: out[i, c] = weight sum_r m[r, i] sum over row i's columns j of n[r, j] v[j, c],
// v and out of shape (N, K), float64.
inline void sparse_matvec(const SparseMaskView& mask, const double* m_T, const double* n_T, std::int64_t R,
                          double weight, const double* v, std::int64_t K, double* out, int n_threads) {
  check_mask(mask);
  if (n_threads < 1) throw std::invalid_argument("n_threads must be at least 1, got " + std::to_string(n_threads));
  const std::int64_t N = mask.N, W = R * K;
  std::vector<double> y(static_cast<std::size_t>(N * W));
#pragma omp parallel num_threads(n_threads)
  {
    // y[j, r K + c] = n[r, j] v[j, c]
#pragma omp for schedule(static)
    for (std::int64_t j = 0; j < N; ++j) {
      for (std::int64_t r = 0; r < R; ++r) {
        for (std::int64_t c = 0; c < K; ++c) y[j * W + r * K + c] = n_T[r * N + j] * v[j * K + c];
      }
    }
    std::vector<double> acc(5 * W);
    std::vector<std::int32_t> cols(2 * mask.C);
#pragma omp for schedule(static)
    for (std::int64_t chunk = 0; chunk < (N + SPARSE_ROW_CHUNK - 1) / SPARSE_ROW_CHUNK; ++chunk) {
      const std::int64_t lo = chunk * SPARSE_ROW_CHUNK, hi = std::min(lo + SPARSE_ROW_CHUNK, N);
      detail::gather_rows<double, 0>(mask, lo, hi, y.data(), W, acc.data(), cols.data(),
                                     [&](std::int64_t i, const double* sums) {
                                       for (std::int64_t c = 0; c < K; ++c) {
                                         double total = 0.0;
                                         for (std::int64_t r = 0; r < R; ++r) total += m_T[r * N + i] * sums[r * K + c];
                                         out[i * K + c] = weight * total;
                                       }
                                     });
    }
  }
}

}  // namespace connector_sim
