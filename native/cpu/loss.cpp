// Softmax cross-entropy (with label smoothing) and the fused ensemble-teacher KL. Rows are
// independent, so both run parallel over samples; the batch mean is summed afterwards on one thread
// in sample order. The per-row arithmetic (log-softmaxes in double as x - max - log(sum exp(x - max)))
// is core/kernel_math.h's, shared with the CUDA backend.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "core/kernel_math.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

int64_t row_grain(int NC) { return std::max<int64_t>(1, 4096 / std::max(NC, 1)); }

void check_targets(const int32_t* targets, int B, int NC, const char* who) {
  for (int b = 0; b < B; ++b)
    DFL_CHECK(targets[b] >= 0 && targets[b] < NC, who, ": target ", targets[b], " at batch position ", b,
              " is outside [0, ", NC, ")");
}

}  // namespace

double loss_sum(const float* losses, int B) {
  double total = 0.0;
  for (int b = 0; b < B; ++b) total += losses[b];
  return total;
}

float cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                            float label_smoothing) {
  DFL_CHECK(B > 0 && NC > 0, "cross_entropy_forward: B and NC must be positive");
  DFL_CHECK(label_smoothing >= 0.f && label_smoothing <= 1.f,
            "cross_entropy_forward: label_smoothing must be in [0, 1], got ", label_smoothing);
  check_targets(targets, B, NC, "cross_entropy_forward");
  const double eps = label_smoothing;
  parallel_for(B, row_grain(NC), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      losses[b] = kernel_math::cross_entropy_row(probs + b * NC, logits + b * NC, targets[b], NC, eps);
    }
  });
  return float(loss_sum(losses, B) / B);
}

void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                            float label_smoothing, float scale) {
  DFL_CHECK(B > 0 && NC > 0, "cross_entropy_backward: B and NC must be positive");
  check_targets(targets, B, NC, "cross_entropy_backward");
  const kernel_math::SmoothedTarget y = kernel_math::smoothed_target(label_smoothing, NC);
  parallel_for(B, row_grain(NC), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* p = probs + b * NC;
      float* d = dlogits + b * NC;
      const int t = targets[b];
      for (int c = 0; c < NC; ++c) d[c] += scale * (p[c] - (c == t ? y.on : y.off));
    }
  });
}

float ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                          const float* teacher_logits, const float* weights, int K, int B, int NC, float T) {
  DFL_CHECK(K >= 1, "ensemble_kl_forward: needs at least one teacher (K = ", K, ")");
  DFL_CHECK(B > 0 && NC > 0, "ensemble_kl_forward: B and NC must be positive");
  DFL_CHECK(T > 0.f && std::isfinite(T), "ensemble_kl_forward: temperature must be > 0, got ", T);
  if (weights) {
    // Validate everything before writing anything. Negative weights would make p_T a
    // non-distribution (log of a negative), so they are rejected too.
    for (int b = 0; b < B; ++b) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) {
        const float w = weights[size_t(k) * B + b];
        DFL_CHECK(w >= 0.f && std::isfinite(w), "ensemble_kl_forward: teacher weight [", k, ", ", b, "] = ", w,
                  " must be finite and >= 0");
        s += w;
      }
      DFL_CHECK(s > 0.0, "ensemble_kl_forward: teacher weights for sample ", b, " sum to ", s, " (must be > 0)");
    }
  }
  parallel_for(B, row_grain(NC * (K + 1)), [&](int64_t b0, int64_t b1) {
    std::vector<double> mixture(static_cast<size_t>(NC));  // this thread's p_T row
    for (int64_t b = b0; b < b1; ++b)
      losses[b] = kernel_math::ensemble_kl_row(student_probs, teacher_probs, mixture.data(), student_logits,
                                               teacher_logits, weights, K, B, NC, T, size_t(b));
  });
  return float(loss_sum(losses, B) / B);
}

void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B, int NC,
                          float T, float scale) {
  DFL_CHECK(B > 0 && NC > 0, "ensemble_kl_backward: B and NC must be positive");
  const float k = scale * T;
  const int64_t n = int64_t(B) * NC;
  parallel_for(n, 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dlogits[i] += k * (student_probs[i] - teacher_probs[i]);
  });
}

void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) {
  DFL_CHECK(K > 0 && B > 0 && NC > 0 && T > 0.f, "teacher_confidence: sizes and T must be positive");
  parallel_for(int64_t(K) * B, row_grain(NC), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      weights[r] = kernel_math::teacher_confidence_row(teacher_logits + r * NC, NC, T);
    }
  });
}

}  // namespace dfl::cpu
