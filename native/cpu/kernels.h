// The CPU reference kernels: the specification of every operation dfl-native computes. The CPU
// backend (cpu/cpu_backend.cpp) runs them; every other backend (native/cuda/) is checked against
// them. Shapes and settings shared with the core live in core/shapes.h.
//
// Conventions (after llm.c):
//   * Tensors are float32, NCHW, contiguous. Dimension letters: B batch, C input channels,
//     OC output channels, H/W input height/width, OH/OW output height/width, KH/KW kernel size,
//     HW = H*W, NC number of classes, K number of teachers.
//   * Forward functions: output pointer(s) first, then inputs, then sizes. They overwrite outputs.
//   * Backward functions ACCUMULATE (+=) into every gradient buffer (dinp, dweight, dbias, ...): the
//     caller zeroes gradients once per step, and a tensor read by two layers gets both contributions.
//     A nullable gradient pointer means "not needed" and is skipped.
//   * Parallelism follows core/parallel.h: only over independent outputs, so results are bitwise
//     identical for any thread count.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/rng.h"
#include "core/shapes.h"

namespace dfl::cpu {

// ---------------------------------------------------------------------------------------------
// GEMM (row-major): C = alpha * op(A) * op(B) + beta * C, op(A) is (M,K), op(B) is (K,N), C (M,N).
// trans_a: A is stored (K,M); trans_b: B is stored (N,K). lda/ldb/ldc are row strides.
// beta == 0 means C is not read (may hold garbage/NaN).
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc);

// ---------------------------------------------------------------------------------------------
// conv2d, PyTorch semantics (cross-correlation, zero padding, groups); Conv2dShape in core/shapes.h.
// Scratch floats the caller must provide to forward/backward (im2col buffers, one pair per thread
// slot; bounded by the hardware threads, not by B beyond that).
size_t conv2d_workspace_floats(const Conv2dShape& s);
// out (B,OC,OH,OW) = act(conv + bias); inp (B,C,H,W); weight (OC, C/groups, KH, KW); bias (OC) or nullptr.
void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                    float* workspace, Activation act = Activation::None);
// dinp (B,C,H,W) or nullptr; dweight like weight; dbias (OC) or nullptr; dout (B,OC,OH,OW). All +=,
// except dinp with overwrite_dinp: dinp = the input gradient (its old contents are not read; the
// executor's first writer of a gradient slot skips zeroing it and a read-modify-write pass).
void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, const Conv2dShape& s, float* workspace, bool overwrite_dinp = false);

// ---------------------------------------------------------------------------------------------
// linear: out (B,OUT) = inp (B,IN) @ weight^T + bias; weight (OUT,IN) as in PyTorch; bias nullable.
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int IN, int OUT);
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int IN, int OUT);

// ---------------------------------------------------------------------------------------------
// batchnorm2d over (B,C,HW), PyTorch semantics: batch statistics use the biased variance for
// normalising; running_var is updated with the UNBIASED variance: r = (1-momentum)*r + momentum*x.
// save_mean/save_invstd (C) are written by training forward for backward. gamma/beta may be
// nullptr (1 and 0); running_mean/running_var may be nullptr (no update). Training needs B*HW > 1.
// act: applied to the output in the same pass (a ReLU/ReLU6 fused into the BN).
void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                               float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                               int C, int HW, float momentum, float eps, Activation act = Activation::None);
void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int B, int C, int HW, float eps,
                              Activation act = Activation::None);
// Backward of the TRAINING forward (batch statistics). dinp += the input gradient.
// With a fused activation (act != None), out is the forward's output and dout is taken as masked
// where the activation passes no gradient (the mask is applied on the fly; dout is not changed).
// overwrite_dinp: dinp = the input gradient (its old contents are not read).
void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                          const float* gamma, const float* save_mean, const float* save_invstd, int B, int C, int HW,
                          const float* out = nullptr, Activation act = Activation::None, bool overwrite_dinp = false);

// ---------------------------------------------------------------------------------------------
// Elementwise activations over n floats. Backward reads the forward INPUT (inp).
void relu_forward(float* out, const float* inp, size_t n);
void relu_backward(float* dinp, const float* dout, const float* inp, size_t n);
void relu6_forward(float* out, const float* inp, size_t n);
void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n);

// The backward of an activation fused into the layer before it, in place, from its OUTPUT y:
// dout[i] = 0 where y <= 0 (ReLU), or y <= 0 or y >= 6 (ReLU6); unchanged elsewhere (NaN passes).
// Same masks as relu_backward/relu6_backward on the input, since y > 0 iff x > 0 and 0 < y < 6
// iff 0 < x < 6.
void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act);

// Residual add: out = a + b (n floats); backward adds dout into da and db.
void add_forward(float* out, const float* a, const float* b, size_t n);
void add_backward(float* da, float* db, const float* dout, size_t n);

// ---------------------------------------------------------------------------------------------
// Pooling, PyTorch semantics (floor mode; avg pool counts padding, count_include_pad=True).
// argmax (B,C,OH,OW) holds the flat index h*W+w of the max inside its (H,W) plane (first max wins);
// it may be nullptr in forward (inference: no backward follows).
void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s);
void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s);
void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s);
void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s);
// Global average pool: out (B,C) = mean over HW of inp (B,C,HW).
void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW);
void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW);

// ---------------------------------------------------------------------------------------------
// Channel plumbing for ShuffleNetV2 and friends. All tensors (B, C_i, HW).
// concat: out (B, sum C_i, HW) from n inputs with channels[i].
void concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n, int B, int HW);
// dinputs[i] may be nullptr.
void concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n, int B, int HW);
// split is concat's adjoint: outputs[i] (B, channels[i], HW) from inp (B, sum C_i, HW).
// outputs[i] / doutputs[i] may be nullptr (that chunk is not needed / has no gradient).
void split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B, int HW);
void split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n, int B, int HW,
                             bool overwrite = false);
