// What an implicit fixed mask can cost at best, against the stored one.
//
// The sum of pass B of the sparse kernel (simulate_sparse.hpp) for one step
// at N = 1e6, C = 200, B R = 1, float32, one thread, written out on its own:
// tiles of SPARSE_TILE_ROWS rows, stratum pair by stratum pair, each row's
// sum in k order in float64. The variants differ only in where the offsets
// within the strata come from:
//
//   stored                  uint16 offsets in tile order (the stored mask)
//   implicit_mix64          the mask's hash (sparse_mask "fixed"): one mix64
//                           per row and stratum pair, AVX2, into a buffer of
//                           the subtile, then gathered (the kernel's path)
//   implicit_mix64_3mul     the same with three vpmuludq per 64-bit multiply
//                           (the kernel before this comparison)
//   implicit_mix64_fused    the same hash, eight rows hashed then gathered
//                           at once, so that the hash could overlap the
//                           gathers in the out-of-order window
//   implicit_xoroshiro      a per-row xoroshiro128+ stream instead of the
//                           hash: among the cheapest generators of decent
//                           quality (a different mask, for comparison only)
//   implicit_no_generator   no generator at all: the row key XOR a constant
//                           per stratum pair, then the same range reduction
//                           and buffer. Statistically useless; it is the
//                           floor of any hash in this design
//
// Build and run (benchmarks/implicit_mask_floor.py does both):
//   g++ -O3 -march=x86-64-v3 -fno-tree-vectorize -Icpp/include benchmarks/implicit_mask_floor.cpp -o floor && ./floor
//
// The hash, mix64, GOLDEN and the tile size are the kernel's own (simulate_sparse.hpp).
//
// Each variant that implements the mask's hash is checked bitwise against
// the stored sums. Reported: medians of CPU time over interleaved rounds.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "connector_sim/simulate_sparse.hpp"

namespace {

using connector_sim::GOLDEN;
using connector_sim::mix64;
constexpr long TILE_ROWS = connector_sim::SPARSE_TILE_ROWS;
constexpr int ROUNDS = 11;
long N = 1000000, C = 200;
const std::uint64_t key = 12345;
std::vector<std::int64_t> strata;

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

__m256i multiply_u64_3mul(__m256i z, std::uint64_t c) {
  const __m256i c_low = _mm256_set1_epi64x(static_cast<std::int64_t>(c & 0xFFFFFFFFull));
  const __m256i c_high = _mm256_set1_epi64x(static_cast<std::int64_t>(c >> 32));
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(z, 32), c_low), _mm256_mul_epu32(z, c_high));
  return _mm256_add_epi64(_mm256_mul_epu32(z, c_low), _mm256_slli_epi64(cross, 32));
}

// mix64 with three vpmuludq per 64-bit multiply (the kernel before 19ab251).
__m256i mix64_avx2_3mul(__m256i z) {
  z = multiply_u64_3mul(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xBF58476D1CE4E5B9ull);
  z = multiply_u64_3mul(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94D049BB133111EBull);
  return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}

__m256i rotate_left(__m256i x, int k) { return _mm256_or_si256(_mm256_slli_epi64(x, k), _mm256_srli_epi64(x, 64 - k)); }

// Offsets of strata k (high halves) and k + 1 (low halves) of 8 rows from
// their 64-bit draws a (rows 0-3) and b (rows 4-7): floor(u width / 2^32).
void range_reduce(__m256i a, __m256i b, __m256i width0, __m256i width1, std::uint32_t* out0, std::uint32_t* out1) {
  const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i a0 = _mm256_srli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), width0), 32);
  const __m256i b0 = _mm256_mul_epu32(_mm256_srli_epi64(b, 32), width0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out0), _mm256_permutevar8x32_epi32(_mm256_blend_epi32(a0, b0, 0xAA), order));
  const __m256i a1 = _mm256_srli_epi64(_mm256_mul_epu32(a, width1), 32);
  const __m256i b1 = _mm256_mul_epu32(b, width1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out1), _mm256_permutevar8x32_epi32(_mm256_blend_epi32(a1, b1, 0xAA), order));
}

