// Max / average / global-average pooling, PyTorch semantics (floor mode, implicit -inf padding for
// max, count_include_pad=True for avg). Parallel over (b, c) planes: each plane's outputs and input
// gradients are produced by one thread in a fixed order.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace dfl::cpu {

namespace {

#if DFL_X86
// One output row of the 2x2 / stride-2 max pool (VGG's) from input rows r0 and r1, 8 outputs per
// AVX2 step (then 4 per SSE step): the same comparisons in the same order as the scalar loop, as
// selects instead of branches (on real data the branches mispredict; docs/native.md, "Training
// memory and fusion"). Candidates k = 0..3 are r0[2ow], r0[2ow+1], r1[2ow], r1[2ow+1]; the
// first is always taken (it beats -inf, or is -inf itself with the same index), a later one when it
// is greater or NaN. am (null in inference): the plane index of the taken one; i0: r0's. Returns the
// outputs done; the caller finishes the row.
// Lanes where candidate v replaces best: greater, or NaN.
__attribute__((target("avx2"))) inline __m256 takes(__m256 v, __m256 best) {
  return _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}
__attribute__((target("avx2"))) inline __m128 takes(__m128 v, __m128 best) {
  return _mm_or_ps(_mm_cmpgt_ps(v, best), _mm_cmpunord_ps(v, v));
}
// r[0, 16) into its even and odd elements.
__attribute__((target("avx2"))) inline void split16(const float* r, __m256& even, __m256& odd) {
  const __m256 a = _mm256_loadu_ps(r), b = _mm256_loadu_ps(r + 8);
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
                                                _MM_SHUFFLE(3, 1, 2, 0)));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))),
                                               _MM_SHUFFLE(3, 1, 2, 0)));
}

__attribute__((target("avx2"))) int maxpool2x2_row_avx2(float* y, int32_t* am, const float* r0, const float* r1, int OW,
                                                        int32_t i0, int W) {
  const __m256 k1 = _mm256_castsi256_ps(_mm256_set1_epi32(1)), kW = _mm256_castsi256_ps(_mm256_set1_epi32(W)),
               kW1 = _mm256_castsi256_ps(_mm256_set1_epi32(W + 1));
  int ow = 0;
  for (; ow + 8 <= OW; ow += 8) {
    __m256 v0, v1, v2, v3;
    split16(r0 + 2 * ow, v0, v1);
    split16(r1 + 2 * ow, v2, v3);
    __m256 best = v0, off = _mm256_setzero_ps(), t;  // off: the taken one's offset from r0[2ow], as int bits
    t = takes(v1, best), best = _mm256_blendv_ps(best, v1, t), off = _mm256_blendv_ps(off, k1, t);
    t = takes(v2, best), best = _mm256_blendv_ps(best, v2, t), off = _mm256_blendv_ps(off, kW, t);
    t = takes(v3, best), best = _mm256_blendv_ps(best, v3, t), off = _mm256_blendv_ps(off, kW1, t);
    _mm256_storeu_ps(y + ow, best);
    if (am) {
      const __m256i base =
          _mm256_add_epi32(_mm256_set1_epi32(i0 + 2 * ow), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(am + ow), _mm256_add_epi32(base, _mm256_castps_si256(off)));
    }
  }
  const __m128 s1 = _mm_castsi128_ps(_mm_set1_epi32(1)), sW = _mm_castsi128_ps(_mm_set1_epi32(W)),
               sW1 = _mm_castsi128_ps(_mm_set1_epi32(W + 1));
  for (; ow + 4 <= OW; ow += 4) {
    const __m128 a0 = _mm_loadu_ps(r0 + 2 * ow), b0 = _mm_loadu_ps(r0 + 2 * ow + 4);
    const __m128 a1 = _mm_loadu_ps(r1 + 2 * ow), b1 = _mm_loadu_ps(r1 + 2 * ow + 4);
    const __m128 v0 = _mm_shuffle_ps(a0, b0, _MM_SHUFFLE(2, 0, 2, 0)),
                 v1 = _mm_shuffle_ps(a0, b0, _MM_SHUFFLE(3, 1, 3, 1));
    const __m128 v2 = _mm_shuffle_ps(a1, b1, _MM_SHUFFLE(2, 0, 2, 0)),
                 v3 = _mm_shuffle_ps(a1, b1, _MM_SHUFFLE(3, 1, 3, 1));
    __m128 best = v0, off = _mm_setzero_ps(), t;
    t = takes(v1, best), best = _mm_blendv_ps(best, v1, t), off = _mm_blendv_ps(off, s1, t);
    t = takes(v2, best), best = _mm_blendv_ps(best, v2, t), off = _mm_blendv_ps(off, sW, t);
    t = takes(v3, best), best = _mm_blendv_ps(best, v3, t), off = _mm_blendv_ps(off, sW1, t);
    _mm_storeu_ps(y + ow, best);
    if (am) {
      const __m128i base = _mm_add_epi32(_mm_set1_epi32(i0 + 2 * ow), _mm_setr_epi32(0, 2, 4, 6));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(am + ow), _mm_add_epi32(base, _mm_castps_si128(off)));
    }
  }
  return ow;
}
#endif

