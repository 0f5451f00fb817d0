// The functions every C++ extension module exposes about its instruction-set
// clones (connector_sim/isa.hpp): kernel_isa(), cpu_isa(), set_kernel_isa(name).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "connector_sim/isa.hpp"

inline void add_isa_functions(pybind11::module_& m) {
  connector_sim::isa::level();  // reads CONNECTOR_SIM_ISA now, at import
  m.def(
      "kernel_isa", [] { return std::string(connector_sim::isa::level_name(connector_sim::isa::level())); },
      "The clone of the kernels this module runs: 'avx512' (x86-64-v4), 'avx2' (x86-64-v3) or 'default'.");
  m.def(
      "cpu_isa", [] { return std::string(connector_sim::isa::level_name(connector_sim::isa::cpu_level())); },
      "The widest clone this CPU supports: 'avx512', 'avx2' or 'default'.");
  m.def("set_kernel_isa", &connector_sim::isa::set_level,
        "Run the 'avx512', 'avx2' or 'default' clone of this module's kernels from now on (for tests and "
        "benchmarks; ValueError if the CPU lacks it). CONNECTOR_SIM_ISA sets the starting choice.",
        pybind11::arg("isa"));
}
