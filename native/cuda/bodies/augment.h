// Batch preparation from uint8 images, as cpu/augment.cpp: crop with zero padding, then mirror the
// crop, then normalise; one output float per index. The draws come from the host (augment_draws
// order). norm_c(v) = (v/255 - mean[c]) / std[c] with the same float operations as the CPU's table.
#pragma once
#include "core/shapes.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

DFL_HOST_DEVICE inline float normalise(uint8_t v, float mean, float stdv) { return (float(v) / 255.f - mean) / stdv; }

// draws null: normalisation only.
struct AugmentBatch {
  float* out;
  const uint8_t* inp;
  const AugmentDraw* draws;  // (B) or null
  const float* mean;         // (C)
  const float* stdv;         // (C)
  int B, C, H, W, pad;
  DFL_HOST_DEVICE size_t count() const { return size_t(B) * C * H * W; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int x = int(i % size_t(W)), y = int((i / size_t(W)) % size_t(H));
    const size_t bc = i / (size_t(H) * W);
    const int c = int(bc % size_t(C));
    const uint8_t* plane = inp + bc * size_t(H) * W;
    if (!draws) {
      out[i] = normalise(plane[size_t(y) * W + x], mean[c], stdv[c]);
      return;
    }
    const AugmentDraw d = draws[bc / size_t(C)];
    const int sy = y + d.dy - pad, sx = (d.flip ? W - 1 - x : x) + d.dx - pad;
    const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
    out[i] = normalise(inside ? plane[size_t(sy) * W + sx] : uint8_t(0), mean[c], stdv[c]);
  }
};

}  // namespace dfl::cuda_bodies
