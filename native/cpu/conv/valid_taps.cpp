// Convolution on small padded maps as GEMMs over the taps that land inside the image only.
//
// On a 4x4 map a 3x3 kernel with padding 1 reads outside the image for 44 of its 144 (tap, output
// pixel) pairs, on a 2x2 map for 20 of 36: im2col fills those with zeros and the GEMM multiplies
// them. Here the output pixels are grouped into classes that see the same taps (stride 1: every
// output row has a valid kh range set by its distance to the top and bottom edge, every column a kw
// range; a class is one row range x one column range), and each class is a GEMM over its taps:
//   out[:, class pixels] = W[:, :, class taps] (OC, C*T) @ col (C*T, samples x class pixels)
// with col holding only in-image values. The FLOPs are exactly the valid pairs (2.25x fewer on 2x2
// maps, 1.44x on 4x4). A class's weights are gathered into their own (OC, C*T) matrix first: one
// GEMM per class beat splitting it into a GEMM per kernel row on strided tap-major weights (the
// kernel lab: 4x4 and 2x2 maps of 512 channels). Backward per class: dW[:, :, taps] += dout_class @
// col^T, and dcol = W_class^T @ dout_class added back into the input pixels it came from.
//
// Order: classes in a fixed order (row classes top to bottom, column classes left to right), chunks
// of samples in order inside a class, GEMMs whose value per element does not depend on how threads
// split them, scatters where each (sample, channel) plane belongs to one thread: results are
// bitwise identical for any thread count.
#include <algorithm>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

// Columns per class GEMM to aim for: enough samples side by side for full micro-tiles.
constexpr int kClassColumns = 1024;

// Output rows (or columns) [o0, o1) that see the same kernel rows [k0, k1).
struct Band {
  int o0, o1, k0, k1;
};

// The valid-tap bands of one dimension (stride 1): output o reads input o - pad + k, inside the
// image for k in [max(0, pad - o), min(K, n + pad - o)).
std::vector<Band> bands(int n_in, int n_out, int K, int pad) {
  std::vector<Band> v;
  for (int o = 0; o < n_out; ++o) {
    const int k0 = std::max(0, pad - o), k1 = std::min(K, n_in + pad - o);
    if (!v.empty() && v.back().k0 == k0 && v.back().k1 == k1 && v.back().o1 == o) {
      v.back().o1 = o + 1;
    } else {
      v.push_back({o, o + 1, k0, k1});
    }
  }
  return v;
}

// One class: output rows r.o0..r.o1 x columns c.o0..c.o1, taps r.k0..r.k1 x c.k0..c.k1.
struct TapClass {
  Band r, c;
  int pixels() const { return (r.o1 - r.o0) * (c.o1 - c.o0); }
  int taps() const { return (r.k1 - r.k0) * (c.k1 - c.k0); }
  // Samples per GEMM chunk.
  int samples(int B) const { return std::max(1, std::min(B, (kClassColumns + pixels() - 1) / pixels())); }
};

std::vector<TapClass> tap_classes(const Conv2dShape& s) {
  std::vector<TapClass> v;
  for (const Band& r : bands(s.H, s.OH(), s.KH, s.pad_h))
    for (const Band& c : bands(s.W, s.OW(), s.KW, s.pad_w))
      if (r.k1 > r.k0 && c.k1 > c.k0) v.push_back({r, c});  // a pixel no tap reaches holds the bias alone
  return v;
}

// Workspace: a class's weights and their gradient (OC, C*T), col and dcol (C*T, N) and the class
// outputs or output gradients (OC, N), sized for the largest class.
struct Layout {
  size_t wc, col, outc;
  size_t total() const { return 2 * wc + 2 * col + outc; }
};

