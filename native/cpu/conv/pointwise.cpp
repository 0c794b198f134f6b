// Pointwise convolution (1x1, stride 1, pad 0, groups 1, planes a multiple of 8) for AVX2+FMA.
// Forward and input gradient: the row kernels (row_kernels.h) with one tap, each plane one row of
// H*W. Weight gradient dW[o][c] = sum over (b, p) of dout[b,o,p] * x[b,c,p]: tasks of 3 output x 4
// input channels, each one thread's 12 vector accumulators over the batch (in sample groups, as
// the direct weight gradient).
#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/conv/row_kernels.h"
#include "cpu/simd.h"

namespace dfl::cpu {

bool pointwise_applies(const Conv2dShape& s) {
  const CpuFeatures& f = cpu_features();
  const int P = s.H * s.W;
  return DFL_X86 && f.avx2 && f.fma && s.KH == 1 && s.KW == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 &&
         s.pad_w == 0 && s.groups == 1 && P >= 8 && P % 8 == 0;
}

namespace {
int pointwise_block(const Conv2dShape& s) { return block_channels(s.H * s.W); }
}  // namespace

size_t pointwise_workspace_floats(const Conv2dShape& s) {
  const int OB = pointwise_block(s);
  return std::max(blocked_weight_floats(s.OC, s.C, OB, 1), blocked_weight_floats(s.C, s.OC, OB, 1));
}

void pointwise_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                       float* workspace, Activation act) {
  DFL_CHECK(pointwise_applies(s) && workspace, "pointwise_forward: shape not supported or no workspace");
  block_weights(workspace, weight, s.OC, s.C, pointwise_block(s), false, 1);
  direct<1, 1>(out, inp, s.B, s.C, s.OC, s.H, s.W, workspace, bias, false, nullptr, act);
}

namespace {
#if DFL_X86
// dW[o0+o][c0+j] += sum over samples [b0, b1) and pixels of dout[b, o0+o] * x[b, c0+j], o < no, j < nc.
// Full: no == 3 and nc == 4, so no row is the zeros stand-in and the loads need no select (7 compares
// and moves per 12 FMAs otherwise: the full tasks ran at half the FMA peak).
template <bool Full>
__attribute__((target("avx2,fma"))) void pointwise_weight_task(float* dweight, const float* dout, const float* inp,
                                                               const Conv2dShape& s, int o0, int no, int c0, int nc,
                                                               int b0, int b1, const float* zeros) {
  __m256 acc[3][4];
  DFL_UNROLL
  for (int o = 0; o < 3; ++o) DFL_UNROLL
  for (int j = 0; j < 4; ++j) acc[o][j] = _mm256_setzero_ps();
  const size_t P = size_t(s.H) * s.W;
  for (int b = b0; b < b1; ++b) {
    const float* d[3];
    const float* x[4];
    DFL_UNROLL
    for (int o = 0; o < 3; ++o) d[o] = o < no ? dout + (size_t(b) * s.OC + o0 + o) * P : zeros;
    DFL_UNROLL
    for (int j = 0; j < 4; ++j) x[j] = j < nc ? inp + (size_t(b) * s.C + c0 + j) * P : zeros;
    for (size_t p = 0; p < P; p += 8) {
      // zeros is only 8 floats long: a missing channel reads it at offset 0 every time.
      const __m256 d0 = _mm256_loadu_ps(Full || d[0] != zeros ? d[0] + p : zeros);
      const __m256 d1 = _mm256_loadu_ps(Full || d[1] != zeros ? d[1] + p : zeros);
      const __m256 d2 = _mm256_loadu_ps(Full || d[2] != zeros ? d[2] + p : zeros);
      DFL_UNROLL
      for (int j = 0; j < 4; ++j) {
        const __m256 v = _mm256_loadu_ps(Full || x[j] != zeros ? x[j] + p : zeros);
        acc[0][j] = _mm256_fmadd_ps(d0, v, acc[0][j]);
        acc[1][j] = _mm256_fmadd_ps(d1, v, acc[1][j]);
        acc[2][j] = _mm256_fmadd_ps(d2, v, acc[2][j]);
      }
    }
  }
  DFL_UNROLL
  for (int o = 0; o < 3; ++o)  // compile-time bounds: acc stays in registers (see row_chunk)
    DFL_UNROLL
  for (int j = 0; j < 4; ++j)
    if (o < no && j < nc) dweight[size_t(o0 + o) * s.C + c0 + j] += lane_sum(acc[o][j]);
}
#endif
}  // namespace

void pointwise_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                        const Conv2dShape& s, float* workspace, bool overwrite_dinp) {
  DFL_CHECK(pointwise_applies(s) && workspace, "pointwise_backward: shape not supported or no workspace");
  if (dinp) {
    block_weights(workspace, weight, s.C, s.OC, pointwise_block(s), true, 1);
    direct<1, 1>(dinp, dout, s.B, s.OC, s.C, s.H, s.W, workspace, nullptr, /*accumulate=*/!overwrite_dinp, nullptr);
  }
#if DFL_X86
  if (!dweight) return;
  // Groups of samples in order (about 1 MB of dout and input each); tasks own disjoint dW.
  const size_t per_sample = (size_t(s.OC) + s.C) * s.H * s.W * sizeof(float);
  const int G = int(std::clamp<size_t>((size_t(1) << 20) / per_sample, 1, size_t(s.B)));
  const int ob3 = blocks(s.OC, 3), cb4 = blocks(s.C, 4);
  alignas(32) static const float zeros[8] = {};
  for (int b0 = 0; b0 < s.B; b0 += G) {
    const int b1 = std::min(s.B, b0 + G);
    parallel_for(int64_t(ob3) * cb4, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int ob = int(t / cb4), cb = int(t % cb4);
        const int no = std::min(3, s.OC - ob * 3), nc = std::min(4, s.C - cb * 4);
        if (no == 3 && nc == 4)
          pointwise_weight_task<true>(dweight, dout, inp, s, ob * 3, no, cb * 4, nc, b0, b1, zeros);
        else
          pointwise_weight_task<false>(dweight, dout, inp, s, ob * 3, no, cb * 4, nc, b0, b1, zeros);
      }
    });
  }
#endif
}

}  // namespace dfl::cpu
