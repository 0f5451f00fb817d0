// connector_sim._ext._flow_field_cpp: the "cpp" backend of the flow field of
// a sampled low-rank RNN (cpp/include/connector_sim/flow_field.hpp).
//
// Converts nothing: every array must already have the dtype, C layout and
// shape the kernel expects (connector_sim._kernels.flow_field prepares them);
// a mismatch raises ValueError. The GIL is released while the kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "array_checks.hpp"
#include "isa_binding.hpp"
#include "connector_sim/flow_field.hpp"
#include "connector_sim/simd_math.hpp"

namespace py = pybind11;
namespace ff = connector_sim::flow_field;

namespace {

using array_checks::check;
using array_checks::dense_network;
using array_checks::dims;
using array_checks::input;
using array_checks::shape_of;
using array_checks::shape_string;

template <typename T>
void flow_field_typed(const py::array& m_T, const py::array& n_T, const py::array& I_T, const py::array& b,
                      int activation, const py::array& kappa, const py::array& v, py::array& out, int n_threads) {
  ff::FlowFieldArgs<T> args;
  args.net = dense_network<T>(m_T, n_T, I_T, b, activation);
  const py::ssize_t R = args.net.R, D = args.net.D;
  const py::ssize_t P = dims(kappa, "kappa", 2)[0];
  args.kappa = input<double>(kappa, "kappa", {P, R});
  args.v = input<double>(v, "v", {P, D});
  check<double>(out, "out", {P, R}, true);
  args.out = static_cast<double*>(out.mutable_data());
  args.P = P;
  py::gil_scoped_release release;
  ff::flow_field(args, n_threads);
}

void flow_field(py::array m_T, py::array n_T, py::array I_T, py::array b, int activation, py::array kappa,
                py::array v, py::array out, int n_threads) {
  if (py::isinstance<py::array_t<float>>(m_T)) {
    return flow_field_typed<float>(m_T, n_T, I_T, b, activation, kappa, v, out, n_threads);
  }
  if (py::isinstance<py::array_t<double>>(m_T)) {
    return flow_field_typed<double>(m_T, n_T, I_T, b, activation, kappa, v, out, n_threads);
  }
  throw std::invalid_argument("m_T must have dtype float32 or float64, got " + py::str(m_T.dtype()).cast<std::string>());
}

// Benchmark helper: out += phi(x + k 2^-20) for k < n_repeats, with the kernel's inlined
// activation (x and out stay in cache): the activation-only cost that bounds
// the kernel (benchmarks/compare_flow_field.py).
template <typename T, int activation>
CONNECTOR_SIM_ALWAYS_INLINE void repeat_activation(const T* __restrict x, T* __restrict out, std::int64_t n,
                                                   std::int64_t n_repeats) {
  for (std::int64_t k = 0; k < n_repeats; ++k) {
    // Repeat k evaluates phi(x + k 2^-20): with phi(x) alone gcc 12 moved
    // the evaluation out of the repeats (which made an earlier version of
    // this benchmark 2.3x too fast). The empty asm statement keeps the
    // repeats apart, so that the loops are not interchanged into a scalar
    // inner loop over k either.
    const T shift = static_cast<T>(k) * T(0x1p-20);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) out[i] += connector_sim::simd::activation<activation>(x[i] + shift);
#if defined(__GNUC__) || defined(__clang__)
    asm volatile("" ::: "memory");
#endif
  }
}

template <typename T>
CONNECTOR_SIM_ALWAYS_INLINE void repeat_any(int activation, const T* x, T* out, std::int64_t n, std::int64_t n_repeats) {
  namespace simd = connector_sim::simd;
  switch (activation) {
    case simd::tanh_code:
      return repeat_activation<T, simd::tanh_code>(x, out, n, n_repeats);
    case simd::relu_code:
      return repeat_activation<T, simd::relu_code>(x, out, n, n_repeats);
    case simd::softplus_code:
      return repeat_activation<T, simd::softplus_code>(x, out, n, n_repeats);
    case simd::sigmoid_code:
      return repeat_activation<T, simd::sigmoid_code>(x, out, n, n_repeats);
    default:
      return repeat_activation<T, simd::identity_code>(x, out, n, n_repeats);
  }
}