template <typename Offset>
void gather_stratum_pair(const Offset* __restrict o0, const Offset* __restrict o1, long n, const float* y0,
                         const float* y1, double* __restrict sums) {
  for (long r = 0; r < n; ++r) sums[r] = (sums[r] + y0[o0[r]]) + y1[o1[r]];
}

enum class Source { mix64, mix64_3mul, mix64_fused, xoroshiro, no_generator };

// The implicit sums of every tile; out[i] = sum_k y[column k of row i].
template <Source source>
__attribute__((noinline)) void implicit_sums(const float* y, double* out) {
  std::vector<double> sums(TILE_ROWS);
  std::vector<std::uint64_t> state0(TILE_ROWS), state1(TILE_ROWS);
  std::vector<std::uint32_t> offsets(2 * TILE_ROWS);
  for (long i0 = 0; i0 < N; i0 += TILE_ROWS) {
    const long n = std::min(TILE_ROWS, N - i0);
    for (long r = 0; r < n; ++r) {
      sums[r] = 0.0;
      state0[r] = mix64(key + GOLDEN * (i0 + r + 1));  // the row keys
      state1[r] = mix64(state0[r]);
    }
    for (long k = 0; k < C; k += 2) {
      const __m256i counter = _mm256_set1_epi64x(static_cast<std::int64_t>(GOLDEN * (k / 2 + 1)));
      const __m256i width0 = _mm256_set1_epi64x(strata[k + 1] - strata[k]);
      const __m256i width1 = _mm256_set1_epi64x(strata[k + 2] - strata[k + 1]);
      const float* y0 = y + strata[k];
      const float* y1 = y + strata[k + 1];
      std::uint32_t* o0 = offsets.data();
      std::uint32_t* o1 = o0 + n;
      for (long r = 0; r + 8 <= n; r += 8) {
        const __m256i keys_a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(state0.data() + r));
        const __m256i keys_b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(state0.data() + r + 4));
        __m256i a, b;
        if (source == Source::mix64 || source == Source::mix64_fused) {
          a = connector_sim::detail::mix64_avx2(_mm256_add_epi64(keys_a, counter));
          b = connector_sim::detail::mix64_avx2(_mm256_add_epi64(keys_b, counter));
        } else if (source == Source::mix64_3mul) {
          a = mix64_avx2_3mul(_mm256_add_epi64(keys_a, counter));
          b = mix64_avx2_3mul(_mm256_add_epi64(keys_b, counter));
        } else if (source == Source::no_generator) {
          a = _mm256_xor_si256(keys_a, counter);
          b = _mm256_xor_si256(keys_b, counter);
        } else {
          __m256i draw[2];
          for (int h = 0; h < 2; ++h) {
            __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(state0.data() + r + 4 * h));
            __m256i s1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(state1.data() + r + 4 * h));
            draw[h] = _mm256_add_epi64(s0, s1);
            s1 = _mm256_xor_si256(s1, s0);
            s0 = _mm256_xor_si256(_mm256_xor_si256(rotate_left(s0, 24), s1), _mm256_slli_epi64(s1, 16));
            s1 = rotate_left(s1, 37);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(state0.data() + r + 4 * h), s0);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(state1.data() + r + 4 * h), s1);
          }
          a = draw[0];
          b = draw[1];
        }
        if (source == Source::mix64_fused) {
          alignas(32) std::uint32_t eight[16];
          range_reduce(a, b, width0, width1, eight, eight + 8);
          gather_stratum_pair(eight, eight + 8, 8, y0, y1, sums.data() + r);
        } else {
          range_reduce(a, b, width0, width1, o0 + r, o1 + r);
        }
      }
      // The last n % 8 rows (the last tile), as the kernel's scalar fallback.
      for (long r = n / 8 * 8; r < n; ++r) {
        const std::uint64_t bits = mix64(state0[r] + GOLDEN * (k / 2 + 1));
        o0[r] = static_cast<std::uint32_t>(((bits >> 32) * (strata[k + 1] - strata[k])) >> 32);
        o1[r] = static_cast<std::uint32_t>(((bits & 0xFFFFFFFFull) * (strata[k + 2] - strata[k + 1])) >> 32);
      }
      if (source == Source::mix64_fused) {
        gather_stratum_pair(o0 + n / 8 * 8, o1 + n / 8 * 8, n % 8, y0, y1, sums.data() + n / 8 * 8);
      } else {
        gather_stratum_pair(o0, o1, n, y0, y1, sums.data());
      }
    }
    std::copy(sums.begin(), sums.begin() + n, out + i0);
  }
}

