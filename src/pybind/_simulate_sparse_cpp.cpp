// connector_sim._ext._simulate_sparse_cpp: the "cpp" backend of sparse
// low-rank networks (cpp/include/connector_sim/simulate_sparse.hpp).
//
// Converts nothing: every array must already have the dtype, C layout and
// shape the kernel expects (connector_sim._kernels.simulate_sparse prepares
// them); a mismatch raises ValueError, as does a mask whose columns could
// fall outside [0, N). The GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "array_checks.hpp"
#include "isa_binding.hpp"
#include "full_path_args.hpp"
#include "connector_sim/simulate_sparse.hpp"

namespace py = pybind11;
namespace cs = connector_sim;

namespace {

using array_checks::dense_network;
using array_checks::dims;
using array_checks::fill_full_path_args;
using array_checks::input;
using array_checks::output;
using array_checks::shape_of;
using array_checks::shape_string;

// The mask arrays of one mode: strata (C + 1,) for "fixed" and "tiled",
// indptr (N + 1,) and indices (nnz,) for "csr", indices (N C,) uint16 or
// uint32 offsets for "tiled"; the others may be empty.
cs::SparseMaskView mask_view(int mode, std::uint64_t key, const py::array& strata, double log_q,
                             const py::array& indptr, const py::array& indices, py::ssize_t N) {
  cs::SparseMaskView mask{mode, N, key, nullptr, 0, log_q, nullptr, nullptr, nullptr, 0};
  if (mode == cs::mask_fixed || mode == cs::mask_tiled) {
    const py::ssize_t length = dims(strata, "strata", 1)[0];
    if (length < 2) throw std::invalid_argument("strata must hold C + 1 >= 2 values");
    mask.strata = input<std::int64_t>(strata, "strata", {length});
    mask.C = length - 1;
  }
  if (mode == cs::mask_csr) {
    mask.indptr = input<std::int64_t>(indptr, "indptr", {N + 1});
    const py::ssize_t nnz = dims(indices, "indices", 1)[0];
    mask.indices = input<std::int32_t>(indices, "indices", {nnz});
    if (mask.indptr[N] != nnz) {
      throw std::invalid_argument("indptr[N] = " + std::to_string(mask.indptr[N]) + " must equal len(indices) = " +
                                  std::to_string(nnz));
    }
  } else if (mode == cs::mask_tiled) {
    // offsets within the strata: uint16 or uint32
    const py::ssize_t nnz = N * static_cast<py::ssize_t>(mask.C);
    if (indices.dtype().is(py::dtype::of<std::uint16_t>())) {
      mask.offsets = input<std::uint16_t>(indices, "indices", {nnz});
      mask.offset_bytes = 2;
    } else {
      mask.offsets = input<std::uint32_t>(indices, "indices", {nnz});
      mask.offset_bytes = 4;
    }
  }
  return mask;
}

template <typename T>
int full_path_typed(int mode, std::uint64_t key, const py::array& strata, double log_q, const py::array& indptr,
                    const py::array& indices, const py::array& m_T, const py::array& n_T, const py::array& I_T,
                    const py::array& b, int activation, double weight, double gain, py::array& x, const py::array& u,
                    double alpha, double noise_scale, std::uint64_t seed, std::int64_t trial_offset,
                    const py::array& record_idx, py::array& kappa, py::array& kappa_out, py::array& record_out,
                    const py::array& clamp_mask, const py::array& clamp_value, std::int64_t clamp_start,
                    std::int64_t clamp_stop, int n_threads, std::int64_t step_offset) {
  cs::SparsePathArgs<T> args;
  args.net = dense_network<T>(m_T, n_T, I_T, b, activation);
  args.mask = mask_view(mode, key, strata, log_q, indptr, indices, args.net.N);
  args.weight = weight;
  args.gain = gain;
  fill_full_path_args(args, x, u, alpha, noise_scale, seed, trial_offset, step_offset, record_idx, kappa, kappa_out,
                      record_out, clamp_mask, clamp_value, clamp_start, clamp_stop);
  py::gil_scoped_release release;
  return static_cast<int>(cs::sparse_full_path(args, n_threads));
}

int full_path(int mode, std::uint64_t key, py::array strata, double log_q, py::array indptr, py::array indices,
              py::array m_T, py::array n_T, py::array I_T, py::array b, int activation, double weight, double gain,
              py::array x, py::array u, double alpha, double noise_scale, std::uint64_t seed,
              std::int64_t trial_offset, py::array record_idx, py::array kappa, py::array kappa_out,
              py::array record_out, py::array clamp_mask, py::array clamp_value, std::int64_t clamp_start,
              std::int64_t clamp_stop, int n_threads, std::int64_t step_offset) {
  if (py::isinstance<py::array_t<float>>(m_T)) {
    return full_path_typed<float>(mode, key, strata, log_q, indptr, indices, m_T, n_T, I_T, b, activation, weight,
                                  gain, x, u, alpha, noise_scale, seed, trial_offset, record_idx, kappa, kappa_out,
                                  record_out, clamp_mask, clamp_value, clamp_start, clamp_stop, n_threads, step_offset);
  }
  if (py::isinstance<py::array_t<double>>(m_T)) {
    return full_path_typed<double>(mode, key, strata, log_q, indptr, indices, m_T, n_T, I_T, b, activation, weight,
                                   gain, x, u, alpha, noise_scale, seed, trial_offset, record_idx, kappa, kappa_out,
                                   record_out, clamp_mask, clamp_value, clamp_start, clamp_stop, n_threads, step_offset);
  }
  throw std::invalid_argument("m_T must have dtype float32 or float64, got " + py::str(m_T.dtype()).cast<std::string>());
}

void matvec(int mode, std::uint64_t key, py::array strata, double log_q, py::array indptr, py::array indices,
            py::array m_T, py::array n_T, double weight, py::array v, py::array out, int n_threads) {
  const auto m_shape = dims(m_T, "m_T", 2);
  const py::ssize_t R = m_shape[0], N = m_shape[1];
  const py::ssize_t K = dims(v, "v", 2)[1];
  const cs::SparseMaskView mask = mask_view(mode, key, strata, log_q, indptr, indices, N);
  const double* m_data = input<double>(m_T, "m_T", {R, N});
  const double* n_data = input<double>(n_T, "n_T", {R, N});
  const double* v_data = input<double>(v, "v", {N, K});
  double* out_data = output<double>(out, "out", {N, K});
  py::gil_scoped_release release;
  cs::sparse_matvec(mask, m_data, n_data, R, weight, v_data, K, out_data, n_threads);
}

}  // namespace

