// connector_sim._ext._simulate_dense_cpp: the "cpp" backend of the dense
// low-rank RNN time loops (cpp/include/connector_sim/simulate_dense.hpp).
//
// Converts nothing: every array must already have the dtype, C layout and
// shape the kernel expects (connector_sim._kernels.simulate_dense prepares
// them); a mismatch raises ValueError. The GIL is released while a kernel
// runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "array_checks.hpp"
#include "isa_binding.hpp"
#include "full_path_args.hpp"
#include "connector_sim/counter_rng.hpp"
#include "connector_sim/simd_math.hpp"
#include "connector_sim/simulate_dense.hpp"

namespace py = pybind11;
namespace cs = connector_sim;

namespace {

using array_checks::check;
using array_checks::clamp;
using array_checks::dims;
using array_checks::fill_full_path_args;
using array_checks::input;
using array_checks::dense_network;
using array_checks::output;
using array_checks::shape_of;
using array_checks::shape_string;

template <typename T>
int full_path_typed(const py::array& m_T, const py::array& n_T, const py::array& I_T, const py::array& b,
                    int activation, py::array& x, const py::array& u, double alpha, double noise_scale,
                    std::uint64_t seed, std::int64_t trial_offset, const py::array& record_idx, py::array& kappa,
                    py::array& kappa_out, py::array& record_out, const py::array& clamp_mask,
                    const py::array& clamp_value, std::int64_t clamp_start, std::int64_t clamp_stop, int n_threads,
                    std::int64_t step_offset) {
  cs::FullPathArgs<T> args;
  args.net = dense_network<T>(m_T, n_T, I_T, b, activation);
  fill_full_path_args(args, x, u, alpha, noise_scale, seed, trial_offset, step_offset, record_idx, kappa, kappa_out,
                      record_out, clamp_mask, clamp_value, clamp_start, clamp_stop);
  py::gil_scoped_release release;
  return static_cast<int>(cs::full_path(args, n_threads));
}

template <typename T>
int latent_path_typed(const py::array& m_T, const py::array& n_T, const py::array& I_T, const py::array& b,
                      int activation, const py::array& v, const py::array& xperp, const py::array& decay, double alpha,
                      py::array& kappa, py::array& kappa_out, const py::array& clamp_mask,
                      const py::array& clamp_value, std::int64_t clamp_start, std::int64_t clamp_stop,
                      int n_threads) {
  cs::LatentPathArgs<T> args;
  args.net = dense_network<T>(m_T, n_T, I_T, b, activation);
  const py::ssize_t N = args.net.N, R = args.net.R, D = args.net.D;
  const py::ssize_t B = dims(kappa, "kappa", 2)[0];
  const auto v_shape = dims(v, "v", 3);
  if (v_shape[1] < 1) throw std::invalid_argument("v must hold at least v_0: got shape " + shape_string(v_shape));
  const py::ssize_t n_steps = v_shape[1] - 1;
  if (v_shape[0] != 1 && v_shape[0] != B) {
    throw std::invalid_argument("v must have 1 row (shared by all trials) or B = " + std::to_string(B) +
                                " rows, got shape " + shape_string(v_shape));
  }
  const py::ssize_t xperp_rows = dims(xperp, "xperp", 2)[0];
  if (xperp_rows != 0 && xperp_rows != B) {
    throw std::invalid_argument("xperp must have 0 rows (none) or B = " + std::to_string(B) + " rows, got shape " +
                                shape_string(shape_of(xperp)));
  }
  args.v = input<double>(v, "v", {v_shape[0], n_steps + 1, D});
  args.v_rows = v_shape[0];
  const T* xperp_data = input<T>(xperp, "xperp", {xperp_rows, N});
  args.xperp = xperp_rows == 0 ? nullptr : xperp_data;
  args.decay = input<double>(decay, "decay", {n_steps + 1});
  args.alpha = alpha;
  args.kappa = output<double>(kappa, "kappa", {B, R});
  args.kappa_out = output<double>(kappa_out, "kappa_out", {B, n_steps + 1, R});
  args.clamp = clamp<T>(clamp_mask, clamp_value, clamp_start, clamp_stop, N);
  args.B = B;
  args.n_steps = n_steps;
  py::gil_scoped_release release;
  return static_cast<int>(cs::latent_path(args, n_threads));
}

// One step on a slice, with krec from outside (the distributed simulation):
// connector_sim::full_path_step. u is (1 or B, 1, D), record_out (B, 2, K),
// partial (n_blocks, B, R); krec None runs the pre-pass over x_0.
template <typename T>
void full_path_step_typed(const py::array& m_T, const py::array& n_T, const py::array& I_T, const py::array& b,
                          int activation, py::array& x, const py::array& u, double alpha, double noise_scale,
                          std::uint64_t seed, std::int64_t trial_offset, std::int64_t step, std::int64_t unit_offset,
                          const py::array& record_idx, const py::object& krec, bool accumulate, py::array& record_out,
                          const py::array& clamp_mask, const py::array& clamp_value, std::int64_t clamp_start,
                          std::int64_t clamp_stop, py::array& partial, int n_threads) {
  cs::FullPathArgs<T> args;
  args.net = dense_network<T>(m_T, n_T, I_T, b, activation);
  const py::ssize_t B = dims(x, "x", 2)[0], R = args.net.R;
  if (dims(u, "u", 3)[1] != 1) throw std::invalid_argument("u must hold one step: shape (1 or B, 1, D)");
  py::array_t<double> kappa({B, R});
  py::array_t<double> kappa_out({B, py::ssize_t{2}, R});
  py::array kappa_array = kappa, kappa_out_array = kappa_out;
  fill_full_path_args(args, x, u, alpha, noise_scale, seed, trial_offset, step, record_idx, kappa_array,
                      kappa_out_array, record_out, clamp_mask, clamp_value, clamp_start, clamp_stop);
  args.unit_offset = unit_offset;
  const double* krec_data = nullptr;
  if (!krec.is_none()) krec_data = input<double>(krec.cast<py::array>(), "krec", {B, R});
  double* partial_data = output<double>(partial, "partial", {cs::n_blocks_of(args.net.N), B, R});
  py::gil_scoped_release release;
  cs::full_path_step(args, krec_data, accumulate, partial_data, n_threads);
}

// connector_sim::latent_path_step: kappa (B, R) and v (B, D) float64, cast to T
// here as the latent time loop casts them; partial (n_blocks, B, R).
template <typename T>
void latent_path_step_typed(const py::array& m_T, const py::array& n_T, const py::array& I_T, const py::array& b,
                            int activation, const py::array& kappa, const py::array& v, const py::array& xperp,
                            double decay, const py::array& clamp_mask, const py::array& clamp_value,
                            std::int64_t clamp_start, std::int64_t clamp_stop, py::array& partial, int n_threads) {
  cs::LatentPathArgs<T> args;
  args.net = dense_network<T>(m_T, n_T, I_T, b, activation);
  const py::ssize_t N = args.net.N, R = args.net.R, D = args.net.D;
  const py::ssize_t B = dims(kappa, "kappa", 2)[0];
  const double* kappa_data = input<double>(kappa, "kappa", {B, R});
  const double* v_data = input<double>(v, "v", {B, D});
  const py::ssize_t xperp_rows = dims(xperp, "xperp", 2)[0];
  if (xperp_rows != 0 && xperp_rows != B) {
    throw std::invalid_argument("xperp must have 0 rows (none) or B = " + std::to_string(B) + " rows, got shape " +
                                shape_string(shape_of(xperp)));
  }
  const T* xperp_data = input<T>(xperp, "xperp", {xperp_rows, N});
  args.xperp = xperp_rows == 0 ? nullptr : xperp_data;
  args.alpha = 0.0;
  args.clamp = clamp<T>(clamp_mask, clamp_value, clamp_start, clamp_stop, N);
  args.B = B;
  args.n_steps = 1;
  double* partial_data = output<double>(partial, "partial", {cs::n_blocks_of(N), B, R});
  std::vector<T> kappa_T(kappa_data, kappa_data + B * R), v_T(v_data, v_data + B * D);
  py::gil_scoped_release release;
  cs::latent_path_step(args, kappa_T.data(), v_T.data(), static_cast<T>(decay), partial_data, n_threads);
}

// The dtype of the loadings (or of the helpers' input) picks the instantiation.
bool is_float32(const py::array& a, const char* name) {
  if (py::isinstance<py::array_t<float>>(a)) return true;
  if (py::isinstance<py::array_t<double>>(a)) return false;
  throw std::invalid_argument(std::string(name) + " must have dtype float32 or float64, got " +
                              py::str(a.dtype()).cast<std::string>());
}

int full_path(py::array m_T, py::array n_T, py::array I_T, py::array b, int activation,
              py::array x, py::array u, double alpha, double noise_scale, std::uint64_t seed,
              std::int64_t trial_offset, py::array record_idx, py::array kappa, py::array kappa_out,
              py::array record_out, py::array clamp_mask, py::array clamp_value,
              std::int64_t clamp_start, std::int64_t clamp_stop, int n_threads, std::int64_t step_offset) {
  if (is_float32(m_T, "m_T")) {
    return full_path_typed<float>(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset,
                                  record_idx, kappa, kappa_out, record_out, clamp_mask, clamp_value, clamp_start,
                                  clamp_stop, n_threads, step_offset);
  }
  return full_path_typed<double>(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset,
                                 record_idx, kappa, kappa_out, record_out, clamp_mask, clamp_value, clamp_start,
                                 clamp_stop, n_threads, step_offset);
}

int latent_path(py::array m_T, py::array n_T, py::array I_T, py::array b, int activation,
                py::array v, py::array xperp, py::array decay, double alpha, py::array kappa,
                py::array kappa_out, py::array clamp_mask, py::array clamp_value,
                std::int64_t clamp_start, std::int64_t clamp_stop, int n_threads) {
  if (is_float32(m_T, "m_T")) {
    return latent_path_typed<float>(m_T, n_T, I_T, b, activation, v, xperp, decay, alpha, kappa, kappa_out,
                                    clamp_mask, clamp_value, clamp_start, clamp_stop, n_threads);
  }
  return latent_path_typed<double>(m_T, n_T, I_T, b, activation, v, xperp, decay, alpha, kappa, kappa_out,
                                   clamp_mask, clamp_value, clamp_start, clamp_stop, n_threads);
}

void full_path_step(py::array m_T, py::array n_T, py::array I_T, py::array b, int activation, py::array x,
                    py::array u, double alpha, double noise_scale, std::uint64_t seed, std::int64_t trial_offset,
                    std::int64_t step, std::int64_t unit_offset, py::array record_idx, py::object krec,
                    bool accumulate, py::array record_out, py::array clamp_mask, py::array clamp_value,
                    std::int64_t clamp_start, std::int64_t clamp_stop, py::array partial, int n_threads) {
  if (is_float32(m_T, "m_T")) {
    return full_path_step_typed<float>(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset,
                                       step, unit_offset, record_idx, krec, accumulate, record_out, clamp_mask,
                                       clamp_value, clamp_start, clamp_stop, partial, n_threads);
  }
  return full_path_step_typed<double>(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset,
                                      step, unit_offset, record_idx, krec, accumulate, record_out, clamp_mask,
                                      clamp_value, clamp_start, clamp_stop, partial, n_threads);
}

void latent_path_step(py::array m_T, py::array n_T, py::array I_T, py::array b, int activation, py::array kappa,
                      py::array v, py::array xperp, double decay, py::array clamp_mask, py::array clamp_value,
                      std::int64_t clamp_start, std::int64_t clamp_stop, py::array partial, int n_threads) {
  if (is_float32(m_T, "m_T")) {
    return latent_path_step_typed<float>(m_T, n_T, I_T, b, activation, kappa, v, xperp, decay, clamp_mask,
                                         clamp_value, clamp_start, clamp_stop, partial, n_threads);
  }
  return latent_path_step_typed<double>(m_T, n_T, I_T, b, activation, kappa, v, xperp, decay, clamp_mask,
                                        clamp_value, clamp_start, clamp_stop, partial, n_threads);
}

// Test helpers: the same inlined code as the kernels' clones.

CONNECTOR_SIM_ALWAYS_INLINE void tanh_f32_body(const float* x, float* out, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) out[i] = cs::simd::tanh_approx(x[i]);
}
CONNECTOR_SIM_MULTIVERSION(void, tanh_f32, (const float* x, float* out, std::int64_t n), (x, out, n))

