// A counter-based random stream: the value for index i is a pure function of (seed, i), so masks
// drawn with it do not depend on thread count, launch order or device. Usable from CUDA kernels
// (the body compiles as __host__ __device__ under nvcc).
//   counter_uniform(seed, i) = top 24 bits of splitmix64(seed + (i + 1) * golden) / 2^24, in [0, 1).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define DFL_HOST_DEVICE __host__ __device__
#else
#define DFL_HOST_DEVICE
#endif

namespace dfl {

DFL_HOST_DEVICE inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

DFL_HOST_DEVICE inline float counter_uniform(uint64_t seed, uint64_t i) {
  const uint64_t z = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15ull);
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace dfl
