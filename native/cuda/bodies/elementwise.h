// Elementwise bodies (see bodies/launch.h): one output element per index, same arithmetic as the
// reference kernels in cpu/activation.cpp, cpu/dropout.cpp, cpu/tensor_ops.cpp, cpu/step_helpers.cpp.
// Comparisons are written so NaN propagates as in PyTorch (NaN <= 0 is false).
#pragma once
#include "core/counter_rng.h"
#include "core/shapes.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

DFL_HOST_DEVICE inline float relu(float x) { return x <= 0.f ? 0.f : x; }
DFL_HOST_DEVICE inline float relu6(float x) { return x <= 0.f ? 0.f : (x >= 6.f ? 6.f : x); }
// Where ReLU (six: ReLU6) passes no gradient, judged on its input or its output alike (y > 0 iff
// x > 0, 0 < y < 6 iff 0 < x < 6); NaN passes it, as in PyTorch.
DFL_HOST_DEVICE inline bool blocks_gradient(float v, bool six) { return v <= 0.f || (six && v >= 6.f); }
DFL_HOST_DEVICE inline float activate(float x, Activation act) {
  return act == Activation::Relu ? relu(x) : act == Activation::Relu6 ? relu6(x) : x;
}

struct ReluForward {
  float* out;
  const float* inp;
  size_t n;
  bool six;  // relu6
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { out[i] = six ? relu6(inp[i]) : relu(inp[i]); }
};

// Gradient passes where x > 0 (and x < 6 for relu6), as PyTorch.
struct ReluBackward {
  float* dinp;
  const float* dout;
  const float* inp;
  size_t n;
  bool six;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { dinp[i] += blocks_gradient(inp[i], six) ? 0.f : dout[i]; }
};

// The backward of a fused activation, in place (cpu::activation_backward_inplace): dout[i] = 0
// where the activation's output y has no gradient (y <= 0; for ReLU6 also y >= 6).
struct ActivationMask {
  float* dout;
  const float* y;
  size_t n;
  Activation act;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    if (blocks_gradient(y[i], act == Activation::Relu6)) dout[i] = 0.f;
  }
};

// out = act(a + b): the residual add with the ReLU after it fused.
struct AddForward {
  float* out;
  const float* a;
  const float* b;
  size_t n;
  Activation act = Activation::None;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { out[i] = activate(a[i] + b[i], act); }
};

// dst += src (identity backward, residual add backward, one call per input).
struct Accumulate {
  float* dst;
  const float* src;
  size_t n;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { dst[i] += src[i]; }
};

struct AddScalar {
  float* x;
  float v;
  size_t n;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { x[i] += v; }
};

struct Fill {
  float* x;
  float v;
  size_t n;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { x[i] = v; }
};

// The epilogue of a conv or linear computed by cuDNN/cuBLAS without bias: out (B, OC, P) gets
// bias[oc] added and the fused activation applied. bias may be null.
struct BiasActivation {
  float* out;
  const float* bias;
  size_t n;
  int OC;
  size_t P;  // spatial positions per channel (1 for linear)
  Activation act;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const float v = bias ? out[i] + bias[(i / P) % size_t(OC)] : out[i];
    out[i] = activate(v, act);
  }
};

// Inverted dropout; the mask is a pure function of (seed, i) (core/counter_rng.h).
struct DropoutForward {
  float* out;
  float* mask;
  const float* inp;
  size_t n;
  float p;
  float keep;  // 1/(1-p), or 0 when p == 1
  uint64_t seed;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    mask[i] = counter_uniform(seed, uint64_t(i)) < p ? 0.f : keep;
    out[i] = inp[i] * mask[i];
  }
};

struct DropoutBackward {
  float* dinp;
  const float* dout;
  const float* mask;
  size_t n;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { dinp[i] += dout[i] * mask[i]; }
};

// dst[r * dst_ld + k] += src[r * src_ld + k] for rows r < rows, k < width: the backward of concat
// (dst = a chunk, src = the concatenation) and of split (the other way round), one call per chunk.
struct StridedAccumulate {
  float* dst;
  const float* src;
  size_t rows, width, dst_ld, src_ld;
  DFL_HOST_DEVICE size_t count() const { return rows * width; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const size_t r = i / width, k = i % width;
    dst[r * dst_ld + k] += src[r * src_ld + k];
  }
};

// Channel shuffle: out channel j*groups + g <- inp channel g*(C/groups) + j. One body for both
// directions: forward copies out[i] from its source; backward accumulates into dinp[i] from the
// output channel it fed.
struct ChannelShuffle {
  float* dst;
  const float* src;
  size_t n;
  int C, HW, groups;
  bool backward;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const size_t plane = i / size_t(HW), k = i % size_t(HW);
    const size_t b = plane / size_t(C);
    const int ch = int(plane % size_t(C)), cpg = C / groups;
    if (!backward) {
      const int j = ch / groups, g = ch % groups;  // ch is the output channel
      dst[i] = src[(b * C + size_t(g) * cpg + j) * HW + k];
    } else {
      const int g = ch / cpg, j = ch % cpg;  // ch is the input channel
      dst[i] += src[(b * C + size_t(j) * groups + g) * HW + k];
    }
  }
};

// Images `indices[k]` of a resident uint8 set, copied into batch slot k: one byte per index.
struct GatherImages {
  uint8_t* dst;
  const uint8_t* src;
  const int32_t* indices;
  size_t B, image_bytes;
  DFL_HOST_DEVICE size_t count() const { return B * image_bytes; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const size_t k = i / image_bytes, o = i % image_bytes;
    dst[i] = src[size_t(indices[k]) * image_bytes + o];
  }
};

}  // namespace dfl::cuda_bodies
