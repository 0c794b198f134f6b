#include "cuda/conv_cudnn.h"

#include <algorithm>

#include "core/check.h"

namespace dfl::cuda {

void check_cudnn(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) fail(what, ": ", cudnnGetErrorString(s));
}

size_t ConvPlan::workspace_bytes() const {
  size_t m = fwd_bytes > bwd_data_bytes ? fwd_bytes : bwd_data_bytes;
  m = m > bwd_filter_bytes ? m : bwd_filter_bytes;
  return bf16 ? bf16_end : m;
}

ConvPlan::~ConvPlan() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (y) cudnnDestroyTensorDescriptor(y);
  if (w) cudnnDestroyFilterDescriptor(w);
  if (conv) cudnnDestroyConvolutionDescriptor(conv);
}

ConvPlans::ConvPlans(cudnnHandle_t handle) : handle_(handle) {}

namespace {

// Workspace an algorithm may ask for at most; larger ones are passed over.
constexpr size_t kMaxWorkspace = size_t(1) << 30;

// The first of cuDNN's ranked heuristics that succeeded, is deterministic (unless allowed
// otherwise), uses the math the plan allows and fits the workspace cap. float32 plans: FMA math
// only (the descriptor keeps CUDNN_FMA_MATH, and the legacy API runs with the descriptor's math
// type, so TF32 stays off). bf16 plans: tensor-op math too, never a conversion to another type.
template <typename Perf>
bool pick(const Perf* perf, int n, bool deterministic, bool bf16, Perf* out) {
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxWorkspace) continue;
    if (deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
    const bool fma = p.mathType == CUDNN_FMA_MATH || p.mathType == CUDNN_DEFAULT_MATH;
    if (!fma && !(bf16 && p.mathType == CUDNN_TENSOR_OP_MATH)) continue;
    *out = p;
    return true;
  }
  return false;
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

std::unique_ptr<ConvPlan> ConvPlans::make(const Conv2dShape& s, bool bf16) {
  auto p = std::make_unique<ConvPlan>();
  p->bf16 = bf16;
  const cudnnDataType_t type = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const cudnnTensorFormat_t layout = bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  check_cudnn(cudnnCreateTensorDescriptor(&p->x), "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateTensorDescriptor(&p->y), "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateFilterDescriptor(&p->w), "cudnnCreateFilterDescriptor");
  check_cudnn(cudnnCreateConvolutionDescriptor(&p->conv), "cudnnCreateConvolutionDescriptor");
  check_cudnn(cudnnSetTensor4dDescriptor(p->x, layout, type, s.B, s.C, s.H, s.W), "conv input descriptor");
  check_cudnn(cudnnSetFilter4dDescriptor(p->w, type, layout, s.OC, s.C / s.groups, s.KH, s.KW),
              "conv filter descriptor");
  // Accumulation in float32 either way.
  check_cudnn(cudnnSetConvolution2dDescriptor(p->conv, s.pad_h, s.pad_w, s.stride_h, s.stride_w, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "conv descriptor");
  check_cudnn(cudnnSetConvolutionGroupCount(p->conv, s.groups), "cudnnSetConvolutionGroupCount");
  check_cudnn(cudnnSetConvolutionMathType(p->conv, bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH),
              "cudnnSetConvolutionMathType");
  check_cudnn(cudnnSetTensor4dDescriptor(p->y, layout, type, s.B, s.OC, s.OH(), s.OW()), "conv output descriptor");

  const bool deterministic = !s.math.nondeterministic;
  constexpr int kCount = 16;
  int n = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[kCount], fwd_pick{};
  check_cudnn(cudnnGetConvolutionForwardAlgorithm_v7(handle_, p->x, p->w, p->conv, p->y, kCount, &n, fwd),
              "cudnnGetConvolutionForwardAlgorithm_v7");
  const bool have_fwd = pick(fwd, n, deterministic, bf16, &fwd_pick);
  cudnnConvolutionBwdDataAlgoPerf_t bd[kCount], bd_pick{};
  check_cudnn(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle_, p->w, p->y, p->conv, p->x, kCount, &n, bd),
              "cudnnGetConvolutionBackwardDataAlgorithm_v7");
  const bool have_bd = pick(bd, n, deterministic, bf16, &bd_pick);
  cudnnConvolutionBwdFilterAlgoPerf_t bf[kCount], bf_pick{};
  check_cudnn(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle_, p->x, p->y, p->conv, p->w, kCount, &n, bf),
              "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
  const bool have_bf = pick(bf, n, deterministic, bf16, &bf_pick);
  if (bf16 && !(have_fwd && have_bd && have_bf)) return nullptr;
  // float32: cuDNN's always-available implicit GEMM algorithms when the heuristics offered nothing.
  p->fwd = have_fwd ? fwd_pick.algo : CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  p->bwd_data = have_bd ? bd_pick.algo : CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  p->bwd_filter = have_bf ? bf_pick.algo : CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;

  check_cudnn(cudnnGetConvolutionForwardWorkspaceSize(handle_, p->x, p->w, p->conv, p->y, p->fwd, &p->fwd_bytes),
              "cudnnGetConvolutionForwardWorkspaceSize");
  check_cudnn(cudnnGetConvolutionBackwardDataWorkspaceSize(handle_, p->w, p->y, p->conv, p->x, p->bwd_data,
                                                           &p->bwd_data_bytes),
              "cudnnGetConvolutionBackwardDataWorkspaceSize");
  check_cudnn(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle_, p->x, p->y, p->conv, p->w, p->bwd_filter,
                                                             &p->bwd_filter_bytes),
              "cudnnGetConvolutionBackwardFilterWorkspaceSize");
  if (bf16) {
    const size_t half = 2;  // bytes per bf16 value
    const size_t nx = size_t(s.B) * s.C * s.H * s.W, ny = size_t(s.B) * s.OC * s.OH() * s.OW(),
                 nw = size_t(s.OC) * (s.C / s.groups) * s.KH * s.KW;
    size_t at = align256(std::max({p->fwd_bytes, p->bwd_data_bytes, p->bwd_filter_bytes}));
    p->bf16_x = at, at += align256(nx * half);
    p->bf16_dx = at, at += align256(nx * half);
    p->bf16_y = at, at += align256(ny * half);
    p->bf16_w = at, at += align256(nw * half);
    p->bf16_dw = at, at += align256(nw * half);
    p->bf16_end = at;
  }
  return p;
}

const ConvPlan& ConvPlans::get(const Conv2dShape& s) {
  const Key key{s.B,      s.C,      s.H,     s.W,     s.OC,     s.KH,        s.KW,
                s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.groups, s.math.bf16, s.math.nondeterministic};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  std::unique_ptr<ConvPlan> p = s.math.bf16 ? make(s, true) : nullptr;
  if (!p) p = make(s, false);
  return *(plans_[key] = std::move(p));
}

}  // namespace dfl::cuda
