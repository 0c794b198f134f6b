// The CPU reference kernels: the specification of every operation dfl-native computes. The CUDA
// backend (native/cuda/) will mirror these signatures and is checked against them.
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

namespace dfl::cpu {

// ---------------------------------------------------------------------------------------------
// GEMM (row-major): C = alpha * op(A) * op(B) + beta * C, op(A) is (M,K), op(B) is (K,N), C (M,N).
// trans_a: A is stored (K,M); trans_b: B is stored (N,K). lda/ldb/ldc are row strides.
// beta == 0 means C is not read (may hold garbage/NaN).
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// ---------------------------------------------------------------------------------------------
// conv2d, PyTorch semantics (cross-correlation, zero padding, groups).
struct Conv2dShape {
  int B, C, H, W;       // input (B,C,H,W)
  int OC;               // output channels
  int KH, KW;           // kernel size
  int stride_h, stride_w;
  int pad_h, pad_w;
  int groups;           // C % groups == 0 and OC % groups == 0; groups == C == OC is depthwise
  int OH() const { return (H + 2 * pad_h - KH) / stride_h + 1; }
  int OW() const { return (W + 2 * pad_w - KW) / stride_w + 1; }
};
// Scratch floats the caller must provide to forward/backward (im2col buffers, one pair per thread
// slot; bounded by the hardware threads, not by B beyond that).
size_t conv2d_workspace_floats(const Conv2dShape& s);
// out (B,OC,OH,OW); inp (B,C,H,W); weight (OC, C/groups, KH, KW); bias (OC) or nullptr.
void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias,
                    const Conv2dShape& s, float* workspace);
// dinp (B,C,H,W) or nullptr; dweight like weight; dbias (OC) or nullptr; dout (B,OC,OH,OW).
void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, const Conv2dShape& s, float* workspace);

// ---------------------------------------------------------------------------------------------
// linear: out (B,OUT) = inp (B,IN) @ weight^T + bias; weight (OUT,IN) as in PyTorch; bias nullable.
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                    int IN, int OUT);
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int IN, int OUT);

// ---------------------------------------------------------------------------------------------
// batchnorm2d over (B,C,HW), PyTorch semantics: batch statistics use the biased variance for
// normalising; running_var is updated with the UNBIASED variance: r = (1-momentum)*r + momentum*x.
// save_mean/save_invstd (C) are written by training forward for backward. gamma/beta may be
// nullptr (1 and 0); running_mean/running_var may be nullptr (no update). Training needs B*HW > 1.
void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd,
                               float* running_mean, float* running_var, const float* inp,
                               const float* gamma, const float* beta, int B, int C, int HW,
                               float momentum, float eps);
void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int B, int C,
                              int HW, float eps);
// Backward of the TRAINING forward (batch statistics).
void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                          const float* inp, const float* gamma, const float* save_mean,
                          const float* save_invstd, int B, int C, int HW);

// ---------------------------------------------------------------------------------------------
// Elementwise activations over n floats. Backward reads the forward INPUT (inp).
void relu_forward(float* out, const float* inp, size_t n);
void relu_backward(float* dinp, const float* dout, const float* inp, size_t n);
void relu6_forward(float* out, const float* inp, size_t n);
void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n);

// Residual add: out = a + b (n floats); backward adds dout into da and db.
void add_forward(float* out, const float* a, const float* b, size_t n);
void add_backward(float* da, float* db, const float* dout, size_t n);

// ---------------------------------------------------------------------------------------------
// Pooling, PyTorch semantics (floor mode; avg pool counts padding, count_include_pad=True).
struct Pool2dShape {
  int B, C, H, W;
  int KH, KW, stride_h, stride_w, pad_h, pad_w;
  int OH() const { return (H + 2 * pad_h - KH) / stride_h + 1; }
  int OW() const { return (W + 2 * pad_w - KW) / stride_w + 1; }
};
// argmax (B,C,OH,OW) holds the flat index h*W+w of the max inside its (H,W) plane (first max wins).
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
void concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n,
                             int B, int HW);
// dinputs[i] may be nullptr.
void concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n,
                              int B, int HW);
// split is concat's adjoint: outputs[i] (B, channels[i], HW) from inp (B, sum C_i, HW).
// outputs[i] / doutputs[i] may be nullptr (that chunk is not needed / has no gradient).
void split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n,
                            int B, int HW);
