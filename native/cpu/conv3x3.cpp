// Direct 3x3 convolution (stride 1 or 2, pad 1, groups 1, output rows a multiple of 8) for
// AVX2+FMA: the forward and, at stride 1, the input gradient, which is the same computation on dout
// with the weights transposed and flipped (stride 2's input gradient has kernels of its own, below,
// for even input sizes). Stride 2 reads padded rows stored split into even and odd elements
// (pad_sample), so its taps stay contiguous. No im2col: each sample's input is copied once into a
// zero-padded plane, then every
// output row is built in registers as OB output channels x NV 8-float vectors, summing over input
// channels c and the 9 taps in a fixed order:
//   acc[o][v] += w[o][c][kh][kw] * xpad[c][oh + kh][x0 + 8v + kw]
// One sample per thread at a time, each output element written by one thread in one order, so
// results are bitwise identical for any thread count.
//
// Registers (16 ymm): OB*NV accumulators + OB broadcast weights + 1 input vector. OB is 3, 5 or 7
// for rows of 32+, 16 and 8 floats (NV 4, 2, 1); longer rows go in chunks of 32.
//
// The weight gradient dW[o][c][kh][kw] = sum over (b, oh, ow) of dout[b,o,oh,ow] * xpad[b,c,oh+kh,ow+kw]
// is a reduction over the batch, so its order is fixed independently of the threads: samples go in
// groups of a size fixed by the shape (a group's data fits a core's L2), groups one after another;
// inside a group each task, (3 output channels, one input channel, one kernel row), is one thread's
// 3x3 vector accumulators (o, kw) over the group's rows, reduced across lanes and added to dW in
// group order. Results are bitwise identical for any thread count.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv_internal.h"
#include "cpu/simd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DFL_CONV3X3_X86 1
#else
#define DFL_CONV3X3_X86 0
#endif

namespace dfl::cpu {

namespace {

// Output channels per register block for a row of W floats.
int block_channels(int W) { return W >= 32 ? 3 : (W >= 16 ? 5 : 7); }
int blocks(int channels, int OB) { return (channels + OB - 1) / OB; }
size_t padded_plane(const Conv2dShape& s) { return size_t(s.H + 2) * (s.W + 2); }
// Blocked weights: OB zero-padded output channels per block, (block, C_in, KK taps, OB).
size_t blocked_weight_floats(int C_out, int C_in, int OB, int KK = 9) {
  return size_t(blocks(C_out, OB)) * OB * C_in * KK;
}

// wb[((ob*C_in + c)*KK + t)*OB + o] = weight of output ob*OB+o, input c, tap t (0 past C_out).
// flip: the input gradient's weights, w'[c][o][t] = w[o][c][KK-1 - t] (transposed, taps reversed).
void block_weights(float* wb, const float* w, int C_out, int C_in, int OB, bool flip, int KK = 9) {
  const int nb = blocks(C_out, OB);
  for (int ob = 0; ob < nb; ++ob)
    for (int c = 0; c < C_in; ++c)
      for (int t = 0; t < KK; ++t) DFL_UNROLL
  for (int o = 0; o < OB; ++o) {
    const int oc = ob * OB + o;
    float v = 0.0f;
    if (oc < C_out) v = flip ? w[(size_t(c) * C_out + oc) * KK + (KK - 1 - t)] : w[(size_t(oc) * C_in + c) * KK + t];
    wb[((size_t(ob) * C_in + c) * KK + t) * OB + o] = v;
  }
}

// Rows of a padded plane for a stride-2 kernel: each padded row (W+2 floats) stored split, its even
// elements first (E, (W+3)/2 of them) then its odd ones (O): the taps kw = 0, 1, 2 of output column
// ow read E[ow], O[ow], E[ow+1], so 8 neighbouring outputs read 8 contiguous floats per tap.
int split_odd_start(int W) { return (W + 3) / 2; }

#if DFL_CONV3X3_X86
// even[i] = src[2i], odd[i] = src[2i + 1] for the n floats of src (the split rows' copy).
__attribute__((target("avx2"))) void deinterleave_avx2(float* even, float* odd, const float* src, int n) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(src + i), b = _mm256_loadu_ps(src + i + 8);
    // shuffle_ps works within 128-bit lanes: [a0 a2 b0 b2 | a4 a6 b4 b6] -> permute to order.
    const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(even + i / 2,
                     _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0))));
    _mm256_storeu_ps(odd + i / 2,
                     _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), _MM_SHUFFLE(3, 1, 2, 0))));
  }
  for (; i < n; ++i) (i % 2 == 0 ? even : odd)[i / 2] = src[i];
}
#endif

