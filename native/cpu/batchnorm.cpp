// Batch normalisation over (B, C, HW), PyTorch semantics. The reductions (the forward's statistics,
// the backward's two sums) parallelise over ranges of channels, so each channel's sums run on one
// thread in a fixed order (samples in order), whatever the thread count; they run in double (AVX2
// lanes of 4 doubles where the CPU has them, combined in a fixed order). The elementwise passes
// (float FMAs, with the forward's activation, if any, in the same pass) parallelise over samples.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "core/check.h"
#include "core/kernel_math.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace dfl::cpu {

namespace {
void check_dims(int B, int C, int HW, const char* who) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, who, ": sizes must be positive (B=", B, ", C=", C, ", HW=", HW, ")");
}

float activated(float v, Activation act) {
  if (act == Activation::None) return v;
  v = v <= 0.f ? 0.f : v;  // NaN stays NaN (NaN <= 0 is false), as relu_forward
  return act == Activation::Relu6 && v > 6.f ? 6.f : v;
}

// The elementwise passes go over `segs` segments of n floats, `stride` apart, in one call: a
// sample's channels (coefficient step 1: a scale and shift per segment), or one plane (step 0). On
// 4x4 maps a segment is two vectors, and a call per segment cost more than its work.
#if DFL_X86
// y = act(x * scale + shift).
template <Activation A>
__attribute__((target("avx2,fma"))) void affine_avx2(float* y, const float* x, size_t n, size_t stride, int segs,
                                                     const float* scale, const float* shift, int cstep) {
  const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.f);
  const size_t vec = n / 8 * 8;
  for (int k = 0; k < segs; ++k, x += stride, y += stride) {
    const float sk = scale[k * cstep], tk = shift[k * cstep];
    const __m256 s = _mm256_set1_ps(sk), t = _mm256_set1_ps(tk);
    for (size_t i = 0; i < vec; i += 8) {
      __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), s, t);
      // max(v, 0) with NaN kept: compare v <= 0 (false for NaN), blend to 0 where true.
      if (A != Activation::None) v = _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LE_OQ));
      if (A == Activation::Relu6) v = _mm256_blendv_ps(v, six, _mm256_cmp_ps(v, six, _CMP_GT_OQ));
      _mm256_storeu_ps(y + i, v);
    }
    for (size_t i = vec; i < n; ++i) y[i] = activated(std::fma(x[i], sk, tk), A);
  }
}
#endif

void affine(float* y, const float* x, size_t n, size_t stride, int segs, const float* scale, const float* shift,
            int cstep, Activation act) {
#if DFL_X86
  if (cpu_features().avx2 && cpu_features().fma) {
    if (act == Activation::Relu) return affine_avx2<Activation::Relu>(y, x, n, stride, segs, scale, shift, cstep);
    if (act == Activation::Relu6) return affine_avx2<Activation::Relu6>(y, x, n, stride, segs, scale, shift, cstep);
    return affine_avx2<Activation::None>(y, x, n, stride, segs, scale, shift, cstep);
  }
#endif
  for (int k = 0; k < segs; ++k)
    for (size_t i = 0; i < n; ++i)
      y[k * stride + i] = activated(std::fma(x[k * stride + i], scale[k * cstep], shift[k * cstep]), act);
}

// ---- the reductions, in memory order ------------------------------------------------------------
// Consecutive segments of a channel lie a whole sample (C * HW floats, a power of two on most
// models) apart: walking a channel maps them all to the same cache sets, and on small maps a segment
// is a cache line or two, a demand miss each. So the reductions walk sample by sample, each thread
// over its own range of channels (a run of range * HW floats per sample), and the elementwise passes
// sample by sample over whole samples: both stream, on every map size (docs/native.md, "Training
// memory and fusion", has the measurement).
// One channel's sums: 4 double lanes for the segments' vector parts, scalar tails.
struct alignas(32) LaneSums {
  double s1[4] = {}, s2[4] = {};
  double t1 = 0.0, t2 = 0.0;
  double first() const { return ((s1[0] + s1[1]) + (s1[2] + s1[3])) + t1; }
  double second() const { return ((s2[0] + s2[1]) + (s2[2] + s2[3])) + t2; }
};

