// Softmax cross-entropy (with label smoothing) and the fused ensemble-teacher KL. Rows are
// independent, so both run parallel over samples; the batch mean is summed afterwards on one thread
// in sample order. Log-softmaxes are computed in double as x - max - log(sum exp(x - max)).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

int64_t row_grain(int NC) { return std::max<int64_t>(1, 4096 / std::max(NC, 1)); }

void check_targets(const int32_t* targets, int B, int NC, const char* who) {
  for (int b = 0; b < B; ++b)
    DFL_CHECK(targets[b] >= 0 && targets[b] < NC, who, ": target ", targets[b], " at batch position ",
              b, " is outside [0, ", NC, ")");
}

// log(sum_c exp(x[c] * inv_t)), shifted by the max so nothing overflows.
double log_sum_exp(const float* x, int NC, double inv_t) {
  double m = double(x[0]) * inv_t;
  for (int c = 1; c < NC; ++c) m = std::max(m, double(x[c]) * inv_t);
  double s = 0.0;
  for (int c = 0; c < NC; ++c) s += std::exp(double(x[c]) * inv_t - m);
  return m + std::log(s);
}

}  // namespace

double loss_sum(const float* losses, int B) {
  double total = 0.0;
  for (int b = 0; b < B; ++b) total += losses[b];
  return total;
}

float cross_entropy_forward(float* losses, float* probs, const float* logits,
                            const int32_t* targets, int B, int NC, float label_smoothing) {
  DFL_CHECK(B > 0 && NC > 0, "cross_entropy_forward: B and NC must be positive");
  DFL_CHECK(label_smoothing >= 0.f && label_smoothing <= 1.f,
            "cross_entropy_forward: label_smoothing must be in [0, 1], got ", label_smoothing);
  check_targets(targets, B, NC, "cross_entropy_forward");
  const double eps = label_smoothing;
  parallel_for(B, row_grain(NC), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* x = logits + b * NC;
      float* p = probs + b * NC;
      const double lse = log_sum_exp(x, NC, 1.0);
      double sum_logp = 0.0;  // sum_c log p_c, for the smoothed part
      for (int c = 0; c < NC; ++c) {
        const double lp = double(x[c]) - lse;
        sum_logp += lp;
        p[c] = float(std::exp(lp));
      }
      const double lp_t = double(x[targets[b]]) - lse;
      // -sum_c ((1-eps) onehot_c + eps/NC) log p_c
      losses[b] = float(-(1.0 - eps) * lp_t - eps / NC * sum_logp);
    }
  });
  return float(loss_sum(losses, B) / B);
}

void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B,
                            int NC, float label_smoothing, float scale) {
  DFL_CHECK(B > 0 && NC > 0, "cross_entropy_backward: B and NC must be positive");
  check_targets(targets, B, NC, "cross_entropy_backward");
  const float off = label_smoothing / float(NC);       // target prob of a non-target class
  const float on = 1.f - label_smoothing + off;        // target prob of the target class
  parallel_for(B, row_grain(NC), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* p = probs + b * NC;
      float* d = dlogits + b * NC;
      const int t = targets[b];
      for (int c = 0; c < NC; ++c) d[c] += scale * (p[c] - (c == t ? on : off));
    }
  });
}

float ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs,
                          const float* student_logits, const float* teacher_logits,
                          const float* weights, int K, int B, int NC, float T) {
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
        DFL_CHECK(w >= 0.f && std::isfinite(w), "ensemble_kl_forward: teacher weight [", k, ", ", b,
                  "] = ", w, " must be finite and >= 0");
        s += w;
      }
      DFL_CHECK(s > 0.0, "ensemble_kl_forward: teacher weights for sample ", b, " sum to ", s,
                " (must be > 0)");
    }
  }
  const double inv_t = 1.0 / double(T), t2 = double(T) * double(T);
  parallel_for(B, row_grain(NC * (K + 1)), [&](int64_t b0, int64_t b1) {
    std::vector<double> pt(size_t(NC), 0.0);
    for (int64_t b = b0; b < b1; ++b) {
      // Teacher mixture in double: p_T = sum_k (w_k / sum w) softmax(t_k / T).
      std::fill(pt.begin(), pt.end(), 0.0);
      double wsum = 0.0;
      for (int k = 0; k < K; ++k) wsum += weights ? double(weights[size_t(k) * B + b]) : 1.0;
      for (int k = 0; k < K; ++k) {
        const double w = (weights ? double(weights[size_t(k) * B + b]) : 1.0) / wsum;
        if (w == 0.0) continue;
        const float* t = teacher_logits + (size_t(k) * B + b) * NC;
        const double lse = log_sum_exp(t, NC, inv_t);
        for (int c = 0; c < NC; ++c) pt[c] += w * std::exp(double(t[c]) * inv_t - lse);
      }
      const float* s = student_logits + b * NC;
      const double lse = log_sum_exp(s, NC, inv_t);
      double kl = 0.0;
      float* q_out = student_probs + b * NC;
      float* p_out = teacher_probs + b * NC;
      for (int c = 0; c < NC; ++c) {
        const double log_q = double(s[c]) * inv_t - lse;  // never log(0), even if q underflows
        q_out[c] = float(std::exp(log_q));
        p_out[c] = float(pt[c]);
        if (pt[c] > 0.0) kl += pt[c] * (std::log(pt[c]) - log_q);  // 0 log 0 = 0
      }
      losses[b] = float(t2 * kl);
    }
  });
  return float(loss_sum(losses, B) / B);
}

void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs,
                          int B, int NC, float T, float scale) {
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
      const float* z = teacher_logits + r * NC;
      const float zmax = *std::max_element(z, z + NC);
      double sum = 0.0;
      for (int c = 0; c < NC; ++c) sum += std::exp(double(z[c] - zmax) / T);
      weights[r] = static_cast<float>(1.0 / sum);
    }
  });
}

}  // namespace dfl::cpu
