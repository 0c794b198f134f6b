// Batch normalisation over (B, C, HW), PyTorch semantics. Every kernel parallelises over channels
// (or over (b, c) planes for eval), so each reduction runs on one thread in a fixed order. Sums run
// in double (AVX2 lanes of 4 doubles where the CPU has them, combined in a fixed order); the
// elementwise passes are float FMAs, with the forward's activation (if any) in the same pass.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DFL_BN_X86 1
#else
#define DFL_BN_X86 0
#endif

namespace dfl::cpu {

namespace {
void check_dims(int B, int C, int HW, const char* who) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, who, ": sizes must be positive (B=", B, ", C=", C, ", HW=", HW, ")");
}
}  // namespace

namespace {

// Per-channel sums over (B, HW) segments, vectorised where the CPU allows, in a fixed order for
// any thread count: lanes of 4 doubles accumulate the segments' vector parts in (b, i) order, then
// combine lane by lane; the segments' scalar tails are added last, in (b, i) order. One pass each
// (the forward's statistics, the backward's two sums), several independent accumulator chains.
struct ChannelView {
  const float* base;
  size_t bstride, plane;
  int B;
  const float* seg(int b) const { return base + size_t(b) * bstride; }
};

// The channel's sums of (x - shift) and (x - shift)^2, in one pass.
struct ShiftedSums {
  double s1 = 0.0, s2 = 0.0;
};

#if DFL_BN_X86
__attribute__((target("avx2,fma"))) ShiftedSums shifted_sums_avx2(const ChannelView& x, double shift) {
  // Four independent chains (sum and squares, low and high halves): the adds' latency is hidden.
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), q0 = _mm256_setzero_pd(), q1 = _mm256_setzero_pd();
  const __m256d m = _mm256_set1_pd(shift);
  const size_t vec = x.plane / 8 * 8;
  for (int b = 0; b < x.B; ++b) {
    const float* p = x.seg(b);
    for (size_t i = 0; i < vec; i += 8) {
      const __m256 v = _mm256_loadu_ps(p + i);
      const __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m);
      const __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), m);
      a0 = _mm256_add_pd(a0, lo);
      a1 = _mm256_add_pd(a1, hi);
      q0 = _mm256_fmadd_pd(lo, lo, q0);
      q1 = _mm256_fmadd_pd(hi, hi, q1);
    }
  }
  alignas(32) double l[4], k[4];
  _mm256_store_pd(l, _mm256_add_pd(a0, a1));
  _mm256_store_pd(k, _mm256_add_pd(q0, q1));
  ShiftedSums r{(l[0] + l[1]) + (l[2] + l[3]), (k[0] + k[1]) + (k[2] + k[3])};
  for (int b = 0; b < x.B; ++b)
    for (size_t i = vec; i < x.plane; ++i) {
      const double d = double(x.seg(b)[i]) - shift;
      r.s1 += d;
      r.s2 += d * d;
    }
  return r;
}
#endif

ShiftedSums shifted_sums(const ChannelView& x, double shift) {
#if DFL_BN_X86
  if (cpu_features().avx2 && cpu_features().fma) return shifted_sums_avx2(x, shift);
#endif
  ShiftedSums r;
  for (int b = 0; b < x.B; ++b)
    for (size_t i = 0; i < x.plane; ++i) {
      const double d = double(x.seg(b)[i]) - shift;
      r.s1 += d;
      r.s2 += d * d;
    }
  return r;
}

float activated(float v, Activation act) {
  if (act == Activation::None) return v;
  v = v <= 0.f ? 0.f : v;  // NaN stays NaN (NaN <= 0 is false), as relu_forward
  return act == Activation::Relu6 && v > 6.f ? 6.f : v;
}

// The elementwise passes go over all of a channel's segments (segs runs of n floats, `stride` apart)
// in one call: on 4x4 maps a segment is two vectors, and a call per segment cost more than its work.
#if DFL_BN_X86
// y = act(x * scale + shift).
template <Activation A>
__attribute__((target("avx2,fma"))) void affine_avx2(float* y, const float* x, size_t n, size_t stride, int segs,
                                                     float scale, float shift) {
  const __m256 s = _mm256_set1_ps(scale), t = _mm256_set1_ps(shift), zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.f);
  const size_t vec = n / 8 * 8;
  for (int k = 0; k < segs; ++k, x += stride, y += stride) {
    for (size_t i = 0; i < vec; i += 8) {
      __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), s, t);
      // max(v, 0) with NaN kept: compare v <= 0 (false for NaN), blend to 0 where true.
      if (A != Activation::None) v = _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LE_OQ));
      if (A == Activation::Relu6) v = _mm256_blendv_ps(v, six, _mm256_cmp_ps(v, six, _CMP_GT_OQ));
      _mm256_storeu_ps(y + i, v);
    }
    for (size_t i = vec; i < n; ++i) y[i] = activated(std::fma(x[i], scale, shift), A);
  }
}
#endif

