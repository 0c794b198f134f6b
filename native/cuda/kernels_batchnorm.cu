// The CUDA backend's batch norm: training statistics, evaluation, backward and folding (cuda/bodies/batchnorm.h).
#include "cuda/cuda_backend.h"

namespace dfl::cuda {

// ---- batch norm ----------------------------------------------------------------------------------

void CudaBackend::batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                            float* running_var, const float* inp, const float* gamma, const float* beta,
                                            int B, int C, int HW, float momentum, float eps) {
  batchnorm2d_forward_train_fused(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW,
                                  momentum, eps, Activation::None);
}

// The fused activation rides in the normalisation's pass (no separate launch over the output).
void CudaBackend::batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                                  float* running_var, const float* inp, const float* gamma,
                                                  const float* beta, int B, int C, int HW, float momentum, float eps,
                                                  Activation act) {
  auto lock = enter();
  DFL_CHECK(B > 0 && C > 0 && HW > 0 && int64_t(B) * HW > 1,
            "batchnorm2d_forward_train: needs positive sizes and more than one value per channel");
  const int S = batchnorm_slices(B, C, HW);
  Sum2* partials = static_cast<Sum2*>(scratch(sizeof(Sum2) * size_t(C) * S + sizeof(Scale) * size_t(C)));
  Scale* coef = reinterpret_cast<Scale*>(partials + size_t(C) * S);
  launch_rows(stream_, BatchNormMoments{partials, inp, B, C, HW, S});
  launch_rows(stream_, BatchNormTrainStats{coef, save_mean, save_invstd, running_mean, running_var, partials, gamma,
                                           beta, B, C, HW, S, momentum, eps});
  launch_elementwise(stream_, BatchNormApply{out, inp, coef, size_t(B) * C * HW, C, HW, act});
}

void CudaBackend::batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                                           const float* running_mean, const float* running_var, int B, int C, int HW,
                                           float eps) {
  batchnorm2d_forward_eval_fused(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps, Activation::None);
}

void CudaBackend::batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma, const float* beta,
                                                 const float* running_mean, const float* running_var, int B, int C,
                                                 int HW, float eps, Activation act) {
  auto lock = enter();
  launch_elementwise(
      stream_, BatchNormEval{out, inp, gamma, beta, running_mean, running_var, size_t(B) * C * HW, C, HW, eps, act});
}

void CudaBackend::batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                                       const float* gamma, const float* save_mean, const float* save_invstd, int B,
                                       int C, int HW) {
  auto lock = enter();
  if (!dinp && !dgamma && !dbeta) return;
  const int S = batchnorm_slices(B, C, HW);
  Sum2* partials = static_cast<Sum2*>(scratch(sizeof(Sum2) * size_t(C) * S + sizeof(BatchNormGradCoef) * size_t(C)));
  auto* coef = reinterpret_cast<BatchNormGradCoef*>(partials + size_t(C) * S);
  launch_rows(stream_, BatchNormGradSums{partials, dout, inp, save_mean, save_invstd, B, C, HW, S});
  launch_rows(stream_, BatchNormGradTotals{coef, dgamma, dbeta, partials, gamma, save_mean, save_invstd, B, C, HW, S});
  if (dinp) launch_elementwise(stream_, BatchNormGradInput{dinp, dout, inp, coef, size_t(B) * C * HW, C, HW});
}

void CudaBackend::fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                                 const float* beta, const float* running_mean, const float* running_var, int OC,
                                 size_t per_oc, float eps) {
  auto lock = enter();
  DFL_CHECK(OC > 0 && per_oc > 0 && eps > 0.f, "fold_batchnorm: sizes and eps must be positive");
  launch_elementwise(stream_,
                     FoldBatchNorm{w_out, b_out, w_in, b_in, gamma, beta, running_mean, running_var, OC, per_oc, eps});
}

// The default's activation mask then the plain backward (two passes; no fused form yet).
void CudaBackend::batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* out,
                                             const float* inp, const float* gamma, const float* save_mean,
                                             const float* save_invstd, int B, int C, int HW, Activation act,
                                             bool overwrite_dinp) {
  Backend::batchnorm2d_backward_fused(dinp, dgamma, dbeta, dout, out, inp, gamma, save_mean, save_invstd, B, C, HW, act,
                                      overwrite_dinp);
}

}  // namespace dfl::cuda