// One sample's channels into zero-padded planes (H+2, W+2); split: rows stored split (above).
void pad_sample(float* xp, const float* x, int C, int H, int W, bool split = false) {
  if (split) {
    const int Wp = W + 2, LE = split_odd_start(W);
    for (int c = 0; c < C; ++c) {
      float* dst = xp + size_t(c) * (H + 2) * Wp;
      std::memset(dst, 0, sizeof(float) * Wp);
      for (int h = 0; h < H; ++h) {
        float* row = dst + size_t(h + 1) * Wp;
        const float* src = x + (size_t(c) * H + h) * W;
        // padded column j = input column j - 1: the input's odd columns go to E[1..], its even
        // ones to O[0..]; E[0] and the padded column W + 1 are zeros.
        row[0] = 0.0f;
        const int last = W + 1;
        row[(last & 1) ? LE + (last - 1) / 2 : last / 2] = 0.0f;
#if DFL_CONV3X3_X86
        deinterleave_avx2(row + LE, row + 1, src, W);  // direct3x3_applies checked AVX2
#else
        for (int j = 1; j <= W; ++j) row[(j & 1) ? LE + (j - 1) / 2 : j / 2] = src[j - 1];
#endif
      }
      std::memset(dst + size_t(H + 1) * Wp, 0, sizeof(float) * Wp);
    }
    return;
  }
  const int Wp = W + 2;
  for (int c = 0; c < C; ++c) {
    float* dst = xp + size_t(c) * (H + 2) * Wp;
    std::memset(dst, 0, sizeof(float) * Wp);
    for (int h = 0; h < H; ++h) {
      float* row = dst + size_t(h + 1) * Wp;
      row[0] = 0.0f;
      std::memcpy(row + 1, x + (size_t(c) * H + h) * W, sizeof(float) * W);
      row[W + 1] = 0.0f;
    }
    std::memset(dst + size_t(H + 1) * Wp, 0, sizeof(float) * Wp);
  }
}

#if DFL_CONV3X3_X86
// The sum of a vector's 8 lanes in a fixed order: (0+4, 1+5, 2+6, 3+7), then pairs, then the last
// two (the weight gradients' reductions, so that they do not depend on anything but the data).
__attribute__((target("avx2"))) inline float lane_sum(__m256 v) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// Where a kernel's input rows sit: K = 3, stride 1: padded planes (H+2, W+2); stride 2: the same
// planes with split rows (pad_sample); K = 1: the input itself, one plane per row. Output row oh,
// tap (kh, kw) reads row S*oh + kh at offset tap[kw] from the output column.
struct InputRows {
  int pitch;     // floats per row
  size_t plane;  // floats per channel
  int tap[3];
  static InputRows of(int K, int S, int H, int W) {
    if (K == 1) return {W, size_t(H) * W, {0, 0, 0}};
    if (S == 1) return {W + 2, size_t(H + 2) * (W + 2), {0, 1, 2}};
    return {W + 2, size_t(H + 2) * (W + 2), {0, split_odd_start(W), 1}};
  }
};

