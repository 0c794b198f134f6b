// Launching the bodies of cuda/bodies/ (see bodies/launch.h for the two shapes of work). This and
// the memory movement in cuda_backend.cu are all that the CPU tests of the bodies cannot reach.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>

#include "core/check.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda {

// Turns a CUDA runtime error into dfl::Error with the runtime's own name and words.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

constexpr int kElementThreads = 256;

template <typename Body>
__global__ void elementwise_kernel(Body body, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) body(i);
}

// One thread per index (grid-stride beyond 2^16 blocks).
template <typename Body>
void launch_elementwise(cudaStream_t stream, const Body& body) {
  const size_t n = body.count();
  if (n == 0) return;
  const size_t blocks = std::min<size_t>((n + kElementThreads - 1) / kElementThreads, size_t(1) << 16);
  elementwise_kernel<<<unsigned(blocks), kElementThreads, 0, stream>>>(body, n);
  check_cuda(cudaGetLastError(), "launching an elementwise kernel");
}

template <typename Body>
__global__ void __launch_bounds__(cuda_bodies::kReduceThreads) rows_kernel(Body body) {
  using Acc = typename Body::Acc;
  constexpr int T = cuda_bodies::kReduceThreads;
  __shared__ Acc shared[T];
  const int r = blockIdx.x, t = threadIdx.x;
  shared[t] = cuda_bodies::partial(body, r, t, T);
  __syncthreads();
  for (int s = T / 2; s > 0; s >>= 1) {
    cuda_bodies::tree_step<Body>(shared, t, s);
    __syncthreads();
  }
  const auto coef = body.finish(r, shared[0], t == 0);
  if constexpr (Body::kApply) {
    const size_t n = body.length(r);
    for (size_t j = size_t(t); j < n; j += T) body.apply(r, j, coef);
  }
}

// One block of kReduceThreads per row.
template <typename Body>
void launch_rows(cudaStream_t stream, const Body& body) {
  const int rows = body.rows();
  if (rows <= 0) return;
  rows_kernel<<<rows, cuda_bodies::kReduceThreads, 0, stream>>>(body);
  check_cuda(cudaGetLastError(), "launching a reduction kernel");
}

}  // namespace dfl::cuda
