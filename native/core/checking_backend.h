// The checking backend: a wrapper over any backend that checks every call against the rules of
// core/backend.h before passing it on, as a sanitizer for the backend interface. It runs the CUDA
// path's memory discipline on a machine without a GPU (the CPU backend forgives what a device does
// not: host pointers, overruns into padding, a short workspace). Per call it checks that
//   * every device pointer, over the extent the call touches, lies inside one live allocation made
//     through this wrapper (not released, not host memory, not another backend's);
//   * every tensor starts at a multiple of kTensorAlignment (one-value results: of their own size);
//   * host arguments (draws, indices, pointer arrays) are not device memory, copies do not overlap,
//     and only its own allocations are released;
//   * a convolution's workspace holds what conv2d_workspace_bytes asked for, and the size the
//     caller claims lies inside the workspace's allocation.
// The workspace it asks for is the inner backend's plus Options::small_batch_workspace / B bytes:
// more for a smaller batch, as cuDNN's per-batch plans may ask, so an executor that sizes the
// workspace for its largest batch only is caught on the CPU too.
// It also counts device-to-host reads (downloads: the only ones the interface has), for tests of how
// often a training step synchronises.
//
// A violation throws dfl::Error "checking backend: <call>: <what>"; one found in release()
// (noexcept) is kept and thrown by the next call. Reached by name as "checking:<backend>"
// (backend_by_name), e.g. `dfl_native_tests --backend checking:cpu`.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/backend.h"

namespace dfl {

class CheckingBackend final : public Backend {
 public:
  struct Options {
    size_t small_batch_workspace = size_t(1) << 20;
  };
  explicit CheckingBackend(std::shared_ptr<Backend> inner) : CheckingBackend(std::move(inner), Options{}) {}
  CheckingBackend(std::shared_ptr<Backend> inner, Options options);
  ~CheckingBackend() override = default;

  Backend& inner() const { return *inner_; }
  // Device-to-host reads so far (download calls).
  uint64_t downloads() const { return downloads_.load(); }
  // Allocations made through this wrapper and not yet released.
  size_t live_allocations() const;

  const std::string& name() const override { return name_; }
  std::string description() const override;

  void* alloc(size_t bytes, const char* what) override;
  void release(void* ptr) noexcept override;
  void upload(void* dst, const void* src_host, size_t bytes) override;
  void download(void* dst_host, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill(float* dst, float value, size_t n) override;
  void synchronize() override;
  double available_bytes(std::string* source) const override { return inner_->available_bytes(source); }

  size_t conv2d_workspace_bytes(const Conv2dShape& s) override;
  void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                      void* workspace, size_t workspace_bytes, Activation act) override;
  void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, const Conv2dShape& s, void* workspace, size_t workspace_bytes,
                       bool overwrite_dinp) override;
  void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int IN, int OUT,
                      Activation act, const MathMode& math) override;
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int B, int IN, int OUT, const MathMode& math) override;
  bool supports(const MathMode& math, std::string* why) const override { return inner_->supports(math, why); }
  void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                 float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                                 int C, int HW, float momentum, float eps) override;
  void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int B, int C, int HW,
                                float eps) override;
  void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                            const float* gamma, const float* save_mean, const float* save_invstd, int B, int C,
                            int HW) override;
  void batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                       float* running_var, const float* inp, const float* gamma, const float* beta,
                                       int B, int C, int HW, float momentum, float eps, Activation act) override;
  void batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma, const float* beta,
                                      const float* running_mean, const float* running_var, int B, int C, int HW,
                                      float eps, Activation act) override;
  void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) override;
  void batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* out,
                                  const float* inp, const float* gamma, const float* save_mean, const float* save_invstd,
                                  int B, int C, int HW, Activation act, bool overwrite_dinp) override;
  void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                      const float* beta, const float* running_mean, const float* running_var, int OC, size_t per_oc,
                      float eps) override;

  void relu_forward(float* out, const float* inp, size_t n) override;
  void relu_backward(float* dinp, const float* dout, const float* inp, size_t n) override;
  void relu6_forward(float* out, const float* inp, size_t n) override;
  void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n) override;
  void add_forward(float* out, const float* a, const float* b, size_t n) override;
  void add_forward_fused(float* out, const float* a, const float* b, size_t n, Activation act) override;
  void add_backward(float* da, float* db, const float* dout, size_t n) override;
  void accumulate(float* dst, const float* src, size_t n) override;

  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) override;
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) override;
  void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) override;
  void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) override;
  void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) override;
  void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) override;

  void concat_channels_forward(float* out, const float* const* inputs_host, const int* channels_host, int n, int B,
                               int HW) override;
  void concat_channels_backward(float* const* dinputs_host, const float* dout, const int* channels_host, int n, int B,
                                int HW) override;
  void split_channels_forward(float* const* outputs_host, const float* inp, const int* channels_host, int n, int B,
                              int HW) override;
  void split_channels_backward(float* dinp, const float* const* doutputs_host, const int* channels_host, int n, int B,
                               int HW, bool overwrite) override;
  void interleave_channels_forward(float* out, const float* const* inputs_host, int n, int cpg, int B,
                                   int HW) override;
  void interleave_channels_backward(float* const* dinputs_host, const float* dout, int n, int cpg, int B, int HW,
                                    bool overwrite) override;
  void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups) override;
  void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) override;

  void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed) override;
  void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) override;

  void cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                             float label_smoothing, double* loss_sum) override;
  void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                              float label_smoothing, float scale) override;
  void ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                           const float* teacher_logits, const float* weights, int K, int B, int NC, float T,
                           double* loss_sum) override;
  void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B, int NC,
                            float T, float scale) override;
  void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) override;

  void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
                const SgdConfig& cfg) override;
  void sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                             const float* decay_mask, size_t n, const SgdConfig& cfg, int32_t* finite) override;

  void augment_batch(float* out, const uint8_t* images, int B, int C, int H, int W, int pad,
                     const AugmentDraw* draws_host, const float* mean_host, const float* std_host) override;
  void normalize_batch(float* out, const uint8_t* images, int B, int C, int H, int W, const float* mean_host,
                       const float* std_host) override;
  void gather_images(uint8_t* dst, const uint8_t* src, const int32_t* indices_host, int B,
                     size_t image_bytes) override;

  void sum_squares(const float* x, size_t n, double* out) override;
  void all_finite(const float* x, size_t n, int32_t* out) override;
  void count_correct(const float* logits, const int32_t* labels, int B, int NC, int32_t* out) override;
  void add_scalar(float* x, float v, size_t n) override;

 private:
  // One argument of a call: the bytes it touches from p, and the alignment its start needs.
  struct Extent {
    const char* name;
    const void* p;
    size_t bytes;
    size_t align;
    bool nullable;
  };
  class Call;
  friend class Call;
  // Throws unless e lies inside one live allocation and is aligned (or is null, where allowed, or empty).
  void check_extent(const char* call, const Extent& e) const;
  void check_host(const char* call, const char* name, const void* p) const;
  // The live allocation holding [p, p + bytes), or none (its end is 0).
  std::pair<uintptr_t, size_t> allocation_of(const void* p) const;
  void throw_pending();

  std::shared_ptr<Backend> inner_;
  Options options_;
  std::string name_;
  mutable std::mutex mu_;
  std::map<uintptr_t, size_t> live_;  // start -> bytes asked for
  std::string pending_;              // a violation found in release()
  std::atomic<uint64_t> downloads_{0};
};

}  // namespace dfl