// One output row chunk: channels [oc0, oc0 + n) (n <= OB) of row oh, columns [x0, x0 + 8*NV), for a
// K x K kernel with stride S over the rows `in` describes. out: the sample's output (C_out, OH, OW).
// accumulate: add the sums to out (input gradient); otherwise store them plus bias (or 0), through
// act.
// The accumulators start at zero unconditionally and out is read only after the loop: with loads
// from out (or any per-channel branch) in the start, GCC kept acc in memory and stored all
// 3 x 4 accumulators back to the stack on every input channel, half the kernel's time at 1x1.
// WS: the weights' block size (OB of block_weights); a partial last block runs with a smaller OB.
template <int NV, int OB, int K, int S, int WS = OB>
__attribute__((target("avx2,fma"))) void row_chunk(float* out, int oc0, int n, int OH, int OW, int oh, int x0,
                                                   const float* xp, const InputRows& in, int C_in, const float* wb,
                                                   const float* bias, bool accumulate, Activation act) {
  const size_t plane = size_t(OH) * OW;
  const int W = OW;
  __m256 acc[OB][NV];
  DFL_UNROLL
  for (int o = 0; o < OB; ++o) DFL_UNROLL
  for (int v = 0; v < NV; ++v) acc[o][v] = _mm256_setzero_ps();
  for (int c = 0; c < C_in; ++c) {
    const float* xc = xp + c * in.plane + size_t(oh) * S * in.pitch + x0;
    const float* wc = wb + size_t(c) * K * K * WS;
    DFL_UNROLL
    for (int kh = 0; kh < K; ++kh) {
      const float* row = xc + kh * in.pitch;
      DFL_UNROLL
      for (int kw = 0; kw < K; ++kw) {
        __m256 wv[OB];
        DFL_UNROLL
        for (int o = 0; o < OB; ++o) wv[o] = _mm256_broadcast_ss(wc + (kh * K + kw) * WS + o);
        const int tap = S == 1 ? kw : in.tap[kw];
        DFL_UNROLL
        for (int v = 0; v < NV; ++v) {
          const __m256 x = _mm256_loadu_ps(row + tap + 8 * v);
          DFL_UNROLL
          for (int o = 0; o < OB; ++o) acc[o][v] = _mm256_fmadd_ps(wv[o], x, acc[o][v]);
        }
      }
    }
  }
  DFL_UNROLL
  for (int o = 0; o < OB; ++o) {  // to OB with the bound inside: unrollable
    if (o >= n) continue;
    float* dst = out + (oc0 + o) * plane + size_t(oh) * W + x0;
    const __m256 start = accumulate ? _mm256_setzero_ps() : _mm256_set1_ps(bias ? bias[oc0 + o] : 0.0f);
    DFL_UNROLL
    for (int v = 0; v < NV; ++v) {
      const __m256 base = accumulate ? _mm256_loadu_ps(dst + 8 * v) : start;
      _mm256_storeu_ps(dst + 8 * v, activate(_mm256_add_ps(base, acc[o][v]), act));
    }
  }
}

// The rows of channels [oc0, oc0 + n) of one block, NB channels computed (NB >= n).
template <int NB, int WS, int K, int S>
void block_rows(float* out, int oc0, int n, int OH, int OW, const float* xp, const InputRows& in, int C_in,
                const float* w, const float* bias, bool accumulate, Activation act) {
  for (int oh = 0; oh < OH; ++oh) {
    int x0 = 0;
    for (; x0 + 32 <= OW; x0 += 32)
      row_chunk<4, NB, K, S, WS>(out, oc0, n, OH, OW, oh, x0, xp, in, C_in, w, bias, accumulate, act);
    if (x0 + 16 <= OW) {
      row_chunk<2, NB, K, S, WS>(out, oc0, n, OH, OW, oh, x0, xp, in, C_in, w, bias, accumulate, act);
      x0 += 16;
    }
    if (x0 + 8 <= OW) row_chunk<1, NB, K, S, WS>(out, oc0, n, OH, OW, oh, x0, xp, in, C_in, w, bias, accumulate, act);
  }
}

