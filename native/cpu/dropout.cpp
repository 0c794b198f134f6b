// Inverted dropout. The mask is drawn on one thread, one rng.uniform() per element in index order,
// so it depends only on the rng state (never on the thread count); the multiply is parallel.
#include "core/check.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {
constexpr int64_t kGrain = 1 << 15;
}

void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, Rng& rng) {
  DFL_CHECK(p >= 0.f && p <= 1.f, "dropout_forward: p must be in [0, 1], got ", p);
  // p == 1 drops everything (PyTorch returns zeros); avoid 1/(1-p) = inf.
  const float keep = p < 1.f ? 1.f / (1.f - p) : 0.f;
  // Draw even when p == 0 so the stream advances the same way for every p.
  for (size_t i = 0; i < n; ++i) mask[i] = rng.uniform() < p ? 0.f : keep;
  parallel_for(int64_t(n), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = inp[i] * mask[i];
  });
}

void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) {
  if (!dinp) return;
  parallel_for(int64_t(n), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dinp[i] += dout[i] * mask[i];
  });
}

}  // namespace dfl::cpu
