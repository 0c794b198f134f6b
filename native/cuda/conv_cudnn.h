// Convolutions through cuDNN 9 (legacy convolution API): descriptors and algorithms chosen once per
// shape and math mode and cached. Algorithms come from cuDNN's heuristics (not timing, which varies
// run to run), restricted to deterministic ones unless MathMode::nondeterministic allows others.
// float32 plans use FMA math only (no TF32), so the same seed on the same GPU gives the same result.
// bf16 plans (MathMode::bf16) run NHWC bf16 tensors on the tensor cores with float32 accumulation;
// the backend casts to and from them in the plan's part of the workspace (ConvPlan::bf16_*). A shape
// cuDNN has no bf16 algorithm for is computed in float32 instead (ConvPlan::bf16 false).
// Every algorithm is checked for support (its workspace query succeeds) before a plan takes it.
#pragma once
#include <cudnn.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/shapes.h"

namespace dfl::cuda {

// Throws dfl::Error on failure: `what`, cuDNN's status, its last error message
// (cudnnGetLastErrorString) and the context (a convolution's shape: ConvPlan::shape).
void check_cudnn(cudnnStatus_t s, const char* what, const std::string& context = std::string());

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_bytes = 0, bwd_data_bytes = 0, bwd_filter_bytes = 0;
  bool bf16 = false;
  std::string shape;  // for messages: cuda/messages.h conv_shape_text
  // bf16 plans: where the cast operands sit after cuDNN's own workspace (byte offsets): x and dx
  // (B*C*H*W values), y and dy (B*OC*OH*OW), w and dw (OC*C/groups*KH*KW).
  size_t bf16_x = 0, bf16_y = 0, bf16_w = 0, bf16_dx = 0, bf16_dw = 0, bf16_end = 0;
  size_t workspace_bytes() const;
  ~ConvPlan();
};

class ConvPlans {
 public:
  explicit ConvPlans(cudnnHandle_t handle);
  // The plan of a shape, made on first use. The caller holds the backend's lock.
  const ConvPlan& get(const Conv2dShape& s);

 private:
  using Key = std::array<int, 14>;
  // The plan in bf16 or float32; null when a bf16 plan has no algorithm for one of the three passes.
  std::unique_ptr<ConvPlan> make(const Conv2dShape& s, bool bf16);
  cudnnHandle_t handle_;
  std::map<Key, std::unique_ptr<ConvPlan>> plans_;
};

}  // namespace dfl::cuda