void affine(float* y, const float* x, size_t n, size_t stride, int segs, float scale, float shift, Activation act) {
#if DFL_BN_X86
  if (cpu_features().avx2 && cpu_features().fma) {
    if (act == Activation::Relu) return affine_avx2<Activation::Relu>(y, x, n, stride, segs, scale, shift);
    if (act == Activation::Relu6) return affine_avx2<Activation::Relu6>(y, x, n, stride, segs, scale, shift);
    return affine_avx2<Activation::None>(y, x, n, stride, segs, scale, shift);
  }
#endif
  for (int k = 0; k < segs; ++k)
    for (size_t i = 0; i < n; ++i) y[k * stride + i] = activated(std::fma(x[k * stride + i], scale, shift), act);
}

}  // namespace

void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd,
                               float* running_mean, float* running_var, const float* inp,
                               const float* gamma, const float* beta, int B, int C, int HW,
                               float momentum, float eps, Activation act) {
  check_dims(B, C, HW, "batchnorm2d_forward_train");
  const int64_t N = int64_t(B) * HW;  // values per channel
  // PyTorch refuses too: the unbiased variance needs N > 1.
  DFL_CHECK(N > 1, "batchnorm2d_forward_train: needs more than one value per channel (B*HW = ", N, ")");
  const size_t plane = size_t(HW), bstride = size_t(C) * HW;
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      // One pass in double over x - shift, shift = one of the channel's values: the shifted sums
      // give the centred sum of squares without the cancellation of sum(x^2) - N mean^2.
      const ChannelView x{inp + c * plane, bstride, plane, B};
      const double x0 = x.seg(0)[0];
      const ShiftedSums sums = shifted_sums(x, x0);
      const double mean = x0 + sums.s1 / double(N);
      const double sq = std::max(0.0, sums.s2 - sums.s1 * sums.s1 / double(N));
      const double var = sq / double(N);  // biased: used to normalise
      const double invstd = 1.0 / std::sqrt(var + double(eps));
      save_mean[c] = float(mean);
      save_invstd[c] = float(invstd);
      if (running_mean) running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean);
      if (running_var) {
        const double unbiased = sq / double(N - 1);
        running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * unbiased);
      }
      // out = act((x - mean) * invstd * gamma + beta), one scale and shift per channel.
      const double g = gamma ? gamma[c] : 1.0;
      const float scale = float(g * invstd);
      const float shift = float((beta ? beta[c] : 0.0) - mean * g * invstd);
      affine(out + c * plane, x.seg(0), plane, bstride, B, scale, shift, act);
    }
  });
}

void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int B, int C,
                              int HW, float eps, Activation act) {
  check_dims(B, C, HW, "batchnorm2d_forward_eval");
  const size_t plane = size_t(HW);
  const int64_t planes = int64_t(B) * C;
  parallel_for(planes, std::max<int64_t>(1, 16384 / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int c = int(p % C);
      const double invstd = 1.0 / std::sqrt(double(running_var[c]) + double(eps));
      const double g = gamma ? gamma[c] : 1.0;
      const float scale = float(g * invstd);
      const float shift = float((beta ? beta[c] : 0.0) - double(running_mean[c]) * g * invstd);
      affine(out + p * plane, inp + p * plane, plane, plane, 1, scale, shift, act);
    }
  });
}