// PyTorch's own preconditions (pad <= kernel/2 also guarantees every window overlaps the input,
// so the max is always taken over real values).
void check_shape(const Pool2dShape& s, const char* who) {
  DFL_CHECK(s.B > 0 && s.C > 0 && s.H > 0 && s.W > 0, who, ": input sizes must be positive");
  DFL_CHECK(s.KH > 0 && s.KW > 0 && s.stride_h > 0 && s.stride_w > 0, who, ": kernel and stride must be positive");
  DFL_CHECK(s.pad_h >= 0 && s.pad_w >= 0 && s.pad_h <= s.KH / 2 && s.pad_w <= s.KW / 2, who,
            ": padding must be >= 0 and at most half the kernel");
  DFL_CHECK(s.H + 2 * s.pad_h >= s.KH && s.W + 2 * s.pad_w >= s.KW, who, ": the ", s.KH, "x", s.KW,
            " window does not fit the padded ", s.H, "x", s.W, " input");
}

int64_t plane_grain(int64_t work_per_plane) {
  return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, work_per_plane));
}

}  // namespace

void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) {
  check_shape(s, "maxpool2d_forward");
  const int H = s.H, W = s.W, OH = s.OH(), OW = s.OW();
  const size_t in_plane = size_t(H) * W, out_plane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane) * s.KH * s.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* x = inp + p * in_plane;
      float* y = out + p * out_plane;
      int32_t* am = argmax ? argmax + p * out_plane : nullptr;  // null: inference
      if (s.KH == 2 && s.KW == 2 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 0 && s.pad_w == 0) {
        // The VGG pool, unrolled: the same comparisons in the same order as the general loop below.
        for (int oh = 0; oh < OH; ++oh) {
          const float* r0 = x + size_t(2 * oh) * W;
          const float* r1 = r0 + W;
          int ow = 0;
#if DFL_X86
          if (cpu_features().avx2)
            ow = maxpool2x2_row_avx2(y + oh * OW, am ? am + oh * OW : nullptr, r0, r1, OW, 2 * oh * W, W);
#endif
          for (; ow < OW; ++ow) {
            const int i0 = 2 * oh * W + 2 * ow;
            const float v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
            const int32_t idx[4] = {i0, i0 + 1, i0 + W, i0 + W + 1};
            float best = -std::numeric_limits<float>::infinity();
            int32_t best_i = i0;
            for (int k = 0; k < 4; ++k)
              if (v[k] > best || v[k] != v[k]) {
                best = v[k];
                best_i = idx[k];
              }
            y[oh * OW + ow] = best;
            if (am) am[oh * OW + ow] = best_i;
          }
        }
        continue;
      }
      for (int oh = 0; oh < OH; ++oh) {
        const int h0 = std::max(oh * s.stride_h - s.pad_h, 0);
        const int h1 = std::min(oh * s.stride_h - s.pad_h + s.KH, H);
        for (int ow = 0; ow < OW; ++ow) {
          const int w0 = std::max(ow * s.stride_w - s.pad_w, 0);
          const int w1 = std::min(ow * s.stride_w - s.pad_w + s.KW, W);
          // As PyTorch: start at the first real element, strict '>' so the first max wins, and a
          // NaN is always taken (it propagates).
          float best = -std::numeric_limits<float>::infinity();
          int32_t best_i = h0 * W + w0;
          for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) {
              const float v = x[h * W + w];
              if (v > best || std::isnan(v)) {
                best = v;
                best_i = h * W + w;
              }
            }
          y[oh * OW + ow] = best;
          if (am) am[oh * OW + ow] = best_i;
        }
      }
    }
  });
}

