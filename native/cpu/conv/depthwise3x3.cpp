// Depthwise 3x3 convolution (pad 1, stride 1 or 2, groups == C == OC, any map size) for AVX2+FMA.
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
#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/simd.h"

namespace dfl::cpu {

bool depthwise3x3_applies(const Conv2dShape& s) {
  const CpuFeatures& f = cpu_features();
  return DFL_X86 && f.avx2 && f.fma && s.KH == 3 && s.KW == 3 && s.stride_h == s.stride_w &&
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
#if DFL_X86
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
#if DFL_X86
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
#if DFL_X86
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
