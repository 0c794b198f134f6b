#include "cuda/conv_cudnn.h"

#include <algorithm>
#include <initializer_list>
#include <vector>

#include "core/check.h"
#include "cuda/messages.h"

namespace dfl::cuda {

void check_cudnn(cudnnStatus_t s, const char* what, const std::string& context) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  char detail[1024] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  fail(library_error_text(what, cudnnGetErrorString(s), "cuDNN", detail, context));
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

// Whether one of cuDNN's ranked heuristics may be used: it succeeded, is deterministic (unless
// allowed otherwise), uses the math the plan allows and fits the workspace cap. float32 plans: FMA
// math only (the descriptor keeps CUDNN_FMA_MATH, and the legacy API runs with the descriptor's math
// type, so TF32 stays off). bf16 plans: tensor-op math too, never a conversion to another type.
template <typename Perf>
bool acceptable(const Perf& p, bool deterministic, bool bf16) {
  if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxWorkspace) return false;
  if (deterministic && p.determinism != CUDNN_DETERMINISTIC) return false;
  const bool fma = p.mathType == CUDNN_FMA_MATH || p.mathType == CUDNN_DEFAULT_MATH;
  return fma || (bf16 && p.mathType == CUDNN_TENSOR_OP_MATH);
}

// One pass's algorithm: the acceptable heuristics in rank order, then (float32 plans) the
// deterministic implicit-GEMM `fallbacks`; the first whose workspace query succeeds, cuDNN's
// documented support check (CUDNN_STATUS_NOT_SUPPORTED for an algorithm the shape cannot run),
// within the cap. False when none does.
template <typename Perf, typename Algo, typename WorkspaceOf>
bool choose(const Perf* perf, int n, bool deterministic, bool bf16, std::initializer_list<Algo> fallbacks,
            WorkspaceOf&& workspace_of, Algo* algo, size_t* bytes) {
  std::vector<Algo> order;
  for (int i = 0; i < n; ++i)
    if (acceptable(perf[i], deterministic, bf16)) order.push_back(perf[i].algo);
  if (!bf16)
    for (Algo a : fallbacks)
      if (std::find(order.begin(), order.end(), a) == order.end()) order.push_back(a);
  for (Algo a : order) {
    size_t b = 0;
    if (workspace_of(a, &b) == CUDNN_STATUS_SUCCESS && b <= kMaxWorkspace) {
      *algo = a;
      *bytes = b;
      return true;
    }
  }
  return false;
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

std::unique_ptr<ConvPlan> ConvPlans::make(const Conv2dShape& s, bool bf16) {
  auto p = std::make_unique<ConvPlan>();
  p->bf16 = bf16;
  p->shape = conv_shape_text(s, bf16);
  const std::string& shape = p->shape;
  const cudnnDataType_t type = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const cudnnTensorFormat_t layout = bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  check_cudnn(cudnnCreateTensorDescriptor(&p->x), "cudnnCreateTensorDescriptor", shape);
  check_cudnn(cudnnCreateTensorDescriptor(&p->y), "cudnnCreateTensorDescriptor", shape);
  check_cudnn(cudnnCreateFilterDescriptor(&p->w), "cudnnCreateFilterDescriptor", shape);
  check_cudnn(cudnnCreateConvolutionDescriptor(&p->conv), "cudnnCreateConvolutionDescriptor", shape);
  check_cudnn(cudnnSetTensor4dDescriptor(p->x, layout, type, s.B, s.C, s.H, s.W), "conv input descriptor", shape);
  check_cudnn(cudnnSetFilter4dDescriptor(p->w, type, layout, s.OC, s.C / s.groups, s.KH, s.KW),
              "conv filter descriptor", shape);
  // Accumulation in float32 either way.
  check_cudnn(cudnnSetConvolution2dDescriptor(p->conv, s.pad_h, s.pad_w, s.stride_h, s.stride_w, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "conv descriptor", shape);
  check_cudnn(cudnnSetConvolutionGroupCount(p->conv, s.groups), "cudnnSetConvolutionGroupCount", shape);
  check_cudnn(cudnnSetConvolutionMathType(p->conv, bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH),
              "cudnnSetConvolutionMathType", shape);
  check_cudnn(cudnnSetTensor4dDescriptor(p->y, layout, type, s.B, s.OC, s.OH(), s.OW()), "conv output descriptor",
              shape);

  const bool deterministic = !s.math.nondeterministic;
  constexpr int kCount = 16;
  int n = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[kCount];
  check_cudnn(cudnnGetConvolutionForwardAlgorithm_v7(handle_, p->x, p->w, p->conv, p->y, kCount, &n, fwd),
              "cudnnGetConvolutionForwardAlgorithm_v7", shape);
  const bool have_fwd = choose(
      fwd, n, deterministic, bf16,
      {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM},
      [&](cudnnConvolutionFwdAlgo_t a, size_t* b) {
        return cudnnGetConvolutionForwardWorkspaceSize(handle_, p->x, p->w, p->conv, p->y, a, b);
      },
      &p->fwd, &p->fwd_bytes);
  cudnnConvolutionBwdDataAlgoPerf_t bd[kCount];
  check_cudnn(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle_, p->w, p->y, p->conv, p->x, kCount, &n, bd),
              "cudnnGetConvolutionBackwardDataAlgorithm_v7", shape);
  const bool have_bd = choose(
      bd, n, deterministic, bf16, {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1},
      [&](cudnnConvolutionBwdDataAlgo_t a, size_t* b) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(handle_, p->w, p->y, p->conv, p->x, a, b);
      },
      &p->bwd_data, &p->bwd_data_bytes);
  cudnnConvolutionBwdFilterAlgoPerf_t bf[kCount];
  check_cudnn(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle_, p->x, p->y, p->conv, p->w, kCount, &n, bf),
              "cudnnGetConvolutionBackwardFilterAlgorithm_v7", shape);
  const bool have_bf = choose(
      bf, n, deterministic, bf16, {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1},
      [&](cudnnConvolutionBwdFilterAlgo_t a, size_t* b) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle_, p->x, p->y, p->conv, p->w, a, b);
      },
      &p->bwd_filter, &p->bwd_filter_bytes);
  if (!(have_fwd && have_bd && have_bf)) {
    if (bf16) return nullptr;  // the float32 plan instead
    fail("cuDNN offers no ", deterministic ? "deterministic " : "", "float32 algorithm within ", kMaxWorkspace >> 20,
         " MiB of workspace for the ",
         !have_fwd  ? "forward"
         : !have_bd ? "backward-data"
                    : "backward-filter",
         " pass of the ", shape, deterministic ? " (--no-deterministic lets it use non-deterministic ones)" : "");
  }
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
  const Key key{s.B,        s.C,        s.H,     s.W,     s.OC,     s.KH,        s.KW,
                s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.groups, s.math.bf16, s.math.nondeterministic};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  std::unique_ptr<ConvPlan> p = s.math.bf16 ? make(s, true) : nullptr;
  if (!p) p = make(s, false);
  return *(plans_[key] = std::move(p));
}

}  // namespace dfl::cuda
