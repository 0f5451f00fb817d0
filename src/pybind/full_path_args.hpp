// The arguments of a full-path time loop from Python arrays, shared by the
// dense and the sparse bindings (FullPathArgs, which SparsePathArgs extends).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "array_checks.hpp"
#include "connector_sim/simulate_dense.hpp"

namespace array_checks {

// clamp_mask (N,) uint8 and clamp_value (N,), or both of length 0: no clamping.
template <typename T>
connector_sim::Clamp<T> clamp(const py::array& mask, const py::array& value, std::int64_t start, std::int64_t stop,
                              py::ssize_t N) {
  const py::ssize_t length = dims(mask, "clamp_mask", 1)[0];
  if (length != 0 && length != N) {
    throw std::invalid_argument("clamp_mask must have shape (0,) (no clamping) or (" + std::to_string(N) +
                                ",), got " + shape_string(shape_of(mask)));
  }
  const std::uint8_t* mask_data = input<std::uint8_t>(mask, "clamp_mask", {length});
  const T* value_data = input<T>(value, "clamp_value", {length});
  return {length == 0 ? nullptr : mask_data, value_data, start, stop};
}

// Fills everything of args but args.net, which must be set: x (B, N), u
// (1 or B, n_steps, D), the noise keys (step t draws counter_rng step
// step_offset + t), the recording, kappa and its history, the clamp.
template <typename T>
void fill_full_path_args(connector_sim::FullPathArgs<T>& args, py::array& x, const py::array& u, double alpha,
                         double noise_scale, std::uint64_t seed, std::int64_t trial_offset,
                         std::int64_t step_offset, const py::array& record_idx, py::array& kappa,
                         py::array& kappa_out, py::array& record_out,
                         const py::array& clamp_mask, const py::array& clamp_value, std::int64_t clamp_start,
                         std::int64_t clamp_stop) {
  const py::ssize_t N = args.net.N, R = args.net.R, D = args.net.D;
  const py::ssize_t B = dims(x, "x", 2)[0];
  const auto u_shape = dims(u, "u", 3);
  const py::ssize_t n_steps = u_shape[1];
  if (u_shape[0] != 1 && u_shape[0] != B) {
    throw std::invalid_argument("u must have 1 row (shared by all trials) or B = " + std::to_string(B) +
                                " rows, got shape " + shape_string(u_shape));
  }
  const py::ssize_t K = dims(record_idx, "record_idx", 1)[0];
  args.x = output<T>(x, "x", {B, N});
  args.u = input<T>(u, "u", {u_shape[0], n_steps, D});
  args.u_rows = u_shape[0];
  args.alpha = alpha;
  args.noise_scale = noise_scale;
  args.seed = seed;
  args.trial_offset = trial_offset;
  args.step_offset = step_offset;
  args.record_idx = input<std::int64_t>(record_idx, "record_idx", {K});
  args.K = K;
  args.kappa = output<double>(kappa, "kappa", {B, R});
  args.kappa_out = output<double>(kappa_out, "kappa_out", {B, n_steps + 1, R});
  args.record_out = output<T>(record_out, "record_out", {B, n_steps + 1, K});
  args.clamp = clamp<T>(clamp_mask, clamp_value, clamp_start, clamp_stop, N);
  args.B = B;
  args.n_steps = n_steps;
}

}  // namespace array_checks
