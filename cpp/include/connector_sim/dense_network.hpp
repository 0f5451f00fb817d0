// The loadings of a dense low-rank RNN as the kernels read them: one struct
// shared by the simulator (simulate_dense.hpp, simulate_sparse.hpp) and the
// flow field (flow_field.hpp).
#pragma once

#include <cstdint>

namespace connector_sim {

// Loadings, neuron-contiguous.
template <typename T>
struct DenseNetwork {
  const T* m_T;  // (R, N)
  const T* n_T;  // (R, N)
  const T* I_T;  // (D, N)
  const T* b;    // (N,)
  std::int64_t N, R, D;
  int activation;  // simd::Activation code
};

}  // namespace connector_sim
