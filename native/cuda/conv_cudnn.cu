#include "cuda/conv_cudnn.h"

#include <cstdlib>

#include "core/check.h"

namespace dfl::cuda {

void check_cudnn(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) fail(what, ": ", cudnnGetErrorString(s));
}

size_t ConvPlan::workspace_bytes() const {
  size_t m = fwd_bytes > bwd_data_bytes ? fwd_bytes : bwd_data_bytes;
  return m > bwd_filter_bytes ? m : bwd_filter_bytes;
}

ConvPlan::~ConvPlan() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (y) cudnnDestroyTensorDescriptor(y);
  if (w) cudnnDestroyFilterDescriptor(w);
  if (conv) cudnnDestroyConvolutionDescriptor(conv);
}

ConvPlans::ConvPlans(cudnnHandle_t handle) : handle_(handle) {
  const char* e = std::getenv("DFL_CUDA_NONDETERMINISTIC");
  deterministic_ = !(e && e[0] == '1');
}

namespace {

// Workspace an algorithm may ask for at most; larger ones are passed over.
constexpr size_t kMaxWorkspace = size_t(1) << 30;

// The first of cuDNN's ranked heuristics that succeeded, is deterministic (unless allowed
// otherwise), needs no tensor-op math and fits the workspace cap. The descriptor keeps
// CUDNN_FMA_MATH whatever the ranking says, and the legacy API runs with the descriptor's math
// type, so TF32 stays off.
template <typename Perf>
bool pick(const Perf* perf, int n, bool deterministic, Perf* out) {
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxWorkspace) continue;
    if (deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
    if (p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH) continue;
    *out = p;
    return true;
  }
  return false;
}

}  // namespace

const ConvPlan& ConvPlans::get(const Conv2dShape& s) {
  const Key key{s.B, s.C, s.H, s.W, s.OC, s.KH, s.KW, s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.groups};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<ConvPlan>();
  check_cudnn(cudnnCreateTensorDescriptor(&p->x), "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateTensorDescriptor(&p->y), "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateFilterDescriptor(&p->w), "cudnnCreateFilterDescriptor");
  check_cudnn(cudnnCreateConvolutionDescriptor(&p->conv), "cudnnCreateConvolutionDescriptor");
  check_cudnn(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.B, s.C, s.H, s.W),
              "conv input descriptor");
  check_cudnn(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s.OC, s.C / s.groups, s.KH, s.KW),
              "conv filter descriptor");
  check_cudnn(cudnnSetConvolution2dDescriptor(p->conv, s.pad_h, s.pad_w, s.stride_h, s.stride_w, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "conv descriptor");
  check_cudnn(cudnnSetConvolutionGroupCount(p->conv, s.groups), "cudnnSetConvolutionGroupCount");
  check_cudnn(cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType");
  check_cudnn(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.B, s.OC, s.OH(), s.OW()),
              "conv output descriptor");

  constexpr int kCount = 16;
  int n = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[kCount], fwd_pick{};
  check_cudnn(cudnnGetConvolutionForwardAlgorithm_v7(handle_, p->x, p->w, p->conv, p->y, kCount, &n, fwd),
              "cudnnGetConvolutionForwardAlgorithm_v7");
  p->fwd = pick(fwd, n, deterministic_, &fwd_pick) ? fwd_pick.algo : CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  cudnnConvolutionBwdDataAlgoPerf_t bd[kCount], bd_pick{};
  check_cudnn(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle_, p->w, p->y, p->conv, p->x, kCount, &n, bd),
              "cudnnGetConvolutionBackwardDataAlgorithm_v7");
  p->bwd_data = pick(bd, n, deterministic_, &bd_pick) ? bd_pick.algo : CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  cudnnConvolutionBwdFilterAlgoPerf_t bf[kCount], bf_pick{};
  check_cudnn(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle_, p->x, p->y, p->conv, p->w, kCount, &n, bf),
              "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
  p->bwd_filter = pick(bf, n, deterministic_, &bf_pick) ? bf_pick.algo : CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;

  check_cudnn(cudnnGetConvolutionForwardWorkspaceSize(handle_, p->x, p->w, p->conv, p->y, p->fwd, &p->fwd_bytes),
              "cudnnGetConvolutionForwardWorkspaceSize");
  check_cudnn(cudnnGetConvolutionBackwardDataWorkspaceSize(handle_, p->w, p->y, p->conv, p->x, p->bwd_data,
                                                           &p->bwd_data_bytes),
              "cudnnGetConvolutionBackwardDataWorkspaceSize");
  check_cudnn(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle_, p->x, p->y, p->conv, p->w, p->bwd_filter,
                                                             &p->bwd_filter_bytes),
              "cudnnGetConvolutionBackwardFilterWorkspaceSize");
  return *(plans_[key] = std::move(p));
}

}  // namespace dfl::cuda
