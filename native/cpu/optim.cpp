// SGD with momentum (torch.optim.SGD, dampening 0; optional decoupled weight decay as in SGDW).
// Each element is updated independently, in the same operation order as PyTorch's
// _single_tensor_sgd, so the float results match it.
#include <cmath>

#include "core/check.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask,
              size_t n, const SgdConfig& cfg) {
  DFL_CHECK(std::isfinite(cfg.lr) && cfg.lr >= 0.f, "sgd_step: lr must be finite and >= 0, got ", cfg.lr);
  DFL_CHECK(std::isfinite(cfg.momentum) && cfg.momentum >= 0.f, "sgd_step: momentum must be >= 0, got ",
            cfg.momentum);
  DFL_CHECK(std::isfinite(cfg.weight_decay) && cfg.weight_decay >= 0.f,
            "sgd_step: weight_decay must be >= 0, got ", cfg.weight_decay);
  DFL_CHECK(momentum_buf || cfg.momentum == 0.f, "sgd_step: momentum > 0 needs a momentum buffer");
  const float lr = cfg.lr, mu = cfg.momentum, wd = cfg.weight_decay;
  const bool use_buf = mu != 0.f;  // PyTorch keeps no buffer when momentum == 0
  parallel_for(int64_t(n), 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float wdi = decay_mask ? wd * decay_mask[i] : wd;
      float p = params[i];
      float g = grads[i];
      if (cfg.decoupled) {
        p = p * (1.f - lr * wdi);
      } else {
        g = g + wdi * p;
      }
      float step = g;
      if (use_buf) {
        const float buf = mu * momentum_buf[i] + g;
        momentum_buf[i] = buf;
        step = cfg.nesterov ? g + mu * buf : buf;
      }
      params[i] = p - lr * step;
    }
  });
}

}  // namespace dfl::cpu
