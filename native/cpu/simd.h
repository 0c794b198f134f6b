// Helpers for the vector kernels: an unroll hint, the fused activation, the 8x8 float transpose in
// AVX registers shared by the kernels that switch between channels-in-lanes and pixels-in-lanes
// (conv/direct_oc.cpp, conv/winograd.cpp), the even/odd split of stride-2 rows and the fixed-order lane sum (conv/row_kernels.h,
// conv/depthwise3x3.cpp). x86 only; callers check AVX2 at run time.
#pragma once

// Put before each loop over a register-block array (acc[o][v] of __m256). GCC keeps such an array
// in registers only when its loops are unrolled before scalar replacement; otherwise it stores every
// accumulator back to the stack on each trip of the loop around them (row_chunk at 1x1: 12 stores
// per 12 FMAs, half the kernel's time).
#define DFL_UNROLL _Pragma("GCC unroll 16")

// 1 where the x86 vector kernels are compiled in (they still check the CPU's features at run time).
#if defined(__x86_64__) || defined(__i386__)
#define DFL_X86 1
#else
#define DFL_X86 0
#endif

#if DFL_X86
#include <immintrin.h>

#include "core/shapes.h"  // Activation

namespace dfl::cpu {

// A fused activation as activation.cpp computes it, so fusing does not change a bit: x <= 0 gives
// +0 (also for -0), NaN stays NaN (both comparisons false), ReLU6 clamps at 6.
__attribute__((target("avx2"))) inline __m256 activate(__m256 v, Activation act) {
  if (act == Activation::None) return v;
  const __m256 zero = _mm256_setzero_ps();
  if (act == Activation::Relu6) {
    const __m256 six = _mm256_set1_ps(6.0f);
    v = _mm256_blendv_ps(v, six, _mm256_cmp_ps(v, six, _CMP_GE_OQ));
  }
  return _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LE_OQ));
}

// r[i] lane j -> r[j] lane i.
__attribute__((target("avx2"))) inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// even[i] = src[2i], odd[i] = src[2i + 1] for the n floats of src (the split rows' copy).
__attribute__((target("avx2"))) inline void deinterleave_avx2(float* even, float* odd, const float* src, int n) {
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

// The sum of a vector's 8 lanes in a fixed order: (0+4, 1+5, 2+6, 3+7), then pairs, then the last
// two (the weight gradients' reductions, so that they do not depend on anything but the data).
__attribute__((target("avx2"))) inline float lane_sum(__m256 v) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

}  // namespace dfl::cpu
#endif
