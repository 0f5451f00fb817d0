// connector_sim._ext._cnf_train_cpp: one fused float32 training step of a
// CNF's velocity MLP (cpp/include/connector_sim/cnf_train.hpp).
//
// CnfTrainStep binds the weights, gradient, AdamW moments and weight average
// (float32 vectors that Python allocates once, e.g. NumPy views of the torch
// tensors) and its scratch once; each call then runs one step on a batch.
// Converts nothing: a wrong dtype, layout or shape raises ValueError. The GIL
// is released while the kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "array_checks.hpp"
#include "isa_binding.hpp"
#include "connector_sim/cnf_train.hpp"

namespace py = pybind11;
namespace ct = connector_sim::cnf_train;

namespace {

using array_checks::dims;
using array_checks::input;
using array_checks::output;

void require(bool condition, const std::string& message) {
  if (!condition) throw std::invalid_argument(message);
}

class CnfTrainStep {
 public:
  CnfTrainStep(py::array weights, py::array gradient, py::array exp_avg, py::array exp_avg_sq, py::object averaged,
               std::int64_t dim, std::int64_t condition_dim, std::int64_t hidden, std::int64_t n_layers,
               std::int64_t max_rows, double beta1, double beta2, double eps, double weight_decay)
      : workspace_(checked_shape(dim, condition_dim, hidden, n_layers), checked_rows(max_rows)),
        weights_(weights), gradient_(gradient), exp_avg_(exp_avg), exp_avg_sq_(exp_avg_sq), averaged_(averaged) {
    require(beta1 >= 0.0 && beta1 < 1.0, "beta1 must be in [0, 1), got " + std::to_string(beta1));
    require(beta2 >= 0.0 && beta2 < 1.0, "beta2 must be in [0, 1), got " + std::to_string(beta2));
    require(eps >= 0.0 && std::isfinite(eps), "eps must be finite and >= 0, got " + std::to_string(eps));
    require(std::isfinite(weight_decay), "weight_decay must be finite, got " + std::to_string(weight_decay));
    const py::ssize_t size = workspace_.shape.n_parameters();
    state_.weights = output<float>(weights_, "weights", {size});
    state_.gradient = output<float>(gradient_, "gradient", {size});
    state_.exp_avg = output<float>(exp_avg_, "exp_avg", {size});
    state_.exp_avg_sq = output<float>(exp_avg_sq_, "exp_avg_sq", {size});
    if (averaged.is_none()) {
      state_.averaged = nullptr;
    } else {
      require(py::isinstance<py::array>(averaged), "averaged must be a NumPy array or None");
      py::array averaged_array = averaged.cast<py::array>();
      state_.averaged = output<float>(averaged_array, "averaged", {size});
    }
    state_.beta1 = beta1;
    state_.beta2 = beta2;
    state_.eps = eps;
    state_.weight_decay = weight_decay;
  }

  double step(py::array x0, py::array x1, py::array t, py::object condition, double lr, std::int64_t step,
              double ema_decay) {
    const ct::MlpShape& s = workspace_.shape;
    const py::ssize_t n = dims(x0, "x0", 2)[0];
    require(n >= 1 && n <= workspace_.max_rows, "x0 must have 1 to max_rows = " +
                                                    std::to_string(workspace_.max_rows) + " rows, got " +
                                                    std::to_string(n));
    ct::Batch batch;
    batch.n = n;
    batch.x0 = input<float>(x0, "x0", {n, s.dim});
    batch.x1 = input<float>(x1, "x1", {n, s.dim});
    batch.t = input<float>(t, "t", {n});
    batch.condition = nullptr;
    if (s.condition_dim > 0) {
      require(!condition.is_none() && py::isinstance<py::array>(condition),
              "condition must be an array of shape (n, " + std::to_string(s.condition_dim) + ")");
      batch.condition = input<float>(condition.cast<py::array>(), "condition", {n, s.condition_dim});
    } else {
      require(condition.is_none(), "condition must be None for condition_dim = 0");
    }
    require(std::isfinite(lr) && lr >= 0.0, "lr must be finite and >= 0, got " + std::to_string(lr));
    require(step >= 1, "step must be >= 1 (the count after this update), got " + std::to_string(step));
    require(ema_decay >= 0.0 && ema_decay <= 1.0, "ema_decay must be in [0, 1], got " + std::to_string(ema_decay));
    py::gil_scoped_release release;
    return ct::cnf_train_step(workspace_, state_, batch, lr, step, ema_decay);
  }

  double squared_error(py::array weights, py::array inputs, py::array target) {
    const ct::MlpShape& s = workspace_.shape;
    const py::ssize_t rows = dims(inputs, "inputs", 2)[0];
    const float* weight_data = input<float>(weights, "weights", {static_cast<py::ssize_t>(s.n_parameters())});
    const float* input_data = input<float>(inputs, "inputs", {rows, s.input_width()});
    const float* target_data = input<float>(target, "target", {rows, s.dim});
    py::gil_scoped_release release;
    return ct::mlp_squared_error(workspace_, weight_data, input_data, target_data, rows);
  }

