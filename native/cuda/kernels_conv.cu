// The CUDA backend's convolutions (cuDNN, with the plans of cuda/conv_cudnn.h) and linear layers (cuBLAS).
#include "cuda/cuda_backend.h"

namespace dfl::cuda {

// ---- convolutions and linear layers --------------------------------------------------------------

size_t CudaBackend::conv2d_workspace_bytes(const Conv2dShape& s) {
  auto lock = enter();
  return plan(s).workspace_bytes();
}

void CudaBackend::conv2d_forward(float* out, const float* inp, const float* weight, const float* bias,
                                 const Conv2dShape& s, void* workspace, size_t workspace_bytes, Activation act) {
  auto lock = enter();
  const ConvPlan& p = plan(s);
  check_conv_workspace("conv2d_forward", s, p.workspace_bytes(), workspace, workspace_bytes);
  const float one = 1.f, zero = 0.f;
  if (p.bf16) {
    // AMP-style: bf16 copies of the input and weights, a bf16 output cast back to float32.
    char* ws = static_cast<char*>(workspace);
    auto* x16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_x);
    auto* w16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_w);
    auto* y16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_y);
    cast_in(x16, inp, s.B, s.C, size_t(s.H) * s.W);
    cast_in(w16, weight, s.OC, s.C / s.groups, size_t(s.KH) * s.KW);
    check_cudnn(cudnnConvolutionForward(cudnn_, &one, p.x, x16, p.w, w16, p.conv, p.fwd, workspace, p.fwd_bytes, &zero,
                                        p.y, y16),
                "cudnnConvolutionForward (bf16)", p.shape);
    launch_elementwise(stream_,
                       FromBf16ChannelsLast{out, y16, size_t(s.B), size_t(s.OC), size_t(s.OH()) * s.OW(), false});
  } else {
    check_cudnn(cudnnConvolutionForward(cudnn_, &one, p.x, inp, p.w, weight, p.conv, p.fwd, workspace, p.fwd_bytes,
                                        &zero, p.y, out),
                "cudnnConvolutionForward", p.shape);
  }
  const size_t P = size_t(s.OH()) * s.OW();
  if (bias || act != Activation::None)
    launch_elementwise(stream_, BiasActivation{out, bias, size_t(s.B) * s.OC * P, s.OC, P, act});
}

void CudaBackend::conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* weight, const Conv2dShape& s, void* workspace, size_t workspace_bytes,
                                  bool overwrite_dinp) {
  auto lock = enter();
  const ConvPlan& p = plan(s);
  check_conv_workspace("conv2d_backward", s, p.workspace_bytes(), workspace, workspace_bytes);
  const float one = 1.f, zero = 0.f;
  if (p.bf16) {
    // bf16 gradients from cuDNN (beta = 0 into the plan's scratch), accumulated in float32 by the cast back.
    char* ws = static_cast<char*>(workspace);
    auto* dy16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_y);
    const size_t HW = size_t(s.H) * s.W, KK = size_t(s.KH) * s.KW;
    cast_in(dy16, dout, s.B, s.OC, size_t(s.OH()) * s.OW());
    if (dinp) {
      auto* w16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_w);
      auto* dx16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_dx);
      cast_in(w16, weight, s.OC, s.C / s.groups, KK);
      check_cudnn(cudnnConvolutionBackwardData(cudnn_, &one, p.w, w16, p.y, dy16, p.conv, p.bwd_data, workspace,
                                               p.bwd_data_bytes, &zero, p.x, dx16),
                  "cudnnConvolutionBackwardData (bf16)", p.shape);
      launch_elementwise(stream_, FromBf16ChannelsLast{dinp, dx16, size_t(s.B), size_t(s.C), HW, !overwrite_dinp});
    }
    if (dweight) {
      auto* x16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_x);
      auto* dw16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_dw);
      cast_in(x16, inp, s.B, s.C, HW);
      check_cudnn(cudnnConvolutionBackwardFilter(cudnn_, &one, p.x, x16, p.y, dy16, p.conv, p.bwd_filter, workspace,
                                                 p.bwd_filter_bytes, &zero, p.w, dw16),
                  "cudnnConvolutionBackwardFilter (bf16)", p.shape);
      launch_elementwise(stream_, FromBf16ChannelsLast{dweight, dw16, size_t(s.OC), size_t(s.C / s.groups), KK, true});
    }
  } else {
    // beta = 1: accumulate into the gradients (beta = 0: overwrite the input gradient)
    if (dinp)
      check_cudnn(cudnnConvolutionBackwardData(cudnn_, &one, p.w, weight, p.y, dout, p.conv, p.bwd_data, workspace,
                                               p.bwd_data_bytes, overwrite_dinp ? &zero : &one, p.x, dinp),
                  "cudnnConvolutionBackwardData", p.shape);
    if (dweight)
      check_cudnn(cudnnConvolutionBackwardFilter(cudnn_, &one, p.x, inp, p.y, dout, p.conv, p.bwd_filter, workspace,
                                                 p.bwd_filter_bytes, &one, p.w, dweight),
                  "cudnnConvolutionBackwardFilter", p.shape);
  }
  if (dbias) launch_rows(stream_, BiasGradient{dbias, dout, s.B, s.OC, s.OH() * s.OW()});
}

void CudaBackend::linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int IN,
                                 int OUT, Activation act, const MathMode& math) {
  auto lock = enter();
  check_math(math);
  gemm(false, true, B, OUT, IN, inp, IN, weight, IN, 0.f, out, OUT, math.bf16);
  if (bias || act != Activation::None)
    launch_elementwise(stream_, BiasActivation{out, bias, size_t(B) * OUT, OUT, 1, act});
}

void CudaBackend::linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* weight, int B, int IN, int OUT, const MathMode& math) {
  auto lock = enter();
  check_math(math);
  if (dinp) gemm(false, false, B, IN, OUT, dout, OUT, weight, IN, 1.f, dinp, IN, math.bf16);
  if (dweight) gemm(true, false, OUT, IN, B, dout, OUT, inp, IN, 1.f, dweight, IN, math.bf16);
  if (dbias) launch_rows(stream_, BiasGradient{dbias, dout, B, OUT, 1});
}

}  // namespace dfl::cuda
