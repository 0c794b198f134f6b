// Plain descriptions of an operation's sizes and settings, shared by the graph plan, every backend
// and the reference kernels. No memory, no behaviour beyond size arithmetic.
// Dimension letters: B batch, C input channels, OC output channels, H/W input height/width,
// OH/OW output height/width, KH/KW kernel size, NC classes, K teachers.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dfl {

// Every tensor a backend is given starts at a multiple of kTensorAlignment bytes (cuDNN, cuBLAS and
// vector loads expect it): Backend::alloc returns such addresses, and plans place each tensor at a
// multiple of kTensorAlignElements 4-byte elements (floats, int32 indices) inside them, per sample
// for batch blocks, so that any batch size keeps the alignment (core/graph.h, docs/native.md).
constexpr size_t kTensorAlignment = 256;
constexpr size_t kTensorAlignElements = kTensorAlignment / 4;
// n 4-byte elements rounded up to the next multiple of kTensorAlignElements.
constexpr size_t align_elements(size_t n) {
  return (n + kTensorAlignElements - 1) / kTensorAlignElements * kTensorAlignElements;
}

// How a backend may compute the convolutions and GEMMs of a model (Model::set_math). The defaults
// are the reference arithmetic every backend shares: float32, and on the GPU deterministic
// algorithms with TF32 off (same seed, same GPU, same result).
struct MathMode {
  // bf16 inputs on the tensor cores with float32 accumulation, as PyTorch's autocast does: weights,
  // optimiser state, activations and every other op stay float32. The CUDA backend only (the CPU
  // backend refuses it: it has no faster path for it).
  bool bf16 = false;
  // Let cuDNN pick its fastest algorithms even when they are not bitwise reproducible.
  bool nondeterministic = false;
  bool operator==(const MathMode& o) const { return bf16 == o.bf16 && nondeterministic == o.nondeterministic; }
};

// conv2d, PyTorch semantics (cross-correlation, zero padding, groups).
struct Conv2dShape {
  int B, C, H, W;  // input (B,C,H,W)
  int OC;          // output channels
  int KH, KW;      // kernel size
  int stride_h, stride_w;
  int pad_h, pad_w;
  int groups;       // C % groups == 0 and OC % groups == 0; groups == C == OC is depthwise
  MathMode math{};  // how the backend may compute it (not a size: results agree within bf16 rounding)
  int OH() const { return (H + 2 * pad_h - KH) / stride_h + 1; }
  int OW() const { return (W + 2 * pad_w - KW) / stride_w + 1; }
};

// Pooling, PyTorch semantics (floor mode; avg pool counts padding, count_include_pad=True).
struct Pool2dShape {
  int B, C, H, W;
  int KH, KW, stride_h, stride_w, pad_h, pad_w;
  int OH() const { return (H + 2 * pad_h - KH) / stride_h + 1; }
  int OW() const { return (W + 2 * pad_w - KW) / stride_w + 1; }
};

// An activation applied to a layer's output inside the same kernel call (inference plans fuse
// conv/linear + ReLU this way). None everywhere in training plans.
enum class Activation : uint8_t { None, Relu, Relu6 };

// SGD with momentum (PyTorch torch.optim.SGD semantics, dampening 0):
//   L2 (decoupled=false):  g = grad + wd * p
//   decoupled (SGDW):      p = p * (1 - lr * wd) first, g = grad
//   buf = momentum * buf + g   (buf starts at 0; PyTorch's first-step buf = g is the same)
//   step = nesterov ? g + momentum * buf : buf;   p -= lr * step
struct SgdConfig {
  float lr = 0.1f;
  float momentum = 0.9f;
  float weight_decay = 5e-4f;
  bool nesterov = true;
  bool decoupled = false;
};

// One image's augmentation draws (see core/augment_draws.h for the order they are drawn in).
struct AugmentDraw {
  int32_t dy = 0, dx = 0;  // crop offsets in [0, 2*pad]; pad = centred = no shift
  int32_t flip = 0;        // 1: mirror horizontally
};

}  // namespace dfl
