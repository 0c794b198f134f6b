// Convolutions through cuDNN 9 (legacy convolution API): descriptors and algorithms chosen once per
// shape and cached. Algorithms come from cuDNN's heuristics (not timing, which varies run to run),
// restricted to deterministic ones and to FMA math (no TF32), so the same seed on the same GPU gives
// the same result; DFL_CUDA_NONDETERMINISTIC=1 lifts the determinism restriction.
#pragma once
#include <cudnn.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>

#include "core/shapes.h"

namespace dfl::cuda {

void check_cudnn(cudnnStatus_t s, const char* what);

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_bytes = 0, bwd_data_bytes = 0, bwd_filter_bytes = 0;
  size_t workspace_bytes() const;
  ~ConvPlan();
};

class ConvPlans {
 public:
  explicit ConvPlans(cudnnHandle_t handle);
  // The plan of a shape, made on first use. The caller holds the backend's lock.
  const ConvPlan& get(const Conv2dShape& s);

 private:
  using Key = std::array<int, 12>;
  cudnnHandle_t handle_;
  bool deterministic_;
  std::map<Key, std::unique_ptr<ConvPlan>> plans_;
};

}  // namespace dfl::cuda
