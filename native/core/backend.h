// The backend seam: everything the graph executor (core/model.cpp) needs from a compute device, and
// nothing else. A backend owns device memory and runs kernels on it; the executor never touches
// device memory except through these calls (after ggml's ggml-backend.h).
//
// Pointers: every float*/int32_t*/uint8_t*/void* argument of a kernel is DEVICE memory of this
// backend (from alloc), unless its name ends in _host. On the CPU backend device memory is host
// memory. Kernels are enqueued in call order on the backend's one stream. No kernel returns a
// value to the host: losses and reductions write theirs to device memory (arguments ending in
// _sum or out), so the executor gathers a step's results and reads them back with one download
// (the only device-to-host path besides download, which synchronises). Kernel semantics are those of the CPU reference kernels
// in native/cpu/kernels.h (the specification): same arguments, same accumulate (+=) rule for
// backward, same draw rules; tests run one suite over every backend against them.
//
// A backend instance is shared by every model on it and used from one thread at a time per model;
// implementations must allow different models to call it from different threads concurrently.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/shapes.h"

namespace dfl {

class Backend {
 public:
  virtual ~Backend() = default;
  // "cpu", "cuda".
  virtual const std::string& name() const = 0;
  // One line for `info`: the device and its libraries.
  virtual std::string description() const = 0;

