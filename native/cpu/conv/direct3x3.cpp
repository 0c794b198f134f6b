// Direct 3x3 convolution (stride 1 or 2, pad 1, groups 1, output rows a multiple of 8) for
// AVX2+FMA, on the row kernels (row_kernels.h): the forward and, at stride 1, the input gradient,
// which is the same computation on dout with the weights transposed and flipped (stride 2's input
// gradient has kernels of its own, below, for even input sizes). Stride 2 reads padded rows stored
// split into even and odd elements (pad_sample), so its taps stay contiguous. No im2col: each
// sample's input is copied once into a zero-padded plane, then the row kernels build every output row.
//
// The weight gradient dW[o][c][kh][kw] = sum over (b, oh, ow) of dout[b,o,oh,ow] * xpad[b,c,oh+kh,ow+kw]:
// inside a sample group each task, (3 output channels, one input channel, one kernel row), is one
// thread's 3x3 vector accumulators (o, kw) over the group's rows (weight_task).
#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/conv/row_kernels.h"
#include "cpu/simd.h"

namespace dfl::cpu {

bool conv_rows_use_avx512() { return rows_use_avx512(); }

bool direct3x3_applies(const Conv2dShape& s) {
  const CpuFeatures& f = cpu_features();
  const bool stride = s.stride_h == s.stride_w && (s.stride_h == 1 || s.stride_h == 2);
  return DFL_X86 && f.avx2 && f.fma && s.KH == 3 && s.KW == 3 && stride && s.pad_h == 1 && s.pad_w == 1 &&
         s.groups == 1 && s.OW() >= 8 && s.OW() % 8 == 0;
}

namespace {
// The stride-2 input gradient (below): channel block OB and vectors NV per row chunk, 2 * OB * NV
// accumulators + OB weights + 1 input <= 16 registers; its dout copy, one plane per output channel.
int s2_data_block(int OW) { return OW % 16 == 0 ? 3 : 5; }
size_t s2_dout_plane(const Conv2dShape& s) { return size_t(s.OH() + 1) * (s.OW() + 1); }
size_t s2_data_workspace_floats(const Conv2dShape& s) {
  return blocked_weight_floats(s.C, s.OC, s2_data_block(s.OW())) + s2_dout_plane(s) * s.OC * size_t(max_thread_slots());
}
}  // namespace

// [blocked weights | one padded sample per thread slot], sized for the larger of forward
// (C input planes) and input gradient (OC planes of dout), plus the general algorithm's own
// workspace for the weight gradient.
size_t direct3x3_workspace_floats(const Conv2dShape& s) {
  const int OB = block_channels(s.OW());
  const size_t weights = std::max(blocked_weight_floats(s.OC, s.C, OB), blocked_weight_floats(s.C, s.OC, OB));
  const size_t pads = padded_plane(s) * size_t(std::max(s.C, s.OC)) * size_t(max_thread_slots());
  const size_t group_pads = padded_plane(s) * size_t(s.C) * size_t(weight_group(s)) + size_t(s.W);  // + the offset
  const size_t s2_data = s.stride_h == 2 ? s2_data_workspace_floats(s) : 0;
  return std::max({weights + pads, group_pads, s2_data, general_workspace_floats(s)});
}

// The kernel lab's rule (native/dev/conv_lab.cpp times both): at stride 1 the direct weight gradient
// wins on rows of 16+ or with few input channels; at stride 2 only with both.
bool direct3x3_weights_preferred(const Conv2dShape& s) {
  return s.stride_h == 1 ? s.OW() >= 16 || s.C < 64 : s.OW() >= 16 && s.C < 64;
}

namespace {
// out [+]= the 3x3 convolution of x (C_in planes) into C_out planes, the weights blocked into the
// front of the workspace (flip: the input gradient's, transposed and reversed), pads after them.
void blocked_direct3x3(float* out, const float* x, int C_in, int C_out, const float* weight, const float* bias,
                       bool flip, bool accumulate, const Conv2dShape& s, float* workspace,
                       Activation act = Activation::None) {
  const int OB = block_channels(s.OW());
  block_weights(workspace, weight, C_out, C_in, OB, flip);
  float* pads = workspace + blocked_weight_floats(C_out, C_in, OB);
  if (s.stride_h == 2)
    direct<3, 2>(out, x, s.B, C_in, C_out, s.H, s.W, workspace, bias, accumulate, pads, act);
  else
    direct<3, 1>(out, x, s.B, C_in, C_out, s.H, s.W, workspace, bias, accumulate, pads, act);
}
}  // namespace

void direct3x3_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                       float* workspace, Activation act) {
  DFL_CHECK(direct3x3_applies(s) && workspace, "direct3x3_forward: shape not supported or no workspace");
  blocked_direct3x3(out, inp, s.C, s.OC, weight, bias, /*flip=*/false, /*accumulate=*/false, s, workspace, act);
}

