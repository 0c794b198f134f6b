// Batch-norm bodies over (B, C, HW), PyTorch semantics as cpu/batchnorm.cpp: training statistics
// and the backward sums are row reductions (bodies/launch.h) in double, the normalisation and the
// input gradient elementwise. Also the per-channel bias gradient of convs and linears, and the
// inference folding of a BN into the layer before it.
#pragma once
#include <cmath>

#include "core/kernel_math.h"
#include "cuda/bodies/elementwise.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

// Value j of channel c: sample j / HW, position j % HW.
DFL_HOST_DEVICE inline size_t channel_index(int c, size_t j, int C, int HW) {
  return (j / size_t(HW) * size_t(C) + size_t(c)) * size_t(HW) + j % size_t(HW);
}

// Per-channel sums are taken in three launches so that even a few wide channels fill the GPU:
//   1. partial sums: `slices` rows per channel, each over a contiguous slice of the channel's B*HW
//      values (row r = channel r / slices, slice r % slices), into partials[r];
//   2. per channel: the slices' partials combined in order, the statistics derived and stored;
//   3. elementwise: the normalisation (forward) or the input gradient (backward).
// The result does not depend on timing: the slices, their order and each tree are fixed.
DFL_HOST_DEVICE inline size_t slice_begin(size_t N, int slices, int s) {
  const size_t chunk = (N + size_t(slices) - 1) / size_t(slices);
  const size_t b = size_t(s) * chunk;
  return b < N ? b : N;
}

// Stage 1 of training forward: sum x and sum x^2 (double) per slice.
struct BatchNormMoments {
  using Acc = Sum2;
  using Coef = int;
  static constexpr bool kApply = false;
  Sum2* partials;  // (C * slices)
  const float* inp;
  int B, C, HW, slices;
  DFL_HOST_DEVICE size_t N() const { return size_t(B) * HW; }
  DFL_HOST_DEVICE int rows() const { return C * slices; }
  DFL_HOST_DEVICE size_t length(int r) const {
    return slice_begin(N(), slices, r % slices + 1) - slice_begin(N(), slices, r % slices);
  }
  DFL_HOST_DEVICE Acc identity() const { return {0.0, 0.0}; }
  DFL_HOST_DEVICE Acc load(int r, size_t j) const {
    const double x = inp[channel_index(r / slices, slice_begin(N(), slices, r % slices) + j, C, HW)];
    return {x, x * x};
  }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return {a.a + b.a, a.b + b.b}; }
  DFL_HOST_DEVICE Coef finish(int r, Acc t, bool write) const {
    if (write) partials[r] = t;
    return 0;
  }
  DFL_HOST_DEVICE void apply(int, size_t, Coef) const {}
};

struct Scale {
  float scale, shift;
};

// Stage 2 of training forward, one row per channel over its slices: batch mean and biased variance,
// the saved statistics, the running statistics (unbiased variance), and the channel's
// out = x*scale + shift (as the CPU folds them).
struct BatchNormTrainStats {
  using Acc = Sum2;
  using Coef = int;
  static constexpr bool kApply = false;
  Scale* coef;  // (C)
  float* save_mean;
  float* save_invstd;
  float* running_mean;  // nullable
  float* running_var;   // nullable
  const Sum2* partials;
  const float* gamma;  // nullable (1)
  const float* beta;   // nullable (0)
  int B, C, HW, slices;
  float momentum, eps;
  DFL_HOST_DEVICE int rows() const { return C; }
  DFL_HOST_DEVICE size_t length(int) const { return size_t(slices); }
  DFL_HOST_DEVICE Acc identity() const { return {0.0, 0.0}; }
  DFL_HOST_DEVICE Acc load(int c, size_t j) const { return partials[size_t(c) * slices + j]; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return {a.a + b.a, a.b + b.b}; }
  DFL_HOST_DEVICE Coef finish(int c, Acc t, bool write) const {
    if (!write) return 0;
    const double N = double(B) * HW;
    const double mean = t.a / N;
    const double sq = t.b - t.a * mean > 0.0 ? t.b - t.a * mean : 0.0;  // centred sum of squares
    const double invstd = 1.0 / sqrt(sq / N + double(eps));
    save_mean[c] = float(mean);
    save_invstd[c] = float(invstd);
    if (running_mean) running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean);
    if (running_var) running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * (sq / (N - 1.0)));
    const double g = gamma ? gamma[c] : 1.0;
    coef[c] = {float(g * invstd), float((beta ? beta[c] : 0.0) - mean * g * invstd)};
    return 0;
  }
  DFL_HOST_DEVICE void apply(int, size_t, Coef) const {}
};

// Stage 3 of training forward, with the fused activation (if any) in the same pass.
struct BatchNormApply {
  float* out;
  const float* inp;
  const Scale* coef;
  size_t n;
  int C, HW;
  Activation act = Activation::None;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const Scale k = coef[(i / size_t(HW)) % size_t(C)];
    out[i] = activate(fmaf(inp[i], k.scale, k.shift), act);  // one rounding, as the CPU kernel
  }
};

