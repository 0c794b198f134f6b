// The CUDA backend's losses, the SGD step and the reductions a step reads back (cuda/bodies/loss.h, optim.h, reduce.h).
#include "cuda/cuda_backend.h"

namespace dfl::cuda {

// ---- losses --------------------------------------------------------------------------------------

void CudaBackend::cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B,
                                        int NC, float label_smoothing, double* loss_sum) {
  auto lock = enter();
  DFL_CHECK(B > 0 && NC > 0, "cross_entropy_forward: B and NC must be positive");
  DFL_CHECK(label_smoothing >= 0.f && label_smoothing <= 1.f,
            "cross_entropy_forward: label_smoothing must be in [0, 1]");
  launch_elementwise(stream_, CrossEntropyRow{losses, probs, logits, targets, B, NC, label_smoothing});
  launch_elementwise(stream_, RowSum{loss_sum, losses, size_t(B)});
}

void CudaBackend::cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                                         float label_smoothing, float scale) {
  run(CrossEntropyBackward{dlogits, probs, targets, B, NC, label_smoothing, scale});
}

void CudaBackend::ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs,
                                      const float* student_logits, const float* teacher_logits, const float* weights,
                                      int K, int B, int NC, float T, double* loss_sum) {
  auto lock = enter();
  DFL_CHECK(K >= 1, "ensemble_kl_forward: needs at least one teacher (K = ", K, ")");
  DFL_CHECK(B > 0 && NC > 0, "ensemble_kl_forward: B and NC must be positive");
  DFL_CHECK(T > 0.f, "ensemble_kl_forward: temperature must be > 0, got ", T);
  double* mixture = static_cast<double*>(scratch(sizeof(double) * size_t(B) * NC));
  launch_elementwise(stream_, EnsembleKlRow{losses, student_probs, teacher_probs, mixture, student_logits,
                                            teacher_logits, weights, K, B, NC, T});
  launch_elementwise(stream_, RowSum{loss_sum, losses, size_t(B)});
}

void CudaBackend::ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B,
                                       int NC, float T, float scale) {
  run(EnsembleKlBackward{dlogits, student_probs, teacher_probs, size_t(B) * NC, scale * T});
}

void CudaBackend::teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) {
  DFL_CHECK(K > 0 && B > 0 && NC > 0 && T > 0.f, "teacher_confidence: sizes and T must be positive");
  run(TeacherConfidence{weights, teacher_logits, size_t(K) * B, NC, T});
}

// ---- optimiser -----------------------------------------------------------------------------------

void CudaBackend::sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
                           const SgdConfig& cfg) {
  DFL_CHECK(momentum_buf || cfg.momentum == 0.f, "sgd_step: momentum > 0 needs a momentum buffer");
  run(SgdStep{params, momentum_buf, grads, decay_mask, n, cfg});
}

void CudaBackend::sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                                        const float* decay_mask, size_t n, const SgdConfig& cfg, int32_t* finite) {
  auto lock = enter();
  DFL_CHECK(momentum_buf || cfg.momentum == 0.f, "sgd_step_stays_finite: momentum > 0 needs a momentum buffer");
  reduce_into(SgdFiniteValue{params, momentum_buf, grads, decay_mask, cfg}, n, finite);
}

// ---- reductions ----------------------------------------------------------------------------------

void CudaBackend::sum_squares(const float* x, size_t n, double* out) {
  auto lock = enter();
  reduce_into(SquareValue{x}, n, out);
}

void CudaBackend::all_finite(const float* x, size_t n, int32_t* out) {
  auto lock = enter();
  reduce_into(FiniteValue{x}, n, out);
}

void CudaBackend::count_correct(const float* logits, const int32_t* labels, int B, int NC, int32_t* out) {
  auto lock = enter();
  reduce_into(CorrectValue{logits, labels, NC}, size_t(B), out);
}

}  // namespace dfl::cuda