#if DFL_X86
// sums[c - c0] += (x - shift) and (x - shift)^2 over channels [c0, c1), samples in order.
__attribute__((target("avx2,fma"))) void shifted_sums_avx2(LaneSums* sums, const double* shifts, const float* x,
                                                           size_t bstride, size_t plane, int64_t c0, int64_t c1,
                                                           int B) {
  const size_t vec = plane / 8 * 8;
  for (int b = 0; b < B; ++b)
    for (int64_t c = c0; c < c1; ++c) {
      const float* p = x + b * bstride + c * plane;
      LaneSums& s = sums[c - c0];
      const double shift = shifts[c - c0];
      const __m256d m = _mm256_set1_pd(shift);
      __m256d a = _mm256_load_pd(s.s1), q = _mm256_load_pd(s.s2);
      for (size_t i = 0; i < vec; i += 8) {
        const __m256 v = _mm256_loadu_ps(p + i);
        const __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m);
        const __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), m);
        a = _mm256_add_pd(a, _mm256_add_pd(lo, hi));
        q = _mm256_add_pd(q, _mm256_fmadd_pd(hi, hi, _mm256_mul_pd(lo, lo)));
      }
      _mm256_store_pd(s.s1, a);
      _mm256_store_pd(s.s2, q);
      for (size_t i = vec; i < plane; ++i) {
        const double d = double(p[i]) - shift;
        s.t1 += d;
        s.t2 += d * d;
      }
    }
}
#endif

void shifted_sums(LaneSums* sums, const double* shifts, const float* x, size_t bstride, size_t plane, int64_t c0,
                  int64_t c1, int B) {
#if DFL_X86
  if (cpu_features().avx2 && cpu_features().fma) return shifted_sums_avx2(sums, shifts, x, bstride, plane, c0, c1, B);
#endif
  for (int b = 0; b < B; ++b)
    for (int64_t c = c0; c < c1; ++c)
      for (size_t i = 0; i < plane; ++i) {
        const double d = double(x[b * bstride + c * plane + i]) - shifts[c - c0];
        sums[c - c0].t1 += d;
        sums[c - c0].t2 += d * d;
      }
}

}  // namespace

void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                               float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                               int C, int HW, float momentum, float eps, Activation act) {
  check_dims(B, C, HW, "batchnorm2d_forward_train");
  const int64_t N = int64_t(B) * HW;  // values per channel
  // PyTorch refuses too: the unbiased variance needs N > 1.
  DFL_CHECK(N > 1, "batchnorm2d_forward_train: needs more than one value per channel (B*HW = ", N, ")");
  const size_t plane = size_t(HW), bstride = size_t(C) * HW;
  // One pass in double over x - shift, shift = one of the channel's values (x0): the shifted sums
  // give the centred sum of squares without the cancellation of sum(x^2) - N mean^2. From them the
  // statistics, the running averages, and the output's scale and shift.
  auto finish = [&](int64_t c, double x0, double s1, double s2, float* scale, float* shift) {
    const double mean = x0 + s1 / double(N);
    const double sq = std::max(0.0, s2 - s1 * s1 / double(N));
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
    *scale = float(g * invstd);
    *shift = float((beta ? beta[c] : 0.0) - mean * g * invstd);
  };
  std::vector<float> scale(C), shift(C);
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    std::vector<LaneSums> sums(size_t(c1 - c0));
    std::vector<double> x0(size_t(c1 - c0));
    for (int64_t c = c0; c < c1; ++c) x0[c - c0] = inp[c * plane];
    shifted_sums(sums.data(), x0.data(), inp, bstride, plane, c0, c1, B);
    for (int64_t c = c0; c < c1; ++c)
      finish(c, x0[c - c0], sums[c - c0].first(), sums[c - c0].second(), &scale[c], &shift[c]);
  });
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      affine(out + b * bstride, inp + b * bstride, plane, plane, C, scale.data(), shift.data(), 1, act);
  });
}