// Stage 1 of backward: sum dy and sum dy*xhat (double) per slice, xhat = (x - mean) * invstd.
struct BatchNormGradSums {
  using Acc = Sum2;
  using Coef = int;
  static constexpr bool kApply = false;
  Sum2* partials;
  const float* dout;
  const float* inp;
  const float* save_mean;
  const float* save_invstd;
  int B, C, HW, slices;
  DFL_HOST_DEVICE size_t N() const { return size_t(B) * HW; }
  DFL_HOST_DEVICE int rows() const { return C * slices; }
  DFL_HOST_DEVICE size_t length(int r) const {
    return slice_begin(N(), slices, r % slices + 1) - slice_begin(N(), slices, r % slices);
  }
  DFL_HOST_DEVICE Acc identity() const { return {0.0, 0.0}; }
  DFL_HOST_DEVICE Acc load(int r, size_t j) const {
    const int c = r / slices;
    const size_t i = channel_index(c, slice_begin(N(), slices, r % slices) + j, C, HW);
    const double dy = dout[i];
    return {dy, dy * ((double(inp[i]) - save_mean[c]) * save_invstd[c])};
  }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return {a.a + b.a, a.b + b.b}; }
  DFL_HOST_DEVICE Coef finish(int r, Acc t, bool write) const {
    if (write) partials[r] = t;
    return 0;
  }
  DFL_HOST_DEVICE void apply(int, size_t, Coef) const {}
};

// What the input gradient of one channel needs: dx += k * (dy - mdy - xhat * mdyx).
struct BatchNormGradCoef {
  double mean, invstd, k, mdy, mdyx;
};

// Stage 2 of backward, one row per channel: dbeta += sum dy, dgamma += sum dy*xhat, and the
// channel's input-gradient coefficients.
struct BatchNormGradTotals {
  using Acc = Sum2;
  using Coef = int;
  static constexpr bool kApply = false;
  BatchNormGradCoef* coef;  // (C)
  float* dgamma;            // nullable
  float* dbeta;             // nullable
  const Sum2* partials;
  const float* gamma;  // nullable
  const float* save_mean;
  const float* save_invstd;
  int B, C, HW, slices;
  DFL_HOST_DEVICE int rows() const { return C; }
  DFL_HOST_DEVICE size_t length(int) const { return size_t(slices); }
  DFL_HOST_DEVICE Acc identity() const { return {0.0, 0.0}; }
  DFL_HOST_DEVICE Acc load(int c, size_t j) const { return partials[size_t(c) * slices + j]; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return {a.a + b.a, a.b + b.b}; }
  DFL_HOST_DEVICE Coef finish(int c, Acc t, bool write) const {
    if (!write) return 0;
    if (dbeta) dbeta[c] += float(t.a);
    if (dgamma) dgamma[c] += float(t.b);
    const double N = double(B) * HW, invstd = save_invstd[c];
    coef[c] = {double(save_mean[c]), invstd, (gamma ? gamma[c] : 1.0) * invstd, t.a / N, t.b / N};
    return 0;
  }
  DFL_HOST_DEVICE void apply(int, size_t, Coef) const {}
};

// Stage 3 of backward: dx += gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)).
struct BatchNormGradInput {
  float* dinp;
  const float* dout;
  const float* inp;
  const BatchNormGradCoef* coef;
  size_t n;
  int C, HW;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const BatchNormGradCoef& k = coef[(i / size_t(HW)) % size_t(C)];
    const double xhat = (double(inp[i]) - k.mean) * k.invstd;
    dinp[i] += float(k.k * (double(dout[i]) - k.mdy - xhat * k.mdyx));
  }
};

// How many slices per channel: enough rows to fill a large GPU (~1024 blocks) but slices of at
// least 2048 values.
inline int batchnorm_slices(int B, int C, int HW) {
  const size_t N = size_t(B) * HW;
  size_t s = (N + 2047) / 2048;
  const size_t cap = C >= 1024 ? 1 : size_t(1024 / C);
  if (s > cap) s = cap;
  return s < 1 ? 1 : int(s);
}

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
  Activation act = Activation::None;
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int c = int((i / size_t(HW)) % size_t(C));
    const double invstd = 1.0 / sqrt(double(running_var[c]) + double(eps));
    const double g = gamma ? gamma[c] : 1.0;
    const float scale = float(g * invstd);
    const float shift = float((beta ? beta[c] : 0.0) - double(running_mean[c]) * g * invstd);
    out[i] = activate(fmaf(inp[i], scale, shift), act);  // one rounding, as the CPU kernel (and the device)
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
    const float s = kernel_math::batchnorm_fold_scale(gamma[oc], running_var[oc], eps);
    if (i < nw)
      w_out[i] = w_in[i] * s;
    else
      b_out[oc] = kernel_math::batchnorm_fold_bias(b_in, oc, running_mean[oc], s, beta[oc]);
  }
};

}  // namespace dfl::cuda_bodies
