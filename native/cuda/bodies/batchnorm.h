// Batch-norm bodies over (B, C, HW), PyTorch semantics as cpu/batchnorm.cpp. Training statistics and
// the backward sums are row reductions (bodies/launch.h), one row per channel, in double; the
// normalisation is their elementwise second phase. Also the per-channel bias gradient of convs and
// linears, and the inference folding of a BN into the layer before it.
#pragma once
#include <cmath>

#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

// Value j of channel c: sample j / HW, position j % HW.
DFL_HOST_DEVICE inline size_t channel_index(int c, size_t j, int C, int HW) {
  return (j / size_t(HW) * size_t(C) + size_t(c)) * size_t(HW) + j % size_t(HW);
}

struct Scale {
  float scale, shift;
};

// Training forward: batch mean and biased variance (one pass of sum and sum of squares in double),
// the saved statistics and running-statistic update (unbiased variance), then out = x*scale + shift.
struct BatchNormTrain {
  using Acc = Sum2;  // sum x, sum x^2
  using Coef = Scale;
  static constexpr bool kApply = true;
  float* out;
  float* save_mean;
  float* save_invstd;
  float* running_mean;  // nullable
  float* running_var;   // nullable
  const float* inp;
  const float* gamma;   // nullable (1)
  const float* beta;    // nullable (0)
  int B, C, HW;
  float momentum, eps;
  DFL_HOST_DEVICE int rows() const { return C; }
  DFL_HOST_DEVICE size_t length(int) const { return size_t(B) * HW; }
  DFL_HOST_DEVICE Acc identity() const { return {0.0, 0.0}; }
  DFL_HOST_DEVICE Acc load(int c, size_t j) const {
    const double x = inp[channel_index(c, j, C, HW)];
    return {x, x * x};
  }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return {a.a + b.a, a.b + b.b}; }
  DFL_HOST_DEVICE Coef finish(int c, Acc t, bool write) const {
    const double N = double(B) * HW;
    const double mean = t.a / N;
    const double sq = t.b - t.a * mean > 0.0 ? t.b - t.a * mean : 0.0;  // centred sum of squares
    const double invstd = 1.0 / sqrt(sq / N + double(eps));
    if (write) {
      save_mean[c] = float(mean);
      save_invstd[c] = float(invstd);
      if (running_mean) running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean);
      if (running_var) running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * (sq / (N - 1.0)));
    }
    const double g = gamma ? gamma[c] : 1.0;
    return {float(g * invstd), float((beta ? beta[c] : 0.0) - mean * g * invstd)};
  }
  DFL_HOST_DEVICE void apply(int c, size_t j, Coef k) const {
    const size_t i = channel_index(c, j, C, HW);
    out[i] = fmaf(inp[i], k.scale, k.shift);
  }
};

// Backward of the training forward: sums of dy and dy*xhat per channel, then
// dx += gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)).
struct BatchNormBackward {
  using Acc = Sum2;  // sum dy, sum dy*xhat
  struct Coef {
    double mean, invstd, k, mdy, mdyx;
  };
  static constexpr bool kApply = true;
  float* dinp;    // nullable
  float* dgamma;  // nullable
  float* dbeta;   // nullable
  const float* dout;
  const float* inp;
  const float* gamma;  // nullable
  const float* save_mean;
  const float* save_invstd;
  int B, C, HW;
  DFL_HOST_DEVICE int rows() const { return C; }
  DFL_HOST_DEVICE size_t length(int) const { return size_t(B) * HW; }
  DFL_HOST_DEVICE Acc identity() const { return {0.0, 0.0}; }
  DFL_HOST_DEVICE Acc load(int c, size_t j) const {
    const size_t i = channel_index(c, j, C, HW);
    const double dy = dout[i];
    return {dy, dy * ((double(inp[i]) - save_mean[c]) * save_invstd[c])};
  }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return {a.a + b.a, a.b + b.b}; }
  DFL_HOST_DEVICE Coef finish(int c, Acc t, bool write) const {
    if (write) {
      if (dbeta) dbeta[c] += float(t.a);
      if (dgamma) dgamma[c] += float(t.b);
    }
    const double N = double(B) * HW, invstd = save_invstd[c];
    return {double(save_mean[c]), invstd, (gamma ? gamma[c] : 1.0) * invstd, t.a / N, t.b / N};
  }
  DFL_HOST_DEVICE void apply(int c, size_t j, const Coef& k) const {
    if (!dinp) return;
    const size_t i = channel_index(c, j, C, HW);
    const double xhat = (double(inp[i]) - k.mean) * k.invstd;
    dinp[i] += float(k.k * (double(dout[i]) - k.mdy - xhat * k.mdyx));
  }
};

// Eval forward, one element per index, with the running statistics (as the CPU, in double).
struct BatchNormEval {
  float* out;
  const float* inp;
  const float* gamma;
  const float* beta;
  const float* running_mean;
  const float* running_var;
  size_t n;
  int C, HW;
  float eps;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int c = int((i / size_t(HW)) % size_t(C));
    const double invstd = 1.0 / sqrt(double(running_var[c]) + double(eps));
    const double g = gamma ? gamma[c] : 1.0;
    const float scale = float(g * invstd);
    const float shift = float((beta ? beta[c] : 0.0) - double(running_mean[c]) * g * invstd);
    out[i] = fmaf(inp[i], scale, shift);  // one rounding, as the CPU kernel (and the device)
  }
};

// dbias[oc] += sum over samples and positions of dout (B, OC, P): conv and linear bias gradients.
struct BiasGradient {
  using Acc = double;
  using Coef = int;
  static constexpr bool kApply = false;
  float* dbias;
  const float* dout;
  int B, OC;
  int P;
  DFL_HOST_DEVICE int rows() const { return OC; }
  DFL_HOST_DEVICE size_t length(int) const { return size_t(B) * P; }
  DFL_HOST_DEVICE Acc identity() const { return 0.0; }
  DFL_HOST_DEVICE Acc load(int oc, size_t j) const { return dout[channel_index(oc, j, OC, P)]; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return a + b; }
  DFL_HOST_DEVICE Coef finish(int oc, Acc t, bool write) const {
    if (write) dbias[oc] += float(t);
    return 0;
  }
  DFL_HOST_DEVICE void apply(int, size_t, Coef) const {}
};

// Folding a BN into the conv/linear before it, one folded weight per index; index < OC*per_oc is a
// weight, the OC after it the biases. s = gamma/sqrt(var+eps) in double, rounded once (as the CPU).
struct FoldBatchNorm {
  float* w_out;
  float* b_out;
  const float* w_in;
  const float* b_in;  // nullable
  const float* gamma;
  const float* beta;
  const float* running_mean;
  const float* running_var;
  int OC;
  size_t per_oc;
  float eps;
  DFL_HOST_DEVICE size_t count() const { return size_t(OC) * per_oc + size_t(OC); }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const size_t nw = size_t(OC) * per_oc;
    const size_t oc = i < nw ? i / per_oc : i - nw;
    const float s = float(double(gamma[oc]) / sqrt(double(running_var[oc]) + double(eps)));
    if (i < nw) w_out[i] = w_in[i] * s;
    else b_out[oc] = ((b_in ? b_in[oc] : 0.f) - running_mean[oc]) * s + beta[oc];
  }
};

}  // namespace dfl::cuda_bodies