// ---- stride-2 input gradient, by row and column phases ------------------------------------------
// Input row ih = 2i + pr of a stride-2, pad-1 3x3 convolution is read by output row i through kernel
// row kh = 1 when pr = 0, and by output rows i + 1 (kh = 0) and i (kh = 2) when pr = 1; columns
// likewise. So dinp row 2i + pr is a sum over those kernel rows of, at its even columns 2j,
// w[kh][1] * dout[row][j], and at its odd columns 2j + 1, w[kh][0] * dout[row][j + 1] + w[kh][2] *
// dout[row][j], summed over the output channels. A row chunk keeps both column phases in registers
// (even, odd: 8 * NV columns each) and interleaves them as it stores: 9 taps per (c, oc) pair, as
// many FMAs as the forward, with no column matrix and no col2im. dout is read from a copy with a zero
// row below and a zero column right of each plane (row i + 1 and column j + 1 at the far edge).
// One sample per thread at a time, each dinp element written once: thread counts do not matter.
namespace {

#if DFL_X86
// dinp row 2i + PR, columns [2 j0, 2 j0 + 16 NV), channels [c0, c0 + n): wb holds the flipped
// transposed weights (block_weights with flip: tap t of (oc, c) is w[oc][c][8 - t]).
template <int NV, int OB, int PR, int WS>
__attribute__((target("avx2,fma"))) void s2_data_chunk(float* dinp, int c0, int n, int H, int W, int i, int j0,
                                                       const float* dpad, int pitch, size_t dplane, int OC,
                                                       const float* wb, bool accumulate) {
  __m256 even[OB][NV], odd[OB][NV];
  DFL_UNROLL
  for (int o = 0; o < OB; ++o) DFL_UNROLL
  for (int v = 0; v < NV; ++v) even[o][v] = odd[o][v] = _mm256_setzero_ps();
  constexpr int kRows = PR == 0 ? 1 : 2;
  for (int oc = 0; oc < OC; ++oc) {
    const float* base = dpad + oc * dplane + size_t(i) * pitch + j0;
    const float* wc = wb + size_t(oc) * 9 * WS;
    DFL_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const int kh = PR == 0 ? 1 : (r == 0 ? 0 : 2);  // kh = 0 reads output row i + 1
      const float* row = base + (kh == 0 ? pitch : 0);
      DFL_UNROLL
      for (int kw = 0; kw < 3; ++kw) {
        __m256 wv[OB];
        DFL_UNROLL
        for (int o = 0; o < OB; ++o) wv[o] = _mm256_broadcast_ss(wc + (8 - (kh * 3 + kw)) * WS + o);
        DFL_UNROLL
        for (int v = 0; v < NV; ++v) {
          const __m256 x = _mm256_loadu_ps(row + 8 * v + (kw == 0 ? 1 : 0));
          DFL_UNROLL
          for (int o = 0; o < OB; ++o) {
            if (kw == 1)
              even[o][v] = _mm256_fmadd_ps(wv[o], x, even[o][v]);
            else
              odd[o][v] = _mm256_fmadd_ps(wv[o], x, odd[o][v]);
          }
        }
      }
    }
  }
  DFL_UNROLL
  for (int o = 0; o < OB; ++o) {
    if (o >= n) continue;
    float* dst = dinp + (size_t(c0 + o) * H + 2 * i + PR) * W + 2 * j0;
    DFL_UNROLL
    for (int v = 0; v < NV; ++v) {
      const __m256 lo = _mm256_unpacklo_ps(even[o][v], odd[o][v]), hi = _mm256_unpackhi_ps(even[o][v], odd[o][v]);
      __m256 a = _mm256_permute2f128_ps(lo, hi, 0x20), b = _mm256_permute2f128_ps(lo, hi, 0x31);
      if (accumulate) {
        a = _mm256_add_ps(_mm256_loadu_ps(dst + 16 * v), a);
        b = _mm256_add_ps(_mm256_loadu_ps(dst + 16 * v + 8), b);
      }
      _mm256_storeu_ps(dst + 16 * v, a);
      _mm256_storeu_ps(dst + 16 * v + 8, b);
    }
  }
}

