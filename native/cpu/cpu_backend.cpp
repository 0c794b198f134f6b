// The CPU backend: host memory and the reference kernels of cpu/kernels.h behind the Backend
// interface. Every call runs to completion before it returns (no stream to synchronise).
#include <cstdlib>
#include <cstring>
#if !defined(_WIN32)
#include <unistd.h>
#endif

#include "core/backend.h"
#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl {

namespace {

void apply_activation(float* x, size_t n, Activation act) {
  if (act == Activation::Relu) cpu::relu_forward(x, x, n);
  if (act == Activation::Relu6) cpu::relu6_forward(x, x, n);
}

class CpuBackend final : public Backend {
 public:
  const std::string& name() const override { return name_; }
  std::string description() const override {
    return std::to_string(hardware_threads()) + " hardware threads, SIMD paths: " + simd_paths_summary();
  }

  void* alloc(size_t bytes, const char* what) override {
    DFL_CHECK(bytes < (size_t(1) << 42), "Refusing to allocate ", bytes, " bytes for ", what,
              ": the model or batch is too large");
    const size_t rounded = (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
    void* p = std::aligned_alloc(kTensorAlignment, rounded);
    DFL_CHECK(p != nullptr, "Out of memory allocating ", rounded / (1024.0 * 1024.0), " MiB for ", what,
              "; use a smaller batch size or model");
    std::memset(p, 0, rounded);
    return p;
  }
  void release(void* ptr) noexcept override { std::free(ptr); }
  void upload(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes && dst != src) std::memcpy(dst, src, bytes);
  }
  void fill(float* dst, float value, size_t n) override {
    if (value == 0.0f) {
      if (n) std::memset(dst, 0, n * sizeof(float));
    } else {
      std::fill(dst, dst + n, value);
    }
  }
  void synchronize() override {}

  // $DFL_MAX_MEMORY_MB when set (tests, shared machines), else the physical memory.
  double available_bytes(std::string* source) const override {
    if (const char* e = std::getenv("DFL_MAX_MEMORY_MB")) {
      char* end = nullptr;
      const double mb = std::strtod(e, &end);
      if (end != e && mb > 0) {
        *source = "DFL_MAX_MEMORY_MB";
        return mb * 1024.0 * 1024.0;
      }
    }
#if !defined(_WIN32) && defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
      *source = "physical memory";
      return static_cast<double>(pages) * static_cast<double>(page);
    }
#endif
    *source = "no limit known";
    return 1e300;
  }

