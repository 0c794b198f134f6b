// The arithmetic both backends' kernels share, written once: the CPU kernels (native/cpu) call it in
// their loops, the CUDA bodies (native/cuda/bodies) per thread, so the two compute the same
// expressions in the same order (the cuda-vs-cpu tests compare them within docs/native.md's
// "Numerics" tolerances). Functions marked DFL_HOST_DEVICE compile for the device under nvcc.
// Also the argument rules that are a kernel's own (not a graph's), checked on the host.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/check.h"
#include "core/counter_rng.h"  // DFL_HOST_DEVICE
#include "core/shapes.h"

namespace dfl::kernel_math {

// ---- SGD with momentum (torch.optim.SGD, dampening 0; optional decoupled weight decay as in SGDW),
// in the operation order of PyTorch's _single_tensor_sgd. Without momentum the buffer comes back
// unchanged (PyTorch keeps none). Shared by the step and its finiteness check.
struct SgdUpdate {
  float param, buf;
};
DFL_HOST_DEVICE inline SgdUpdate sgd_update(const float* params, const float* momentum_buf, const float* grads,
                                            const float* decay_mask, size_t i, const SgdConfig& cfg) {
  const float lr = cfg.lr, mu = cfg.momentum;
  const float wdi = decay_mask ? cfg.weight_decay * decay_mask[i] : cfg.weight_decay;
  float p = params[i];
  float g = grads[i];
  if (cfg.decoupled)
    p = p * (1.f - lr * wdi);
  else
    g = g + wdi * p;
  float step = g;
  float buf = momentum_buf ? momentum_buf[i] : 0.f;
  if (mu != 0.f) {
    buf = mu * buf + g;
    step = cfg.nesterov ? g + mu * buf : buf;
  }
  return {p - lr * step, buf};
}

// ---- softmax losses, per row (sample), in double ------------------------------------------------
// log(sum_c exp(x[c] * inv_t)), shifted by the max so nothing overflows (the max as std::max takes it).
DFL_HOST_DEVICE inline double log_sum_exp(const float* x, int NC, double inv_t) {
  double m = double(x[0]) * inv_t;
  for (int c = 1; c < NC; ++c) {
    const double v = double(x[c]) * inv_t;
    m = m < v ? v : m;
  }
  double s = 0.0;
  for (int c = 0; c < NC; ++c) s += exp(double(x[c]) * inv_t - m);
  return m + log(s);
}

// One row of softmax cross-entropy with label smoothing eps: writes probs[0..NC) and returns
// -sum_c ((1-eps) onehot_c + eps/NC) log p_c. target must lie in [0, NC).
DFL_HOST_DEVICE inline float cross_entropy_row(float* probs, const float* x, int target, int NC, double eps) {
  const double lse = log_sum_exp(x, NC, 1.0);
  double sum_logp = 0.0;  // sum_c log p_c, for the smoothed part
  for (int c = 0; c < NC; ++c) {
    const double lp = double(x[c]) - lse;
    sum_logp += lp;
    probs[c] = float(exp(lp));
  }
  return float(-(1.0 - eps) * (double(x[target]) - lse) - eps / NC * sum_logp);
}

// The smoothed one-hot target of cross-entropy's backward: `on` for the target class, `off` for the rest.
struct SmoothedTarget {
  float on, off;
};
DFL_HOST_DEVICE inline SmoothedTarget smoothed_target(float label_smoothing, int NC) {
  const float off = label_smoothing / float(NC);
  return {1.f - label_smoothing + off, off};
}

// One row of the ensemble-teacher KL: T^2 KL(p_T || q), p_T the mixture of the K teachers' tempered
// softmaxes with weights w_k / sum w (uniform when weights is null; (K, B) otherwise), q the
// student's. mixture: NC doubles of scratch. Writes the row's q and p_T; returns the loss. Weights
// must be finite, >= 0, with a positive sum (the CPU kernel checks).
DFL_HOST_DEVICE inline float ensemble_kl_row(float* student_probs, float* teacher_probs, double* mixture,
                                             const float* student_logits, const float* teacher_logits,
                                             const float* weights, int K, int B, int NC, float T, size_t b) {
  const double inv_t = 1.0 / double(T), t2 = double(T) * double(T);
  for (int c = 0; c < NC; ++c) mixture[c] = 0.0;
  double wsum = 0.0;
  for (int k = 0; k < K; ++k) wsum += weights ? double(weights[size_t(k) * B + b]) : 1.0;
  for (int k = 0; k < K; ++k) {
    const double w = (weights ? double(weights[size_t(k) * B + b]) : 1.0) / wsum;
    if (w == 0.0) continue;
    const float* t = teacher_logits + (size_t(k) * B + b) * NC;
    const double lse = log_sum_exp(t, NC, inv_t);
    for (int c = 0; c < NC; ++c) mixture[c] += w * exp(double(t[c]) * inv_t - lse);
  }
  const float* s = student_logits + b * NC;
  const double lse = log_sum_exp(s, NC, inv_t);
  double kl = 0.0;
  for (int c = 0; c < NC; ++c) {
    const double log_q = double(s[c]) * inv_t - lse;  // never log(0), even if q underflows
    student_probs[b * NC + c] = float(exp(log_q));
    teacher_probs[b * NC + c] = float(mixture[c]);
    if (mixture[c] > 0.0) kl += mixture[c] * (log(mixture[c]) - log_q);  // 0 log 0 = 0
  }
  return float(t2 * kl);
}

// A teacher's confidence on one row of logits: max_c softmax(z / T) = 1 / sum_c exp((z_c - max z) / T).
DFL_HOST_DEVICE inline float teacher_confidence_row(const float* z, int NC, float T) {
  float zmax = z[0];
  for (int c = 1; c < NC; ++c) zmax = zmax < z[c] ? z[c] : zmax;
  double sum = 0.0;
  for (int c = 0; c < NC; ++c) sum += exp(double(z[c] - zmax) / T);
  return float(1.0 / sum);
}

// ---- batch norm folded into the layer before it (inference) --------------------------------------
// s = gamma / sqrt(var + eps), in double and rounded once; w' = w * s; b' = (b - mean) * s + beta.
DFL_HOST_DEVICE inline float batchnorm_fold_scale(float gamma, float running_var, float eps) {
  return float(double(gamma) / sqrt(double(running_var) + double(eps)));
}
DFL_HOST_DEVICE inline float batchnorm_fold_bias(const float* b_in, size_t oc, float running_mean, float scale,
                                                 float beta) {
  return ((b_in ? b_in[oc] : 0.f) - running_mean) * scale + beta;
}

// ---- argument rules of the kernels themselves (host) ----------------------------------------------
inline void check_channel_shuffle(int B, int C, int HW, int groups, const char* who) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, who, ": sizes must be positive");
  DFL_CHECK(groups > 0 && C % groups == 0, who, ": groups (", groups, ") must divide C (", C, ")");
}

}  // namespace dfl::kernel_math
