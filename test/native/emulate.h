// Runs the CUDA kernel bodies of native/cuda/bodies/ on the host, over the whole index space and in
// the same order of reduction as the device (cuda/launch.cuh), so the CPU tests can check them
// against the reference kernels without a GPU.
#pragma once
#include <vector>

#include "cuda/bodies/launch.h"

namespace dfl::test {

template <typename Body>
void run_elementwise(const Body& body) {
  const size_t n = body.count();
  for (size_t i = 0; i < n; ++i) body(i);
}

// One emulated block of `threads` per row: strided partials, the fixed tree, finish, apply.
template <typename Body>
void run_rows(const Body& body, int threads = cuda_bodies::kReduceThreads) {
  using Acc = typename Body::Acc;
  std::vector<Acc> shared(static_cast<size_t>(threads));
  for (int r = 0; r < body.rows(); ++r) {
    for (int t = 0; t < threads; ++t) shared[t] = cuda_bodies::partial(body, r, t, threads);
    for (int s = threads / 2; s > 0; s >>= 1)
      for (int t = 0; t < s; ++t) cuda_bodies::tree_step<Body>(shared.data(), t, s);
    const auto coef = body.finish(r, shared[0], true);
    if constexpr (Body::kApply)
      for (size_t j = 0; j < body.length(r); ++j) body.apply(r, j, coef);
  }
}

// A whole-array reduction in the two stages of the CUDA backend (cuda_backend.cu reduce_all).
template <typename V>
typename V::Acc reduce_all(const V& value, size_t n, size_t chunk, int threads = cuda_bodies::kReduceThreads) {
  using Acc = typename V::Acc;
  const int rows = int((n + chunk - 1) / chunk);
  std::vector<Acc> partials(static_cast<size_t>(rows));
  Acc result = V::identity();
  run_rows(cuda_bodies::ChunkReduce<V>{value, n, chunk, partials.data()}, threads);
  run_rows(cuda_bodies::PartialsReduce<V>{partials.data(), rows, &result}, threads);
  return result;
}

}  // namespace dfl::test