  std::int64_t n_parameters() const { return workspace_.shape.n_parameters(); }
  std::int64_t max_rows() const { return workspace_.max_rows; }

 private:
  static ct::MlpShape checked_shape(std::int64_t dim, std::int64_t condition_dim, std::int64_t hidden,
                                    std::int64_t n_layers) {
    require(dim >= 1, "dim must be >= 1, got " + std::to_string(dim));
    require(condition_dim >= 0, "condition_dim must be >= 0, got " + std::to_string(condition_dim));
    require(hidden >= 1, "hidden must be >= 1, got " + std::to_string(hidden));
    require(n_layers >= 1, "n_layers must be >= 1, got " + std::to_string(n_layers));
    require(dim <= (1 << 20) && condition_dim <= (1 << 20) && hidden <= (1 << 16) && n_layers <= 1024,
            "the MLP is too large for the fused training step");
    return {dim, condition_dim, hidden, n_layers};
  }
  static std::int64_t checked_rows(std::int64_t max_rows) {
    require(max_rows >= 1 && max_rows <= (1 << 20), "max_rows must be in [1, 2^20], got " + std::to_string(max_rows));
    return max_rows;
  }

  ct::Workspace workspace_;
  ct::TrainState state_;
  // The bound arrays, kept alive while the kernel writes into them.
  py::array weights_, gradient_, exp_avg_, exp_avg_sq_;
  py::object averaged_;
};

void matmul(py::array a, py::array b, py::array out, std::int64_t n_repeats) {
  const auto a_shape = dims(a, "a", 2);
  const auto b_shape = dims(b, "b", 2);
  const py::ssize_t m = a_shape[0], k = a_shape[1], n = b_shape[1];
  require(b_shape[0] == k,
          "b must have a.shape[1] = " + std::to_string(k) + " rows, got " + std::to_string(b_shape[0]));
  require(n_repeats >= 1, "n_repeats must be >= 1, got " + std::to_string(n_repeats));
  const float* a_data = input<float>(a, "a", {m, k});
  const float* b_data = input<float>(b, "b", {k, n});
  float* out_data = output<float>(out, "out", {m, n});
  py::gil_scoped_release release;
  ct::matmul_f32(a_data, b_data, out_data, m, n, k, n_repeats);
}

}  // namespace

PYBIND11_MODULE(_cnf_train_cpp, m) {
  add_isa_functions(m);
  m.doc() = "One fused float32 training step (forward, backward, AdamW, weight average) of a CNF's velocity MLP; "
            "see connector_sim._kernels.cnf_train_step for the NumPy reference it implements.";
  py::class_<CnfTrainStep>(m, "CnfTrainStep",
                           "The fused training step of a VelocityMLP (cnf_train_step_reference), bound to its flat "
                           "float32 weights, gradient, AdamW moments and weight average (or None), updated in place.")
      .def(py::init<py::array, py::array, py::array, py::array, py::object, std::int64_t, std::int64_t,
                    std::int64_t, std::int64_t, std::int64_t, double, double, double, double>(),
           py::arg("weights").noconvert(), py::arg("gradient").noconvert(), py::arg("exp_avg").noconvert(),
           py::arg("exp_avg_sq").noconvert(), py::arg("averaged"), py::kw_only(), py::arg("dim"),
           py::arg("condition_dim"), py::arg("hidden"), py::arg("n_layers"), py::arg("max_rows"), py::arg("beta1"),
           py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"))
      .def("step", &CnfTrainStep::step,
           "One step on the batch (x0, x1: (n, dim), t: (n,), condition: (n, condition_dim) or None; float32, "
           "C-contiguous): returns the summed squared error of the batch before the update, writes the gradient "
           "of the mean, then updates the weights and moments (AdamW at `step`, counted from 1, learning rate lr) "
           "and the average (averaged += (1 - ema_decay) (weights - averaged)).",
           py::arg("x0").noconvert(), py::arg("x1").noconvert(), py::arg("t").noconvert(), py::arg("condition"),
           py::arg("lr"), py::arg("step"), py::arg("ema_decay"))
      .def("squared_error", &CnfTrainStep::squared_error,
           "sum_rows |v(inputs) - target|^2 (float64 sum) of the MLP with the flat float32 `weights` (any vector "
           "of the bound layout, e.g. the average) on inputs (rows, dim + condition_dim + 1) = [x_t, c, t] and "
           "target (rows, dim): the forward pass of `step` by tiles of max_rows rows (mlp_squared_error_reference).",
           py::arg("weights").noconvert(), py::arg("inputs").noconvert(), py::arg("target").noconvert())
      .def_property_readonly("n_parameters", &CnfTrainStep::n_parameters)
      .def_property_readonly("max_rows", &CnfTrainStep::max_rows);
  m.def("matmul", &matmul,
        "out = a @ b (float32, C-contiguous), n_repeats times, with the kernel's product (tests and benchmarks).",
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("out").noconvert(), py::arg("n_repeats") = 1);
}