// Concat of n inputs of cpg channels then a channel shuffle of n groups, in one copy:
// out[b][j*n + k] = inputs[k][b][j]. Backward: dinputs[k][b][j] (+)= dout[b][j*n + k] (overwrite: =);
// null dinputs are skipped.
void interleave_channels_forward(float* out, const float* const* inputs, int n, int cpg, int B, int HW);
void interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B, int HW,
                                  bool overwrite);
// Channel shuffle (ShuffleNet): view C as (groups, C/groups), transpose to (C/groups, groups).
// out channel j*groups + g  <-  inp channel g*(C/groups) + j.
void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups);
void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups);

// ---------------------------------------------------------------------------------------------
// Dropout (inverted): mask[i] = 0 with probability p, else 1/(1-p); out = inp * mask.
// Draw rule (counter-based, core/counter_rng.h): element i is dropped when
// counter_uniform(seed, i) < p. The mask depends only on (seed, i): never on threads, launch order
// or the backend, so every backend draws the same mask.
void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed);
void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n);

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy with optional label smoothing eps (PyTorch: target distribution is
// (1-eps)*onehot + eps/NC). Returns the MEAN loss over B; losses (B) gets per-sample values;
// probs (B,NC) gets softmax(logits) for backward. targets in [0, NC) (checked; throws otherwise).
float cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                            float label_smoothing);
// The sum of per-sample losses (B) in index order, in double: the loss kernels return float(sum / B).
double loss_sum(const float* losses, int B);
// dlogits += scale * (probs - target_distribution); scale is typically dloss/B.
void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                            float label_smoothing, float scale);

// Ensemble-teacher distillation, fused with its softmaxes:
//   p_T[b]  = sum_k w[k,b] * softmax(teacher_logits[k,b] / T)   (w normalised per sample here:
//             the kernel divides by sum_k w[k,b], which must be > 0)
//   q[b]    = softmax(student_logits[b] / T)
//   loss[b] = T^2 * KL(p_T[b] || q[b]) = T^2 * sum_c p_T log(p_T / q)   (0 log 0 = 0)
// Returns the mean of loss over B. teacher_logits (K,B,NC); weights (K,B) or nullptr = uniform.
// student_probs (B,NC) receives q, teacher_probs (B,NC) receives p_T, both kept for backward.
float ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                          const float* teacher_logits, const float* weights, int K, int B, int NC, float T);
// d loss[b] / d student_logits[b] = T * (q - p_T). dlogits += scale * T * (q - p_T).
void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B, int NC,
                          float T, float scale);

// ---------------------------------------------------------------------------------------------
// SGD with momentum over one flat buffer (SgdConfig in core/shapes.h has the update rule).
// decay_mask (n) or nullptr: per-element wd multiplier (0 excludes, e.g. BN and biases).
void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
              const SgdConfig& cfg);
// True when sgd_step with the same arguments would leave every parameter and momentum value
// finite (the same arithmetic, nothing written).
bool sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads, const float* decay_mask,
                           size_t n, const SgdConfig& cfg);

// ---------------------------------------------------------------------------------------------
// Augmentation of a uint8 batch into normalised float NCHW, in two halves so a device can run
// the pixel work while the host keeps the draws (dfl::augment_draws, core/augment_draws.h):
//   augment_apply: out[b,c,y,x] = norm_c(inp[b,c, y + dy - pad, x' + dx - pad]), x' = f ? W-1-x : x
//     (crop, then mirror the crop, as torchvision's RandomCrop then RandomHorizontalFlip); source
//     pixels outside the image are the zero padding; norm_c(v) = (v/255 - mean[c]) / std[c].
// augment_batch = draws then apply. inp (B,C,H,W) uint8; out (B,C,H,W) float; mean/std (C).
void augment_apply(float* out, const uint8_t* inp, int B, int C, int H, int W, int pad, const AugmentDraw* draws,
                   const float* mean, const float* std);
void augment_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, int pad, bool flip, const float* mean,
                   const float* std, Rng& rng);
// Normalisation only (evaluation).
void normalize_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, const float* mean, const float* std);

// ---------------------------------------------------------------------------------------------
// Inference folding of a BatchNorm into the conv/linear before it, per output channel oc:
//   s = gamma[oc] / sqrt(var[oc] + eps)   (in double, rounded once)
//   w_out[oc, :] = w_in[oc, :] * s;   b_out[oc] = (b_in[oc] - mean[oc]) * s + beta[oc]
// w (OC, per_oc); b_in nullable (0). Outputs may not alias inputs.
void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                    const float* beta, const float* running_mean, const float* running_var, int OC, size_t per_oc,
                    float eps);
// Each teacher's confidence per sample: weights[k,b] = max_c softmax(teacher_logits[k,b] / T)
// = 1 / sum_c exp((z_c - max z) / T), summed in double. teacher_logits (K,B,NC), weights (K,B).
void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T);

// ---------------------------------------------------------------------------------------------
// Small helpers of the training step.
// dst += src (n floats): the identity's backward.
void accumulate(float* dst, const float* src, size_t n);
// x[i] += v (n floats).
void add_scalar(float* x, float v, size_t n);
// sum of x^2 in double, in index order.
double sum_squares(const float* x, size_t n);
bool all_finite(const float* x, size_t n);
// Rows of logits (B,NC) whose first maximum is at labels[b].
int count_correct(const float* logits, const int32_t* labels, int B, int NC);

}  // namespace dfl::cpu