PYBIND11_MODULE(_simulate_sparse_cpp, m) {
  add_isa_functions(m);
  m.doc() = "C++ kernels of sparse low-rank networks (the 'cpp' backend); see "
            "connector_sim._kernels.simulate_sparse for the NumPy reference they implement.";
  m.attr("TILE_ROWS") = cs::SPARSE_TILE_ROWS;  // sparse_mask.TILE_ROWS
  m.def("full_path", &full_path,
        "Sparse time loop (full_path_reference); updates x, kappa, kappa_out, record_out in place.\n"
        "Returns a status: 0 ok, 1 kappa ended non-finite. Step t draws the noise of counter_rng step step_offset + t.",
        py::arg("mode"), py::arg("key"), py::arg("strata").noconvert(), py::arg("log_q"),
        py::arg("indptr").noconvert(), py::arg("indices").noconvert(), py::arg("m_T").noconvert(),
        py::arg("n_T").noconvert(), py::arg("I_T").noconvert(), py::arg("b").noconvert(), py::arg("activation"),
        py::arg("weight"), py::arg("gain"), py::arg("x").noconvert(), py::arg("u").noconvert(), py::arg("alpha"),
        py::arg("noise_scale"), py::arg("seed"), py::arg("trial_offset"), py::arg("record_idx").noconvert(),
        py::arg("kappa").noconvert(), py::arg("kappa_out").noconvert(), py::arg("record_out").noconvert(),
        py::arg("clamp_mask").noconvert(), py::arg("clamp_value").noconvert(), py::arg("clamp_start"),
        py::arg("clamp_stop"), py::arg("n_threads"), py::arg("step_offset") = 0);
  m.def("matvec", &matvec, "out = P v (matvec_reference), v and out (N, K) float64.", py::arg("mode"),
        py::arg("key"), py::arg("strata").noconvert(), py::arg("log_q"), py::arg("indptr").noconvert(),
        py::arg("indices").noconvert(), py::arg("m_T").noconvert(), py::arg("n_T").noconvert(), py::arg("weight"),
        py::arg("v").noconvert(), py::arg("out").noconvert(), py::arg("n_threads"));
}