void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) {
  check_shape(s, "maxpool2d_backward");
  if (!dinp) return;
  const size_t in_plane = size_t(s.H) * s.W, out_plane = size_t(s.OH()) * s.OW();
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dx = dinp + p * in_plane;
      const float* dy = dout + p * out_plane;
      const int32_t* am = argmax + p * out_plane;
      for (size_t o = 0; o < out_plane; ++o) dx[am[o]] += dy[o];
    }
  });
}

void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) {
  check_shape(s, "avgpool2d_forward");
  const int H = s.H, W = s.W, OH = s.OH(), OW = s.OW();
  const size_t in_plane = size_t(H) * W, out_plane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane) * s.KH * s.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* x = inp + p * in_plane;
      float* y = out + p * out_plane;
      for (int oh = 0; oh < OH; ++oh) {
        const int hs = oh * s.stride_h - s.pad_h;
        const int he = std::min(hs + s.KH, H + s.pad_h);
        for (int ow = 0; ow < OW; ++ow) {
          const int ws = ow * s.stride_w - s.pad_w;
          const int we = std::min(ws + s.KW, W + s.pad_w);
          // count_include_pad=True: divide by the window clipped to the PADDED input (PyTorch).
          const int count = (he - hs) * (we - ws);
          float sum = 0.f;
          for (int h = std::max(hs, 0); h < std::min(he, H); ++h)
            for (int w = std::max(ws, 0); w < std::min(we, W); ++w) sum += x[h * W + w];
          y[oh * OW + ow] = sum / float(count);
        }
      }
    }
  });
}

void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) {
  check_shape(s, "avgpool2d_backward");
  if (!dinp) return;
  const int H = s.H, W = s.W, OH = s.OH(), OW = s.OW();
  const size_t in_plane = size_t(H) * W, out_plane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane) * s.KH * s.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dx = dinp + p * in_plane;
      const float* dy = dout + p * out_plane;
      for (int oh = 0; oh < OH; ++oh) {
        const int hs = oh * s.stride_h - s.pad_h;
        const int he = std::min(hs + s.KH, H + s.pad_h);
        for (int ow = 0; ow < OW; ++ow) {
          const int ws = ow * s.stride_w - s.pad_w;
          const int we = std::min(ws + s.KW, W + s.pad_w);
          const float g = dy[oh * OW + ow] / float((he - hs) * (we - ws));
          for (int h = std::max(hs, 0); h < std::min(he, H); ++h)
            for (int w = std::max(ws, 0); w < std::min(we, W); ++w) dx[h * W + w] += g;
        }
      }
    }
  });
}

void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, "global_avgpool_forward: sizes must be positive");
  parallel_for(int64_t(B) * C, std::max<int64_t>(1, 8192 / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* x = inp + p * HW;
      double sum = 0.0;
      for (int i = 0; i < HW; ++i) sum += x[i];
      out[p] = float(sum / HW);
    }
  });
}

void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, "global_avgpool_backward: sizes must be positive");
  if (!dinp) return;
  parallel_for(int64_t(B) * C, std::max<int64_t>(1, 8192 / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dx = dinp + p * HW;
      const float g = dout[p] / float(HW);
      for (int i = 0; i < HW; ++i) dx[i] += g;
    }
  });
}

}  // namespace dfl::cpu