// A partial last block of n < OB channels computes 1, 2 or 4 of them, not OB: 16 channels in
// blocks of 3 would otherwise do 18 channels' FMAs (12% more), 32 in blocks of 5 35, 64 in 7s 70.
template <int OB, int K, int S>
void all_rows(float* out, int C_out, int OH, int OW, const float* xp, const InputRows& in, int C_in, const float* wb,
              const float* bias, bool accumulate, Activation act) {
  const size_t block_floats = size_t(C_in) * K * K * OB;
  for (int ob = 0; ob < blocks(C_out, OB); ++ob) {
    const int oc0 = ob * OB, n = std::min(OB, C_out - oc0);
    const float* w = wb + ob * block_floats;
    if (n == 1) {
      block_rows<1, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
    } else if (n == 2) {
      block_rows<2, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
    } else if constexpr (OB > 4) {
      if (n <= 4)
        block_rows<4, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
      else
        block_rows<OB, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
    } else {
      block_rows<OB, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
    }
  }
}
// Weight gradient of one task over samples [b0, b1): acc[o][kw] += dout[b, o0+o, oh, :] *
// xpad[b, c, S*oh+kh, tap(kw):] for the NO <= 3 channels of the block (fewer only in the last
// block), then dW[o0+o][c][kh][kw] += lane sum.
template <int S, int NO>
__attribute__((target("avx2,fma"))) void weight_task(float* dweight, const float* dout, const float* xpad,
                                                     const InputRows& in, int C, int OC, int OH, int OW, int o0, int c,
                                                     int kh, int b0, int b1) {
  __m256 acc[NO][3];
  DFL_UNROLL
  for (int o = 0; o < NO; ++o) DFL_UNROLL
  for (int kw = 0; kw < 3; ++kw) acc[o][kw] = _mm256_setzero_ps();
  const size_t plane = size_t(OH) * OW;
  for (int b = b0; b < b1; ++b) {
    const float* d = dout + (size_t(b) * OC + o0) * plane;
    const float* xc = xpad + (size_t(b - b0) * C + c) * in.plane + size_t(kh) * in.pitch;
    for (int oh = 0; oh < OH; ++oh) {
      const float* row = xc + size_t(oh) * S * in.pitch;
      const float* dr[NO];
      DFL_UNROLL
      for (int o = 0; o < NO; ++o) dr[o] = d + o * plane + size_t(oh) * OW;
      for (int x0 = 0; x0 < OW; x0 += 8) {
        __m256 dv[NO];
        DFL_UNROLL
        for (int o = 0; o < NO; ++o) dv[o] = _mm256_loadu_ps(dr[o] + x0);
        DFL_UNROLL
        for (int kw = 0; kw < 3; ++kw) {
          const __m256 x = _mm256_loadu_ps(row + x0 + (S == 1 ? kw : in.tap[kw]));
          DFL_UNROLL
          for (int o = 0; o < NO; ++o) acc[o][kw] = _mm256_fmadd_ps(dv[o], x, acc[o][kw]);
        }
      }
    }
  }
  DFL_UNROLL
  for (int o = 0; o < NO; ++o) DFL_UNROLL
  for (int kw = 0; kw < 3; ++kw) dweight[((size_t(o0 + o) * C + c) * 3 + kh) * 3 + kw] += lane_sum(acc[o][kw]);
}
template <int S>
void weight_task(float* dweight, const float* dout, const float* xpad, const InputRows& in, int C, int OC, int OH,
                 int OW, int o0, int n, int c, int kh, int b0, int b1) {
  if (n == 3)
    weight_task<S, 3>(dweight, dout, xpad, in, C, OC, OH, OW, o0, c, kh, b0, b1);
  else if (n == 2)
    weight_task<S, 2>(dweight, dout, xpad, in, C, OC, OH, OW, o0, c, kh, b0, b1);
  else
    weight_task<S, 1>(dweight, dout, xpad, in, C, OC, OH, OW, o0, c, kh, b0, b1);
}
#endif

// Samples per weight-gradient group: about 1 MB of dout and padded input (at least one sample);
// DFL_DW_KB overrides the budget (kernel lab).
int weight_group(const Conv2dShape& s) {
  const size_t per_sample = (size_t(s.OC) * s.OH() * s.OW() + padded_plane(s) * s.C) * sizeof(float);
  static const size_t budget = std::getenv("DFL_DW_KB") ? size_t(std::atoi(std::getenv("DFL_DW_KB"))) << 10 : (1 << 20);
  return int(std::clamp<size_t>(budget / std::max<size_t>(per_sample, 1), 1, size_t(s.B)));
}

// out (B, C_out, OH, OW) [+]= the K x K convolution (K = 3: pad 1, stride S; K = 1: pad 0, stride 1)
// of x (B, C_in, H, W) with the blocked weights. A 1x1 convolution runs each plane as one row of H*W.
template <int K, int S>
void direct(float* out, const float* x, int B, int C_in, int C_out, int H, int W, const float* wb, const float* bias,
            bool accumulate, float* pads, Activation act = Activation::None) {
#if DFL_CONV3X3_X86
  if (K == 1) {
    W *= H;
    H = 1;
  }
  const int OH = K == 1 ? H : (H - 1) / S + 1, OW = K == 1 ? W : (W - 1) / S + 1;
  const int OB = block_channels(OW);
  const InputRows in = InputRows::of(K, S, H, W);
  const size_t pad_floats = size_t(C_in) * (H + 2) * (W + 2);
  // One sample per task; each thread pads into its own slot (3x3).
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    float* xp = pads + size_t(thread_slot()) * pad_floats;
    for (int64_t b = b0; b < b1; ++b) {
      const float* xb = x + size_t(b) * C_in * H * W;
      if (K == 3) pad_sample(xp, xb, C_in, H, W, S == 2);
      const float* src = K == 3 ? xp : xb;
      float* ob = out + size_t(b) * C_out * OH * OW;
      if (OB == 3)
        all_rows<3, K, S>(ob, C_out, OH, OW, src, in, C_in, wb, bias, accumulate, act);
      else if (OB == 5)
        all_rows<5, K, S>(ob, C_out, OH, OW, src, in, C_in, wb, bias, accumulate, act);
      else
        all_rows<7, K, S>(ob, C_out, OH, OW, src, in, C_in, wb, bias, accumulate, act);
    }
  });
