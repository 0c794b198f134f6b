// The row kernels shared by the direct 3x3 (direct3x3.cpp) and pointwise (pointwise.cpp)
// convolutions, and the padded-row layout the depthwise kernels (depthwise3x3.cpp) also read.
// Every output row is built in registers as OB output channels x NV 8-float vectors, summing over
// input channels c and the K x K taps in a fixed order:
//   acc[o][v] += w[o][c][kh][kw] * xpad[c][S*oh + kh][x0 + 8v + kw]
// One sample per thread at a time, each output element written by one thread in one order, so
// results are bitwise identical for any thread count.
//
// Registers (16 ymm): OB*NV accumulators + OB broadcast weights + 1 input vector. OB is 3, 5 or 7
// for rows of 32+, 16 and 8 floats (NV 4, 2, 1); longer rows go in chunks of 32.
//
// Weight gradients (weight_task) are reductions over the batch, so their order is fixed independently
// of the threads: samples go in groups of a size fixed by the shape (weight_group: a group's data
// fits a core's L2), groups one after another; inside a group each task is one thread's vector
// accumulators over the group's rows, reduced across lanes in a fixed order and added to dW in group
// order. Results are bitwise identical for any thread count.
// Private to native/cpu/conv/: callers check AVX2+FMA at run time (the *_applies functions).
// Internal linkage on purpose (an anonymous namespace in a header): each including file compiles
// its own copy, so calls between these kernels stay direct and inline as within one file; with
// external linkage the shared library called the template instances through its PLT.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/simd.h"

namespace dfl::cpu {
namespace {  // NOLINT(google-build-namespaces): see above

// Whether the row kernels take their AVX-512 form here (row_chunk16; DFL_SIMD=avx2 turns it off).
inline bool rows_use_avx512() {
  const CpuFeatures& f = cpu_features();
  return DFL_X86 && f.avx512f && f.avx2 && f.fma;
}
// Output channels per register block for a row of W floats: the AVX2 kernels' 16 registers hold
// OB*NV accumulators + OB weights + 1 input (OB 3, 5, 7 for rows of 32+, 16, 8: NV 4, 2, 1); the
// AVX-512 kernels' 32 hold 8 x 2 (or 8 x 1) accumulators, broadcasting weights from memory.
inline int block_channels(int W) {
  if (rows_use_avx512()) return 8;
  return W >= 32 ? 3 : (W >= 16 ? 5 : 7);
}
inline int blocks(int channels, int OB) { return (channels + OB - 1) / OB; }
inline size_t padded_plane(const Conv2dShape& s) { return size_t(s.H + 2) * (s.W + 2); }
// Blocked weights: OB zero-padded output channels per block, (block, C_in, KK taps, OB).
inline size_t blocked_weight_floats(int C_out, int C_in, int OB, int KK = 9) {
  return size_t(blocks(C_out, OB)) * OB * C_in * KK;
}

// wb[((ob*C_in + c)*KK + t)*OB + o] = weight of output ob*OB+o, input c, tap t (0 past C_out).
// flip: the input gradient's weights, w'[c][o][t] = w[o][c][KK-1 - t] (transposed, taps reversed).
inline void block_weights(float* wb, const float* w, int C_out, int C_in, int OB, bool flip, int KK = 9) {
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
inline int split_odd_start(int W) { return (W + 3) / 2; }

// One sample's channels into zero-padded planes (H+2, W+2); split: rows stored split (above).
inline void pad_sample(float* xp, const float* x, int C, int H, int W, bool split = false) {
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
#if DFL_X86
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

#if DFL_X86
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

// The rows of channels [oc0, oc0 + n) of one block, NB channels computed (NB >= n): rows in
// chunks of 32, 16 and 8 floats (NV 4, 2, 1).
struct Avx2Rows {
  template <int NB, int WS, int K, int S>
  static void block(float* out, int oc0, int n, int OH, int OW, const float* xp, const InputRows& in, int C_in,
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
};

// ---- the AVX-512 form: 16-float vectors ----------------------------------------------------------
// Per output element the same sums in the same order as row_chunk (zero, then one FMA per input
// channel and tap, then + base and the activation), so both forms give bitwise-identical results;
// only the blocking differs. A row of 8 (or a row's last 8) runs one vector under a mask, which
// neither reads nor writes the lanes past it. A second body rather than one template over the
// vector type: a function's target attribute cannot depend on a template parameter, and the AVX2
// form must not be compiled with AVX-512 enabled (it would run on CPUs without it).
__attribute__((target("avx512f"))) inline __m512 activate16(__m512 v, Activation act) {
  if (act == Activation::None) return v;
  const __m512 zero = _mm512_setzero_ps();
  if (act == Activation::Relu6) {
    const __m512 six = _mm512_set1_ps(6.0f);
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, six, _CMP_GE_OQ), v, six);
  }
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LE_OQ), v, zero);  // as activate()
}

// row_chunk with NV 16-float vectors, the last one under `last` (0xFFFF: all lanes).
template <int NV, int OB, int K, int S, int WS = OB>
__attribute__((target("avx512f,avx2,fma"))) void row_chunk16(float* out, int oc0, int n, int OH, int OW, int oh, int x0,
                                                             const float* xp, const InputRows& in, int C_in,
                                                             const float* wb, const float* bias, bool accumulate,
                                                             Activation act, __mmask16 last) {
  const size_t plane = size_t(OH) * OW;
  __m512 acc[OB][NV];
  DFL_UNROLL
  for (int o = 0; o < OB; ++o) DFL_UNROLL
  for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_setzero_ps();
  for (int c = 0; c < C_in; ++c) {
    const float* xc = xp + c * in.plane + size_t(oh) * S * in.pitch + x0;
    const float* wc = wb + size_t(c) * K * K * WS;
    DFL_UNROLL
    for (int kh = 0; kh < K; ++kh) {
      const float* row = xc + kh * in.pitch;
      DFL_UNROLL
      for (int kw = 0; kw < K; ++kw) {
        const int tap = S == 1 ? kw : in.tap[kw];
        __m512 x[NV];
        DFL_UNROLL
        for (int v = 0; v < NV; ++v)
          x[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, row + tap + 16 * v) : _mm512_loadu_ps(row + tap + 16 * v);
        DFL_UNROLL
        for (int o = 0; o < OB; ++o) {
          const __m512 w = _mm512_set1_ps(wc[(kh * K + kw) * WS + o]);
          DFL_UNROLL
          for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_fmadd_ps(w, x[v], acc[o][v]);
        }
      }
    }
  }
  DFL_UNROLL
  for (int o = 0; o < OB; ++o) {
    if (o >= n) continue;
    float* dst = out + (oc0 + o) * plane + size_t(oh) * OW + x0;
    const __m512 start = accumulate ? _mm512_setzero_ps() : _mm512_set1_ps(bias ? bias[oc0 + o] : 0.0f);
    DFL_UNROLL
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? last : __mmask16(0xFFFF);
      const __m512 base = accumulate ? _mm512_maskz_loadu_ps(m, dst + 16 * v) : start;
      _mm512_mask_storeu_ps(dst + 16 * v, m, activate16(_mm512_add_ps(base, acc[o][v]), act));
    }
  }
}

