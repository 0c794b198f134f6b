// Elementwise activations and the residual add. Each output element is independent, so splitting
// the range across threads is bitwise deterministic.
#include <cstddef>

#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {
constexpr int64_t kGrain = 1 << 15;  // floats per chunk: keeps small tensors on one thread

template <typename F>
void for_range(size_t n, F&& f) {
  parallel_for(int64_t(n), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(size_t(i));
  });
}
}  // namespace

// The comparisons are written so NaN propagates as in PyTorch (NaN <= 0 is false).
void relu_forward(float* out, const float* inp, size_t n) {
  for_range(n, [&](size_t i) { out[i] = inp[i] <= 0.f ? 0.f : inp[i]; });
}

// PyTorch: gradient 0 where x <= 0 (so 0 at the kink).
void relu_backward(float* dinp, const float* dout, const float* inp, size_t n) {
  if (!dinp) return;
  for_range(n, [&](size_t i) { dinp[i] += inp[i] <= 0.f ? 0.f : dout[i]; });
}

void relu6_forward(float* out, const float* inp, size_t n) {
  for_range(n, [&](size_t i) {
    const float x = inp[i];
    out[i] = x <= 0.f ? 0.f : (x >= 6.f ? 6.f : x);
  });
}

// PyTorch (hardtanh_backward): gradient passes only for 0 < x < 6 (and NaN, where both tests are
// false). The bitwise | keeps the loop branch-free, so it vectorises.
void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n) {
  if (!dinp) return;
  for_range(n, [&](size_t i) {
    const float x = inp[i];
    const bool blocked = (x <= 0.f) | (x >= 6.f);
    dinp[i] += blocked ? 0.f : dout[i];
  });
}

void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) {
  if (act == Activation::Relu) {
    for_range(n, [&](size_t i) { dout[i] = y[i] <= 0.f ? 0.f : dout[i]; });
  } else if (act == Activation::Relu6) {
    for_range(n, [&](size_t i) {
      const bool blocked = (y[i] <= 0.f) | (y[i] >= 6.f);
      dout[i] = blocked ? 0.f : dout[i];
    });
  }
}

void add_forward(float* out, const float* a, const float* b, size_t n) {
  for_range(n, [&](size_t i) { out[i] = a[i] + b[i]; });
}

void add_backward(float* da, float* db, const float* dout, size_t n) {
  if (da) for_range(n, [&](size_t i) { da[i] += dout[i]; });
  if (db) for_range(n, [&](size_t i) { db[i] += dout[i]; });
}

}  // namespace dfl::cpu
