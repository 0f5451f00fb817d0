// One whole flow-matching training step of a CNF's velocity MLP on the CPU,
// in float32: forward, squared error, backward into the flat gradient, AdamW
// update and the weight average (EMA), in one call.
//
// Specification: connector_sim/_kernels/cnf_train_step.py
// (cnf_train_step_reference, float64). The MLP is
// connector_sim.inference.flows.VelocityMLP: n_layers hidden Linear layers
// of width `hidden` with SiLU, then a Linear to `dim`, on the input rows
// [x_t, c, t]. The flat weight vector holds nn.Linear's layout layer after
// layer: weight (out, in) row-major, then bias (out).
//
// Layout. Activations are kept feature-major: H^T (out x n) for a batch of n
// rows, so that every product is "broadcast a scalar of one operand, multiply
// a contiguous vector of the other" (gemm below) and needs no transpose:
//   forward    H_l^T  = W_l A_{l-1}^T + b_l          (W rows broadcast, A^T rows as vectors)
//   backward   dA^T   = W_l^T G_l^T                   (W columns broadcast, G^T rows as vectors)
//              dW_l   = G_l^T A_{l-1}                 (G^T rows broadcast, A rows as vectors)
// The last product needs the activations batch-major (n x in): one transpose
// of A_{l-1}^T per layer (in x n floats, a few percent of the product's time).
//
// The products are one register-blocked micro-kernel: a tile of 6 output
// rows x 64 output columns (24 zmm accumulators) in the avx512 clone, with
// masked loads/stores for the last columns (190-223 GFLOP/s at 128 x 128
// weights times 64 rows on a Zen 5 EPYC core); 4 x 16 tiles of gcc's generic
// 8-float vectors in the avx2 clone (99-107); a loop over C's rows that gcc
// vectorises in the default clone (11-21). The SiLU's sigmoid, AdamW's
// division and the transposes also have AVX-512 forms (intrinsics): the
// avx512 clone's results differ from the others' by float32 round-off.
//
// Also: mlp_squared_error, the forward pass alone of many rows by tiles
// (the validation loss; mlp_squared_error_reference), and matmul_f32, the
// product alone (tests, benchmarks).
//
// Accuracy: float32 sums of at most max(hidden, width, rows) products; the
// sigmoid's exp by a degree-7 polynomial (a few float ulps, as
// simd::exp_approx); the avx512 clone's divisions by vrcp14ps and one
// Newton step (relative error ~2^-23).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "connector_sim/isa.hpp"
#include "connector_sim/simd_math.hpp"

#ifdef CONNECTOR_SIM_ISA_CLONES
#include <immintrin.h>
#endif

