// The CPU backend: host memory and the reference kernels of cpu/kernels.h behind the Backend
// interface. Every call runs to completion before it returns (no stream to synchronise).
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#if !defined(_WIN32)
#include <sys/mman.h>
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
#if !defined(_WIN32)
    // Large blocks (weights, activations, teachers) are mapped pages of their own, so a disposed
    // teacher's memory goes back to the system at once: from malloc, glibc's growing mmap
    // threshold keeps freed blocks of this size in the heap, and a bank replacing its snapshots
    // grew the process without bound. Fresh pages are zero and page-aligned.
    if (rounded >= kMappedBlockBytes) {
      void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      DFL_CHECK(p != MAP_FAILED, "Out of memory allocating ", rounded / (1024.0 * 1024.0), " MiB for ", what,
                "; use a smaller batch size or model");
      std::lock_guard<std::mutex> lock(mapped_mutex_);
      mapped_[p] = rounded;
      return p;
    }
#endif
    void* p = std::aligned_alloc(kTensorAlignment, rounded);
    DFL_CHECK(p != nullptr, "Out of memory allocating ", rounded / (1024.0 * 1024.0), " MiB for ", what,
              "; use a smaller batch size or model");
    std::memset(p, 0, rounded);
    return p;
  }
  void release(void* ptr) noexcept override {
#if !defined(_WIN32)
    {
      std::lock_guard<std::mutex> lock(mapped_mutex_);
      auto it = mapped_.find(ptr);
      if (it != mapped_.end()) {
        munmap(ptr, it->second);
        mapped_.erase(it);
        return;
      }
    }
#endif
    std::free(ptr);
  }
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

  // Every DFL_KERNEL row of core/backend_kernels.def: the cpu:: kernel of the same name and signature.
#define DFL_KERNEL(name, params, args) \
  void name params override { cpu::name args; }
#include "core/backend_kernels.def"

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

  // The activation's mask applied on the fly inside the BN's two passes, dinp written directly.
  void batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* out,
                                  const float* inp, const float* gamma, const float* save_mean,
                                  const float* save_invstd, int B, int C, int HW, Activation act,
                                  bool overwrite_dinp) override {
    cpu::batchnorm2d_backward(dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW, out, act,
                              overwrite_dinp);
  }
  void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) override {
    cpu::activation_backward_inplace(dout, y, n, act);
  }

  void cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                             float label_smoothing, double* loss_sum) override {
    cpu::cross_entropy_forward(losses, probs, logits, targets, B, NC, label_smoothing);
    *loss_sum = cpu::loss_sum(losses, B);
  }
  void ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                           const float* teacher_logits, const float* weights, int K, int B, int NC, float T,
                           double* loss_sum) override {
    cpu::ensemble_kl_forward(losses, student_probs, teacher_probs, student_logits, teacher_logits, weights, K, B, NC,
                             T);
    *loss_sum = cpu::loss_sum(losses, B);
  }

  void sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                             const float* decay_mask, size_t n, const SgdConfig& cfg, int32_t* finite) override {
    *finite = cpu::sgd_step_stays_finite(params, momentum_buf, grads, decay_mask, n, cfg) ? 1 : 0;
  }

  void augment_batch(float* out, const uint8_t* images, int B, int C, int H, int W, int pad,
                     const AugmentDraw* draws_host, const float* mean_host, const float* std_host) override {
    cpu::augment_apply(out, images, B, C, H, W, pad, draws_host, mean_host, std_host);
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

 private:
  void check_math(const MathMode& math) const {
    std::string why;
    DFL_CHECK(supports(math, &why), "cpu backend: ", why);
  }
  const std::string name_ = "cpu";
  static constexpr size_t kMappedBlockBytes = size_t(1) << 20;
  std::mutex mapped_mutex_;
  std::unordered_map<void*, size_t> mapped_;  // blocks from mmap, with their lengths
};

}  // namespace

std::shared_ptr<Backend> make_cpu_backend() { return std::make_shared<CpuBackend>(); }

}  // namespace dfl
