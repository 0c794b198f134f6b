// SGD bodies over the flat arena, as cpu/optim.cpp (torch.optim.SGD, dampening 0; optional
// decoupled weight decay): the update of one element, shared by the step and its finiteness check.
#pragma once
#include "core/shapes.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

struct SgdUpdated {
  float param, buf;
};

DFL_HOST_DEVICE inline SgdUpdated sgd_update(const float* params, const float* momentum_buf, const float* grads,
                                             const float* decay_mask, size_t i, const SgdConfig& cfg) {
  const float lr = cfg.lr, mu = cfg.momentum;
  const float wdi = decay_mask ? cfg.weight_decay * decay_mask[i] : cfg.weight_decay;
  float p = params[i];
  float g = grads[i];
  if (cfg.decoupled) p = p * (1.f - lr * wdi);
  else g = g + wdi * p;
  float step = g;
  float buf = momentum_buf ? momentum_buf[i] : 0.f;
  if (mu != 0.f) {
    buf = mu * buf + g;
    step = cfg.nesterov ? g + mu * buf : buf;
  }
  return {p - lr * step, buf};
}

struct SgdStep {
  float* params;
  float* momentum_buf;  // null only when momentum == 0
  const float* grads;
  const float* decay_mask;
  size_t n;
  SgdConfig cfg;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const SgdUpdated u = sgd_update(params, momentum_buf, grads, decay_mask, i, cfg);
    if (cfg.momentum != 0.f) momentum_buf[i] = u.buf;
    params[i] = u.param;
  }
};

DFL_HOST_DEVICE inline bool finite(float x) { return x - x == 0.f; }  // false for NaN and +-inf

}  // namespace dfl::cuda_bodies
