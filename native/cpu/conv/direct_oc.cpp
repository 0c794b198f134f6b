// Direct convolution vectorised over output channels (AVX2+FMA), for groups == 1 and any kernel,
// stride and padding: what the 3x3 row kernels (direct3x3.cpp) cannot take, notably small maps
// (4x4, 2x2), strided convolutions and 1x1 convolutions. No im2col.
//
// A register block is 8 output pixels x 8 output channels: for every input channel c and tap
// (kh, kw), one vector of 8 channel weights and 8 broadcast input values (one per pixel) make 8
// FMAs, summed in the fixed order c, kh, kw. The block is then transposed (8x8) so each output
// channel's 8 pixels are stored as one row segment of the NCHW output. Pixels are read through a
// zero-padded copy of the sample, so no tap needs a bounds test; a pixel block past the end of
// the map repeats the last pixel and stores only the valid ones.
//
// The input gradient of a stride-1 convolution is the same computation on dout with the weights
// transposed and flipped and padding K-1-pad. One sample per thread at a time, each output element
// written once in a fixed order: bitwise identical for any thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/simd.h"
#include "cpu/conv/conv_internal.h"

namespace dfl::cpu {

namespace {

constexpr int kLanes = 8;  // output channels per block, and pixels per block

// The geometry of one direct convolution: input (Cin, H, W) padded to (Hp, Wp), output (Cout, OH, OW).
struct Geometry {
  int Cin, H, W, Cout, OH, OW, KH, KW, sh, sw, ph, pw;
  int Hp() const { return H + 2 * ph; }
  int Wp() const { return W + 2 * pw; }
  size_t padded_floats() const { return size_t(Cin) * Hp() * Wp(); }
  int P() const { return OH * OW; }
  int oc_blocks() const { return (Cout + kLanes - 1) / kLanes; }
  size_t weight_floats() const { return size_t(oc_blocks()) * Cin * KH * KW * kLanes; }
};

Geometry forward_geometry(const Conv2dShape& s) {
  return {s.C, s.H, s.W, s.OC, s.OH(), s.OW(), s.KH, s.KW, s.stride_h, s.stride_w, s.pad_h, s.pad_w};
}
// The input gradient of a stride-1 convolution as a convolution of dout.
Geometry data_gradient_geometry(const Conv2dShape& s) {
  return {s.OC, s.OH(), s.OW(), s.C, s.H, s.W, s.KH, s.KW, 1, 1, s.KH - 1 - s.pad_h, s.KW - 1 - s.pad_w};
}

// wb[((ob*Cin + c)*KK + t)*8 + o] = weight of output channel ob*8+o, input c, tap t (0 past Cout).
// flip: the input gradient's weights, w'[c][o][t] = w[o][c][KK-1-t].
void block_weights(float* wb, const float* w, const Geometry& g, bool flip) {
  const int KK = g.KH * g.KW;
  for (int ob = 0; ob < g.oc_blocks(); ++ob)
    for (int c = 0; c < g.Cin; ++c)
      for (int t = 0; t < KK; ++t) DFL_UNROLL
  for (int o = 0; o < kLanes; ++o) {
    const int oc = ob * kLanes + o;
    float v = 0.0f;
    if (oc < g.Cout) v = flip ? w[(size_t(c) * g.Cout + oc) * KK + (KK - 1 - t)] : w[(size_t(oc) * g.Cin + c) * KK + t];
    wb[((size_t(ob) * g.Cin + c) * KK + t) * kLanes + o] = v;
  }
}

// One sample's channels into zero-padded planes (Hp, Wp).
void pad_sample(float* xp, const float* x, const Geometry& g) {
  const int Wp = g.Wp(), Hp = g.Hp();
  for (int c = 0; c < g.Cin; ++c) {
    float* dst = xp + size_t(c) * Hp * Wp;
    std::fill(dst, dst + size_t(g.ph) * Wp, 0.0f);
    for (int h = 0; h < g.H; ++h) {
      float* row = dst + size_t(h + g.ph) * Wp;
      std::fill(row, row + g.pw, 0.0f);
      std::memcpy(row + g.pw, x + (size_t(c) * g.H + h) * g.W, sizeof(float) * g.W);
      std::fill(row + g.pw + g.W, row + Wp, 0.0f);
    }
    std::fill(dst + size_t(g.ph + g.H) * Wp, dst + size_t(Hp) * Wp, 0.0f);
  }
}

#if DFL_X86
// One sample: out (Cout, OH, OW) [+]= conv of the padded input xp with the blocked weights.
// off[p]: padded-plane offset of output pixel p's first tap (P entries, then 7 repeats of the last).
__attribute__((target("avx2,fma"))) void sample_forward(float* out, const float* xp, const float* wb, const float* bias,
                                                        const Geometry& g, const int* off, bool accumulate) {
  const int P = g.P(), KK = g.KH * g.KW, Wp = g.Wp();
  const size_t plane = size_t(g.Hp()) * Wp;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int ob = 0; ob < g.oc_blocks(); ++ob) {
    const float* wo = wb + size_t(ob) * g.Cin * KK * kLanes;
    const int n_oc = std::min(kLanes, g.Cout - ob * kLanes);
    const __m256 init = bias ? _mm256_maskload_ps(bias + ob * kLanes, _mm256_cmpgt_epi32(_mm256_set1_epi32(n_oc), lane))
                             : _mm256_setzero_ps();
    for (int p0 = 0; p0 < P; p0 += kLanes) {
      const int n_px = std::min(kLanes, P - p0);
      __m256 acc[kLanes];
      DFL_UNROLL
      for (int i = 0; i < kLanes; ++i) acc[i] = init;
      const int* o = off + p0;
      for (int c = 0; c < g.Cin; ++c) {
        const float* xc = xp + size_t(c) * plane;
        const float* wc = wo + size_t(c) * KK * kLanes;
        for (int kh = 0; kh < g.KH; ++kh)
          for (int kw = 0; kw < g.KW; ++kw) {
            const __m256 w = _mm256_loadu_ps(wc + (kh * g.KW + kw) * kLanes);
            const float* x = xc + kh * Wp + kw;
            DFL_UNROLL
            for (int i = 0; i < kLanes; ++i) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + o[i]), w, acc[i]);
          }
      }
      transpose8(acc);  // acc[j]: output channel ob*8+j at pixels p0..p0+7
      const __m256i px_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n_px), lane);
      for (int j = 0; j < n_oc; ++j) {
        float* dst = out + size_t(ob * kLanes + j) * P + p0;
        __m256 v = acc[j];
        if (accumulate) v = _mm256_add_ps(v, _mm256_maskload_ps(dst, px_mask));
        if (n_px == kLanes)
          _mm256_storeu_ps(dst, v);
        else
          _mm256_maskstore_ps(dst, px_mask, v);
      }
    }
  }
}
#endif

