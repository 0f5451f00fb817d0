// Run-time choice between the kernels' instruction-set clones.
//
// Every compiled kernel is built three times from one always-inlined body:
//
//   avx512   target("arch=x86-64-v4"): AVX-512 F/BW/CD/DQ/VL, 512-bit vectors
//            preferred for the loops the compiler vectorises (the tanh,
//            activation, noise and hash loops: 16 float or 8 double lanes);
//   avx2     target("arch=x86-64-v3"): AVX2, FMA, BMI2 (256-bit vectors);
//   default  the flags of the translation unit (baseline x86-64: SSE2).
//
// The lane sums (lane_sums.hpp) keep their explicit 32-byte vectors in every
// clone, so the order of the additions, and thus every result, is the same
// whichever clone runs (up to FMA contraction: the avx2 and avx512 clones fuse
// multiply-adds, the default clone cannot).
//
// The clone is picked per call from a level set once per extension module:
// the widest level the CPU supports (with the OS saving the AVX-512 state),
// lowered by the environment variable CONNECTOR_SIM_ISA=avx512|avx2|default
// read when the module is imported, or by set_level() (exposed to
// Python as `set_kernel_isa`) so that tests can cover the narrower clones on
// a wide machine. No -march flag is needed: the module runs on any x86-64.
//
// Why the C++ modules are not built with -march=native (setup.py's
// CONNECTOR_SIM_NATIVE=1 adds -mtune=native instead). Measured with the
// previous dispatch, target_clones("arch=x86-64-v3", "default"), gcc 12.2,
// on an AVX-512 EPYC (one thread, CPU time, alternating processes): the
// latent step at N = 1e6 float32 took 2.20 ms with -march=native against
// 0.60 ms without, the full step 2.78 against 0.67 ms (an AVX-512 Xeon gave
// 2.53 against 0.70 ms). The resolver picks the x86-64-v3 clone on every
// AVX2 or AVX-512 CPU with either build, but with -march=native that clone is
// narrower than the rest of the file: gcc does not inline a function whose
// instruction set is not a subset of its caller's, so the clone called the
// out-of-line std::min<unsigned> (of clip_symmetric) and std::fabs for every
// element, and its tanh loop ran scalar (objdump: no vdivps ymm left in
// latent_path_block_f32's v3 clone, 55 calls against 15; std::fill,
// std::copy and Clamp::active were called too). Neither the division nor a
// mask/blend was the cost, and no 512-bit code ran at all. With 512-bit
// vectors where they belong (the avx512 clone here), the same tanh loop runs
// 1.9x faster than the AVX2 clone's on that EPYC (float32 6.6 against 3.4 G
// values/s, float64 1.29 against 0.67), whereas -march=icelake-server or
// sapphirerapids tuning keeps 256-bit vectors (3.6 and 0.69 G/s): hence
// prefer-vector-width=512 in the avx512 clone's target.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CONNECTOR_SIM_NO_TARGET_CLONES)
#define CONNECTOR_SIM_ISA_CLONES 1
#define CONNECTOR_SIM_TARGET_AVX512 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define CONNECTOR_SIM_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#endif

namespace connector_sim {
namespace isa {

enum Level : int { level_default = 0, level_avx2 = 1, level_avx512 = 2 };

inline const char* level_name(int level) {
  return level == level_avx512 ? "avx512" : level == level_avx2 ? "avx2" : "default";
}

// The level named `name` ("avx512", "avx2" or "default"), -1 if none.
inline int level_from_name(const char* name) {
  if (std::strcmp(name, "avx512") == 0) return level_avx512;
  if (std::strcmp(name, "avx2") == 0) return level_avx2;
  if (std::strcmp(name, "default") == 0) return level_default;
  return -1;
}

// The widest clone this CPU can run.
inline int cpu_level() {
#ifdef CONNECTOR_SIM_ISA_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return level_avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return level_avx2;
#endif
  return level_default;
}

inline std::atomic<int>& level_storage() {
  static std::atomic<int> level{[] {
    int level = cpu_level();
    if (const char* requested = std::getenv("CONNECTOR_SIM_ISA")) {
      const int wanted = level_from_name(requested);
      if (wanted >= 0 && wanted < level) level = wanted;  // never wider than the CPU
    }
    return level;
  }()};
  return level;
}

// The clone the kernels of this module run.
inline int level() { return level_storage().load(std::memory_order_relaxed); }

// Run the clone named `name` from now on; throws std::invalid_argument for an
// unknown name or one wider than the CPU supports.
inline void set_level(const std::string& name) {
  const int wanted = level_from_name(name.c_str());
  if (wanted < 0) {
    throw std::invalid_argument("isa must be 'avx512', 'avx2' or 'default', got '" + name + "'");
  }
  if (wanted > cpu_level()) {
    throw std::invalid_argument("isa '" + name + "' is not supported by this CPU (widest: '" +
                                level_name(cpu_level()) + "')");
  }
  level_storage().store(wanted, std::memory_order_relaxed);
}

}  // namespace isa
}  // namespace connector_sim