#else
  (void)out, (void)x, (void)B, (void)C_in, (void)C_out, (void)H, (void)W, (void)wb, (void)bias, (void)accumulate,
      (void)pads;
  fail("direct3x3: not built for this CPU");
#endif
}

}  // namespace

bool direct3x3_applies(const Conv2dShape& s) {
  const CpuFeatures& f = cpu_features();
  const bool stride = s.stride_h == s.stride_w && (s.stride_h == 1 || s.stride_h == 2);
  return DFL_CONV3X3_X86 && f.avx2 && f.fma && s.KH == 3 && s.KW == 3 && stride && s.pad_h == 1 && s.pad_w == 1 &&
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

#if DFL_CONV3X3_X86
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
#if DFL_CONV3X3_X86
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
#if DFL_CONV3X3_X86
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

// ---- pointwise (1x1, stride 1, pad 0, groups 1), planes a multiple of 8 -----------------------
// Forward and input gradient: the row kernels with one tap, each plane one row of H*W. Weight
// gradient dW[o][c] = sum over (b, p) of dout[b,o,p] * x[b,c,p]: tasks of 3 output x 4 input
// channels, each one thread's 12 vector accumulators over the batch (in groups, as above).

bool pointwise_applies(const Conv2dShape& s) {
  const CpuFeatures& f = cpu_features();
  const int P = s.H * s.W;
  return DFL_CONV3X3_X86 && f.avx2 && f.fma && s.KH == 1 && s.KW == 1 && s.stride_h == 1 && s.stride_w == 1 &&
         s.pad_h == 0 && s.pad_w == 0 && s.groups == 1 && P >= 8 && P % 8 == 0;
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
#if DFL_CONV3X3_X86
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
#if DFL_CONV3X3_X86
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

// ---- depthwise 3x3, pad 1, stride 1 or 2 (groups == C == OC), any map size ---------------------
// Each (sample, channel) plane is copied into a zero-padded plane (H+2 rows of pitch RP). With
// stride 2 every padded row is stored split, its even elements (E) then its odd ones (O), so the
// three taps of output column ow read E[ow], O[ow] and E[ow+1]: for either stride, the taps of 8
// neighbouring outputs are 8 contiguous floats. Rows go in chunks of 8 columns, the last masked
// (rows of 4 and 2 on small maps). The input gradient gathers (no read-modify-write of overlapping
// vectors, which would stall on store forwarding): with stride 1 it is the forward on the padded
// dout with the taps reversed; with stride 2 each padded input column takes the taps of its parity
// (E: kw 0 and 2, O: kw 1) and each row those of its parity, written in the split layout and then
// interleaved into dinp. One thread per channel for the backward: it owns the channel's dW (samples
// in order) and the channel's dinp planes, so results do not depend on the thread count.

bool depthwise3x3_applies(const Conv2dShape& s) {
  const CpuFeatures& f = cpu_features();
  return DFL_CONV3X3_X86 && f.avx2 && f.fma && s.KH == 3 && s.KW == 3 && s.stride_h == s.stride_w &&
         (s.stride_h == 1 || s.stride_h == 2) && s.pad_h == 1 && s.pad_w == 1 && s.groups == s.C && s.OC == s.C;
}

namespace {
// Where things sit in a padded (and, for stride 2, split) plane.
struct DepthwisePlane {
  int S, H, W, OH, OW;
  int LE;      // stride 2: length of a row's even half ((W+3)/2); stride 1: unused
  int RP;      // row pitch: the row plus room for the last chunk's over-read
  int tap[3];  // offset in a row of tap kw for output column 0
  explicit DepthwisePlane(const Conv2dShape& s) : S(s.stride_w), H(s.H), W(s.W), OH(s.OH()), OW(s.OW()) {
    const int Wp = W + 2;
    if (S == 1) {
      LE = 0;
      RP = Wp + 8;
      tap[0] = 0, tap[1] = 1, tap[2] = 2;
    } else {
      LE = (Wp + 1) / 2;
      RP = Wp + 8;  // E (LE) + O (Wp/2) = Wp
      tap[0] = 0, tap[1] = LE, tap[2] = 1;
    }
  }
  size_t floats() const { return size_t(H + 2) * RP; }
};
}  // namespace

// Per thread slot: the padded input plane, the padded input-gradient plane and the column-padded
// dout rows of stride 2 (each no larger than a padded plane).
size_t depthwise3x3_workspace_floats(const Conv2dShape& s) {
  return 3 * DepthwisePlane(s).floats() * size_t(max_thread_slots());
}

namespace {
#if DFL_CONV3X3_X86
alignas(32) const int32_t kLaneMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
// Lanes [0, n) on, n in [0, 8].
__attribute__((target("avx2"))) inline __m256i lanes(int n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLaneMask + 8 - n));
}

// x (H, W) into the padded plane xp: row ih at padded row ih+1; stride 1: column iw at iw+1;
// stride 2: x's even columns at O = LE.., its odd ones at E[1..] (padded index iw+1).
__attribute__((target("avx2"))) void pad_plane(float* xp, const float* x, const DepthwisePlane& g) {
  std::memset(xp, 0, sizeof(float) * g.floats());
  for (int h = 0; h < g.H; ++h) {
    float* row = xp + size_t(h + 1) * g.RP;
    const float* src = x + size_t(h) * g.W;
    if (g.S == 1) {
      std::memcpy(row + 1, src, sizeof(float) * g.W);
      continue;
    }
    deinterleave_avx2(row + g.LE, row + 1, src, g.W);  // x[0], x[2], ... to O; x[1], x[3], ... to E[1..]
  }
}

template <bool Accumulate>
__attribute__((target("avx2"))) inline void put8(float* dst, __m256 v) {
  _mm256_storeu_ps(dst, Accumulate ? _mm256_add_ps(_mm256_loadu_ps(dst), v) : v);
}
// dx (H, W) += (without Accumulate: =) the interior of the padded gradient plane dp (the inverse of
// pad_plane's placement).
template <bool Accumulate>
__attribute__((target("avx2"))) void put_plane_interior(float* dx, const float* dp, const DepthwisePlane& g) {
  for (int h = 0; h < g.H; ++h) {
    const float* row = dp + size_t(h + 1) * g.RP;
    float* dst = dx + size_t(h) * g.W;
    if (g.S == 1) {
      int i = 0;
      for (; i + 8 <= g.W; i += 8) put8<Accumulate>(dst + i, _mm256_loadu_ps(row + 1 + i));
      for (; i < g.W; ++i) dst[i] = Accumulate ? dst[i] + row[1 + i] : row[1 + i];
      continue;
    }
    const float* odd_cols = row + 1;
    const float* even_cols = row + g.LE;
    int i = 0;
    for (; i + 16 <= g.W; i += 16) {
      const __m256 ev = _mm256_loadu_ps(even_cols + i / 2), od = _mm256_loadu_ps(odd_cols + i / 2);
      const __m256 lo = _mm256_unpacklo_ps(ev, od),
                   hi = _mm256_unpackhi_ps(ev, od);  // [e0 o0 e1 o1 | e4 o4 e5 o5], [e2 o2 e3 o3 | ...]
      put8<Accumulate>(dst + i, _mm256_permute2f128_ps(lo, hi, 0x20));
      put8<Accumulate>(dst + i + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    for (; i < g.W; ++i) {
      const float v = (i % 2 == 0 ? even_cols : odd_cols)[i / 2];
      dst[i] = Accumulate ? dst[i] + v : v;
    }
  }
}

// y (OH, OW) = bias + the 9 taps w9 over the padded plane xp; accumulate: y += the taps instead.
__attribute__((target("avx2,fma"))) void depthwise_plane_forward(float* y, const float* xp, const float* w9, float bias,
                                                                 const DepthwisePlane& g, bool accumulate,
                                                                 Activation act = Activation::None) {
  __m256 w[9];
  DFL_UNROLL
  for (int t = 0; t < 9; ++t) w[t] = _mm256_set1_ps(w9[t]);
  for (int oh = 0; oh < g.OH; ++oh) {
    float* out = y + size_t(oh) * g.OW;
    for (int x0 = 0; x0 < g.OW; x0 += 8) {
      const int n = std::min(8, g.OW - x0);
      __m256 acc = !accumulate ? _mm256_set1_ps(bias)
                   : n == 8    ? _mm256_loadu_ps(out + x0)
                               : _mm256_maskload_ps(out + x0, lanes(n));
      DFL_UNROLL
      for (int kh = 0; kh < 3; ++kh) {
        const float* row = xp + size_t(g.S * oh + kh) * g.RP + x0;
        DFL_UNROLL
        for (int kw = 0; kw < 3; ++kw) acc = _mm256_fmadd_ps(w[kh * 3 + kw], _mm256_loadu_ps(row + g.tap[kw]), acc);
      }
      acc = activate(acc, act);
      if (n == 8) {
        _mm256_storeu_ps(out + x0, acc);
      } else {
        _mm256_maskstore_ps(out + x0, lanes(n), acc);
      }
    }
  }
}

// acc[t] += dout * the input under tap t, over one plane (the weight gradient's 9 vector sums).
__attribute__((target("avx2,fma"))) void depthwise_plane_weights(__m256 acc[9], const float* dy, const float* xp,
                                                                 const DepthwisePlane& g) {
  for (int oh = 0; oh < g.OH; ++oh) {
    const float* drow = dy + size_t(oh) * g.OW;
    for (int x0 = 0; x0 < g.OW; x0 += 8) {
      const int n = std::min(8, g.OW - x0);
      // Past the row dout is 0, so the over-read input lanes add nothing.
      const __m256 d = n == 8 ? _mm256_loadu_ps(drow + x0) : _mm256_maskload_ps(drow + x0, lanes(n));
      DFL_UNROLL
      for (int kh = 0; kh < 3; ++kh) {
        const float* row = xp + size_t(g.S * oh + kh) * g.RP + x0;
        DFL_UNROLL
        for (int kw = 0; kw < 3; ++kw)
          acc[kh * 3 + kw] = _mm256_fmadd_ps(d, _mm256_loadu_ps(row + g.tap[kw]), acc[kh * 3 + kw]);
      }
    }
  }
}

// Stride 2: the interior rows of the padded input-gradient plane dp (split layout) from one dout
// plane. dr: scratch for dout's rows with a zero column on each side (pitch OW + 10), so that
// d[ow - 1] and d[ow] are both plain loads.
__attribute__((target("avx2,fma"))) void depthwise_plane_input_gradient_s2(float* dp, float* dr, const float* dy,
                                                                           const float* w9, const DepthwisePlane& g) {
  const int QP = g.OW + 10, LO = g.W + 2 - g.LE;
  for (int oh = 0; oh < g.OH; ++oh) {
    float* row = dr + size_t(oh) * QP;
    std::memset(row, 0, sizeof(float) * QP);
    std::memcpy(row + 1, dy + size_t(oh) * g.OW, sizeof(float) * g.OW);
  }
  __m256 w[9];
  DFL_UNROLL
  for (int t = 0; t < 9; ++t) w[t] = _mm256_set1_ps(w9[t]);
  for (int r = 1; r <= g.H; ++r) {
    // Padded row r = 2*oh + kh: kh 0 and 2 for even rows, kh 1 for odd ones.
    int oh_of[2], kh_of[2], k = 0;
    for (int kh = r % 2; kh < 3; kh += 2) {
      const int oh = (r - kh) / 2;
      if (oh >= 0 && oh < g.OH) oh_of[k] = oh, kh_of[k++] = kh;
    }
    float* even = dp + size_t(r) * g.RP;    // padded column 2m = 2*ow + kw: kw 0 (ow = m), kw 2 (ow = m - 1)
    float* odd = even + g.LE;               // padded column 2m + 1: kw 1 (ow = m)
    for (int m0 = 0; m0 < g.LE; m0 += 8) {  // the over-write past LE lands in O, written next
      __m256 acc = _mm256_setzero_ps();
      for (int i = 0; i < k; ++i) {
        const float* d = dr + size_t(oh_of[i]) * QP + m0;  // d[ow] at index ow + 1
        acc = _mm256_fmadd_ps(w[kh_of[i] * 3 + 0], _mm256_loadu_ps(d + 1), acc);
        acc = _mm256_fmadd_ps(w[kh_of[i] * 3 + 2], _mm256_loadu_ps(d), acc);
      }
      _mm256_storeu_ps(even + m0, acc);
    }
    for (int m0 = 0; m0 < LO; m0 += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int i = 0; i < k; ++i)
        acc = _mm256_fmadd_ps(w[kh_of[i] * 3 + 1], _mm256_loadu_ps(dr + size_t(oh_of[i]) * QP + m0 + 1), acc);
      _mm256_storeu_ps(odd + m0, acc);
    }
  }
}

// Channel c's backward over the batch, samples in order: dW[c] += the sum over samples, and each
// of its dinp planes += (overwrite: =) the plane's input gradient. xp, dp, dr: this thread's scratch planes.
__attribute__((target("avx2,fma"))) void depthwise_channel_backward(float* dinp, float* dw9, const float* dout,
                                                                    const float* inp, const float* weight,
                                                                    const Conv2dShape& s, int c, float* xp, float* dp,
                                                                    float* dr, bool overwrite) {
  const DepthwisePlane g(s);
  const float* w9 = weight + size_t(c) * 9;
  float flipped[9];
  DFL_UNROLL
  for (int t = 0; t < 9; ++t) flipped[t] = w9[8 - t];
  __m256 acc[9];
  DFL_UNROLL
  for (int t = 0; t < 9; ++t) acc[t] = _mm256_setzero_ps();
  const size_t in_plane = size_t(s.H) * s.W, out_plane = size_t(g.OH) * g.OW;
  for (int b = 0; b < s.B; ++b) {
    const size_t p = size_t(b) * s.C + c;
    const float* dy = dout + p * out_plane;
    if (dw9) {
      pad_plane(xp, inp + p * in_plane, g);
      depthwise_plane_weights(acc, dy, xp, g);
    }
    if (!dinp) continue;
    if (g.S == 1) {  // stride 1: dout has the input's geometry
      pad_plane(dp, dy, g);
      depthwise_plane_forward(dinp + p * in_plane, dp, flipped, 0.0f, g, /*accumulate=*/!overwrite);
    } else {
      depthwise_plane_input_gradient_s2(dp, dr, dy, w9, g);
      if (overwrite)
        put_plane_interior<false>(dinp + p * in_plane, dp, g);
      else
        put_plane_interior<true>(dinp + p * in_plane, dp, g);
    }
  }
  if (!dw9) return;
  DFL_UNROLL
  for (int t = 0; t < 9; ++t) dw9[t] += lane_sum(acc[t]);
}
#endif
}  // namespace

void depthwise3x3_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                          float* workspace, Activation act) {
  DFL_CHECK(depthwise3x3_applies(s) && workspace, "depthwise3x3_forward: shape not supported or no workspace");
#if DFL_CONV3X3_X86
  const DepthwisePlane g(s);
  const size_t in_plane = size_t(s.H) * s.W, out_plane = size_t(g.OH) * g.OW;
  parallel_for(int64_t(s.B) * s.C, 1, [&](int64_t p0, int64_t p1) {
    float* xp = workspace + size_t(thread_slot()) * 3 * g.floats();
    for (int64_t p = p0; p < p1; ++p) {
      const int c = int(p % s.C);
      pad_plane(xp, inp + size_t(p) * in_plane, g);
      depthwise_plane_forward(out + size_t(p) * out_plane, xp, weight + size_t(c) * 9, bias ? bias[c] : 0.0f, g, false,
                              act);
    }
  });
#else
  (void)out, (void)inp, (void)weight, (void)bias;
  fail("depthwise3x3: not built for this CPU");
#endif
}

void depthwise3x3_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                           const Conv2dShape& s, float* workspace, bool overwrite_dinp) {
  DFL_CHECK(depthwise3x3_applies(s) && workspace, "depthwise3x3_backward: shape not supported or no workspace");
  if (!dinp && !dweight) return;
#if DFL_CONV3X3_X86
  const size_t plane = DepthwisePlane(s).floats();
  parallel_for(s.C, 1, [&](int64_t c0, int64_t c1) {
    float* xp = workspace + size_t(thread_slot()) * 3 * plane;
    for (int64_t c = c0; c < c1; ++c)
      depthwise_channel_backward(dinp, dweight ? dweight + c * 9 : nullptr, dout, inp, weight, s, int(c), xp,
                                 xp + plane, xp + 2 * plane, overwrite_dinp);
  });
#else
  (void)dout, (void)inp, (void)weight;
  fail("depthwise3x3: not built for this CPU");
#endif
}

}  // namespace dfl::cpu
