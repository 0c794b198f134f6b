// Small kernels of the training step: identity backward, counters, and the reductions the step
// reads back (gradient norm, finiteness, correct predictions). Reductions run in index order on one
// thread so their results never depend on the thread count.
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {
constexpr int64_t kGrain = 1 << 15;
}

void accumulate(float* dst, const float* src, size_t n) {
  parallel_for(int64_t(n), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] += src[i];
  });
}

void add_scalar(float* x, float v, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += v;
}

double sum_squares(const float* x, size_t n) {
  double sq = 0.0;
  for (size_t i = 0; i < n; ++i) sq += double(x[i]) * x[i];
  return sq;
}

bool all_finite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

int count_correct(const float* logits, const int32_t* labels, int B, int NC) {
  int correct = 0;
  for (int b = 0; b < B; ++b) {
    const float* row = logits + size_t(b) * NC;
    correct += int(std::max_element(row, row + NC) - row) == labels[b];
  }
  return correct;
}

}  // namespace dfl::cpu