CONNECTOR_SIM_ALWAYS_INLINE void repeat_f32_body(int activation, const float* x, float* out, std::int64_t n,
                                            std::int64_t n_repeats) {
  repeat_any<float>(activation, x, out, n, n_repeats);
}
CONNECTOR_SIM_MULTIVERSION(void, repeat_f32,
                           (int activation, const float* x, float* out, std::int64_t n, std::int64_t n_repeats),
                           (activation, x, out, n, n_repeats))

CONNECTOR_SIM_ALWAYS_INLINE void repeat_f64_body(int activation, const double* x, double* out, std::int64_t n,
                                            std::int64_t n_repeats) {
  repeat_any<double>(activation, x, out, n, n_repeats);
}
CONNECTOR_SIM_MULTIVERSION(void, repeat_f64,
                           (int activation, const double* x, double* out, std::int64_t n, std::int64_t n_repeats),
                           (activation, x, out, n, n_repeats))

void activation_repeated(py::array x, py::array out, int activation, std::int64_t n_repeats) {
  if (n_repeats < 0) throw std::invalid_argument("n_repeats must be >= 0, got " + std::to_string(n_repeats));
  if (!connector_sim::simd::is_activation_code(activation)) {
    throw std::invalid_argument("unknown activation code " + std::to_string(activation) + " " +
                                CONNECTOR_SIM_ACTIVATION_CODES);
  }
  const auto shape = dims(x, "x", 1);
  if (py::isinstance<py::array_t<float>>(x)) {
    const float* in = input<float>(x, "x", shape);
    check<float>(out, "out", shape, true);
    py::gil_scoped_release release;
    return repeat_f32(activation, in, static_cast<float*>(out.mutable_data()), shape[0], n_repeats);
  }
  const double* in = input<double>(x, "x", shape);
  check<double>(out, "out", shape, true);
  py::gil_scoped_release release;
  repeat_f64(activation, in, static_cast<double*>(out.mutable_data()), shape[0], n_repeats);
}

void tanh_repeated(py::array x, py::array out, std::int64_t n_repeats) {
  activation_repeated(x, out, connector_sim::simd::tanh_code, n_repeats);
}

}  // namespace

PYBIND11_MODULE(_flow_field_cpp, m) {
  add_isa_functions(m);
  m.doc() = "C++ kernel of the flow field of a sampled low-rank RNN (the 'cpp' backend); see "
            "connector_sim._kernels.flow_field for the NumPy reference it implements.";
  m.attr("BLOCK_SIZE") = ff::BLOCK_SIZE;
  m.attr("POINT_BLOCK") = ff::POINT_BLOCK;
  m.attr("CHUNK") = ff::CHUNK;
  m.attr("LANES") = ff::LANES;
  m.def("flow_field", &flow_field,
        "out[p] = n^T phi(m kappa[p] + I v[p] + b) / N at P points (flow_field_reference); fills out in place.\n"
        "Loadings float32 or float64 (the arithmetic runs in their dtype, sums in float64); kappa, v, out float64.",
        py::arg("m_T").noconvert(), py::arg("n_T").noconvert(), py::arg("I_T").noconvert(), py::arg("b").noconvert(),
        py::arg("activation"), py::arg("kappa").noconvert(), py::arg("v").noconvert(), py::arg("out").noconvert(),
        py::arg("n_threads") = 1);
  m.def("tanh_repeated", &tanh_repeated,
        "out += tanh(x + k 2^-20) for k < n_repeats, with the kernel's SIMD tanh (float32 or float64; x, out 1-D). "
        "For benchmarks: the activation-only time of x.size * n_repeats evaluations.",
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("n_repeats"));
  m.def("activation_repeated", &activation_repeated,
        "out += phi(x + k 2^-20) for k < n_repeats, with the kernels' inlined activation of code `activation` "
        "(connector_sim.activations.activation_code; float32 or float64; x, out 1-D). With n_repeats = 1 and out "
        "zero it evaluates phi(x) as the kernels do (tests); larger n_repeats time the activation alone.",
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("activation"), py::arg("n_repeats"));
}