// out (B, Cout, OH, OW) [+]= conv(x (B, Cin, H, W)) under geometry g with blocked weights wb.
void direct(float* out, const float* x, int B, const Geometry& g, const float* wb, const float* bias, bool accumulate,
            float* pads) {
#if DFL_X86
  const int P = g.P();
  std::vector<int> offsets(size_t(P) + kLanes);
  int* off = offsets.data();
  for (int p = 0; p < P + kLanes - 1; ++p) {
    const int q = std::min(p, P - 1), oh = q / g.OW, ow = q % g.OW;
    off[p] = oh * g.sh * g.Wp() + ow * g.sw;
  }
  const size_t in_floats = size_t(g.Cin) * g.H * g.W, out_floats = size_t(g.Cout) * P;
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    float* xp = pads + size_t(thread_slot()) * g.padded_floats();
    for (int64_t b = b0; b < b1; ++b) {
      pad_sample(xp, x + size_t(b) * in_floats, g);
      sample_forward(out + size_t(b) * out_floats, xp, wb, bias, g, off, accumulate);
    }
  });
#else
  (void)out, (void)x, (void)B, (void)g, (void)wb, (void)bias, (void)accumulate, (void)pads;
  fail("direct_oc: not built for this CPU");
#endif
}

// Workspace: [blocked weights | per thread slot a padded sample].
size_t workspace_for(const Geometry& g) { return g.weight_floats() + g.padded_floats() * size_t(max_thread_slots()); }

}  // namespace

bool direct_oc_applies(const Conv2dShape& s) {
  const CpuFeatures& f = cpu_features();
  return DFL_X86 && f.avx2 && f.fma && s.groups == 1;
}

bool direct_oc_data_gradient_applies(const Conv2dShape& s) {
  return direct_oc_applies(s) && s.stride_h == 1 && s.stride_w == 1 && s.pad_h < s.KH && s.pad_w < s.KW;
}

size_t direct_oc_workspace_floats(const Conv2dShape& s) {
  size_t ws = workspace_for(forward_geometry(s));
  if (direct_oc_data_gradient_applies(s)) ws = std::max(ws, workspace_for(data_gradient_geometry(s)));
  return std::max(ws, general_workspace_floats(s));
}

namespace {
void run(float* out, const float* x, int B, const Geometry& g, const float* weight, const float* bias, bool flip,
         bool accumulate, float* workspace) {
  float* wb = workspace;
  block_weights(wb, weight, g, flip);
  direct(out, x, B, g, wb, bias, accumulate, wb + g.weight_floats());
}
}  // namespace

void direct_oc_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                       float* workspace) {
  DFL_CHECK(direct_oc_applies(s) && workspace, "direct_oc_forward: shape not supported or no workspace");
  run(out, inp, s.B, forward_geometry(s), weight, bias, false, false, workspace);
}

void direct_oc_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dShape& s,
                             float* workspace) {
  DFL_CHECK(direct_oc_data_gradient_applies(s) && workspace, "direct_oc_backward_data: shape not supported");
  run(dinp, dout, s.B, data_gradient_geometry(s), weight, nullptr, true, true, workspace);
}

}  // namespace dfl::cpu
