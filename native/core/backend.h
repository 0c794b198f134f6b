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

  // Whether this backend can compute with `math` (MathMode); when not, why (one line for the user).
  virtual bool supports(const MathMode& math, std::string* why) const = 0;

  // ---- kernels: every row of core/backend_kernels.def (forward overwrites its outputs; backward
  // accumulates into non-null gradients). FUSED rows have a default body (below the class) that a
  // backend may override with one pass.
#define DFL_KERNEL(name, params, args) virtual void name params = 0;
#define DFL_KERNEL_OWN(ret, name, params, args) virtual ret name params = 0;
#define DFL_KERNEL_FUSED(name, params, args) virtual void name params;
#include "core/backend_kernels.def"

  // x = act(x), in place.
  void activate(float* x, size_t n, Activation act) {
    if (act == Activation::Relu) relu_forward(x, x, n);
    if (act == Activation::Relu6) relu6_forward(x, x, n);
  }
};

// ---- the default bodies of the FUSED kernels of core/backend_kernels.def: the plain kernels in turn.
// Inline, so that Backend stays header-only: a backend library (libdfl_cuda.so) links none of core.
inline void Backend::batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd,
                                                     float* running_mean, float* running_var, const float* inp,
                                                     const float* gamma, const float* beta, int B, int C, int HW,
                                                     float momentum, float eps, Activation act) {
  batchnorm2d_forward_train(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW,
                            momentum, eps);
  activate(out, size_t(B) * C * HW, act);
}

inline void Backend::batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma, const float* beta,
                                                    const float* running_mean, const float* running_var, int B, int C,
                                                    int HW, float eps, Activation act) {
  batchnorm2d_forward_eval(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps);
  activate(out, size_t(B) * C * HW, act);
}

inline void Backend::activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) {
  if (act == Activation::None || n == 0) return;
  float* masked = static_cast<float*>(alloc(n * sizeof(float), "activation gradient"));
  struct Release {
    Backend& backend;
    void* ptr;
    ~Release() { backend.release(ptr); }
  } release_masked{*this, masked};
  if (act == Activation::Relu)
    relu_backward(masked, dout, y, n);
  else
    relu6_backward(masked, dout, y, n);
  copy(dout, masked, n * sizeof(float));
}

inline void Backend::batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* out,
                                                const float* inp, const float* gamma, const float* save_mean,
                                                const float* save_invstd, int B, int C, int HW, Activation act,
                                                bool overwrite_dinp) {
  activation_backward_inplace(dout, out, size_t(B) * C * HW, act);
  if (dinp && overwrite_dinp) fill(dinp, 0.0f, size_t(B) * C * HW);
  batchnorm2d_backward(dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW);
}

inline void Backend::add_forward_fused(float* out, const float* a, const float* b, size_t n, Activation act) {
  add_forward(out, a, b, n);
  activate(out, n, act);
}

// Throws unless a convolution call's workspace (workspace, got bytes) holds the `need` bytes its
// backend's conv2d_workspace_bytes asked for: every backend calls it before using the workspace.
inline void check_conv_workspace(const char* who, const Conv2dShape& s, size_t need, const void* workspace,
                                 size_t got) {
  DFL_CHECK(got >= need && (need == 0 || workspace != nullptr), who, ": expected a workspace of at least ", need,
            " bytes for the convolution B=", s.B, " C=", s.C, " H=", s.H, " W=", s.W, " OC=", s.OC, " kernel ", s.KH,
            "x", s.KW, " stride ", s.stride_h, "x", s.stride_w, " pad ", s.pad_h, "x", s.pad_w, " groups ", s.groups,
            " but received ", workspace ? got : 0,
            " bytes; size it with conv2d_workspace_bytes for this shape "
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
