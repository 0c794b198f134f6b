// Loss bodies, as cpu/loss.cpp: one row (sample) per index for the softmaxes, in double, and
// elementwise backward. A row's teacher mixture p_T is accumulated in a double scratch row (the
// CPU's per-thread vector). The batch mean is summed by RowSum in sample order, as the CPU does.
#pragma once
#include <cmath>

#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

// log(sum_c exp(x[c] * inv_t)), shifted by the max.
DFL_HOST_DEVICE inline double log_sum_exp(const float* x, int NC, double inv_t) {
  double m = double(x[0]) * inv_t;
  for (int c = 1; c < NC; ++c) m = fmax(m, double(x[c]) * inv_t);
  double s = 0.0;
  for (int c = 0; c < NC; ++c) s += exp(double(x[c]) * inv_t - m);
  return m + log(s);
}

// losses[b] and probs[b, :]; a target outside [0, NC) (the addon refuses those) gives a NaN loss.
struct CrossEntropyRow {
  float* losses;
  float* probs;
  const float* logits;
  const int32_t* targets;
  int B, NC;
  float label_smoothing;
  DFL_HOST_DEVICE size_t count() const { return size_t(B); }
  DFL_HOST_DEVICE void operator()(size_t b) const {
    const float* x = logits + b * NC;
    float* p = probs + b * NC;
    const double lse = log_sum_exp(x, NC, 1.0);
    double sum_logp = 0.0;
    for (int c = 0; c < NC; ++c) {
      const double lp = double(x[c]) - lse;
      sum_logp += lp;
      p[c] = float(exp(lp));
    }
    const int t = targets[b];
    if (t < 0 || t >= NC) {
      losses[b] = __builtin_nanf("");
      return;
    }
    const double eps = label_smoothing;
    losses[b] = float(-(1.0 - eps) * (double(x[t]) - lse) - eps / NC * sum_logp);
  }
};

// dlogits += scale * (probs - smoothed one-hot); rows with an invalid target are left alone.
struct CrossEntropyBackward {
  float* dlogits;
  const float* probs;
  const int32_t* targets;
  int B, NC;
  float label_smoothing, scale;
  DFL_HOST_DEVICE size_t count() const { return size_t(B) * NC; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int t = targets[i / size_t(NC)], c = int(i % size_t(NC));
    if (t < 0 || t >= NC) return;
    const float off = label_smoothing / float(NC), on = 1.f - label_smoothing + off;
    dlogits[i] += scale * (probs[i] - (c == t ? on : off));
  }
};

// T^2 KL(p_T || q) per sample with p_T the (weighted) mixture of the teachers' tempered softmaxes.
struct EnsembleKlRow {
  float* losses;
  float* student_probs;
  float* teacher_probs;
  double* mixture;  // (B, NC) scratch
  const float* student_logits;
  const float* teacher_logits;  // (K, B, NC)
  const float* weights;         // (K, B) or null (uniform)
  int K, B, NC;
  float T;
  DFL_HOST_DEVICE size_t count() const { return size_t(B); }
  DFL_HOST_DEVICE void operator()(size_t b) const {
    const double inv_t = 1.0 / double(T), t2 = double(T) * double(T);
    double* pt = mixture + b * NC;
    for (int c = 0; c < NC; ++c) pt[c] = 0.0;
    double wsum = 0.0;
    for (int k = 0; k < K; ++k) wsum += weights ? double(weights[size_t(k) * B + b]) : 1.0;
    for (int k = 0; k < K; ++k) {
      const double w = (weights ? double(weights[size_t(k) * B + b]) : 1.0) / wsum;
      if (w == 0.0) continue;
      const float* t = teacher_logits + (size_t(k) * B + b) * NC;
      const double lse = log_sum_exp(t, NC, inv_t);
      for (int c = 0; c < NC; ++c) pt[c] += w * exp(double(t[c]) * inv_t - lse);
    }
    const float* s = student_logits + b * NC;
    const double lse = log_sum_exp(s, NC, inv_t);
    double kl = 0.0;
    for (int c = 0; c < NC; ++c) {
      const double log_q = double(s[c]) * inv_t - lse;
      student_probs[b * NC + c] = float(exp(log_q));
      teacher_probs[b * NC + c] = float(pt[c]);
      if (pt[c] > 0.0) kl += pt[c] * (log(pt[c]) - log_q);  // 0 log 0 = 0
    }
    losses[b] = float(t2 * kl);
  }
};

// dlogits += scale * T * (q - p_T).
struct EnsembleKlBackward {
  float* dlogits;
  const float* student_probs;
  const float* teacher_probs;
  size_t n;
  float k;  // scale * T
  DFL_HOST_DEVICE size_t count() const { return n; }
  DFL_HOST_DEVICE void operator()(size_t i) const { dlogits[i] += k * (student_probs[i] - teacher_probs[i]); }
};

// weights[r] = max_c softmax(z_r / T) = 1 / sum_c exp((z_c - max z) / T), r over (K, B).
struct TeacherConfidence {
  float* weights;
  const float* teacher_logits;
  size_t rows;
  int NC;
  float T;
  DFL_HOST_DEVICE size_t count() const { return rows; }
  DFL_HOST_DEVICE void operator()(size_t r) const {
    const float* z = teacher_logits + r * NC;
    float zmax = z[0];
    for (int c = 1; c < NC; ++c) zmax = z[c] > zmax ? z[c] : zmax;
    double sum = 0.0;
    for (int c = 0; c < NC; ++c) sum += exp(double(z[c] - zmax) / T);
    weights[r] = float(1.0 / sum);
  }
};

// The sum of n floats in index order, in double, on one thread (the batch mean of a loss; n = B is
// small). Index 0 only.
struct RowSum {
  double* sum_out;
  const float* x;
  size_t n;
  DFL_HOST_DEVICE size_t count() const { return 1; }
  DFL_HOST_DEVICE void operator()(size_t) const {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += x[i];
    *sum_out = s;
  }
};

}  // namespace dfl::cuda_bodies
