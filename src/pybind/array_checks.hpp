// Array checks shared by the pybind11 bindings in src/pybind/.
//
// The bindings convert nothing: an array the kernel reads or writes must
// already have the expected dtype, C layout and shape, and a mismatch throws
// std::invalid_argument (ValueError in Python) naming the array, what was
// expected and what was given.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "connector_sim/dense_network.hpp"

namespace array_checks {

namespace py = pybind11;

inline std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

// "(3, 4)", "(5,)", "()": the shape as NumPy prints it.
inline std::string shape_string(const std::vector<py::ssize_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += std::to_string(shape[i]);
    text += (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  }
  return text + ")";
}

// The shape of `a` after checking its number of dimensions.
inline std::vector<py::ssize_t> dims(const py::array& a, const char* name, py::ssize_t ndim) {
  if (a.ndim() != ndim) {
    throw std::invalid_argument(std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got shape " +
                                shape_string(shape_of(a)));
  }
  return shape_of(a);
}

// Checks dtype, layout and shape of an array the kernel reads or (output)
// writes in place.
template <typename T>
void check(const py::array& a, const char* name, const std::vector<py::ssize_t>& shape, bool output) {
  if (!py::isinstance<py::array_t<T>>(a)) {
    throw std::invalid_argument(std::string(name) + " must have dtype " +
                                py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
                                py::str(a.dtype()).cast<std::string>());
  }
  const int required = py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  if ((a.flags() & required) != required) {
    throw std::invalid_argument(std::string(name) + " must be C-contiguous and aligned (np.ascontiguousarray)");
  }
  if (shape_of(a) != shape) {
    throw std::invalid_argument(std::string(name) + " must have shape " + shape_string(shape) + ", got " +
                                shape_string(shape_of(a)));
  }
  if (output && !a.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
}

// The data of an array the kernel reads, after check<T>.
template <typename T>
const T* input(const py::array& a, const char* name, const std::vector<py::ssize_t>& shape) {
  check<T>(a, name, shape, false);
  return static_cast<const T*>(a.data());
}

// The data of an array the kernel writes, after check<T>.
template <typename T>
T* output(py::array& a, const char* name, const std::vector<py::ssize_t>& shape) {
  check<T>(a, name, shape, true);
  return static_cast<T*>(a.mutable_data());
}

// The loadings m_T (R, N), n_T (R, N), I_T (D, N), b (N,), checked.
template <typename T>
connector_sim::DenseNetwork<T> dense_network(const py::array& m_T, const py::array& n_T, const py::array& I_T,
                                             const py::array& b, int activation) {
  const auto m_shape = dims(m_T, "m_T", 2);
  const py::ssize_t R = m_shape[0], N = m_shape[1];
  const py::ssize_t D = dims(I_T, "I_T", 2)[0];
  return {input<T>(m_T, "m_T", {R, N}), input<T>(n_T, "n_T", {R, N}), input<T>(I_T, "I_T", {D, N}),
          input<T>(b, "b", {N}), N, R, D, activation};
}

}  // namespace array_checks