// Channels [c0, c0 + n) of one block, NB computed (NB >= n; WS: the weights' block size).
template <int NV, int NB, int WS>
void s2_data_block_rows(float* dinp, int c0, int n, const float* dpad, const Conv2dShape& s, const float* w,
                        bool accumulate) {
  const int OH = s.OH(), OW = s.OW(), pitch = OW + 1;
  const size_t dplane = s2_dout_plane(s);
  for (int i = 0; i < OH; ++i)
    for (int j0 = 0; j0 < OW; j0 += 8 * NV) {
      s2_data_chunk<NV, NB, 0, WS>(dinp, c0, n, s.H, s.W, i, j0, dpad, pitch, dplane, s.OC, w, accumulate);
      s2_data_chunk<NV, NB, 1, WS>(dinp, c0, n, s.H, s.W, i, j0, dpad, pitch, dplane, s.OC, w, accumulate);
    }
}

template <int NV, int OB>
void s2_data_sample(float* dinp, const float* dpad, const Conv2dShape& s, const float* wb, bool accumulate) {
  const size_t block_floats = size_t(s.OC) * 9 * OB;
  for (int cb = 0; cb < blocks(s.C, OB); ++cb) {
    const int c0 = cb * OB, n = std::min(OB, s.C - c0);
    const float* w = wb + cb * block_floats;
    // A partial last block computes 1 or 2 channels, not OB (as all_rows).
    if (n == 1)
      s2_data_block_rows<NV, 1, OB>(dinp, c0, n, dpad, s, w, accumulate);
    else if (n == 2)
      s2_data_block_rows<NV, 2, OB>(dinp, c0, n, dpad, s, w, accumulate);
    else
      s2_data_block_rows<NV, OB, OB>(dinp, c0, n, dpad, s, w, accumulate);
  }
}
#endif