void split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n,
                             int B, int HW);
// Channel shuffle (ShuffleNet): view C as (groups, C/groups), transpose to (C/groups, groups).
// out channel j*groups + g  <-  inp channel g*(C/groups) + j.
void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups);
void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups);

// ---------------------------------------------------------------------------------------------
// Dropout (inverted): mask[i] = 0 with probability p, else 1/(1-p); out = inp * mask.
// Draw rule: one rng.uniform() per element in index order, dropped when u < p (drawn even for
// p == 0, so the stream advances the same for any p); single-threaded, so the mask depends only on
// the rng state.
void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, Rng& rng);
void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n);

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy with optional label smoothing eps (PyTorch: target distribution is
// (1-eps)*onehot + eps/NC). Returns the MEAN loss over B; losses (B) gets per-sample values;
// probs (B,NC) gets softmax(logits) for backward. targets in [0, NC) (checked; throws otherwise).
float cross_entropy_forward(float* losses, float* probs, const float* logits,
                            const int32_t* targets, int B, int NC, float label_smoothing);
// dlogits += scale * (probs - target_distribution); scale is typically dloss/B.
void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B,
                            int NC, float label_smoothing, float scale);

// Ensemble-teacher distillation, fused with its softmaxes:
//   p_T[b]  = sum_k w[k,b] * softmax(teacher_logits[k,b] / T)   (w normalised per sample here:
//             the kernel divides by sum_k w[k,b], which must be > 0)
//   q[b]    = softmax(student_logits[b] / T)
//   loss[b] = T^2 * KL(p_T[b] || q[b]) = T^2 * sum_c p_T log(p_T / q)   (0 log 0 = 0)
// Returns the mean of loss over B. teacher_logits (K,B,NC); weights (K,B) or nullptr = uniform.
// student_probs (B,NC) receives q, teacher_probs (B,NC) receives p_T, both kept for backward.
float ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs,
                          const float* student_logits, const float* teacher_logits,
                          const float* weights, int K, int B, int NC, float T);
// d loss[b] / d student_logits[b] = T * (q - p_T). dlogits += scale * T * (q - p_T).
void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs,
                          int B, int NC, float T, float scale);

// ---------------------------------------------------------------------------------------------
// SGD with momentum over one flat buffer (PyTorch torch.optim.SGD semantics, dampening 0):
//   L2 (decoupled=false):  g = grad + wd * p
//   decoupled (SGDW):      p = p * (1 - lr * wd) first, g = grad
//   buf = momentum * buf + g   (buf starts at 0; PyTorch's first-step buf = g is the same)
//   step = nesterov ? g + momentum * buf : buf;   p -= lr * step
// decay_mask (n) or nullptr: per-element wd multiplier (0 excludes, e.g. BN and biases).
struct SgdConfig {
  float lr = 0.1f;
  float momentum = 0.9f;
  float weight_decay = 5e-4f;
  bool nesterov = true;
  bool decoupled = false;
};
void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask,
              size_t n, const SgdConfig& cfg);

// ---------------------------------------------------------------------------------------------
// Augmentation of a uint8 batch into normalised float NCHW. Draw order, per image in image order
// (single-threaded draws, parallel pixel work): if pad > 0, dy = below(2*pad+1) then
// dx = below(2*pad+1); if flip, f = below(2). Nothing is drawn for a disabled step. The crop comes
// first, then the mirror (torchvision RandomCrop then RandomHorizontalFlip).
//   random crop: zero-pad by `pad` on each side, crop HxW at a uniform offset in [0, 2*pad]
//   (pad == 0: no crop); flip: mirror horizontally with probability 0.5 (if flip).
//   out = (pixel/255 - mean[c]) / std[c]; padding pixels are 0 before normalisation, as torchvision's
//   RandomCrop(padding=4) on the uint8 image followed by Normalize.
// inp (B,C,H,W) uint8; out (B,C,H,W) float; mean/std (C).
void augment_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, int pad, bool flip,
                   const float* mean, const float* std, Rng& rng);
// Normalisation only (evaluation).
void normalize_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, const float* mean,
                     const float* std);

}  // namespace dfl::cpu
