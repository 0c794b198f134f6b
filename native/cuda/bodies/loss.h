// Loss bodies, as cpu/loss.cpp: one row (sample) per index for the softmaxes (the per-row arithmetic
// is core/kernel_math.h's, the CPU's own), and elementwise backward. A row's teacher mixture p_T is
// accumulated in a double scratch row (the CPU's per-thread vector). The batch mean is summed by
// RowSum in sample order, as the CPU does.
#pragma once
#include <cmath>

#include "core/kernel_math.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

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
    const int t = targets[b];
    if (t < 0 || t >= NC) {
      losses[b] = __builtin_nanf("");
      return;
    }
    losses[b] = kernel_math::cross_entropy_row(probs + b * NC, logits + b * NC, t, NC, label_smoothing);
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
    const kernel_math::SmoothedTarget y = kernel_math::smoothed_target(label_smoothing, NC);
    dlogits[i] += scale * (probs[i] - (c == t ? y.on : y.off));
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
    losses[b] = kernel_math::ensemble_kl_row(student_probs, teacher_probs, mixture + b * NC, student_logits,
                                             teacher_logits, weights, K, B, NC, T, b);
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
    weights[r] = kernel_math::teacher_confidence_row(teacher_logits + r * NC, NC, T);
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