Layout layout(const Conv2dShape& s) {
  Layout l{0, 0, 0};
  for (const TapClass& k : tap_classes(s)) {
    const size_t N = size_t(k.samples(s.B)) * k.pixels();
    l.wc = std::max(l.wc, size_t(s.OC) * s.C * k.taps());
    l.col = std::max(l.col, size_t(s.C) * k.taps() * N);
    l.outc = std::max(l.outc, size_t(s.OC) * N);
  }
  return l;
}

// Calls f(kh, kw) for the class's taps, kernel-row-major (the order t counts them in).
template <typename F>
inline void for_taps(const TapClass& k, F&& f) {
  for (int kh = k.r.k0; kh < k.r.k1; ++kh)
    for (int kw = k.c.k0; kw < k.c.k1; ++kw) f(kh, kw);
}

// wc[o][c*T + t] = w[o][c][kh][kw] over the class's taps t = (kh, kw).
void class_weights(float* wc, const float* w, const TapClass& k, const Conv2dShape& s) {
  const int T = k.taps(), KK = s.KH * s.KW;
  parallel_for(s.OC, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      for (int c = 0; c < s.C; ++c) {
        const float* src = w + (size_t(o) * s.C + c) * KK;
        float* dst = wc + (size_t(o) * s.C + c) * T;
        for_taps(k, [&](int kh, int kw) { *dst++ = src[kh * s.KW + kw]; });
      }
  });
}

// Calls f(t, j, ih, iw) for every tap t of the class (kernel-row-major) and class pixel j
// (row-major) with the input pixel it reads.
template <typename F>
inline void for_taps_and_pixels(const TapClass& k, const Conv2dShape& s, F&& f) {
  int t = 0;
  for (int kh = k.r.k0; kh < k.r.k1; ++kh)
    for (int kw = k.c.k0; kw < k.c.k1; ++kw, ++t) {
      int j = 0;
      for (int oh = k.r.o0; oh < k.r.o1; ++oh)
        for (int ow = k.c.o0; ow < k.c.o1; ++ow, ++j) f(t, j, oh - s.pad_h + kh, ow - s.pad_w + kw);
    }
}

// col (C*T, n*Np): col[c*T + t][i*Np + j] = inp[b0+i][c][ih][iw], every read inside the image.
void class_columns(float* col, const float* inp, int b0, int n, const TapClass& k, const Conv2dShape& s) {
  const int T = k.taps(), Np = k.pixels(), HW = s.H * s.W;
  const size_t ld = size_t(n) * Np;
  parallel_for(int64_t(n) * s.C, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int i = int(q / s.C), c = int(q % s.C);
      const float* plane = inp + (size_t(b0 + i) * s.C + c) * HW;
      float* rows = col + size_t(c) * T * ld + size_t(i) * Np;
      for_taps_and_pixels(k, s, [&](int t, int j, int ih, int iw) { rows[t * ld + j] = plane[ih * s.W + iw]; });
    }
  });
}

}  // namespace

bool valid_taps_applies(const Conv2dShape& s) {
  return s.groups == 1 && s.stride_h == 1 && s.stride_w == 1 && (s.pad_h > 0 || s.pad_w > 0) && s.KH * s.KW > 1;
}

size_t valid_taps_workspace_floats(const Conv2dShape& s) { return layout(s).total(); }