CONNECTOR_SIM_ALWAYS_INLINE void tanh_f64_body(const double* x, double* out, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) out[i] = cs::simd::tanh_approx(x[i]);
}
CONNECTOR_SIM_MULTIVERSION(void, tanh_f64, (const double* x, double* out, std::int64_t n), (x, out, n))

py::array simd_tanh(py::array x) {
  if (is_float32(x, "x")) {
    const auto in = py::array_t<float, py::array::c_style>::ensure(x);
    py::array_t<float> out(shape_of(in));
    tanh_f32(in.data(), out.mutable_data(), in.size());
    return out;
  }
  const auto in = py::array_t<double, py::array::c_style>::ensure(x);
  py::array_t<double> out(shape_of(in));
  tanh_f64(in.data(), out.mutable_data(), in.size());
  return out;
}

py::array standard_normal(std::uint64_t seed, std::int64_t trial, std::int64_t step, std::int64_t n_units,
                          const py::object& dtype) {
  if (n_units < 0) throw std::invalid_argument("n_units must be >= 0, got " + std::to_string(n_units));
  const py::dtype resolved = py::dtype::from_args(dtype);
  const std::uint64_t key = cs::step_key(seed, trial, step);
  if (resolved.normalized_num() == py::dtype::num_of<float>()) {
    py::array_t<float> out(n_units);
    cs::fill_standard_normal_dispatch(key, 0, n_units, out.mutable_data());
    return out;
  }
  if (resolved.normalized_num() == py::dtype::num_of<double>()) {
    py::array_t<double> out(n_units);
    cs::fill_standard_normal_dispatch(key, 0, n_units, out.mutable_data());
    return out;
  }
  throw std::invalid_argument("dtype must be float32 or float64, got " + py::str(resolved).cast<std::string>());
}

}  // namespace