namespace {
// dout as the backward sees it: 0 where the fused activation (output y) passes no gradient, as
// activation_backward_inplace (NaN in y passes it).
inline float masked(float dy, float y, Activation act) {
  if (act == Activation::None) return dy;
  const bool blocked = y <= 0.f || (act == Activation::Relu6 && y >= 6.f);
  return blocked ? 0.f : dy;
}

#if DFL_BN_X86
template <Activation A>
__attribute__((target("avx2,fma"))) inline __m256 masked_avx2(__m256 dy, const float* y) {
  if (A == Activation::None) return dy;
  const __m256 v = _mm256_loadu_ps(y), zero = _mm256_setzero_ps();
  __m256 blocked = _mm256_cmp_ps(v, zero, _CMP_LE_OQ);
  if (A == Activation::Relu6) blocked = _mm256_or_ps(blocked, _mm256_cmp_ps(v, _mm256_set1_ps(6.f), _CMP_GE_OQ));
  return _mm256_andnot_ps(blocked, dy);
}

// sum(dy) and sum(dy * (x - mean)) of one channel (dy masked), in double lanes (fixed order). The
// second is sum(dy * x) - mean * sum(dy): two subtractions fewer per vector; in double the
// cancellation costs nothing a float result can see.
template <Activation A>
__attribute__((target("avx2,fma"))) void grad_sums_avx2(const ChannelView& x, const ChannelView& dy, const ChannelView& y,
                                                        double mean, double* sdy, double* sdyx) {
  __m256d a = _mm256_setzero_pd(), b2 = _mm256_setzero_pd(), c0 = _mm256_setzero_pd(), d0 = _mm256_setzero_pd();
  const size_t vec = x.plane / 8 * 8;
  for (int b = 0; b < x.B; ++b) {
    const float* px = x.seg(b);
    const float* pd = dy.seg(b);
    const float* py = A == Activation::None ? nullptr : y.seg(b);
    for (size_t i = 0; i < vec; i += 8) {
      const __m256 vx = _mm256_loadu_ps(px + i), vd = masked_avx2<A>(_mm256_loadu_ps(pd + i), py + i);
      const __m256d dlo = _mm256_cvtps_pd(_mm256_castps256_ps128(vd)), dhi = _mm256_cvtps_pd(_mm256_extractf128_ps(vd, 1));
      a = _mm256_add_pd(a, dlo);
      b2 = _mm256_add_pd(b2, dhi);
      c0 = _mm256_fmadd_pd(dlo, _mm256_cvtps_pd(_mm256_castps256_ps128(vx)), c0);
      d0 = _mm256_fmadd_pd(dhi, _mm256_cvtps_pd(_mm256_extractf128_ps(vx, 1)), d0);
    }
  }
  alignas(32) double l[4], k[4];
  _mm256_store_pd(l, _mm256_add_pd(a, b2));
  _mm256_store_pd(k, _mm256_add_pd(c0, d0));
  double s1 = (l[0] + l[1]) + (l[2] + l[3]), s2 = (k[0] + k[1]) + (k[2] + k[3]);
  for (int b = 0; b < x.B; ++b)
    for (size_t i = vec; i < x.plane; ++i) {
      const float d = masked(dy.seg(b)[i], A == Activation::None ? 0.f : y.seg(b)[i], A);
      s1 += d;
      s2 += double(d) * double(x.seg(b)[i]);
    }
  *sdy = s1;
  *sdyx = s2 - mean * s1;
}

// dx (+)= a*dy + b*x + c over the channel's segments (dy masked).
template <Activation A, bool Overwrite>
__attribute__((target("avx2,fma"))) void dx_avx2(float* dx, const float* dy, const float* y, const float* x, size_t n,
                                                 size_t stride, int segs, float a, float b, float c) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vc = _mm256_set1_ps(c);
  const size_t vec = n / 8 * 8;
  for (int k = 0; k < segs; ++k) {
    const size_t o = k * stride;
    for (size_t i = o; i < o + vec; i += 8) {
      const __m256 d = masked_avx2<A>(_mm256_loadu_ps(dy + i), y + i);
      const __m256 t = _mm256_fmadd_ps(d, va, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vb, vc));
      _mm256_storeu_ps(dx + i, Overwrite ? t : _mm256_add_ps(_mm256_loadu_ps(dx + i), t));
    }
    for (size_t i = o + vec; i < o + n; ++i) {
      const float t = std::fma(masked(dy[i], A == Activation::None ? 0.f : y[i], A), a, std::fma(x[i], b, c));
      dx[i] = Overwrite ? t : dx[i] + t;
    }
  }
}

#endif

void grad_sums(const ChannelView& x, const ChannelView& dy, const ChannelView& y, Activation act, double mean,
               double* sdy, double* sdyx) {
#if DFL_BN_X86
  if (cpu_features().avx2 && cpu_features().fma) {
    if (act == Activation::Relu) return grad_sums_avx2<Activation::Relu>(x, dy, y, mean, sdy, sdyx);
    if (act == Activation::Relu6) return grad_sums_avx2<Activation::Relu6>(x, dy, y, mean, sdy, sdyx);
    return grad_sums_avx2<Activation::None>(x, dy, y, mean, sdy, sdyx);
  }
#endif
  double s1 = 0.0, s2 = 0.0;
  for (int b = 0; b < x.B; ++b)
    for (size_t i = 0; i < x.plane; ++i) {
      const float d = masked(dy.seg(b)[i], act == Activation::None ? 0.f : y.seg(b)[i], act);
      s1 += d;
      s2 += double(d) * double(x.seg(b)[i]);
    }
  *sdy = s1;
  *sdyx = s2 - mean * s1;
}

