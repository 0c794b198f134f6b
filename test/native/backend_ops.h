// The kernels of cpu/kernels.h with the same signatures on HOST memory, run on the backend under
// test (dfl::test::backend()): each call uploads its inputs, runs the backend's kernel and downloads
// its outputs. This is how one test suite covers every backend: tests call ops::X where they would
// call cpu::X, and the runner repeats them per usable backend.
//   * Accumulating outputs (backward gradients, SGD state, running statistics) are uploaded first
//     and downloaded after, so "+=" semantics are tested too.
//   * Float outputs start as NaN on the device: a kernel that reads an output it should overwrite
//     fails its test.
//   * Convolution workspaces: the host `workspace` argument is ignored; the backend's own
//     workspace of conv2d_workspace_bytes is allocated and filled with NaN.
// Every kernel of native/core/backend_kernels.def has a wrapper here (test_op_table.cpp checks it).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/backend.h"
#include "core/rng.h"

namespace dfl::test::ops {

// The backend's workspace for a convolution of shape s (what the conv wrappers allocate).
size_t conv2d_workspace_bytes(const Conv2dShape& s);
void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                    float* workspace, Activation act = Activation::None);
void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, const Conv2dShape& s, float* workspace, bool overwrite_dinp = false);
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int IN, int OUT,
                    Activation act = Activation::None, const MathMode& math = {});
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int IN, int OUT, const MathMode& math = {});
void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                               float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                               int C, int HW, float momentum, float eps);
void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int B, int C, int HW, float eps);
void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                          const float* gamma, const float* save_mean, const float* save_invstd, int B, int C, int HW);
// The fused forwards: the plain forward then the activation (the backend may do both in one pass).
void batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                     float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                                     int C, int HW, float momentum, float eps, Activation act);
void batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma, const float* beta,
                                    const float* running_mean, const float* running_var, int B, int C, int HW,
                                    float eps, Activation act);
// dout[i] = 0 where the activation's output y has no gradient, in place.
void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act);
// The backend's fused form: dout masked by the activation of out (dout may be changed), dinp
// overwritten when asked.
void batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* out,
                                const float* inp, const float* gamma, const float* save_mean, const float* save_invstd,
                                int B, int C, int HW, Activation act, bool overwrite_dinp);
void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                    const float* beta, const float* running_mean, const float* running_var, int OC, size_t per_oc,
                    float eps);

void relu_forward(float* out, const float* inp, size_t n);
void relu_backward(float* dinp, const float* dout, const float* inp, size_t n);
void relu6_forward(float* out, const float* inp, size_t n);
void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n);
void add_forward(float* out, const float* a, const float* b, size_t n);
void add_forward_fused(float* out, const float* a, const float* b, size_t n, Activation act);
void add_backward(float* da, float* db, const float* dout, size_t n);
void accumulate(float* dst, const float* src, size_t n);

void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s);
void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s);
void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s);
void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s);
void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW);
void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW);

void concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n, int B, int HW);
void concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n, int B, int HW);
void split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B, int HW);
void split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n, int B, int HW,
                             bool overwrite = false);
void interleave_channels_forward(float* out, const float* const* inputs, int n, int cpg, int B, int HW);
void interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B, int HW,
                                  bool overwrite);
void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups);
void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups);

void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed);
void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n);

float cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                            float label_smoothing);
void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                            float label_smoothing, float scale);
float ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                          const float* teacher_logits, const float* weights, int K, int B, int NC, float T);
void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B, int NC,
                          float T, float scale);
void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T);

void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
              const SgdConfig& cfg);
bool sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads, const float* decay_mask,
                           size_t n, const SgdConfig& cfg);

// The draws stay on the host (dfl::augment_draws); the pixel work runs on the backend.
void augment_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, int pad, bool flip, const float* mean,
                   const float* std, Rng& rng);
void normalize_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, const float* mean, const float* std);
// dst (B, image_bytes) = the images indices[k] of src (N, image_bytes).
void gather_images(uint8_t* dst, const uint8_t* src, size_t N, const int32_t* indices, int B, size_t image_bytes);

double sum_squares(const float* x, size_t n);
bool all_finite(const float* x, size_t n);
int count_correct(const float* logits, const int32_t* labels, int B, int NC);
void add_scalar(float* x, float v, size_t n);

}  // namespace dfl::test::ops
