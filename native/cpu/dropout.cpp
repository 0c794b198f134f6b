// Inverted dropout with a counter-based mask (core/counter_rng.h): element i's draw depends only on
// (seed, i), so the mask is the same for any thread count and on every backend.
#include "core/check.h"
#include "core/counter_rng.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {
constexpr int64_t kGrain = 1 << 15;
}

void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed) {
  DFL_CHECK(p >= 0.f && p <= 1.f, "dropout_forward: p must be in [0, 1], got ", p);
  // p == 1 drops everything (PyTorch returns zeros); avoid 1/(1-p) = inf.
  const float keep = p < 1.f ? 1.f / (1.f - p) : 0.f;
  parallel_for(int64_t(n), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      mask[i] = counter_uniform(seed, uint64_t(i)) < p ? 0.f : keep;
      out[i] = inp[i] * mask[i];
    }
  });
}

void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) {
  if (!dinp) return;
  parallel_for(int64_t(n), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dinp[i] += dout[i] * mask[i];
  });
}

}  // namespace dfl::cpu
