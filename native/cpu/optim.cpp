// SGD with momentum (torch.optim.SGD, dampening 0; optional decoupled weight decay as in SGDW).
// Each element is updated independently, in the same operation order as PyTorch's
// _single_tensor_sgd, so the float results match it.
#include <atomic>
#include <cmath>

#include "core/check.h"
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

// The update of element i: new parameter and new momentum (the latter unchanged without momentum,
// since PyTorch keeps no buffer when momentum == 0). Shared by the step and its finiteness check.
struct Updated {
  float param, buf;
};
inline Updated sgd_update(const float* params, const float* momentum_buf, const float* grads, const float* decay_mask,
                          int64_t i, const SgdConfig& cfg) {
  const float lr = cfg.lr, mu = cfg.momentum;
  const float wdi = decay_mask ? cfg.weight_decay * decay_mask[i] : cfg.weight_decay;
  float p = params[i];
  float g = grads[i];
  if (cfg.decoupled) {
    p = p * (1.f - lr * wdi);
  } else {
    g = g + wdi * p;
  }
  float step = g;
  float buf = momentum_buf ? momentum_buf[i] : 0.f;
  if (mu != 0.f) {
    buf = mu * buf + g;
    step = cfg.nesterov ? g + mu * buf : buf;
  }
  return {p - lr * step, buf};
}

constexpr int64_t kGrain = 1 << 14;

}  // namespace

void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask,
              size_t n, const SgdConfig& cfg) {
  check_config(momentum_buf, cfg, "sgd_step");
  const bool use_buf = cfg.momentum != 0.f;
  parallel_for(int64_t(n), kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const Updated u = sgd_update(params, momentum_buf, grads, decay_mask, i, cfg);
      if (use_buf) momentum_buf[i] = u.buf;
      params[i] = u.param;
    }
  });
}

bool sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                           const float* decay_mask, size_t n, const SgdConfig& cfg) {
  check_config(momentum_buf, cfg, "sgd_step_stays_finite");
  std::atomic<bool> finite{true};
  parallel_for(int64_t(n), kGrain, [&](int64_t i0, int64_t i1) {
    bool ok = true;
    for (int64_t i = i0; i < i1; ++i) {
      const Updated u = sgd_update(params, momentum_buf, grads, decay_mask, i, cfg);
      ok = ok && std::isfinite(u.param) && std::isfinite(u.buf);
    }
    if (!ok) finite.store(false);
  });
  return finite.load();
}

}  // namespace dfl::cpu