void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int B, int C, int HW, float eps,
                              Activation act) {
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
      affine(out + p * plane, inp + p * plane, plane, plane, 1, &scale, &shift, 0, act);
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

#if DFL_X86
template <Activation A>
__attribute__((target("avx2,fma"))) inline __m256 masked_avx2(__m256 dy, const float* y) {
  if (A == Activation::None) return dy;
  const __m256 v = _mm256_loadu_ps(y), zero = _mm256_setzero_ps();
  __m256 blocked = _mm256_cmp_ps(v, zero, _CMP_LE_OQ);
  if (A == Activation::Relu6) blocked = _mm256_or_ps(blocked, _mm256_cmp_ps(v, _mm256_set1_ps(6.f), _CMP_GE_OQ));
  return _mm256_andnot_ps(blocked, dy);
}

// sums[c - c0] += dy and dy * x (dy masked) over channels [c0, c1), samples in order (small maps).
template <Activation A>
__attribute__((target("avx2,fma"))) void grad_sums_avx2(LaneSums* sums, const float* x, const float* dy, const float* y,
                                                        size_t bstride, size_t plane, int64_t c0, int64_t c1, int B) {
  const size_t vec = plane / 8 * 8;
  for (int b = 0; b < B; ++b)
    for (int64_t c = c0; c < c1; ++c) {
      const size_t o = b * bstride + c * plane;
      const float *px = x + o, *pd = dy + o, *py = y + o;
      LaneSums& s = sums[c - c0];
      __m256d a = _mm256_load_pd(s.s1), q = _mm256_load_pd(s.s2);
      for (size_t i = 0; i < vec; i += 8) {
        const __m256 vx = _mm256_loadu_ps(px + i), vd = masked_avx2<A>(_mm256_loadu_ps(pd + i), py + i);
        const __m256d dlo = _mm256_cvtps_pd(_mm256_castps256_ps128(vd)),
                      dhi = _mm256_cvtps_pd(_mm256_extractf128_ps(vd, 1));
        a = _mm256_add_pd(a, _mm256_add_pd(dlo, dhi));
        q = _mm256_add_pd(q, _mm256_fmadd_pd(dhi, _mm256_cvtps_pd(_mm256_extractf128_ps(vx, 1)),
                                             _mm256_mul_pd(dlo, _mm256_cvtps_pd(_mm256_castps256_ps128(vx)))));
      }
      _mm256_store_pd(s.s1, a);
      _mm256_store_pd(s.s2, q);
      for (size_t i = vec; i < plane; ++i) {
        const float d = masked(pd[i], A == Activation::None ? 0.f : py[i], A);
        s.t1 += d;
        s.t2 += double(d) * double(px[i]);
      }
    }
}

// dx (+)= a*dy + b*x + c over the channel's segments (dy masked).
template <Activation A, bool Overwrite>
__attribute__((target("avx2,fma"))) void dx_avx2(float* dx, const float* dy, const float* y, const float* x, size_t n,
                                                 size_t stride, int segs, const float* ka, const float* kb,
                                                 const float* kc, int cstep) {
  const size_t vec = n / 8 * 8;
  for (int k = 0; k < segs; ++k) {
    const float a = ka[k * cstep], b = kb[k * cstep], c = kc[k * cstep];
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vc = _mm256_set1_ps(c);
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

void grad_sums(LaneSums* sums, const float* x, const float* dy, const float* y, size_t bstride, size_t plane,
               int64_t c0, int64_t c1, int B, Activation act) {
#if DFL_X86
  if (cpu_features().avx2 && cpu_features().fma) {
    if (act == Activation::Relu) return grad_sums_avx2<Activation::Relu>(sums, x, dy, y, bstride, plane, c0, c1, B);
    if (act == Activation::Relu6) return grad_sums_avx2<Activation::Relu6>(sums, x, dy, y, bstride, plane, c0, c1, B);
    return grad_sums_avx2<Activation::None>(sums, x, dy, y, bstride, plane, c0, c1, B);
  }
#endif
  for (int b = 0; b < B; ++b)
    for (int64_t c = c0; c < c1; ++c)
      for (size_t i = 0; i < plane; ++i) {
        const size_t o = b * bstride + c * plane + i;
        const float d = masked(dy[o], act == Activation::None ? 0.f : y[o], act);
        sums[c - c0].t1 += d;
        sums[c - c0].t2 += double(d) * double(x[o]);
      }
}

void dx_update(float* dx, const float* dy, const float* y, const float* x, size_t n, size_t stride, int segs,
               const float* a, const float* b, const float* c, int cstep, Activation act, bool overwrite) {
#if DFL_X86
  if (cpu_features().avx2 && cpu_features().fma) {
    if (overwrite) {
      if (act == Activation::Relu)
        return dx_avx2<Activation::Relu, true>(dx, dy, y, x, n, stride, segs, a, b, c, cstep);
      if (act == Activation::Relu6)
        return dx_avx2<Activation::Relu6, true>(dx, dy, y, x, n, stride, segs, a, b, c, cstep);
      return dx_avx2<Activation::None, true>(dx, dy, y, x, n, stride, segs, a, b, c, cstep);
    }
    if (act == Activation::Relu) return dx_avx2<Activation::Relu, false>(dx, dy, y, x, n, stride, segs, a, b, c, cstep);
    if (act == Activation::Relu6)
      return dx_avx2<Activation::Relu6, false>(dx, dy, y, x, n, stride, segs, a, b, c, cstep);
    return dx_avx2<Activation::None, false>(dx, dy, y, x, n, stride, segs, a, b, c, cstep);
  }
#endif
  for (int k = 0; k < segs; ++k)
    for (size_t i = k * stride; i < k * stride + n; ++i) {
      const float t = std::fma(masked(dy[i], act == Activation::None ? 0.f : y[i], act), a[k * cstep],
                               std::fma(x[i], b[k * cstep], c[k * cstep]));
      dx[i] = overwrite ? t : dx[i] + t;
    }
}
}  // namespace

void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                          const float* gamma, const float* save_mean, const float* save_invstd, int B, int C, int HW,
                          const float* out, Activation act, bool overwrite_dinp) {
  check_dims(B, C, HW, "batchnorm2d_backward");
  DFL_CHECK(act == Activation::None || out, "batchnorm2d_backward: a fused activation needs the forward's output");
  if (!dinp && !dgamma && !dbeta) return;
  const int64_t N = int64_t(B) * HW;
  const size_t plane = size_t(HW), bstride = size_t(C) * HW;
  // From the channel's sum(dy) and sum(dy * x): the parameter gradients, and the input gradient's
  // dx = k * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * invstd, k = gamma * invstd,
  //    = a*dy + b*x + c with a = k, b = -k*invstd*mean(dy*xhat), c = k*(mean*invstd*mean(dy*xhat) - mean(dy)).
  auto finish = [&](int64_t c, double sdy, double sdx, float* a, float* b, float* cc) {
    const double mean = save_mean[c], invstd = save_invstd[c];
    const double sdyx = (sdx - mean * sdy) * invstd;  // sum(dy * xhat)
    if (dbeta) dbeta[c] += float(sdy);
    if (dgamma) dgamma[c] += float(sdyx);
    const double k = (gamma ? gamma[c] : 1.0) * invstd;
    const double mdy = sdy / double(N), mdyx = sdyx / double(N);
    *a = float(k);
    *b = float(-k * invstd * mdyx);
    *cc = float(k * (mean * invstd * mdyx - mdy));
  };
  // (Without an activation y is not read: dy stands in, so no offset is applied to a null pointer.)
  const float* y = act == Activation::None ? dout : out;
  std::vector<float> ka(C), kb(C), kc(C);
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    std::vector<LaneSums> sums(size_t(c1 - c0));
    grad_sums(sums.data(), inp, dout, y, bstride, plane, c0, c1, B, act);
    for (int64_t c = c0; c < c1; ++c) finish(c, sums[c - c0].first(), sums[c - c0].second(), &ka[c], &kb[c], &kc[c]);
  });
  if (!dinp) return;
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const size_t o = b * bstride;
      dx_update(dinp + o, dout + o, y + o, inp + o, plane, plane, C, ka.data(), kb.data(), kc.data(), 1, act,
                overwrite_dinp);
    }
  });
}

void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                    const float* beta, const float* running_mean, const float* running_var, int OC, size_t per_oc,
                    float eps) {
  DFL_CHECK(OC > 0 && per_oc > 0 && eps > 0.f, "fold_batchnorm: sizes and eps must be positive");
  parallel_for(OC, std::max<int64_t>(1, 4096 / int64_t(per_oc)), [&](int64_t o0, int64_t o1) {
    for (int64_t oc = o0; oc < o1; ++oc) {
      const float s = kernel_math::batchnorm_fold_scale(gamma[oc], running_var[oc], eps);
      for (size_t k = 0; k < per_oc; ++k) w_out[size_t(oc) * per_oc + k] = w_in[size_t(oc) * per_oc + k] * s;
      b_out[oc] = kernel_math::batchnorm_fold_bias(b_in, size_t(oc), running_mean[oc], s, beta[oc]);
    }
  });
}

}  // namespace dfl::cpu
