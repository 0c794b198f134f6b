// SGD with momentum (torch.optim.SGD, dampening 0; optional decoupled weight decay as in SGDW).
// Each element is updated independently by kernel_math::sgd_update (core/kernel_math.h, shared with
// the CUDA backend), in the same operation order as PyTorch's _single_tensor_sgd.
#include <atomic>
#include <cmath>

#include "core/check.h"
#include "core/kernel_math.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

void check_config(const float* momentum_buf, const SgdConfig& cfg, const char* who) {
  DFL_CHECK(std::isfinite(cfg.lr) && cfg.lr >= 0.f, who, ": lr must be finite and >= 0, got ", cfg.lr);
  DFL_CHECK(std::isfinite(cfg.momentum) && cfg.momentum >= 0.f, who, ": momentum must be >= 0, got ", cfg.momentum);
  DFL_CHECK(std::isfinite(cfg.weight_decay) && cfg.weight_decay >= 0.f, who, ": weight_decay must be >= 0, got ",
            cfg.weight_decay);
  DFL_CHECK(momentum_buf || cfg.momentum == 0.f, who, ": momentum > 0 needs a momentum buffer");
}

using kernel_math::sgd_update;
using kernel_math::SgdUpdate;

constexpr int64_t kGrain = 1 << 14;

}  // namespace

void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
              const SgdConfig& cfg) {
  check_config(momentum_buf, cfg, "sgd_step");
  const bool use_buf = cfg.momentum != 0.f;
  parallel_for(int64_t(n), kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const SgdUpdate u = sgd_update(params, momentum_buf, grads, decay_mask, i, cfg);
      if (use_buf) momentum_buf[i] = u.buf;
      params[i] = u.param;
    }
  });
}

bool sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads, const float* decay_mask,
                           size_t n, const SgdConfig& cfg) {
  check_config(momentum_buf, cfg, "sgd_step_stays_finite");
  std::atomic<bool> finite{true};
  parallel_for(int64_t(n), kGrain, [&](int64_t i0, int64_t i1) {
    bool ok = true;
    for (int64_t i = i0; i < i1; ++i) {
      const SgdUpdate u = sgd_update(params, momentum_buf, grads, decay_mask, i, cfg);
      ok = ok && std::isfinite(u.param) && std::isfinite(u.buf);
    }
    if (!ok) finite.store(false);
  });
  return finite.load();
}

}  // namespace dfl::cpu