__attribute__((noinline)) void stored_sums(const std::uint16_t* offsets, const float* y, double* out) {
  std::vector<double> sums(TILE_ROWS);
  for (long i0 = 0; i0 < N; i0 += TILE_ROWS) {
    const long n = std::min(TILE_ROWS, N - i0);
    std::fill(sums.begin(), sums.begin() + n, 0.0);
    for (long k = 0; k < C; k += 2) {
      const std::uint16_t* o0 = offsets + i0 * C + k * n;
      gather_stratum_pair(o0, o0 + n, n, y + strata[k], y + strata[k + 1], sums.data());
    }
    std::copy(sums.begin(), sums.begin() + n, out + i0);
  }
}

}  // namespace

int main() {
  strata.resize(C + 1);
  for (long k = 0; k <= C; ++k) strata[k] = k * N / C;
  std::vector<float> y(N);
  for (long j = 0; j < N; ++j) y[j] = static_cast<float>(mix64(j) % 1000) * 1e-3f;
  // The stored mask: the offsets of the "fixed" scheme in tile order.
  std::vector<std::uint16_t> offsets(N * C);
  for (long i0 = 0; i0 < N; i0 += TILE_ROWS) {
    const long n = std::min(TILE_ROWS, N - i0);
    for (long r = 0; r < n; ++r) {
      const std::uint64_t row_key = mix64(key + GOLDEN * (i0 + r + 1));
      for (long k = 0; k < C; k += 2) {
        const std::uint64_t bits = mix64(row_key + GOLDEN * (k / 2 + 1));
        offsets[i0 * C + k * n + r] = static_cast<std::uint16_t>(((bits >> 32) * (strata[k + 1] - strata[k])) >> 32);
        offsets[i0 * C + (k + 1) * n + r] =
            static_cast<std::uint16_t>(((bits & 0xFFFFFFFFull) * (strata[k + 2] - strata[k + 1])) >> 32);
      }
    }
  }
  std::vector<double> stored(N), out(N);
  stored_sums(offsets.data(), y.data(), stored.data());
  struct Variant {
    std::string name;
    bool is_the_mask;
    std::function<void()> run;
  };
  std::vector<Variant> variants = {
      {"stored", true, [&] { stored_sums(offsets.data(), y.data(), out.data()); }},
      {"implicit_mix64", true, [&] { implicit_sums<Source::mix64>(y.data(), out.data()); }},
      {"implicit_mix64_3mul", true, [&] { implicit_sums<Source::mix64_3mul>(y.data(), out.data()); }},
      {"implicit_mix64_fused", true, [&] { implicit_sums<Source::mix64_fused>(y.data(), out.data()); }},
      {"implicit_xoroshiro", false, [&] { implicit_sums<Source::xoroshiro>(y.data(), out.data()); }},
      {"implicit_no_generator", false, [&] { implicit_sums<Source::no_generator>(y.data(), out.data()); }},
  };
  std::vector<std::vector<double>> seconds(variants.size());
  for (int round = 0; round < ROUNDS; ++round) {
    for (std::size_t v = 0; v < variants.size(); ++v) {
      const double start = cpu_seconds();
      variants[v].run();
      seconds[v].push_back(cpu_seconds() - start);
      if (variants[v].is_the_mask && out != stored) {
        std::printf("%s does not reproduce the stored sums\n", variants[v].name.c_str());
        return 1;
      }
    }
  }
  std::printf("N = %ld, C = %ld, float32, one thread; medians of %d interleaved rounds\n", N, C, ROUNDS);
  std::vector<double> medians;
  for (auto& s : seconds) {
    std::sort(s.begin(), s.end());
    medians.push_back(s[ROUNDS / 2]);
  }
  for (std::size_t v = 0; v < variants.size(); ++v) {
    std::printf("%-22s %7.1f ms  %.3f ns/connection  %.2fx stored\n", variants[v].name.c_str(), medians[v] * 1e3,
                medians[v] / (N * C) * 1e9, medians[v] / medians[0]);
  }
  return 0;
}
