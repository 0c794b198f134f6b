// The CUDA backend's elementwise kernels, pooling, channel plumbing and dropout (cuda/bodies/elementwise.h, pool.h).
#include "cuda/cuda_backend.h"

namespace dfl::cuda {

// ---- elementwise ---------------------------------------------------------------------------------

void CudaBackend::relu_forward(float* out, const float* inp, size_t n) { run(ReluForward{out, inp, n, false}); }

void CudaBackend::relu_backward(float* dinp, const float* dout, const float* inp, size_t n) {
  if (dinp) run(ReluBackward{dinp, dout, inp, n, false});
}

void CudaBackend::relu6_forward(float* out, const float* inp, size_t n) { run(ReluForward{out, inp, n, true}); }

void CudaBackend::relu6_backward(float* dinp, const float* dout, const float* inp, size_t n) {
  if (dinp) run(ReluBackward{dinp, dout, inp, n, true});
}

void CudaBackend::add_forward(float* out, const float* a, const float* b, size_t n) { run(AddForward{out, a, b, n}); }

void CudaBackend::add_forward_fused(float* out, const float* a, const float* b, size_t n, Activation act) {
  run(AddForward{out, a, b, n, act});
}

// One pass, in place (the default would go through a temporary buffer and a copy).
void CudaBackend::activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) {
  if (act != Activation::None && n > 0) run(ActivationMask{dout, y, n, act});
}

void CudaBackend::add_backward(float* da, float* db, const float* dout, size_t n) {
  if (da) run(Accumulate{da, dout, n});
  if (db) run(Accumulate{db, dout, n});
}

void CudaBackend::accumulate(float* dst, const float* src, size_t n) { run(Accumulate{dst, src, n}); }

void CudaBackend::add_scalar(float* x, float v, size_t n) { run(AddScalar{x, v, n}); }

// ---- pooling -------------------------------------------------------------------------------------

void CudaBackend::maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) {
  run(MaxPoolForward{out, argmax, inp, s});
}

void CudaBackend::maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) {
  if (dinp) run(MaxPoolBackward{dinp, dout, argmax, s});
}

void CudaBackend::avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) {
  run(AvgPoolForward{out, inp, s});
}

void CudaBackend::avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) {
  if (dinp) run(AvgPoolBackward{dinp, dout, s});
}

void CudaBackend::global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) {
  run(GlobalAvgPoolForward{out, inp, size_t(B) * C, HW});
}

void CudaBackend::global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) {
  if (dinp) run(GlobalAvgPoolBackward{dinp, dout, size_t(B) * C, HW});
}

// ---- channel plumbing: one 2-D copy (forward) or strided accumulate (backward) per chunk ---------

void CudaBackend::concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n, int B,
                                          int HW) {
  auto lock = enter();
  const size_t total = total_channels(channels, n);
  size_t off = 0;
  for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k)
    copy_2d(out + off, total * HW, inputs[k], size_t(channels[k]) * HW, size_t(channels[k]) * HW, B);
}

void CudaBackend::concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n, int B,
                                           int HW) {
  auto lock = enter();
  const size_t total = total_channels(channels, n);
  size_t off = 0;
  for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k) {
    const size_t len = size_t(channels[k]) * HW;
    if (dinputs[k])
      launch_elementwise(stream_, StridedAccumulate{dinputs[k], dout + off, size_t(B), len, len, total * HW});
  }
}

void CudaBackend::split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B,
                                         int HW) {
  auto lock = enter();
  const size_t total = total_channels(channels, n);
  size_t off = 0;
  for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k)
    if (outputs[k]) copy_2d(outputs[k], size_t(channels[k]) * HW, inp + off, total * HW, size_t(channels[k]) * HW, B);
}

void CudaBackend::split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n, int B,
                                          int HW, bool overwrite) {
  auto lock = enter();
  if (!dinp) return;
  const size_t total = total_channels(channels, n);
  size_t off = 0;
  for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k) {
    const size_t len = size_t(channels[k]) * HW;
    if (overwrite && doutputs[k])
      copy_2d(dinp + off, total * HW, doutputs[k], len, len, B);
    else if (overwrite)
      check_cuda(cudaMemset2DAsync(dinp + off, total * HW * sizeof(float), 0, len * sizeof(float), size_t(B), stream_),
                 "cudaMemset2DAsync");
    else if (doutputs[k])
      launch_elementwise(stream_, StridedAccumulate{dinp + off, doutputs[k], size_t(B), len, total * HW, len});
  }
}

// Input k's planes are every n-th plane of the output, from plane k: one 2-D copy per input (rows
// of HW floats, B * cpg of them, n * HW apart in the output).
void CudaBackend::interleave_channels_forward(float* out, const float* const* inputs, int n, int cpg, int B, int HW) {
  auto lock = enter();
  DFL_CHECK(n > 0 && cpg > 0 && B > 0 && HW > 0, "interleave_channels_forward: sizes must be positive");
  const size_t rows = size_t(B) * cpg, hw = size_t(HW);
  for (int k = 0; k < n; ++k) copy_2d(out + k * hw, n * hw, inputs[k], hw, hw, int(rows));
}

void CudaBackend::interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B, int HW,
                                               bool overwrite) {
  auto lock = enter();
  DFL_CHECK(n > 0 && cpg > 0 && B > 0 && HW > 0, "interleave_channels_backward: sizes must be positive");
  const size_t rows = size_t(B) * cpg, hw = size_t(HW);
  for (int k = 0; k < n; ++k) {
    if (!dinputs[k]) continue;
    if (overwrite)
      copy_2d(dinputs[k], hw, dout + k * hw, n * hw, hw, int(rows));
    else
      launch_elementwise(stream_, StridedAccumulate{dinputs[k], dout + k * hw, rows, hw, hw, n * hw});
  }
}

void CudaBackend::channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups) {
  kernel_math::check_channel_shuffle(B, C, HW, groups, "channel_shuffle_forward");
  run(ChannelShuffle{out, inp, size_t(B) * C * HW, C, HW, groups, false});
}

void CudaBackend::channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) {
  kernel_math::check_channel_shuffle(B, C, HW, groups, "channel_shuffle_backward");
  if (dinp) run(ChannelShuffle{dinp, dout, size_t(B) * C * HW, C, HW, groups, true});
}

// ---- dropout -------------------------------------------------------------------------------------

void CudaBackend::dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed) {
  DFL_CHECK(p >= 0.f && p <= 1.f, "dropout_forward: p must be in [0, 1], got ", p);
  run(DropoutForward{out, mask, inp, n, p, p < 1.f ? 1.f / (1.f - p) : 0.f, seed});
}

void CudaBackend::dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) {
  if (dinp) run(DropoutBackward{dinp, dout, mask, n});
}

}  // namespace dfl::cuda