// gcc 12 warns that the unmasked AVX-512 intrinsics' _mm512_undefined_ps()
// "may be used uninitialized" (a false positive: the instructions overwrite
// every lane), and that the generic 32-byte vectors of the avx2 clone's tiles
// would be passed differently without AVX (-Wpsabi: they are never passed,
// every function using them is inlined).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace connector_sim {
namespace cnf_train {

// C (m x n, row stride ldc) = init + A B, with A (m x k) read at
// a[i * a_row + p * a_col] (any strides: a matrix or its transpose) and B
// (k x n) row-major with row stride ldb. init: row_init[i] on every column
// if row_init is given, else 0.
struct Gemm {
  std::int64_t m, n, k;
  const float* a;
  std::int64_t a_row, a_col;
  const float* b;
  std::int64_t ldb;
  float* c;
  std::int64_t ldc;
  const float* row_init;
};

#ifdef CONNECTOR_SIM_ISA_CLONES
// Rows and 16-float vectors of the avx512 clone's tile (24 accumulators + 4
// loaded vectors of B of the 32 zmm registers; A's scalars are broadcast from
// memory into the multiply-adds).
constexpr int TILE_ROWS = 6;
constexpr int TILE_VECTORS = 4;

// Tile of MR rows x NV vectors at (i0, j0); the last vector keeps the lanes of
// `last` (masked loads do not touch the memory of cleared lanes).
template <int MR, int NV>
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE void gemm_tile_avx512(const Gemm& g, std::int64_t i0,
                                                                            std::int64_t j0, __mmask16 last) {
  __m512 acc[MR][NV];
  const float* a_rows[MR];
  for (int r = 0; r < MR; ++r) a_rows[r] = g.a + (i0 + r) * g.a_row;
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = g.row_init != nullptr ? _mm512_set1_ps(g.row_init[i0 + r]) : _mm512_setzero_ps();
    }
  }
  const float* b = g.b + j0;
  for (std::int64_t p = 0; p < g.k; ++p, b += g.ldb) {
    __m512 b_vectors[NV];
    for (int v = 0; v < NV; ++v) {
      b_vectors[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
    }
    const std::int64_t offset = p * g.a_col;
    for (int r = 0; r < MR; ++r) {
      const __m512 a_value = _mm512_set1_ps(a_rows[r][offset]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a_value, b_vectors[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* c_row = g.c + (i0 + r) * g.ldc + j0;
    for (int v = 0; v < NV; ++v) {
      _mm512_mask_storeu_ps(c_row + 16 * v, v == NV - 1 ? last : __mmask16(0xffff), acc[r][v]);
    }
  }
}

template <int MR>
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE void gemm_rows_avx512(const Gemm& g, std::int64_t i0) {
  for (std::int64_t j0 = 0; j0 < g.n; j0 += 16 * TILE_VECTORS) {
    const std::int64_t columns = std::min<std::int64_t>(16 * TILE_VECTORS, g.n - j0);
    const int tail = static_cast<int>(columns % 16);
    const __mmask16 last = tail ? __mmask16((1u << tail) - 1) : __mmask16(0xffff);
    switch ((columns + 15) / 16) {
      case 4:
        gemm_tile_avx512<MR, 4>(g, i0, j0, last);
        break;
      case 3:
        gemm_tile_avx512<MR, 3>(g, i0, j0, last);
        break;
      case 2:
        gemm_tile_avx512<MR, 2>(g, i0, j0, last);
        break;
      default:
        gemm_tile_avx512<MR, 1>(g, i0, j0, last);
    }
  }
}

CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline void gemm_avx512(const Gemm& g) {
  std::int64_t i0 = 0;
  for (; i0 + TILE_ROWS <= g.m; i0 += TILE_ROWS) gemm_rows_avx512<TILE_ROWS>(g, i0);
  switch (g.m - i0) {
    case 5:
      return gemm_rows_avx512<5>(g, i0);
    case 4:
      return gemm_rows_avx512<4>(g, i0);
    case 3:
      return gemm_rows_avx512<3>(g, i0);
    case 2:
      return gemm_rows_avx512<2>(g, i0);
    case 1:
      return gemm_rows_avx512<1>(g, i0);
    default:
      return;
  }
}
#endif

// Eight floats as one value (gcc's generic vectors: a ymm register in the
// avx2 clone, two xmm registers in the default one).
typedef float float8 __attribute__((vector_size(32)));

CONNECTOR_SIM_ALWAYS_INLINE float8 load8(const float* p) {
  float8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

CONNECTOR_SIM_ALWAYS_INLINE void store8(float* p, const float8& v) { std::memcpy(p, &v, sizeof v); }

// Portable tile of MR rows x 16 columns at (i0, j0), the accumulators in
// 2 MR vectors of 8 floats (8 ymm registers for MR = 4 in the avx2 clone).
template <int MR>
CONNECTOR_SIM_ALWAYS_INLINE void gemm_tile_portable(const Gemm& g, std::int64_t i0, std::int64_t j0) {
  float8 acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = acc[r][1] = g.row_init != nullptr ? float8{} + g.row_init[i0 + r] : float8{};
  }
  const float* b = g.b + j0;
  for (std::int64_t p = 0; p < g.k; ++p, b += g.ldb) {
    const float8 b0 = load8(b), b1 = load8(b + 8);
    for (int r = 0; r < MR; ++r) {
      const float a = g.a[(i0 + r) * g.a_row + p * g.a_col];
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* c_row = g.c + (i0 + r) * g.ldc + j0;
    store8(c_row, acc[r][0]);
    store8(c_row + 8, acc[r][1]);
  }
}

// The product of Gemm row by row.
CONNECTOR_SIM_ALWAYS_INLINE void gemm_rows_portable(const Gemm& g) {
  for (std::int64_t i = 0; i < g.m; ++i) {
    float* __restrict c_row = g.c + i * g.ldc;
    if (g.row_init != nullptr) {
      const float value = g.row_init[i];
      for (std::int64_t j = 0; j < g.n; ++j) c_row[j] = value;
    } else {
      for (std::int64_t j = 0; j < g.n; ++j) c_row[j] = 0.0f;
    }
    const float* a_row = g.a + i * g.a_row;
    for (std::int64_t p = 0; p < g.k; ++p) {
      const float a_value = a_row[p * g.a_col];
      const float* __restrict b_row = g.b + p * g.ldb;
#pragma omp simd
      for (std::int64_t j = 0; j < g.n; ++j) c_row[j] += a_value * b_row[j];
    }
  }
}

// The product of Gemm by tiles of 4 x 16 (gemm_tile_portable), and row by
// row for the last rows and columns.
CONNECTOR_SIM_ALWAYS_INLINE void gemm_tiled_portable(const Gemm& g) {
  constexpr std::int64_t rows_per_tile = 4, columns_per_tile = 16;
  const std::int64_t tiled_rows = g.m / rows_per_tile * rows_per_tile;
  const std::int64_t tiled_columns = g.n / columns_per_tile * columns_per_tile;
  for (std::int64_t i0 = 0; i0 < tiled_rows; i0 += rows_per_tile) {
    for (std::int64_t j0 = 0; j0 < tiled_columns; j0 += columns_per_tile) gemm_tile_portable<4>(g, i0, j0);
  }
  if (tiled_columns < g.n) {  // the last columns of the tiled rows
    gemm_rows_portable({tiled_rows, g.n - tiled_columns, g.k, g.a, g.a_row, g.a_col, g.b + tiled_columns, g.ldb,
                        g.c + tiled_columns, g.ldc, g.row_init});
  }
  if (tiled_rows < g.m) {  // the last rows
    gemm_rows_portable({g.m - tiled_rows, g.n, g.k, g.a + tiled_rows * g.a_row, g.a_row, g.a_col, g.b, g.ldb,
                        g.c + tiled_rows * g.ldc, g.ldc, g.row_init == nullptr ? nullptr : g.row_init + tiled_rows});
  }
}

#ifdef CONNECTOR_SIM_ISA_CLONES
// The tiles with ymm registers (98 against 22 GFLOP/s row by row at the
// training shape). A function of its own: in the default clone gcc splits
// the 32-byte vectors badly (2 GFLOP/s), so that clone keeps the rows.
CONNECTOR_SIM_TARGET_AVX2 __attribute__((noinline)) inline void gemm_avx2(const Gemm& g) { gemm_tiled_portable(g); }
#endif

// The product of Gemm: the avx512 micro-kernel in the avx512 clone, 4 x 16
// tiles in the avx2 clone, rows (C's row, in L1, updated by one vectorised
// multiply-add per p) in the default clone.
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void gemm(const Gemm& g) {
#ifdef CONNECTOR_SIM_ISA_CLONES
  if constexpr (wide) {
    gemm_avx512(g);
    return;
  }
  if (isa::level() == isa::level_avx2) {  // (body<false> serves both the avx2 and the default clone)
    gemm_avx2(g);
    return;
  }
#endif
  gemm_rows_portable(g);
}

#ifdef CONNECTOR_SIM_ISA_CLONES
// out[(j0 + c) * rows + i0 + r] = in[(i0 + r) * columns + j0 + c] for a full 16 x 16 block: 16 loads, three
// rounds of shuffles (32-bit pairs, 64-bit pairs within 128-bit lanes, then the 128-bit lanes), 16 stores.
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE void transpose_block_avx512(const float* in,
                                                                                  std::int64_t columns, float* out,
                                                                                  std::int64_t rows) {
  __m512 r[16], a[16], b[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(in + i * columns);
  // a[2i] lane k: (r2i[4k], r2i+1[4k], r2i[4k+1], r2i+1[4k+1]); a[2i+1] the same for 4k+2, 4k+3.
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // b[4j + c] lane k: column 4k + c of rows 4j .. 4j + 3.
  for (int j = 0; j < 4; ++j) {
    b[4 * j] = _mm512_shuffle_ps(a[4 * j], a[4 * j + 2], _MM_SHUFFLE(1, 0, 1, 0));
    b[4 * j + 1] = _mm512_shuffle_ps(a[4 * j], a[4 * j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    b[4 * j + 2] = _mm512_shuffle_ps(a[4 * j + 1], a[4 * j + 3], _MM_SHUFFLE(1, 0, 1, 0));
    b[4 * j + 3] = _mm512_shuffle_ps(a[4 * j + 1], a[4 * j + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // Column 4k + c: lane k of b[c], b[4 + c], b[8 + c], b[12 + c] (a 4 x 4 transpose of 128-bit lanes).
  for (int c = 0; c < 4; ++c) {
    const __m512 u0 = _mm512_shuffle_f32x4(b[c], b[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 u1 = _mm512_shuffle_f32x4(b[c], b[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512 u2 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 u3 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
    _mm512_storeu_ps(out + (0 + c) * rows, _mm512_shuffle_f32x4(u0, u2, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(out + (4 + c) * rows, _mm512_shuffle_f32x4(u0, u2, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(out + (8 + c) * rows, _mm512_shuffle_f32x4(u1, u3, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(out + (12 + c) * rows, _mm512_shuffle_f32x4(u1, u3, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}
#endif

// out (columns x rows) = in (rows x columns)^T, by 16 x 16 blocks (both in L1), scalar.
CONNECTOR_SIM_ALWAYS_INLINE void transpose_scalar(const float* __restrict in, std::int64_t rows, std::int64_t columns,
                                                  float* __restrict out, std::int64_t i0, std::int64_t i1,
                                                  std::int64_t j0, std::int64_t j1) {
  for (std::int64_t j = j0; j < j1; ++j) {
    for (std::int64_t i = i0; i < i1; ++i) out[j * rows + i] = in[i * columns + j];
  }
}

#ifdef CONNECTOR_SIM_ISA_CLONES
// The transpose with the full 16 x 16 blocks by shuffles (the scalar loop took ~5% of a training step).
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline void transpose_avx512(const float* __restrict in,
                                                                                 std::int64_t rows,
                                                                                 std::int64_t columns,
                                                                                 float* __restrict out) {
  for (std::int64_t i0 = 0; i0 < rows; i0 += 16) {
    const std::int64_t i1 = std::min(rows, i0 + 16);
    for (std::int64_t j0 = 0; j0 < columns; j0 += 16) {
      const std::int64_t j1 = std::min(columns, j0 + 16);
      if (i1 - i0 == 16 && j1 - j0 == 16) {
        transpose_block_avx512(in + i0 * columns + j0, columns, out + j0 * rows + i0, rows);
      } else {
        transpose_scalar(in, rows, columns, out, i0, i1, j0, j1);
      }
    }
  }
}

// sums[o] = sum of row o of g (rows x n).
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline void row_sums_avx512(const float* g, std::int64_t rows,
                                                                                std::int64_t n, float* sums) {
  for (std::int64_t o = 0; o < rows; ++o) {
    const float* row = g + o * n;
    __m512 total = _mm512_setzero_ps();
    std::int64_t i = 0;
    for (; i + 16 <= n; i += 16) total = _mm512_add_ps(total, _mm512_loadu_ps(row + i));
    if (i < n) total = _mm512_add_ps(total, _mm512_maskz_loadu_ps(__mmask16((1u << (n - i)) - 1), row + i));
    sums[o] = _mm512_reduce_add_ps(total);
  }
}
#endif

// out (columns x rows) = in (rows x columns)^T.
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void transpose(const float* __restrict in, std::int64_t rows, std::int64_t columns,
                                           float* __restrict out) {
#ifdef CONNECTOR_SIM_ISA_CLONES
  if constexpr (wide) {
    transpose_avx512(in, rows, columns, out);
    return;
  }
#endif
  for (std::int64_t i0 = 0; i0 < rows; i0 += 16) {
    for (std::int64_t j0 = 0; j0 < columns; j0 += 16) {
      transpose_scalar(in, rows, columns, out, i0, std::min(rows, i0 + 16), j0, std::min(columns, j0 + 16));
    }
  }
}

// sums[o] = sum of row o of g (rows x n).
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void row_sums(const float* g, std::int64_t rows, std::int64_t n, float* sums) {
#ifdef CONNECTOR_SIM_ISA_CLONES
  if constexpr (wide) {
    row_sums_avx512(g, rows, n, sums);
    return;
  }
#endif
  for (std::int64_t o = 0; o < rows; ++o) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t i = 0; i < n; ++i) sum += g[o * n + i];
    sums[o] = sum;
  }
}

#ifdef CONNECTOR_SIM_ISA_CLONES
// exp(y) of 16 floats y <= 0 (clipped at -87): y = n ln2 + r, |r| <= ln2 / 2,
// exp(r) by simd::EXP_TAYLOR_F32 (degree 7, as simd::exp_approx), times 2^n by
// vscalefps. Relative error a few float ulps.
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE __m512 exp_nonpositive_x16(__m512 y) {
  y = _mm512_max_ps(y, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(static_cast<float>(simd::LOG2E))),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(simd::LN2_HI_F32), y);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(simd::LN2_LO_F32), r);
  __m512 p = _mm512_set1_ps(simd::EXP_TAYLOR_F32[7]);
  for (int k = 6; k >= 0; --k) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(simd::EXP_TAYLOR_F32[k]));
  return _mm512_scalef_ps(p, n);
}

// 1 / d for 16 floats d > 0: vrcp14ps (relative error < 2^-14) and one
// Newton step r (2 - d r), relative error ~2^-23 (an ulp or two) instead of
// a division (vdivps bounded the sigmoid and AdamW loops).
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE __m512 reciprocal_x16(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

// sig = sigmoid(h), act = h sig for `count` values: e = exp(-|h|),
// sigmoid = 1 / (1 + e) for h >= 0 and e / (1 + e) below (as simd::sigmoid).
// 16 lanes of sigmoid_and_silu_avx512 at i (masked: the lanes of `mask` only).
template <bool masked>
CONNECTOR_SIM_TARGET_AVX512 CONNECTOR_SIM_ALWAYS_INLINE void sigmoid_and_silu_x16(const float* h, float* sig,
                                                                                float* act, __mmask16 mask) {
  const __m512 x = masked ? _mm512_maskz_loadu_ps(mask, h) : _mm512_loadu_ps(h);
  const __m512 e = exp_nonpositive_x16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  const __m512 r = reciprocal_x16(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
  const __mmask16 nonnegative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __m512 s = _mm512_mask_blend_ps(nonnegative, _mm512_mul_ps(e, r), r);
  if constexpr (masked) {
    _mm512_mask_storeu_ps(sig, mask, s);
    _mm512_mask_storeu_ps(act, mask, _mm512_mul_ps(x, s));
  } else {
    _mm512_storeu_ps(sig, s);
    _mm512_storeu_ps(act, _mm512_mul_ps(x, s));
  }
}

// Full vectors, then the last partial one masked.
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline void sigmoid_and_silu_avx512(
    const float* __restrict h, float* __restrict sig, float* __restrict act, std::int64_t count) {
  std::int64_t i = 0;
  for (; i + 16 <= count; i += 16) sigmoid_and_silu_x16<false>(h + i, sig + i, act + i, 0xffff);
  if (i < count) sigmoid_and_silu_x16<true>(h + i, sig + i, act + i, __mmask16((1u << (count - i)) - 1));
}
#endif

// sig = sigmoid(h), act = silu(h) = h sig for `count` values.
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void sigmoid_and_silu(const float* __restrict h, float* __restrict sig,
                                                  float* __restrict act, std::int64_t count) {
#ifdef CONNECTOR_SIM_ISA_CLONES
  if constexpr (wide) {
    sigmoid_and_silu_avx512(h, sig, act, count);
    return;
  }
#endif
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) {
    const float sigmoid = simd::sigmoid(h[i]);
    sig[i] = sigmoid;
    act[i] = h[i] * sigmoid;
  }
}

// The MLP's sizes. Layer l (0 <= l <= n_layers) maps in(l) to out(l) features.
struct MlpShape {
  std::int64_t dim, condition_dim, hidden, n_layers;

  std::int64_t input_width() const { return dim + condition_dim + 1; }
  std::int64_t in(std::int64_t l) const { return l == 0 ? input_width() : hidden; }
  std::int64_t out(std::int64_t l) const { return l == n_layers ? dim : hidden; }
  // Offset of layer l's weight in the flat vector (its bias follows the weight).
  std::int64_t offset(std::int64_t l) const {
    std::int64_t total = 0;
    for (std::int64_t i = 0; i < l; ++i) total += out(i) * (in(i) + 1);
    return total;
  }
  std::int64_t n_parameters() const { return offset(n_layers + 1); }
};

// The arrays of one training run: weights and their state, bound once.
struct TrainState {
  float* weights;     // (n_parameters,): nn.Linear layout, updated in place
  float* gradient;    // (n_parameters,): written by every step
  float* exp_avg;     // AdamW's first moment
  float* exp_avg_sq;  // AdamW's second moment
  float* averaged;    // the EMA of the weights, or nullptr for none
  double beta1, beta2, eps, weight_decay;
};

// One batch: n rows of x0, x1 (n x dim), t (n), condition (n x condition_dim, or nullptr).
struct Batch {
  const float* x0;
  const float* x1;
  const float* t;
  const float* condition;
  std::int64_t n;
};

// Scratch for batches of up to max_rows rows, allocated once.
struct Workspace {
  MlpShape shape;
  std::int64_t max_rows;
  std::vector<float> inputs_rows;  // (n, input_width): [x_t, c, t] batch-major
  std::vector<float> inputs_t;     // (input_width, n): its transpose
  std::vector<float> target_t;     // (dim, n): (x1 - x0)^T
  std::vector<float> residual_t;   // (dim, n): output - target, then the output gradient
  std::vector<std::vector<float>> h_t, s_t, a_t;  // per hidden layer (hidden, n): h, sigmoid(h), silu(h)
  std::vector<float> rows;         // (n, max(hidden, input_width)): an activation batch-major
  std::vector<float> g_t[2];       // (hidden, n): gradients, ping-pong

  Workspace(const MlpShape& shape_, std::int64_t max_rows_) : shape(shape_), max_rows(max_rows_) {
    const std::int64_t w = shape.input_width(), hid = shape.hidden, d = shape.dim, n = max_rows;
    inputs_rows.resize(n * w);
    inputs_t.resize(n * w);
    target_t.resize(n * d);
    residual_t.resize(n * d);
    h_t.assign(shape.n_layers, std::vector<float>(hid * n));
    s_t.assign(shape.n_layers, std::vector<float>(hid * n));
    a_t.assign(shape.n_layers, std::vector<float>(hid * n));
    rows.resize(n * std::max(hid, w));
    g_t[0].resize(hid * n);
    g_t[1].resize(hid * n);
  }
};

// The MLP's output (dim x n) into ws.residual_t for the n input columns in
// ws.inputs_t (input_width x n), keeping each hidden layer's h, sigmoid(h)
// and silu(h) = h sigmoid(h) for the backward pass.
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void forward(Workspace& ws, const float* weights, std::int64_t n) {
  const MlpShape& s = ws.shape;
  const std::int64_t L = s.n_layers;
  const float* previous_t = ws.inputs_t.data();
  for (std::int64_t l = 0; l < L; ++l) {
    const float* weight = weights + s.offset(l);
    const std::int64_t in = s.in(l), out = s.out(l);
    float* h = ws.h_t[l].data();
    gemm<wide>({out, n, in, weight, in, 1, previous_t, n, h, n, weight + out * in});
    sigmoid_and_silu<wide>(h, ws.s_t[l].data(), ws.a_t[l].data(), out * n);
    previous_t = ws.a_t[l].data();
  }
  const float* weight = weights + s.offset(L);
  const std::int64_t in = s.in(L);
  gemm<wide>({s.dim, n, in, weight, in, 1, previous_t, n, ws.residual_t.data(), n, weight + s.dim * in});
}

// Forward and backward: returns the summed squared error (float64 sum of the
// float32 residuals' squares) and writes the gradient of the mean over rows
// into state.gradient.
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE double forward_backward(Workspace& ws, const TrainState& state, const Batch& batch) {
  const MlpShape& s = ws.shape;
  const std::int64_t n = batch.n, d = s.dim, cd = s.condition_dim, w = s.input_width(), L = s.n_layers;
  // Inputs [x_t, c, t], x_t = x0 + t (x1 - x0) (as the torch path), and the target x1 - x0.
  float* inputs = ws.inputs_rows.data();
  float* target_t = ws.target_t.data();
  for (std::int64_t i = 0; i < n; ++i) {
    const float ti = batch.t[i];
    for (std::int64_t j = 0; j < d; ++j) {
      const float difference = batch.x1[i * d + j] - batch.x0[i * d + j];
      target_t[j * n + i] = difference;
      inputs[i * w + j] = batch.x0[i * d + j] + ti * difference;
    }
    for (std::int64_t j = 0; j < cd; ++j) inputs[i * w + d + j] = batch.condition[i * cd + j];
    inputs[i * w + w - 1] = ti;
  }
  transpose<wide>(inputs, n, w, ws.inputs_t.data());

  forward<wide>(ws, state.weights, n);
  float* residual = ws.residual_t.data();
  double squared_error = 0.0;
  const float scale = 2.0f / static_cast<float>(n);
  for (std::int64_t i = 0; i < d * n; ++i) {
    const float r = residual[i] - target_t[i];
    squared_error += static_cast<double>(r) * r;
    residual[i] = scale * r;  // the gradient of the mean squared error with respect to the output
  }

  // Backward: g_t holds the gradient with respect to layer l's pre-activation, (out(l), n).
  const float* g = residual;
  int buffer = 0;
  for (std::int64_t l = L; l >= 0; --l) {
    const std::int64_t in = s.in(l), out = s.out(l);
    const float* weight = state.weights + s.offset(l);
    float* weight_gradient = state.gradient + s.offset(l);
    float* bias_gradient = weight_gradient + out * in;
    const float* previous_rows = inputs;
    if (l > 0) {
      transpose<wide>(ws.a_t[l - 1].data(), in, n, ws.rows.data());
      previous_rows = ws.rows.data();
    }
    gemm<wide>({out, in, n, g, n, 1, previous_rows, in, weight_gradient, in, nullptr});
    row_sums<wide>(g, out, n, bias_gradient);
    if (l == 0) break;
    float* g_a = ws.g_t[buffer].data();
    gemm<wide>({in, n, out, weight, 1, in, g, n, g_a, n, nullptr});
    // g * silu'(h), silu'(h) = s (1 + h (1 - s)) with s = sigmoid(h).
    const float* __restrict h = ws.h_t[l - 1].data();
    const float* __restrict sig = ws.s_t[l - 1].data();
#pragma omp simd
    for (std::int64_t i = 0; i < in * n; ++i) g_a[i] *= sig[i] * (1.0f + h[i] * (1.0f - sig[i]));
    g = g_a;
    buffer ^= 1;
  }
  return squared_error;
}

// The per-step constants of AdamW (from float64 scalars, as torch's fused kernel).
struct AdamWStep {
  float decay_factor, step_size, inverse_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, average_weight;

  AdamWStep(const TrainState& state, double lr, std::int64_t step, double ema_decay) {
    const double bias_correction1 = 1.0 - std::pow(state.beta1, static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(state.beta2, static_cast<double>(step));
    decay_factor = static_cast<float>(1.0 - lr * state.weight_decay);
    step_size = static_cast<float>(lr / bias_correction1);
    inverse_correction2_sqrt = static_cast<float>(1.0 / std::sqrt(bias_correction2));
    one_minus_beta1 = static_cast<float>(1.0 - state.beta1);
    beta2 = static_cast<float>(state.beta2);
    one_minus_beta2 = static_cast<float>(1.0 - state.beta2);
    eps = static_cast<float>(state.eps);
    average_weight = static_cast<float>(1.0 - ema_decay);
  }
};

#ifdef CONNECTOR_SIM_ISA_CLONES
// adamw_and_average with 16 lanes and the division by reciprocal_x16 (~2^-23 relative).
CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline void adamw_and_average_avx512(const TrainState& state,
                                                                                         std::int64_t size,
                                                                                         const AdamWStep& c) {
  const __m512 decay_factor = _mm512_set1_ps(c.decay_factor), step_size = _mm512_set1_ps(c.step_size);
  const __m512 inverse_correction2_sqrt = _mm512_set1_ps(c.inverse_correction2_sqrt);
  const __m512 one_minus_beta1 = _mm512_set1_ps(c.one_minus_beta1), beta2 = _mm512_set1_ps(c.beta2);
  const __m512 one_minus_beta2 = _mm512_set1_ps(c.one_minus_beta2), eps = _mm512_set1_ps(c.eps);
  const __m512 average_weight = _mm512_set1_ps(c.average_weight);
  // Local restrict pointers: otherwise the stores make the compiler reload them from `state` every iteration.
  float* __restrict weights = state.weights;
  const float* __restrict gradient = state.gradient;
  float* __restrict exp_avg = state.exp_avg;
  float* __restrict exp_avg_sq = state.exp_avg_sq;
  float* __restrict averaged = state.averaged;
  for (std::int64_t i = 0; i < size; i += 16) {
    const __mmask16 mask = size - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (size - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(mask, gradient + i);
    __m512 m = _mm512_maskz_loadu_ps(mask, exp_avg + i);
    __m512 v = _mm512_maskz_loadu_ps(mask, exp_avg_sq + i);
    m = _mm512_fmadd_ps(one_minus_beta1, _mm512_sub_ps(g, m), m);
    v = _mm512_fmadd_ps(_mm512_mul_ps(one_minus_beta2, g), g, _mm512_mul_ps(beta2, v));
    _mm512_mask_storeu_ps(exp_avg + i, mask, m);
    _mm512_mask_storeu_ps(exp_avg_sq + i, mask, v);
    const __m512 denominator = _mm512_fmadd_ps(_mm512_sqrt_ps(v), inverse_correction2_sqrt, eps);
    const __m512 update = _mm512_mul_ps(step_size, _mm512_mul_ps(m, reciprocal_x16(denominator)));
    const __m512 w = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mask, weights + i), decay_factor), update);
    _mm512_mask_storeu_ps(weights + i, mask, w);
    if (averaged != nullptr) {
      const __m512 a = _mm512_maskz_loadu_ps(mask, averaged + i);
      _mm512_mask_storeu_ps(averaged + i, mask, _mm512_fmadd_ps(average_weight, _mm512_sub_ps(w, a), a));
    }
  }
}
#endif

// torch.optim.AdamW's update (decoupled weight decay, bias corrections, eps
// outside the square root) at step `step` (counted from 1), then the average
// averaged += (1 - ema_decay) (weights - averaged).
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void adamw_and_average(const TrainState& state, std::int64_t n_parameters, double lr,
                                                   std::int64_t step, double ema_decay) {
  const AdamWStep c(state, lr, step, ema_decay);
#ifdef CONNECTOR_SIM_ISA_CLONES
  if constexpr (wide) {
    adamw_and_average_avx512(state, n_parameters, c);
    return;
  }
#endif
  float* __restrict weights = state.weights;
  const float* __restrict gradient = state.gradient;
  float* __restrict m = state.exp_avg;
  float* __restrict v = state.exp_avg_sq;
#pragma omp simd
  for (std::int64_t i = 0; i < n_parameters; ++i) {
    const float gi = gradient[i];
    const float mi = m[i] + c.one_minus_beta1 * (gi - m[i]);
    const float vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denominator = std::sqrt(vi) * c.inverse_correction2_sqrt + c.eps;
    weights[i] = weights[i] * c.decay_factor - c.step_size * mi / denominator;
  }
  if (state.averaged != nullptr) {
    float* __restrict averaged = state.averaged;
#pragma omp simd
    for (std::int64_t i = 0; i < n_parameters; ++i) averaged[i] += c.average_weight * (weights[i] - averaged[i]);
  }
}

template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE double cnf_train_step_body(Workspace& ws, const TrainState& state, const Batch& batch,
                                                       double lr, std::int64_t step, double ema_decay) {
  const double squared_error = forward_backward<wide>(ws, state, batch);
  adamw_and_average<wide>(state, ws.shape.n_parameters(), lr, step, ema_decay);
  return squared_error;
}

CONNECTOR_SIM_MULTIVERSION_WIDE(double, cnf_train_step,
                                (Workspace & ws, const TrainState& state, const Batch& batch, double lr,
                                 std::int64_t step, double ema_decay),
                                (ws, state, batch, lr, step, ema_decay))

// The summed squared error sum_rows |v(inputs) - target|^2 (float64 sum) of
// `rows` rows of inputs (rows x input_width) and target (rows x dim), both
// row-major, for the weights `weights` (a validation loss), by tiles of
// ws.max_rows rows.
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE double mlp_squared_error_body(Workspace& ws, const float* weights, const float* inputs,
                                                          const float* target, std::int64_t rows) {
  const std::int64_t d = ws.shape.dim, w = ws.shape.input_width();
  double total = 0.0;
  for (std::int64_t first = 0; first < rows; first += ws.max_rows) {
    const std::int64_t n = std::min(ws.max_rows, rows - first);
    transpose<wide>(inputs + first * w, n, w, ws.inputs_t.data());
    forward<wide>(ws, weights, n);
    const float* output = ws.residual_t.data();
    for (std::int64_t j = 0; j < d; ++j) {
      for (std::int64_t i = 0; i < n; ++i) {
        const float r = output[j * n + i] - target[(first + i) * d + j];
        total += static_cast<double>(r) * r;
      }
    }
  }
  return total;
}

CONNECTOR_SIM_MULTIVERSION_WIDE(double, mlp_squared_error,
                                (Workspace & ws, const float* weights, const float* inputs, const float* target,
                                 std::int64_t rows),
                                (ws, weights, inputs, target, rows))

// The product alone (benchmarks and tests): out (m x n) = a (m x k) b (k x n), all row-major.
template <bool wide>
CONNECTOR_SIM_ALWAYS_INLINE void matmul_f32_body(const float* a, const float* b, float* out, std::int64_t m,
                                                 std::int64_t n, std::int64_t k, std::int64_t n_repeats) {
  for (std::int64_t r = 0; r < n_repeats; ++r) gemm<wide>({m, n, k, a, k, 1, b, n, out, n, nullptr});
}

CONNECTOR_SIM_MULTIVERSION_WIDE(void, matmul_f32,
                                (const float* a, const float* b, float* out, std::int64_t m, std::int64_t n,
                                 std::int64_t k, std::int64_t n_repeats),
                                (a, b, out, m, n, k, n_repeats))

}  // namespace cnf_train
}  // namespace connector_sim

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