void valid_taps_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                        float* workspace) {
  DFL_CHECK(valid_taps_applies(s), "conv2d valid-taps: needs stride 1, padding and groups 1");
  const int OW = s.OW(), P = s.OH() * OW;
  const Layout l = layout(s);
  float *wc = workspace, *col = wc + 2 * l.wc, *outc = col + 2 * l.col;
  const std::vector<TapClass> classes = tap_classes(s);
  int covered = 0;
  for (const TapClass& k : classes) covered += k.pixels();
  if (covered < P)
    parallel_for(int64_t(s.B) * s.OC, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) std::fill(out + q * P, out + (q + 1) * P, bias ? bias[q % s.OC] : 0.0f);
    });
  for (const TapClass& k : classes) {
    const int Np = k.pixels(), S = k.samples(s.B), K = s.C * k.taps();
    class_weights(wc, weight, k, s);
    for (int b0 = 0; b0 < s.B; b0 += S) {
      const int n = std::min(S, s.B - b0);
      const int N = n * Np;
      class_columns(col, inp, b0, n, k, s);
      sgemm(false, false, s.OC, N, K, 1.0f, wc, K, col, N, 0.0f, outc, N);
      parallel_for(int64_t(n) * s.OC, 1, [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const int i = int(q / s.OC), o = int(q % s.OC);
          const float* src = outc + size_t(o) * N + size_t(i) * Np;
          float* dst = out + (size_t(b0 + i) * s.OC + o) * P;
          const float add = bias ? bias[o] : 0.0f;
          int j = 0;
          for (int oh = k.r.o0; oh < k.r.o1; ++oh)
            for (int ow = k.c.o0; ow < k.c.o1; ++ow) dst[oh * OW + ow] = src[j++] + add;
        }
      });
    }
  }
}

void valid_taps_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                         const Conv2dShape& s, float* workspace) {
  DFL_CHECK(valid_taps_applies(s), "conv2d valid-taps: needs stride 1, padding and groups 1");
  if (!dinp && !dweight) return;
  const int OW = s.OW(), P = s.OH() * OW, HW = s.H * s.W, KK = s.KH * s.KW;
  const Layout l = layout(s);
  float *wc = workspace, *dwc = wc + l.wc, *col = dwc + l.wc, *dcol = col + l.col, *doutc = dcol + l.col;
  for (const TapClass& k : tap_classes(s)) {
    const int T = k.taps(), Np = k.pixels(), S = k.samples(s.B), K = s.C * T;
    if (dinp) class_weights(wc, weight, k, s);
    for (int b0 = 0; b0 < s.B; b0 += S) {
      const int n = std::min(S, s.B - b0);
      const int N = n * Np;
      // doutc (OC, N): the class's pixels of each sample's output gradient.
      parallel_for(int64_t(n) * s.OC, 1, [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const int i = int(q / s.OC), o = int(q % s.OC);
          const float* src = dout + (size_t(b0 + i) * s.OC + o) * P;
          float* dst = doutc + size_t(o) * N + size_t(i) * Np;
          for (int oh = k.r.o0; oh < k.r.o1; ++oh)
            for (int ow = k.c.o0; ow < k.c.o1; ++ow) *dst++ = src[oh * OW + ow];
        }
      });
      if (dweight) {
        class_columns(col, inp, b0, n, k, s);
        // dWc (OC, K) over the class's chunks in order; added to dweight's taps below.
        sgemm(false, true, s.OC, K, N, 1.0f, doutc, N, col, N, b0 == 0 ? 0.0f : 1.0f, dwc, K);
      }
      if (dinp) {
        sgemm(true, false, K, N, s.OC, 1.0f, wc, K, doutc, N, 0.0f, dcol, N);
        parallel_for(int64_t(n) * s.C, 1, [&](int64_t q0, int64_t q1) {
          for (int64_t q = q0; q < q1; ++q) {
            const int i = int(q / s.C), c = int(q % s.C);
            float* plane = dinp + (size_t(b0 + i) * s.C + c) * HW;
            const float* rows = dcol + size_t(c) * T * N + size_t(i) * Np;
            for_taps_and_pixels(k, s,
                                [&](int t, int j, int ih, int iw) { plane[ih * s.W + iw] += rows[size_t(t) * N + j]; });
          }
        });
      }
    }
    if (dweight)
      parallel_for(s.OC, 1, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o)
          for (int c = 0; c < s.C; ++c) {
            const float* src = dwc + (size_t(o) * s.C + c) * T;
            float* dst = dweight + (size_t(o) * s.C + c) * KK;
            for_taps(k, [&](int kh, int kw) { dst[kh * s.KW + kw] += *src++; });
          }
      });
  }
}

}  // namespace dfl::cpu