// Rows in chunks of 32 floats (NV 2), then 16, then a masked 8.
struct Avx512Rows {
  template <int NB, int WS, int K, int S>
  static void block(float* out, int oc0, int n, int OH, int OW, const float* xp, const InputRows& in, int C_in,
                    const float* w, const float* bias, bool accumulate, Activation act) {
    for (int oh = 0; oh < OH; ++oh) {
      int x0 = 0;
      for (; x0 + 32 <= OW; x0 += 32)
        row_chunk16<2, NB, K, S, WS>(out, oc0, n, OH, OW, oh, x0, xp, in, C_in, w, bias, accumulate, act, 0xFFFF);
      if (x0 + 16 <= OW) {
        row_chunk16<1, NB, K, S, WS>(out, oc0, n, OH, OW, oh, x0, xp, in, C_in, w, bias, accumulate, act, 0xFFFF);
        x0 += 16;
      }
      if (x0 + 8 <= OW)
        row_chunk16<1, NB, K, S, WS>(out, oc0, n, OH, OW, oh, x0, xp, in, C_in, w, bias, accumulate, act, 0x00FF);
    }
  }
};

// A partial last block of n < OB channels computes 1, 2 or 4 of them, not OB: 16 channels in
// blocks of 3 would otherwise do 18 channels' FMAs (12% more), 32 in blocks of 5 35, 64 in 7s 70.
template <class Rows, int OB, int K, int S>
void all_rows(float* out, int C_out, int OH, int OW, const float* xp, const InputRows& in, int C_in, const float* wb,
              const float* bias, bool accumulate, Activation act) {
  const size_t block_floats = size_t(C_in) * K * K * OB;
  for (int ob = 0; ob < blocks(C_out, OB); ++ob) {
    const int oc0 = ob * OB, n = std::min(OB, C_out - oc0);
    const float* w = wb + ob * block_floats;
    if (n == 1) {
      Rows::template block<1, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
    } else if (n == 2) {
      Rows::template block<2, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
    } else if constexpr (OB > 4) {
      if (n <= 4)
        Rows::template block<4, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
      else
        Rows::template block<OB, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
    } else {
      Rows::template block<OB, OB, K, S>(out, oc0, n, OH, OW, xp, in, C_in, w, bias, accumulate, act);
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
inline int weight_group(const Conv2dShape& s) {
  const size_t per_sample = (size_t(s.OC) * s.OH() * s.OW() + padded_plane(s) * s.C) * sizeof(float);
  static const size_t budget = std::getenv("DFL_DW_KB") ? size_t(std::atoi(std::getenv("DFL_DW_KB"))) << 10 : (1 << 20);
  return int(std::clamp<size_t>(budget / std::max<size_t>(per_sample, 1), 1, size_t(s.B)));
}

// out (B, C_out, OH, OW) [+]= the K x K convolution (K = 3: pad 1, stride S; K = 1: pad 0, stride 1)
// of x (B, C_in, H, W) with the blocked weights. A 1x1 convolution runs each plane as one row of H*W.
template <int K, int S>
void direct(float* out, const float* x, int B, int C_in, int C_out, int H, int W, const float* wb, const float* bias,
            bool accumulate, float* pads, Activation act = Activation::None) {
#if DFL_X86
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
      if (OB == 8)  // block_channels' AVX-512 block
        all_rows<Avx512Rows, 8, K, S>(ob, C_out, OH, OW, src, in, C_in, wb, bias, accumulate, act);
      else if (OB == 3)
        all_rows<Avx2Rows, 3, K, S>(ob, C_out, OH, OW, src, in, C_in, wb, bias, accumulate, act);
      else if (OB == 5)
        all_rows<Avx2Rows, 5, K, S>(ob, C_out, OH, OW, src, in, C_in, wb, bias, accumulate, act);
      else
        all_rows<Avx2Rows, 7, K, S>(ob, C_out, OH, OW, src, in, C_in, wb, bias, accumulate, act);
    }
  });
#else
  (void)out, (void)x, (void)B, (void)C_in, (void)C_out, (void)H, (void)W, (void)wb, (void)bias, (void)accumulate,
      (void)pads;
  fail("direct3x3: not built for this CPU");
#endif
}
}  // namespace
}  // namespace dfl::cpu
