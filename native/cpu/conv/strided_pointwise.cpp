// 1x1 convolutions with a stride (ResNet's downsampling shortcuts).
// A strided 1x1 convolution reads one pixel in stride_h x stride_w: its input is gathered into a
// dense (B, C, OH, OW) copy, and the stride-1 1x1 convolution of that copy runs on the algorithm
// conv2d_choose_algo picks for it (the pointwise row kernels or a GEMM); the input gradient is
// computed on the dense copy and added back into the strided pixels. Gathers and scatters go one
// (sample, channel) plane per task, each element written once: thread counts do not matter.
// Workspace: [dense input | its gradient | the inner algorithm's workspace].
#include <algorithm>

#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"

namespace dfl::cpu {

namespace {
Conv2dShape dense_shape(const Conv2dShape& s) {
  Conv2dShape d = s;
  d.H = s.OH();
  d.W = s.OW();
  d.stride_h = d.stride_w = 1;
  return d;
}
size_t dense_floats(const Conv2dShape& s) { return size_t(s.B) * s.C * s.OH() * s.OW(); }
// f(strided pixel, dense pixel) for every output position of every (sample, channel) plane, with
// x[b,c,oy*sh,ox*sw] the strided pixel and dense[b,c,oy,ox] the dense one; one plane per task.
template <typename T, typename F>
void for_strided_pixels(T* x, const Conv2dShape& s, float* dense, F&& f) {
  const int OH = s.OH(), OW = s.OW();
  const size_t plane = size_t(s.H) * s.W, dplane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, conv_grain(int64_t(dplane)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int oy = 0; oy < OH; ++oy) {
        T* xr = x + size_t(p) * plane + size_t(oy) * s.stride_h * s.W;
        float* dr = dense + size_t(p) * dplane + size_t(oy) * OW;
        for (int ox = 0; ox < OW; ++ox) f(xr[size_t(ox) * s.stride_w], dr[ox]);
      }
  });
}
}  // namespace

bool strided_pointwise_applies(const Conv2dShape& s) {
  return s.KH == 1 && s.KW == 1 && s.pad_h == 0 && s.pad_w == 0 && s.groups == 1 && (s.stride_h > 1 || s.stride_w > 1);
}
size_t strided_pointwise_workspace_floats(const Conv2dShape& s) {
  const Conv2dShape d = dense_shape(s);
  return 2 * dense_floats(s) + conv2d_workspace_floats_with(conv2d_choose_algo(d), d);
}
void strided_pointwise_forward(float* out, const float* inp, const float* weight, const float* bias,
                               const Conv2dShape& s, float* workspace) {
  const Conv2dShape d = dense_shape(s);
  for_strided_pixels(inp, s, workspace, [](const float& x, float& d) { d = x; });
  conv2d_forward_with(conv2d_choose_algo(d), out, workspace, weight, bias, d, workspace + 2 * dense_floats(s));
}
void strided_pointwise_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                const float* weight, const Conv2dShape& s, float* workspace) {
  const Conv2dShape d = dense_shape(s);
  const size_t n = dense_floats(s);
  float* dense = workspace;
  float* ddense = dinp ? workspace + n : nullptr;
  if (dweight) for_strided_pixels(inp, s, dense, [](const float& x, float& d) { d = x; });
  if (ddense) std::fill(ddense, ddense + n, 0.0f);
  conv2d_backward_with(conv2d_choose_algo(d), ddense, dweight, dbias, dout, dense, weight, d, workspace + 2 * n);
  if (dinp) for_strided_pixels(dinp, s, ddense, [](float& x, const float& d) { x += d; });
}

}  // namespace dfl::cpu
