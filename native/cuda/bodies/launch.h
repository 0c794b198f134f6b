// The two shapes of work every hand-written CUDA kernel of dfl-native has, written once for the
// device (cuda/launch.cuh launches them) and once for the host (the CPU tests run them over the
// whole index space against the reference kernels of cpu/kernels.h). Only the launch itself (grid
// sizes, memory movement) is then left to test on a GPU.
//
//   * Elementwise: a body is a struct with `size_t count() const` and
//     `void operator()(size_t i) const` for one output element (or one row, for per-row bodies).
//     Every index is independent.
//   * Row reductions: a body describes `rows()` independent reductions, row r over `length(r)`
//     values. One block of T threads per row: thread t folds values t, t+T, t+2T, ... (`partial`),
//     the T partials are combined by a fixed tree (`tree_step`), so results do not depend on timing
//     (deterministic). Then every thread calls `finish(row, total, write)` (write is true for thread
//     0 only, which stores per-row results) and `apply(row, j, coef)` for the same j it loaded, for
//     bodies with a second, elementwise phase that needs the total (batch norm).
//     Body interface: using Acc, Coef; static constexpr bool kApply; rows(); length(r); identity();
//     load(r, j); combine(a, b) (static); finish(r, total, write) -> Coef; apply(r, j, coef).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/counter_rng.h"  // DFL_HOST_DEVICE

namespace dfl::cuda_bodies {

// Threads per block of a row reduction: a power of two (the tree halves it).
constexpr int kReduceThreads = 256;

// Thread t's fold over row r.
template <typename Body>
DFL_HOST_DEVICE typename Body::Acc partial(const Body& body, int r, int t, int threads) {
  typename Body::Acc a = body.identity();
  const size_t n = body.length(r);
  for (size_t j = size_t(t); j < n; j += size_t(threads)) a = Body::combine(a, body.load(r, j));
  return a;
}

// One level of the fixed reduction tree over `shared` (threads partials): thread t < stride folds in t + stride.
template <typename Body>
DFL_HOST_DEVICE void tree_step(typename Body::Acc* shared, int t, int stride) {
  if (t < stride) shared[t] = Body::combine(shared[t], shared[t + stride]);
}

// Fixed-size pair of doubles (sums that reduce together).
struct Sum2 {
  double a, b;
};

}  // namespace dfl::cuda_bodies