  // ---- memory ---------------------------------------------------------------------------------
  // Zero-filled, aligned to kTensorAlignment (256 bytes; core/shapes.h). Throws dfl::Error naming
  // `what` when it cannot.
  virtual void* alloc(size_t bytes, const char* what) = 0;
  virtual void release(void* ptr) noexcept = 0;
  virtual void upload(void* dst, const void* src_host, size_t bytes) = 0;
  virtual void download(void* dst_host, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill(float* dst, float value, size_t n) = 0;
  // Waits until every enqueued call has finished.
  virtual void synchronize() = 0;
  // Bytes this backend may still allocate, and where that figure comes from (for messages).
  virtual double available_bytes(std::string* source) const = 0;

  // ---- layers (forward overwrites its outputs; backward accumulates into non-null gradients) --
  // Conv2dShape::math and the linear layers' `math` say how a layer may be computed (MathMode);
  // a backend that does not support() a mode throws.
  // The workspace bytes a convolution of shape s needs, forward and backward. It depends on the
  // whole shape, the batch size included, and need not grow with it (cuDNN picks algorithms per
  // shape: a smaller batch may need more): size the workspace for each batch, not the largest.
  virtual size_t conv2d_workspace_bytes(const Conv2dShape& s) = 0;
  // workspace: workspace_bytes of device memory, which must be at least conv2d_workspace_bytes(s)
  // (the backend checks: check_conv_workspace). act is applied to the output (inference plans;
  // training plans pass None).
  virtual void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias,
                              const Conv2dShape& s, void* workspace, size_t workspace_bytes, Activation act) = 0;
  // overwrite_dinp: dinp = the input gradient, its old contents unread (the first writer of a slot).
  virtual void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, const Conv2dShape& s,
                               void* workspace, size_t workspace_bytes, bool overwrite_dinp) = 0;
  virtual void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                              int IN, int OUT, Activation act, const MathMode& math) = 0;
  virtual void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int B, int IN, int OUT,
                               const MathMode& math) = 0;
  // Whether this backend can compute with `math`; when not, why (one line for the user).
  virtual bool supports(const MathMode& math, std::string* why) const = 0;
  virtual void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd,
                                         float* running_mean, float* running_var, const float* inp,
                                         const float* gamma, const float* beta, int B, int C, int HW,
                                         float momentum, float eps) = 0;
  virtual void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                                        const float* running_mean, const float* running_var, int B, int C,
                                        int HW, float eps) = 0;
  virtual void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                                    const float* inp, const float* gamma, const float* save_mean,
                                    const float* save_invstd, int B, int C, int HW) = 0;
  // BatchNorm followed by an activation (training plans fuse a ReLU/ReLU6 that is the only reader
  // of a BN, conv, linear or add into it). The defaults run the plain kernel, then the activation
  // in place; a backend overrides them to do both in one pass.
  virtual void batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                               float* running_var, const float* inp, const float* gamma,
                                               const float* beta, int B, int C, int HW, float momentum, float eps,
                                               Activation act) {
    batchnorm2d_forward_train(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW,
                              momentum, eps);
    activate(out, size_t(B) * C * HW, act);
  }
  virtual void batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma, const float* beta,
                                              const float* running_mean, const float* running_var, int B, int C,
                                              int HW, float eps, Activation act) {
    batchnorm2d_forward_eval(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps);
    activate(out, size_t(B) * C * HW, act);
  }
  // The backward of a fused activation, in place: dout[i] = 0 where the activation's output y has
  // no gradient (y <= 0; for ReLU6 also y >= 6). The default goes through a temporary buffer; a
  // backend overrides it with one pass.
  virtual void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) {
    if (act == Activation::None || n == 0) return;
    float* masked = static_cast<float*>(alloc(n * sizeof(float), "activation gradient"));
    if (act == Activation::Relu) relu_backward(masked, dout, y, n);
    else relu6_backward(masked, dout, y, n);
    copy(dout, masked, n * sizeof(float));
    release(masked);
  }
  // BatchNorm backward after a fused activation (dout is the BN's own gradient slot; it may be
  // masked in place or left as it is). overwrite_dinp: dinp = the input gradient instead of +=, its
  // old contents unread (the BN is the first backward to write that slot, so nothing zeroes it).
  // Default: activation_backward_inplace, zero dinp if asked, then the plain backward.
  virtual void batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* out,
                                          const float* inp, const float* gamma, const float* save_mean,
                                          const float* save_invstd, int B, int C, int HW, Activation act,
                                          bool overwrite_dinp) {
    activation_backward_inplace(dout, out, size_t(B) * C * HW, act);
    if (dinp && overwrite_dinp) fill(dinp, 0.0f, size_t(B) * C * HW);
    batchnorm2d_backward(dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW);
  }
  // x = act(x), in place.
  void activate(float* x, size_t n, Activation act) {
    if (act == Activation::Relu) relu_forward(x, x, n);
    if (act == Activation::Relu6) relu6_forward(x, x, n);
  }
  // Inference folding of a BatchNorm into the conv/linear before it, per output channel oc:
  //   s = gamma/sqrt(var+eps);  w_out[oc,:] = w_in[oc,:]*s;  b_out[oc] = (b_in[oc] - mean)*s + beta
  // w (OC, per_oc); b_in may be null (0). w_out/b_out may not alias the inputs.
  virtual void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in,
                              const float* gamma, const float* beta, const float* running_mean,
                              const float* running_var, int OC, size_t per_oc, float eps) = 0;

  virtual void relu_forward(float* out, const float* inp, size_t n) = 0;
  virtual void relu_backward(float* dinp, const float* dout, const float* inp, size_t n) = 0;
  virtual void relu6_forward(float* out, const float* inp, size_t n) = 0;
  virtual void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n) = 0;
  virtual void add_forward(float* out, const float* a, const float* b, size_t n) = 0;
  // add then the activation (see the fused BatchNorm above).
  virtual void add_forward_fused(float* out, const float* a, const float* b, size_t n, Activation act) {
    add_forward(out, a, b, n);
    activate(out, n, act);
  }
  virtual void add_backward(float* da, float* db, const float* dout, size_t n) = 0;
  // dst += src (n floats): identity backward (flatten, dropout p = 0).
  virtual void accumulate(float* dst, const float* src, size_t n) = 0;

  // argmax may be null (inference: no backward follows).
  virtual void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) = 0;
  virtual void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) = 0;
  virtual void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) = 0;
  virtual void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) = 0;
  virtual void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) = 0;
  virtual void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) = 0;

  // The pointer arrays are host arrays of device pointers.
  virtual void concat_channels_forward(float* out, const float* const* inputs_host, const int* channels_host,
                                       int n, int B, int HW) = 0;
  virtual void concat_channels_backward(float* const* dinputs_host, const float* dout, const int* channels_host,
                                        int n, int B, int HW) = 0;
  virtual void split_channels_forward(float* const* outputs_host, const float* inp, const int* channels_host,
                                      int n, int B, int HW) = 0;
  // overwrite: dinp = the chunks' gradients (zeros where a chunk has none), its old contents unread.
  virtual void split_channels_backward(float* dinp, const float* const* doutputs_host, const int* channels_host,
                                       int n, int B, int HW, bool overwrite) = 0;
  // Concat of n inputs of cpg channels each, then a channel shuffle of n groups, in one copy:
  // out[b][j * n + k] = inputs[k][b][j]. Backward: dinputs[k][b][j] (+)= dout[b][j * n + k] (overwrite:
  // =, old contents unread); null entries are skipped.
  virtual void interleave_channels_forward(float* out, const float* const* inputs_host, int n, int cpg, int B,
                                           int HW) = 0;
  virtual void interleave_channels_backward(float* const* dinputs_host, const float* dout, int n, int cpg, int B,
                                            int HW, bool overwrite) = 0;
  virtual void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups) = 0;
  virtual void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) = 0;

  virtual void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed) = 0;
  virtual void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) = 0;

  // ---- losses: loss_sum (one double of device memory) receives the sum of the per-sample losses,
  // in index order, in double; the batch mean the reference kernels return is float(sum / B).
  virtual void cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets,
                                     int B, int NC, float label_smoothing, double* loss_sum) = 0;
  virtual void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                                      float label_smoothing, float scale) = 0;
  virtual void ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs,
                                   const float* student_logits, const float* teacher_logits, const float* weights,
                                   int K, int B, int NC, float T, double* loss_sum) = 0;
  virtual void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B,
                                    int NC, float T, float scale) = 0;
  // weights (K,B): w[k,b] = max_c softmax(teacher_logits[k,b] / T), each teacher's confidence.
  virtual void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) = 0;

  // ---- optimiser ------------------------------------------------------------------------------
  virtual void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
                        const SgdConfig& cfg) = 0;
  // *finite (device int32) = 1 when sgd_step with the same arguments would leave every parameter
  // and momentum value finite, else 0. Reads only, so a step can be refused before it changes anything.
  virtual void sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                                     const float* decay_mask, size_t n, const SgdConfig& cfg, int32_t* finite) = 0;

  // ---- batches from uint8 images (see cpu::augment_batch) -------------------------------------
  virtual void augment_batch(float* out, const uint8_t* images, int B, int C, int H, int W, int pad,
                             const AugmentDraw* draws_host, const float* mean_host, const float* std_host) = 0;
  virtual void normalize_batch(float* out, const uint8_t* images, int B, int C, int H, int W,
                               const float* mean_host, const float* std_host) = 0;
  // dst (B, image_bytes) = the images indices_host[k] of a resident set src (N, image_bytes): a
  // batch gathered on the device from a training set uploaded once (indices in [0, N), unchecked).
  virtual void gather_images(uint8_t* dst, const uint8_t* src, const int32_t* indices_host, int B,
                             size_t image_bytes) = 0;

  // ---- reductions the step needs: one value each into device memory (out) -----------------------
  // *out = the sum of x^2 (in double).
  virtual void sum_squares(const float* x, size_t n, double* out) = 0;
  // *out = 1 when every x is finite, else 0.
  virtual void all_finite(const float* x, size_t n, int32_t* out) = 0;
  // *out = how many rows of logits (B,NC) have their first maximum at labels[b].
  virtual void count_correct(const float* logits, const int32_t* labels, int B, int NC, int32_t* out) = 0;
  // x[i] += v for n floats (BN's num_batches_tracked).
  virtual void add_scalar(float* x, float v, size_t n) = 0;
};