PYBIND11_MODULE(_simulate_dense_cpp, m) {
  add_isa_functions(m);
  m.doc() = "C++ kernels of the dense low-rank RNN time loops (the 'cpp' backend); see "
            "connector_sim._kernels.simulate_dense for the NumPy reference they implement.";
  m.attr("BLOCK_SIZE") = cs::BLOCK_SIZE;
  m.def("full_path", &full_path,
        "Full-state time loop (full_path_reference); updates x, kappa, kappa_out, record_out in place.\n"
        "Returns a status: 0 ok, 1 kappa ended non-finite. Step t draws the noise of counter_rng step step_offset + t.",
        py::arg("m_T").noconvert(), py::arg("n_T").noconvert(), py::arg("I_T").noconvert(), py::arg("b").noconvert(),
        py::arg("activation"), py::arg("x").noconvert(), py::arg("u").noconvert(), py::arg("alpha"),
        py::arg("noise_scale"), py::arg("seed"), py::arg("trial_offset"), py::arg("record_idx").noconvert(),
        py::arg("kappa").noconvert(), py::arg("kappa_out").noconvert(), py::arg("record_out").noconvert(),
        py::arg("clamp_mask").noconvert(), py::arg("clamp_value").noconvert(), py::arg("clamp_start"),
        py::arg("clamp_stop"), py::arg("n_threads"), py::arg("step_offset") = 0);
  m.def("latent_path", &latent_path,
        "Latent time loop (latent_path_reference); updates kappa and kappa_out in place.\n"
        "Returns a status: 0 ok, 1 kappa ended non-finite.",
        py::arg("m_T").noconvert(), py::arg("n_T").noconvert(), py::arg("I_T").noconvert(), py::arg("b").noconvert(),
        py::arg("activation"), py::arg("v").noconvert(), py::arg("xperp").noconvert(), py::arg("decay").noconvert(),
        py::arg("alpha"), py::arg("kappa").noconvert(), py::arg("kappa_out").noconvert(),
        py::arg("clamp_mask").noconvert(), py::arg("clamp_value").noconvert(), py::arg("clamp_start"),
        py::arg("clamp_stop"), py::arg("n_threads"));
  m.def("full_path_step", &full_path_step,
        "One full-path step on a slice with krec from outside (full_path_step_reference in\n"
        "connector_sim._kernels.distributed_step); fills x, record_out[:, 1] and the block sums partial.",
        py::arg("m_T").noconvert(), py::arg("n_T").noconvert(), py::arg("I_T").noconvert(), py::arg("b").noconvert(),
        py::arg("activation"), py::arg("x").noconvert(), py::arg("u").noconvert(), py::arg("alpha"),
        py::arg("noise_scale"), py::arg("seed"), py::arg("trial_offset"), py::arg("step"), py::arg("unit_offset"),
        py::arg("record_idx").noconvert(), py::arg("krec"), py::arg("accumulate"),
        py::arg("record_out").noconvert(), py::arg("clamp_mask").noconvert(), py::arg("clamp_value").noconvert(),
        py::arg("clamp_start"), py::arg("clamp_stop"), py::arg("partial").noconvert(), py::arg("n_threads"));
  m.def("latent_path_step", &latent_path_step,
        "Block sums of n^T phi(z) of one latent step on a slice (latent_path_step_reference in\n"
        "connector_sim._kernels.distributed_step); fills partial (n_blocks, B, R).",
        py::arg("m_T").noconvert(), py::arg("n_T").noconvert(), py::arg("I_T").noconvert(), py::arg("b").noconvert(),
        py::arg("activation"), py::arg("kappa").noconvert(), py::arg("v").noconvert(), py::arg("xperp").noconvert(),
        py::arg("decay"), py::arg("clamp_mask").noconvert(), py::arg("clamp_value").noconvert(),
        py::arg("clamp_start"), py::arg("clamp_stop"), py::arg("partial").noconvert(), py::arg("n_threads"));
  m.def("simd_tanh", &simd_tanh,
        "The kernels' tanh approximation applied to x (float32: rational, float64: exp-based). For tests.",
        py::arg("x"));
  m.def("standard_normal", &standard_normal,
        "counter_rng.standard_normal(seed, trial, step, n_units) as the kernels compute it, in dtype. For tests.",
        py::arg("seed"), py::arg("trial"), py::arg("step"), py::arg("n_units"), py::arg("dtype"));
}