// CONNECTOR_SIM_MULTIVERSION(ret, name, (params), (args)): defines
// name_avx512, name_avx2 and name_default, each calling the always-inlined
// name##_body(args) compiled for its instruction set, and `ret name(params)`,
// which calls the clone of isa::level() (one predictable branch per call; the
// kernels call it per block of neurons or points). The _ATTR form adds
// function attributes to every clone.
#ifdef CONNECTOR_SIM_ISA_CLONES
// The dispatcher every multiversioned kernel gets: the clone of the level
// chosen at import (name##_avx512, name##_avx2 or name##_default).
#define CONNECTOR_SIM_DISPATCH_(ret, name, params, args) \
  inline ret name params {                               \
    switch (::connector_sim::isa::level()) {             \
      case ::connector_sim::isa::level_avx512:           \
        return name##_avx512 args;                       \
      case ::connector_sim::isa::level_avx2:             \
        return name##_avx2 args;                         \
      default:                                           \
        return name##_default args;                      \
    }                                                    \
  }
#define CONNECTOR_SIM_MULTIVERSION_ATTR(attrs, ret, name, params, args)                              \
  CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) attrs inline ret name##_avx512 params {      \
    return name##_body args;                                                                          \
  }                                                                                                   \
  CONNECTOR_SIM_TARGET_AVX2 __attribute__((noinline)) attrs inline ret name##_avx2 params {          \
    return name##_body args;                                                                          \
  }                                                                                                   \
  __attribute__((noinline)) attrs inline ret name##_default params { return name##_body args; }      \
  CONNECTOR_SIM_DISPATCH_(ret, name, params, args)
#else
#define CONNECTOR_SIM_MULTIVERSION_ATTR(attrs, ret, name, params, args) \
  attrs inline ret name params { return name##_body args; }
#endif
#define CONNECTOR_SIM_MULTIVERSION(ret, name, params, args) CONNECTOR_SIM_MULTIVERSION_ATTR(, ret, name, params, args)

// CONNECTOR_SIM_MULTIVERSION_WIDE(ret, name, (params), (args)): as
// CONNECTOR_SIM_MULTIVERSION for a body that is a template on `bool wide`:
// the avx512 clone calls name##_body<true>(args), the others (and a build
// without clones) name##_body<false>(args). Code under `if constexpr (wide)`
// (AVX-512 intrinsics, a loop nest that needs 32 vector registers) is thus
// compiled into the avx512 clone only and leaves the narrower clones as they
// were.
#ifdef CONNECTOR_SIM_ISA_CLONES
#define CONNECTOR_SIM_MULTIVERSION_WIDE(ret, name, params, args)                                     \
  CONNECTOR_SIM_TARGET_AVX512 __attribute__((noinline)) inline ret name##_avx512 params {           \
    return name##_body<true> args;                                                                   \
  }                                                                                                  \
  CONNECTOR_SIM_TARGET_AVX2 __attribute__((noinline)) inline ret name##_avx2 params {               \
    return name##_body<false> args;                                                                  \
  }                                                                                                  \
  __attribute__((noinline)) inline ret name##_default params { return name##_body<false> args; }   \
  CONNECTOR_SIM_DISPATCH_(ret, name, params, args)
#else
#define CONNECTOR_SIM_MULTIVERSION_WIDE(ret, name, params, args) \
  inline ret name params { return name##_body<false> args; }
#endif