void dx_update(float* dx, const float* dy, const float* y, const float* x, size_t n, size_t stride, int segs, float a,
               float b, float c, Activation act, bool overwrite) {
#if DFL_BN_X86
  if (cpu_features().avx2 && cpu_features().fma) {
    if (overwrite) {
      if (act == Activation::Relu) return dx_avx2<Activation::Relu, true>(dx, dy, y, x, n, stride, segs, a, b, c);
      if (act == Activation::Relu6) return dx_avx2<Activation::Relu6, true>(dx, dy, y, x, n, stride, segs, a, b, c);
      return dx_avx2<Activation::None, true>(dx, dy, y, x, n, stride, segs, a, b, c);
    }
    if (act == Activation::Relu) return dx_avx2<Activation::Relu, false>(dx, dy, y, x, n, stride, segs, a, b, c);
    if (act == Activation::Relu6) return dx_avx2<Activation::Relu6, false>(dx, dy, y, x, n, stride, segs, a, b, c);
    return dx_avx2<Activation::None, false>(dx, dy, y, x, n, stride, segs, a, b, c);
  }
#endif
  for (int k = 0; k < segs; ++k)
    for (size_t i = k * stride; i < k * stride + n; ++i) {
      const float t = std::fma(masked(dy[i], act == Activation::None ? 0.f : y[i], act), a, std::fma(x[i], b, c));
      dx[i] = overwrite ? t : dx[i] + t;
    }
}
}  // namespace

void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                          const float* inp, const float* gamma, const float* save_mean,
                          const float* save_invstd, int B, int C, int HW, const float* out, Activation act,
                          bool overwrite_dinp) {
  check_dims(B, C, HW, "batchnorm2d_backward");
  DFL_CHECK(act == Activation::None || out, "batchnorm2d_backward: a fused activation needs the forward's output");
  if (!dinp && !dgamma && !dbeta) return;
  const int64_t N = int64_t(B) * HW;
  const size_t plane = size_t(HW), bstride = size_t(C) * HW;
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const double mean = save_mean[c], invstd = save_invstd[c];
      // sum(dy) and sum(dy * xhat), xhat = (x - mean) * invstd.
      const ChannelView x{inp + c * plane, bstride, plane, B}, dy{dout + c * plane, bstride, plane, B};
      const ChannelView y{out ? out + c * plane : nullptr, bstride, plane, B};
      double sdy, sdxm;
      grad_sums(x, dy, y, act, mean, &sdy, &sdxm);
      const double sdyx = sdxm * invstd;
      if (dbeta) dbeta[c] += float(sdy);
      if (dgamma) dgamma[c] += float(sdyx);
      if (!dinp) continue;
      // dx = k * (dy - mean(dy) - xhat * mean(dy * xhat)), k = gamma * invstd
      //    = a*dy + b*x + c with a = k, b = -k*invstd*mean(dy*xhat), c = k*(mean*invstd*mean(dy*xhat) - mean(dy)).
      const double k = (gamma ? gamma[c] : 1.0) * invstd;
      const double mdy = sdy / double(N), mdyx = sdyx / double(N);
      const float a = float(k), b = float(-k * invstd * mdyx), cc = float(k * (mean * invstd * mdyx - mdy));
      // (Without an activation y is not read: dy stands in, so no offset is applied to a null pointer.)
      dx_update(dinp + c * plane, dy.seg(0), act == Activation::None ? dy.seg(0) : y.seg(0), x.seg(0), plane, bstride, B, a,
                b, cc, act, overwrite_dinp);
    }
  });
}

void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in,
                    const float* gamma, const float* beta, const float* running_mean,
                    const float* running_var, int OC, size_t per_oc, float eps) {
  DFL_CHECK(OC > 0 && per_oc > 0 && eps > 0.f, "fold_batchnorm: sizes and eps must be positive");
  parallel_for(OC, std::max<int64_t>(1, 4096 / int64_t(per_oc)), [&](int64_t o0, int64_t o1) {
    for (int64_t oc = o0; oc < o1; ++oc) {
      const float s = float(double(gamma[oc]) / std::sqrt(double(running_var[oc]) + double(eps)));
      for (size_t k = 0; k < per_oc; ++k) w_out[size_t(oc) * per_oc + k] = w_in[size_t(oc) * per_oc + k] * s;
      b_out[oc] = ((b_in ? b_in[oc] : 0.f) - running_mean[oc]) * s + beta[oc];
    }
  });
}

}  // namespace dfl::cpu