  // float32 only: bf16 would have to be emulated (rounding passes around float32 GEMMs), slower
  // than float32 on a CPU without bf16 dot products. Non-determinism has nothing to allow here.
  bool supports(const MathMode& math, std::string* why) const override {
    if (!math.bf16) return true;
    *why = "the cpu backend computes in float32 only (bf16 is for a GPU's tensor cores)";
    return false;
  }
  size_t conv2d_workspace_bytes(const Conv2dShape& s) override {
    check_math(s.math);
    return cpu::conv2d_workspace_floats(s) * sizeof(float);
  }
  void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                      void* workspace, size_t workspace_bytes, Activation act) override {
    check_math(s.math);
    check_conv_workspace("conv2d_forward", s, cpu::conv2d_workspace_floats(s) * sizeof(float), workspace,
                         workspace_bytes);
    cpu::conv2d_forward(out, inp, weight, bias, s, static_cast<float*>(workspace), act);
  }
  void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, const Conv2dShape& s, void* workspace, size_t workspace_bytes,
                       bool overwrite_dinp) override {
    check_math(s.math);
    check_conv_workspace("conv2d_backward", s, cpu::conv2d_workspace_floats(s) * sizeof(float), workspace,
                         workspace_bytes);
    cpu::conv2d_backward(dinp, dweight, dbias, dout, inp, weight, s, static_cast<float*>(workspace), overwrite_dinp);
  }
  void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int IN, int OUT,
                      Activation act, const MathMode& math) override {
    check_math(math);
    cpu::linear_forward(out, inp, weight, bias, B, IN, OUT);
    apply_activation(out, size_t(B) * OUT, act);
  }
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int B, int IN, int OUT, const MathMode& math) override {
    check_math(math);
    cpu::linear_backward(dinp, dweight, dbias, dout, inp, weight, B, IN, OUT);
  }
  void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                 float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                                 int C, int HW, float momentum, float eps) override {
    cpu::batchnorm2d_forward_train(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW,
                                   momentum, eps);
  }
  void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int B, int C, int HW,
                                float eps) override {
    cpu::batchnorm2d_forward_eval(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps);
  }
  void batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                       float* running_var, const float* inp, const float* gamma, const float* beta,
                                       int B, int C, int HW, float momentum, float eps, Activation act) override {
    cpu::batchnorm2d_forward_train(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW,
                                   momentum, eps, act);
  }
  void batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma, const float* beta,
                                      const float* running_mean, const float* running_var, int B, int C, int HW,
                                      float eps, Activation act) override {
    cpu::batchnorm2d_forward_eval(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps, act);
  }
  void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                            const float* gamma, const float* save_mean, const float* save_invstd, int B, int C,
                            int HW) override {
    cpu::batchnorm2d_backward(dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW);
  }
  void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                      const float* beta, const float* running_mean, const float* running_var, int OC, size_t per_oc,
                      float eps) override {
    cpu::fold_batchnorm(w_out, b_out, w_in, b_in, gamma, beta, running_mean, running_var, OC, per_oc, eps);
  }

  void relu_forward(float* out, const float* inp, size_t n) override { cpu::relu_forward(out, inp, n); }
  void relu_backward(float* dinp, const float* dout, const float* inp, size_t n) override {
    cpu::relu_backward(dinp, dout, inp, n);
  }
  void relu6_forward(float* out, const float* inp, size_t n) override { cpu::relu6_forward(out, inp, n); }
  void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n) override {
    cpu::relu6_backward(dinp, dout, inp, n);
  }
  void add_forward(float* out, const float* a, const float* b, size_t n) override { cpu::add_forward(out, a, b, n); }
  // The activation's mask applied on the fly inside the BN's two passes, dinp written directly.
  void batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* out,
                                  const float* inp, const float* gamma, const float* save_mean, const float* save_invstd,
                                  int B, int C, int HW, Activation act, bool overwrite_dinp) override {
    cpu::batchnorm2d_backward(dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW, out, act,
                              overwrite_dinp);
  }
  void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) override {
    cpu::activation_backward_inplace(dout, y, n, act);
  }
  void add_backward(float* da, float* db, const float* dout, size_t n) override { cpu::add_backward(da, db, dout, n); }
  void accumulate(float* dst, const float* src, size_t n) override { cpu::accumulate(dst, src, n); }

  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) override {
    cpu::maxpool2d_forward(out, argmax, inp, s);
  }
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) override {
    cpu::maxpool2d_backward(dinp, dout, argmax, s);
  }
  void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) override {
    cpu::avgpool2d_forward(out, inp, s);
  }
  void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) override {
    cpu::avgpool2d_backward(dinp, dout, s);
  }
  void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) override {
    cpu::global_avgpool_forward(out, inp, B, C, HW);
  }
  void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) override {
    cpu::global_avgpool_backward(dinp, dout, B, C, HW);
  }

  void concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n, int B,
                               int HW) override {
    cpu::concat_channels_forward(out, inputs, channels, n, B, HW);
  }
  void concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n, int B,
                                int HW) override {
    cpu::concat_channels_backward(dinputs, dout, channels, n, B, HW);
  }
  void split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B,
                              int HW) override {
    cpu::split_channels_forward(outputs, inp, channels, n, B, HW);
  }
  void split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n, int B,
                               int HW, bool overwrite) override {
    cpu::split_channels_backward(dinp, doutputs, channels, n, B, HW, overwrite);
  }
  void interleave_channels_forward(float* out, const float* const* inputs, int n, int cpg, int B, int HW) override {
    cpu::interleave_channels_forward(out, inputs, n, cpg, B, HW);
  }
  void interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B, int HW,
                                    bool overwrite) override {
    cpu::interleave_channels_backward(dinputs, dout, n, cpg, B, HW, overwrite);
  }
  void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups) override {
    cpu::channel_shuffle_forward(out, inp, B, C, HW, groups);
  }
  void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) override {
    cpu::channel_shuffle_backward(dinp, dout, B, C, HW, groups);
  }

  void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed) override {
    cpu::dropout_forward(out, mask, inp, n, p, seed);
  }
  void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) override {
    cpu::dropout_backward(dinp, dout, mask, n);
  }

  void cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                             float label_smoothing, double* loss_sum) override {
    cpu::cross_entropy_forward(losses, probs, logits, targets, B, NC, label_smoothing);
    *loss_sum = cpu::loss_sum(losses, B);
  }
  void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                              float label_smoothing, float scale) override {
    cpu::cross_entropy_backward(dlogits, probs, targets, B, NC, label_smoothing, scale);
  }
  void ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                           const float* teacher_logits, const float* weights, int K, int B, int NC, float T,
                           double* loss_sum) override {
    cpu::ensemble_kl_forward(losses, student_probs, teacher_probs, student_logits, teacher_logits, weights, K, B, NC, T);
    *loss_sum = cpu::loss_sum(losses, B);
  }
  void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B, int NC,
                            float T, float scale) override {
    cpu::ensemble_kl_backward(dlogits, student_probs, teacher_probs, B, NC, T, scale);
  }
  void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) override {
    cpu::teacher_confidence(weights, teacher_logits, K, B, NC, T);
  }

  void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
                const SgdConfig& cfg) override {
    cpu::sgd_step(params, momentum_buf, grads, decay_mask, n, cfg);
  }
  void sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                             const float* decay_mask, size_t n, const SgdConfig& cfg, int32_t* finite) override {
    *finite = cpu::sgd_step_stays_finite(params, momentum_buf, grads, decay_mask, n, cfg) ? 1 : 0;
  }

  void augment_batch(float* out, const uint8_t* images, int B, int C, int H, int W, int pad,
                     const AugmentDraw* draws_host, const float* mean_host, const float* std_host) override {
    cpu::augment_apply(out, images, B, C, H, W, pad, draws_host, mean_host, std_host);
  }
  void normalize_batch(float* out, const uint8_t* images, int B, int C, int H, int W, const float* mean_host,
                       const float* std_host) override {
    cpu::normalize_batch(out, images, B, C, H, W, mean_host, std_host);
  }
  void gather_images(uint8_t* dst, const uint8_t* src, const int32_t* indices_host, int B,
                     size_t image_bytes) override {
    for (int k = 0; k < B; ++k)
      std::memcpy(dst + size_t(k) * image_bytes, src + size_t(indices_host[k]) * image_bytes, image_bytes);
  }

  void sum_squares(const float* x, size_t n, double* out) override { *out = cpu::sum_squares(x, n); }
  void all_finite(const float* x, size_t n, int32_t* out) override { *out = cpu::all_finite(x, n) ? 1 : 0; }
  void count_correct(const float* logits, const int32_t* labels, int B, int NC, int32_t* out) override {
    *out = cpu::count_correct(logits, labels, B, NC);
  }
  void add_scalar(float* x, float v, size_t n) override { cpu::add_scalar(x, v, n); }

 private:
  void check_math(const MathMode& math) const {
    std::string why;
    DFL_CHECK(supports(math, &why), "cpu backend: ", why);
  }
  const std::string name_ = "cpu";
};

}  // namespace

std::shared_ptr<Backend> make_cpu_backend() { return std::make_shared<CpuBackend>(); }

}  // namespace dfl
