// Batch normalisation over (B, C, HW), PyTorch semantics. Every kernel parallelises over channels
// (or over (b, c) planes for eval), so each reduction runs on one thread in a fixed order.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/check.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {
void check_dims(int B, int C, int HW, const char* who) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, who, ": sizes must be positive (B=", B, ", C=", C, ", HW=", HW, ")");
}
}  // namespace

void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd,
                               float* running_mean, float* running_var, const float* inp,
                               const float* gamma, const float* beta, int B, int C, int HW,
                               float momentum, float eps) {
  check_dims(B, C, HW, "batchnorm2d_forward_train");
  const int64_t N = int64_t(B) * HW;  // values per channel
  // PyTorch refuses too: the unbiased variance needs N > 1.
  DFL_CHECK(N > 1, "batchnorm2d_forward_train: needs more than one value per channel (B*HW = ", N, ")");
  const size_t plane = size_t(HW), bstride = size_t(C) * HW;
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      // Two passes in double: the mean, then the centred sum of squares (no cancellation).
      double sum = 0.0;
      for (int b = 0; b < B; ++b) {
        const float* x = inp + b * bstride + c * plane;
        for (size_t i = 0; i < plane; ++i) sum += x[i];
      }
      const double mean = sum / double(N);
      double sq = 0.0;
      for (int b = 0; b < B; ++b) {
        const float* x = inp + b * bstride + c * plane;
        for (size_t i = 0; i < plane; ++i) {
          const double d = double(x[i]) - mean;
          sq += d * d;
        }
      }
      const double var = sq / double(N);  // biased: used to normalise
      const double invstd = 1.0 / std::sqrt(var + double(eps));
      save_mean[c] = float(mean);
      save_invstd[c] = float(invstd);
      if (running_mean) running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean);
      if (running_var) {
        const double unbiased = sq / double(N - 1);
        running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * unbiased);
      }
      // out = (x - mean) * invstd * gamma + beta, folded into one scale and shift per channel.
      const double g = gamma ? gamma[c] : 1.0;
      const float scale = float(g * invstd);
      const float shift = float((beta ? beta[c] : 0.0) - mean * g * invstd);
      for (int b = 0; b < B; ++b) {
        const float* x = inp + b * bstride + c * plane;
        float* y = out + b * bstride + c * plane;
        for (size_t i = 0; i < plane; ++i) y[i] = x[i] * scale + shift;
      }
    }
  });
}

void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int B, int C,
                              int HW, float eps) {
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
      const float* x = inp + p * plane;
      float* y = out + p * plane;
      for (size_t i = 0; i < plane; ++i) y[i] = x[i] * scale + shift;
    }
  });
}

void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                          const float* inp, const float* gamma, const float* save_mean,
                          const float* save_invstd, int B, int C, int HW) {
  check_dims(B, C, HW, "batchnorm2d_backward");
  if (!dinp && !dgamma && !dbeta) return;
  const int64_t N = int64_t(B) * HW;
  const size_t plane = size_t(HW), bstride = size_t(C) * HW;
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const double mean = save_mean[c], invstd = save_invstd[c];
      // sum(dy) and sum(dy * xhat), xhat = (x - mean) * invstd.
      double sdy = 0.0, sdyx = 0.0;
      for (int b = 0; b < B; ++b) {
        const float* x = inp + b * bstride + c * plane;
        const float* dy = dout + b * bstride + c * plane;
        for (size_t i = 0; i < plane; ++i) {
          sdy += dy[i];
          sdyx += double(dy[i]) * ((double(x[i]) - mean) * invstd);
        }
      }
      if (dbeta) dbeta[c] += float(sdy);
      if (dgamma) dgamma[c] += float(sdyx);
      if (!dinp) continue;
      // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
      const double k = (gamma ? gamma[c] : 1.0) * invstd;
      const double mdy = sdy / double(N), mdyx = sdyx / double(N);
      for (int b = 0; b < B; ++b) {
        const float* x = inp + b * bstride + c * plane;
        const float* dy = dout + b * bstride + c * plane;
        float* dx = dinp + b * bstride + c * plane;
        for (size_t i = 0; i < plane; ++i) {
          const double xhat = (double(x[i]) - mean) * invstd;
          dx[i] += float(k * (double(dy[i]) - mdy - xhat * mdyx));
        }
      }
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
