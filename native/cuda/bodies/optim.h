// SGD bodies over the flat arena, as cpu/optim.cpp: one element's update is kernel_math::sgd_update
// (core/kernel_math.h), the CPU's own.
#pragma once
#include "core/kernel_math.h"
#include "core/shapes.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

struct SgdStep {
  float* params;
  float* momentum_buf;  // null only when momentum == 0
  const float* grads;
  const float* decay_mask;
  size_t n;
  SgdConfig cfg;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const kernel_math::SgdUpdate u = kernel_math::sgd_update(params, momentum_buf, grads, decay_mask, i, cfg);
    if (cfg.momentum != 0.f) momentum_buf[i] = u.buf;
    params[i] = u.param;
  }
};

DFL_HOST_DEVICE inline bool finite(float x) { return x - x == 0.f; }  // false for NaN and +-inf

}  // namespace dfl::cuda_bodies