// dinp [+]= the stride-2 input gradient (H and W even: every input row and column has its phase).
void s2_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dShape& s, float* workspace,
                      bool accumulate) {
#if DFL_X86
  const int OB = s2_data_block(s.OW()), OH = s.OH(), OW = s.OW();
  block_weights(workspace, weight, s.C, s.OC, OB, /*flip=*/true);
  const float* wb = workspace;
  float* pads = workspace + blocked_weight_floats(s.C, s.OC, OB);
  const size_t dplane = s2_dout_plane(s), pad_floats = dplane * s.OC;
  parallel_for(s.B, 1, [&](int64_t b0, int64_t b1) {
    float* dpad = pads + size_t(thread_slot()) * pad_floats;
    for (int64_t b = b0; b < b1; ++b) {
      for (int oc = 0; oc < s.OC; ++oc) {  // dout plane with a zero column right and a zero row below
        const float* src = dout + (size_t(b) * s.OC + oc) * OH * OW;
        float* dst = dpad + oc * dplane;
        for (int i = 0; i < OH; ++i) {
          std::memcpy(dst + size_t(i) * (OW + 1), src + size_t(i) * OW, sizeof(float) * OW);
          dst[size_t(i) * (OW + 1) + OW] = 0.0f;
        }
        std::memset(dst + size_t(OH) * (OW + 1), 0, sizeof(float) * (OW + 1));
      }
      float* db = dinp + size_t(b) * s.C * s.H * s.W;
      if (OB == 3)
        s2_data_sample<2, 3>(db, dpad, s, wb, accumulate);
      else
        s2_data_sample<1, 5>(db, dpad, s, wb, accumulate);
    }
  });
#else
  (void)dinp, (void)dout, (void)weight, (void)s, (void)workspace, (void)accumulate;
  fail("direct3x3: not built for this CPU");
#endif
}
}  // namespace

bool direct3x3_data_gradient_applies(const Conv2dShape& s) {
  return direct3x3_applies(s) && (s.stride_h == 1 || (s.H % 2 == 0 && s.W % 2 == 0));
}

void direct3x3_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dShape& s,
                             float* workspace, bool overwrite) {
  DFL_CHECK(direct3x3_data_gradient_applies(s) && workspace,
            "direct3x3_backward_data: shape not supported (stride 1, or stride 2 on even sizes) or no workspace");
  if (s.stride_h == 2) return s2_backward_data(dinp, dout, weight, s, workspace, /*accumulate=*/!overwrite);
  blocked_direct3x3(dinp, dout, s.OC, s.C, weight, nullptr, /*flip=*/true, /*accumulate=*/!overwrite, s, workspace);
}

void direct3x3_backward_weights(float* dweight, const float* dout, const float* inp, const Conv2dShape& s,
                                float* workspace) {
  DFL_CHECK(direct3x3_applies(s) && workspace, "direct3x3_backward_weights: shape not supported or no workspace");
#if DFL_X86
  const int G = weight_group(s), blocks3 = blocks(s.OC, 3);
  const bool split = s.stride_h == 2;
  const InputRows in = InputRows::of(3, s.stride_h, s.H, s.W);
  // The padded samples start W floats in (where a row of zeros once sat): at offset 0 the kernel lab
  // timed the stride-2 weight gradient slower (alignment; the cause was not pinned down).
  float* xpad = workspace + s.W;
  const size_t in_sample = size_t(s.C) * s.H * s.W, pad_sample_floats = padded_plane(s) * s.C;
  const int64_t tasks = int64_t(blocks3) * s.C * 3;
  for (int b0 = 0; b0 < s.B; b0 += G) {
    const int b1 = std::min(s.B, b0 + G);
    parallel_for(b1 - b0, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        pad_sample(xpad + i * pad_sample_floats, inp + (b0 + i) * in_sample, s.C, s.H, s.W, split);
    });
    // Tasks own disjoint dW elements; each adds its group sum once, groups in order.
    parallel_for(tasks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int kh = int(t % 3), c = int((t / 3) % s.C), ob = int(t / (3 * int64_t(s.C)));
        const int n = std::min(3, s.OC - ob * 3);
        if (split)
          weight_task<2>(dweight, dout, xpad, in, s.C, s.OC, s.OH(), s.OW(), ob * 3, n, c, kh, b0, b1);
        else
          weight_task<1>(dweight, dout, xpad, in, s.C, s.OC, s.OH(), s.OW(), ob * 3, n, c, kh, b0, b1);
      }
    });
  }
#else
  (void)dweight, (void)dout, (void)inp, (void)s, (void)workspace;
#endif
}

}  // namespace dfl::cpu