// Throws unless a convolution call's workspace (workspace, got bytes) holds the `need` bytes its
// backend's conv2d_workspace_bytes asked for: every backend calls it before using the workspace.
inline void check_conv_workspace(const char* who, const Conv2dShape& s, size_t need, const void* workspace,
                                 size_t got) {
  DFL_CHECK(got >= need && (need == 0 || workspace != nullptr), who, ": expected a workspace of at least ", need,
            " bytes for the convolution B=", s.B, " C=", s.C, " H=", s.H, " W=", s.W, " OC=", s.OC, " kernel ", s.KH,
            "x", s.KW, " stride ", s.stride_h, "x", s.stride_w, " pad ", s.pad_h, "x", s.pad_w, " groups ", s.groups,
            " but received ", workspace ? got : 0, " bytes; size it with conv2d_workspace_bytes for this shape "
            "(the batch size included)");
}

// One allocation on a backend, released when it goes out of scope. Grows (never shrinks) on
// demand; its contents are zero after every (re)allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::shared_ptr<Backend> backend) : backend_(std::move(backend)) {}
  DeviceBuffer(std::shared_ptr<Backend> backend, size_t bytes, const char* what) : backend_(std::move(backend)) {
    reserve(bytes, what);
  }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = std::move(o.backend_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  // Makes room for at least `bytes` (reallocating, zeroed, when larger than now).
  void reserve(size_t bytes, const char* what) {
    if (bytes <= bytes_ && ptr_) return;
    reset();
    if (bytes == 0) return;
    ptr_ = backend_->alloc(bytes, what);
    bytes_ = bytes;
  }
  void reset() noexcept {
    if (ptr_) backend_->release(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  float* f() const { return static_cast<float*>(ptr_); }
  int32_t* i32() const { return static_cast<int32_t*>(ptr_); }
  uint8_t* u8() const { return static_cast<uint8_t*>(ptr_); }
  size_t bytes() const { return bytes_; }
  Backend& backend() const { return *backend_; }

 private:
  std::shared_ptr<Backend> backend_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// ---- the registry: which backends this build has, and which of them work here -----------------
struct BackendStatus {
  std::string name;
  bool compiled = false;
  bool usable = false;
  std::string detail;  // the device when usable, else why not (the driver's or loader's own words)
  // The libraries it was built against and found at run time, and whether they agree (CUDA: the
  // runtime, the driver, cuDNN, cuBLAS); empty when there are none to report.
  std::string libraries;
};
// Every backend this build knows of ("cpu" first), whether usable or not.
std::vector<BackendStatus> backend_statuses();
// The shared instance of a backend by name; throws dfl::Error with the reason when it is unknown,
// not compiled in, or not usable on this machine.
std::shared_ptr<Backend> backend_by_name(const std::string& name);

// Implemented by native/cpu/cpu_backend.cpp.
std::shared_ptr<Backend> make_cpu_backend();

}  // namespace dfl
