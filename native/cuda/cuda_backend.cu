// The CUDA backend: device memory, one stream, cuDNN convolutions (cuda/conv_cudnn.h), cuBLAS GEMMs,
// and the hand-written kernels of cuda/bodies/ (each checked on the host against cpu/kernels.h by
// the CPU tests). Built as libdfl_cuda.so and opened at run time by core/backend.cpp through
// dfl_create_backend (core/backend_plugin.h).
//
// Every call is enqueued on the backend's one stream in call order; reductions write their results
// to device memory, and only download() synchronises. Models on different host threads may share the backend: one lock serialises
// the calls (the handles, the plans and the scratch buffers below are shared), and the GPU runs one
// stream anyway. Memory is stream-ordered (cudaMallocAsync / cudaFreeAsync), so a buffer released
// while kernels that read it are queued stays valid until they ran.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/backend_plugin.h"
#include "core/check.h"
#include "cuda/bodies/augment.h"
#include "cuda/bodies/batchnorm.h"
#include "cuda/bodies/cast.h"
#include "cuda/bodies/elementwise.h"
#include "cuda/bodies/loss.h"
#include "cuda/bodies/optim.h"
#include "cuda/bodies/pool.h"
#include "cuda/bodies/reduce.h"
#include "cuda/conv_cudnn.h"
#include "cuda/launch.cuh"
#include "cuda/messages.h"
#include "cuda/owned.h"

namespace dfl::cuda {

namespace {

using namespace dfl::cuda_bodies;

void check_cublas(cublasStatus_t s, const char* what, const std::string& context = std::string()) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail(library_error_text(what, cublasGetStatusName(s), "cuBLAS", cublasGetStatusString(s), context));
}

// What this library was built against and runs with (no GPU needed: none of these calls starts CUDA).
LibraryVersions library_versions() {
  LibraryVersions v;
  cudaRuntimeGetVersion(&v.runtime);
  v.runtime_built = CUDART_VERSION;
  cudaDriverGetVersion(&v.driver);
  v.cudnn = cudnnGetVersion();
  v.cudnn_built = CUDNN_VERSION;
  v.cudnn_cudart = cudnnGetCudartVersion();
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  v.cublas = major * 10000 + minor * 100 + patch;
  v.cublas_built = CUBLAS_VERSION;
  return v;
}

constexpr double kMiB = 1024.0 * 1024.0;

// Device memory the backend holds for itself (scratch, staging), freed when it goes.
using DeviceMemory = Owned<void*, cudaFree>;
using OwnedStream = Owned<cudaStream_t, cudaStreamDestroy>;
using OwnedCudnn = Owned<cudnnHandle_t, cudnnDestroy>;
using OwnedCublas = Owned<cublasHandle_t, cublasDestroy>;
// Every handle the backends of this process hold (dfl_cuda_constructor_probe).
int live_handles() { return DeviceMemory::live() + OwnedStream::live() + OwnedCudnn::live() + OwnedCublas::live(); }

class CudaBackend final : public Backend {
 public:
  // Each handle is owned by its member as soon as it exists, so a step that throws half way releases
  // what the steps before it made (cuda/owned.h).
  explicit CudaBackend(int device) : device_(device) {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    compute_major_ = prop.major;
    compute_minor_ = prop.minor;
    cudaStream_t stream = nullptr;
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    stream_.reset(stream);
    // Keep freed memory in the pool for the next step instead of returning it to the driver.
    cudaMemPool_t pool;
    check_cuda(cudaDeviceGetDefaultMemPool(&pool, device_), "cudaDeviceGetDefaultMemPool");
    uint64_t keep = UINT64_MAX;
    check_cuda(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
    cudnnHandle_t dnn = nullptr;
    check_cudnn(cudnnCreate(&dnn), "cudnnCreate");
    cudnn_.reset(dnn);
    check_cudnn(cudnnSetStream(cudnn_, stream_), "cudnnSetStream");
    cublasHandle_t blas = nullptr;
    check_cublas(cublasCreate(&blas), "cublasCreate");
    cublas_.reset(blas);
    check_cublas(cublasSetStream(cublas_, stream_), "cublasSetStream");
    check_cublas(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");  // no TF32
    plans_ = std::make_unique<ConvPlans>(cudnn_);
    // One kernel now, so a GPU this library has no code for (an architecture before sm_80 with no
    // PTX to fall back on) is reported here, as unusable, instead of failing the first step.
    float* probe = static_cast<float*>(scratch(sizeof(float)));
    launch_elementwise(stream_, Fill{probe, 1.f, 1});
    check_cuda(cudaStreamSynchronize(stream_), "running a first kernel on the GPU");
    description_ = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
                   std::to_string(int(prop.totalGlobalMem / kMiB)) + " MiB); " +
                   check_library_versions(library_versions()).text;
  }
  // The members then go in reverse order: buffers, plans, cuBLAS, cuDNN, the stream.
  ~CudaBackend() override {
    if (stream_) cudaStreamSynchronize(stream_);
  }

  const std::string& name() const override { return name_; }
  std::string description() const override { return description_; }

  // ---- memory ----------------------------------------------------------------------------------
  void* alloc(size_t bytes, const char* what) override {
    auto lock = enter();
    void* p = nullptr;
    const size_t rounded = (bytes + 255) / 256 * 256;
    const cudaError_t e = cudaMallocAsync(&p, rounded ? rounded : 256, stream_);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("Out of GPU memory allocating ", long(rounded / kMiB), " MiB for ", what, " (", long(free_b / kMiB),
           " MiB free of ", long(total_b / kMiB), " MiB; ", cudaGetErrorString(e),
           "); use a smaller batch size or model");
    }
    const cudaError_t zeroed = cudaMemsetAsync(p, 0, rounded, stream_);
    if (zeroed != cudaSuccess) {
      cudaFreeAsync(p, stream_);  // the caller never sees it: it must not outlive the error
      check_cuda(zeroed, "cudaMemsetAsync (zeroing a new allocation)");
    }
    return p;
  }
  void release(void* ptr) noexcept override {
    if (!ptr) return;
    auto lock = enter();
    cudaFreeAsync(ptr, stream_);
  }
  // From pageable host memory the copy returns once the source was staged, so the caller may reuse it.
  void upload(void* dst, const void* src, size_t bytes) override {
    auto lock = enter();
    if (bytes) check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload");
  }
  void download(void* dst, const void* src, size_t bytes) override {
    auto lock = enter();
    if (!bytes) return;
    check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "download");
    check_cuda(cudaStreamSynchronize(stream_), "download");
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    auto lock = enter();
    if (bytes && dst != src) check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "copy");
  }
  void fill(float* dst, float value, size_t n) override {
    auto lock = enter();
    if (value == 0.f) {
      if (n) check_cuda(cudaMemsetAsync(dst, 0, n * sizeof(float), stream_), "cudaMemsetAsync");
    } else {
      launch_elementwise(stream_, Fill{dst, value, n});
    }
  }
  void synchronize() override {
    auto lock = enter();
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  // Free device memory plus what our pool holds unused; $DFL_MAX_MEMORY_MB caps it (tests).
  double available_bytes(std::string* source) const override {
    auto lock = enter();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaMemPool_t pool;
    uint64_t reserved = 0, used = 0;
    if (cudaDeviceGetDefaultMemPool(&pool, device_) == cudaSuccess) {
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used);
    }
    double avail = double(free_b) + double(reserved > used ? reserved - used : 0);
    *source = "free GPU memory";
    if (const char* e = std::getenv("DFL_MAX_MEMORY_MB")) {
      const double mb = std::strtod(e, nullptr);
      if (mb > 0 && mb * kMiB < avail) {
        avail = mb * kMiB;
        *source = "DFL_MAX_MEMORY_MB";
      }
    }
    return avail;
  }

  // ---- convolutions and linear layers ----------------------------------------------------------
  // bf16 needs tensor cores that take it (sm_80, Ampere, and newer).
  bool supports(const MathMode& math, std::string* why) const override {
    if (!math.bf16 || compute_major_ >= 8) return true;
    *why = "bf16 needs a GPU with compute capability 8.0 or newer (this one is " + std::to_string(compute_major_) +
           "." + std::to_string(compute_minor_) + ")";
    return false;
  }
  size_t conv2d_workspace_bytes(const Conv2dShape& s) override {
    auto lock = enter();
    return plan(s).workspace_bytes();
  }
  void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                      void* workspace, size_t workspace_bytes, Activation act) override {
    auto lock = enter();
    const ConvPlan& p = plan(s);
    check_conv_workspace("conv2d_forward", s, p.workspace_bytes(), workspace, workspace_bytes);
    const float one = 1.f, zero = 0.f;
    if (p.bf16) {
      // AMP-style: bf16 copies of the input and weights, a bf16 output cast back to float32.
      char* ws = static_cast<char*>(workspace);
      auto* x16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_x);
      auto* w16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_w);
      auto* y16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_y);
      cast_in(x16, inp, s.B, s.C, size_t(s.H) * s.W);
      cast_in(w16, weight, s.OC, s.C / s.groups, size_t(s.KH) * s.KW);
      check_cudnn(cudnnConvolutionForward(cudnn_, &one, p.x, x16, p.w, w16, p.conv, p.fwd, workspace, p.fwd_bytes,
                                          &zero, p.y, y16),
                  "cudnnConvolutionForward (bf16)", p.shape);
      launch_elementwise(stream_, FromBf16ChannelsLast{out, y16, size_t(s.B), size_t(s.OC), size_t(s.OH()) * s.OW(), false});
    } else {
      check_cudnn(cudnnConvolutionForward(cudnn_, &one, p.x, inp, p.w, weight, p.conv, p.fwd, workspace, p.fwd_bytes,
                                          &zero, p.y, out),
                  "cudnnConvolutionForward", p.shape);
    }
    const size_t P = size_t(s.OH()) * s.OW();
    if (bias || act != Activation::None)
      launch_elementwise(stream_, BiasActivation{out, bias, size_t(s.B) * s.OC * P, s.OC, P, act});
  }
  void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, const Conv2dShape& s, void* workspace, size_t workspace_bytes,
                       bool overwrite_dinp) override {
    auto lock = enter();
    const ConvPlan& p = plan(s);
    check_conv_workspace("conv2d_backward", s, p.workspace_bytes(), workspace, workspace_bytes);
    const float one = 1.f, zero = 0.f;
    if (p.bf16) {
      // bf16 gradients from cuDNN (beta = 0 into the plan's scratch), accumulated in float32 by the cast back.
      char* ws = static_cast<char*>(workspace);
      auto* dy16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_y);
      const size_t HW = size_t(s.H) * s.W, KK = size_t(s.KH) * s.KW;
      cast_in(dy16, dout, s.B, s.OC, size_t(s.OH()) * s.OW());
      if (dinp) {
        auto* w16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_w);
        auto* dx16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_dx);
        cast_in(w16, weight, s.OC, s.C / s.groups, KK);
        check_cudnn(cudnnConvolutionBackwardData(cudnn_, &one, p.w, w16, p.y, dy16, p.conv, p.bwd_data, workspace,
                                                 p.bwd_data_bytes, &zero, p.x, dx16),
                    "cudnnConvolutionBackwardData (bf16)", p.shape);
        launch_elementwise(stream_, FromBf16ChannelsLast{dinp, dx16, size_t(s.B), size_t(s.C), HW, !overwrite_dinp});
      }
      if (dweight) {
        auto* x16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_x);
        auto* dw16 = reinterpret_cast<Bf16Bits*>(ws + p.bf16_dw);
        cast_in(x16, inp, s.B, s.C, HW);
        check_cudnn(cudnnConvolutionBackwardFilter(cudnn_, &one, p.x, x16, p.y, dy16, p.conv, p.bwd_filter, workspace,
                                                   p.bwd_filter_bytes, &zero, p.w, dw16),
                    "cudnnConvolutionBackwardFilter (bf16)", p.shape);
        launch_elementwise(stream_, FromBf16ChannelsLast{dweight, dw16, size_t(s.OC), size_t(s.C / s.groups), KK, true});
      }
    } else {
      // beta = 1: accumulate into the gradients (beta = 0: overwrite the input gradient)
      if (dinp)
        check_cudnn(cudnnConvolutionBackwardData(cudnn_, &one, p.w, weight, p.y, dout, p.conv, p.bwd_data, workspace,
                                                 p.bwd_data_bytes, overwrite_dinp ? &zero : &one, p.x, dinp),
                    "cudnnConvolutionBackwardData", p.shape);
      if (dweight)
        check_cudnn(cudnnConvolutionBackwardFilter(cudnn_, &one, p.x, inp, p.y, dout, p.conv, p.bwd_filter, workspace,
                                                   p.bwd_filter_bytes, &one, p.w, dweight),
                    "cudnnConvolutionBackwardFilter", p.shape);
    }
    if (dbias) launch_rows(stream_, BiasGradient{dbias, dout, s.B, s.OC, s.OH() * s.OW()});
  }
  void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int IN, int OUT,
                      Activation act, const MathMode& math) override {
    auto lock = enter();
    check_math(math);
    gemm(false, true, B, OUT, IN, inp, IN, weight, IN, 0.f, out, OUT, math.bf16);
    if (bias || act != Activation::None)
      launch_elementwise(stream_, BiasActivation{out, bias, size_t(B) * OUT, OUT, 1, act});
  }
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int B, int IN, int OUT, const MathMode& math) override {
    auto lock = enter();
    check_math(math);
    if (dinp) gemm(false, false, B, IN, OUT, dout, OUT, weight, IN, 1.f, dinp, IN, math.bf16);
    if (dweight) gemm(true, false, OUT, IN, B, dout, OUT, inp, IN, 1.f, dweight, IN, math.bf16);
    if (dbias) launch_rows(stream_, BiasGradient{dbias, dout, B, OUT, 1});
  }

  // ---- batch norm ------------------------------------------------------------------------------
  void batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                 float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                                 int C, int HW, float momentum, float eps) override {
    batchnorm2d_forward_train_fused(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW,
                                    momentum, eps, Activation::None);
  }
  // The fused activation rides in the normalisation's pass (no separate launch over the output).
  void batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                       float* running_var, const float* inp, const float* gamma, const float* beta,
                                       int B, int C, int HW, float momentum, float eps, Activation act) override {
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
  void batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int B, int C, int HW,
                                float eps) override {
    batchnorm2d_forward_eval_fused(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps, Activation::None);
  }
  void batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma, const float* beta,
                                      const float* running_mean, const float* running_var, int B, int C, int HW,
                                      float eps, Activation act) override {
    auto lock = enter();
    launch_elementwise(stream_, BatchNormEval{out, inp, gamma, beta, running_mean, running_var,
                                              size_t(B) * C * HW, C, HW, eps, act});
  }
  void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                            const float* gamma, const float* save_mean, const float* save_invstd, int B, int C,
                            int HW) override {
    auto lock = enter();
    if (!dinp && !dgamma && !dbeta) return;
    const int S = batchnorm_slices(B, C, HW);
    Sum2* partials = static_cast<Sum2*>(scratch(sizeof(Sum2) * size_t(C) * S + sizeof(BatchNormGradCoef) * size_t(C)));
    auto* coef = reinterpret_cast<BatchNormGradCoef*>(partials + size_t(C) * S);
    launch_rows(stream_, BatchNormGradSums{partials, dout, inp, save_mean, save_invstd, B, C, HW, S});
    launch_rows(stream_, BatchNormGradTotals{coef, dgamma, dbeta, partials, gamma, save_mean, save_invstd, B, C, HW, S});
    if (dinp) launch_elementwise(stream_, BatchNormGradInput{dinp, dout, inp, coef, size_t(B) * C * HW, C, HW});
  }
  void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                      const float* beta, const float* running_mean, const float* running_var, int OC, size_t per_oc,
                      float eps) override {
    auto lock = enter();
    DFL_CHECK(OC > 0 && per_oc > 0 && eps > 0.f, "fold_batchnorm: sizes and eps must be positive");
    launch_elementwise(stream_, FoldBatchNorm{w_out, b_out, w_in, b_in, gamma, beta, running_mean, running_var, OC,
                                              per_oc, eps});
  }

  // ---- elementwise -----------------------------------------------------------------------------
  void relu_forward(float* out, const float* inp, size_t n) override { run(ReluForward{out, inp, n, false}); }
  void relu_backward(float* dinp, const float* dout, const float* inp, size_t n) override {
    if (dinp) run(ReluBackward{dinp, dout, inp, n, false});
  }
  void relu6_forward(float* out, const float* inp, size_t n) override { run(ReluForward{out, inp, n, true}); }
  void relu6_backward(float* dinp, const float* dout, const float* inp, size_t n) override {
    if (dinp) run(ReluBackward{dinp, dout, inp, n, true});
  }
  void add_forward(float* out, const float* a, const float* b, size_t n) override { run(AddForward{out, a, b, n}); }
  void add_forward_fused(float* out, const float* a, const float* b, size_t n, Activation act) override {
    run(AddForward{out, a, b, n, act});
  }
  // One pass, in place (the default would go through a temporary buffer and a copy).
  void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) override {
    if (act != Activation::None && n > 0) run(ActivationMask{dout, y, n, act});
  }
  void add_backward(float* da, float* db, const float* dout, size_t n) override {
    if (da) run(Accumulate{da, dout, n});
    if (db) run(Accumulate{db, dout, n});
  }
  void accumulate(float* dst, const float* src, size_t n) override { run(Accumulate{dst, src, n}); }
  void add_scalar(float* x, float v, size_t n) override { run(AddScalar{x, v, n}); }

  // ---- pooling ---------------------------------------------------------------------------------
  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) override {
    run(MaxPoolForward{out, argmax, inp, s});
  }
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) override {
    if (dinp) run(MaxPoolBackward{dinp, dout, argmax, s});
  }
  void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) override {
    run(AvgPoolForward{out, inp, s});
  }
  void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) override {
    if (dinp) run(AvgPoolBackward{dinp, dout, s});
  }
  void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) override {
    run(GlobalAvgPoolForward{out, inp, size_t(B) * C, HW});
  }
  void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) override {
    if (dinp) run(GlobalAvgPoolBackward{dinp, dout, size_t(B) * C, HW});
  }

  // ---- channel plumbing: one 2-D copy (forward) or strided accumulate (backward) per chunk -------
  void concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n, int B,
                               int HW) override {
    auto lock = enter();
    const size_t total = total_channels(channels, n);
    size_t off = 0;
    for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k)
      copy_2d(out + off, total * HW, inputs[k], size_t(channels[k]) * HW, size_t(channels[k]) * HW, B);
  }
  void concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n, int B,
                                int HW) override {
    auto lock = enter();
    const size_t total = total_channels(channels, n);
    size_t off = 0;
    for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k) {
      const size_t len = size_t(channels[k]) * HW;
      if (dinputs[k]) launch_elementwise(stream_, StridedAccumulate{dinputs[k], dout + off, size_t(B), len, len, total * HW});
    }
  }
  void split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B,
                              int HW) override {
    auto lock = enter();
    const size_t total = total_channels(channels, n);
    size_t off = 0;
    for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k)
      if (outputs[k]) copy_2d(outputs[k], size_t(channels[k]) * HW, inp + off, total * HW, size_t(channels[k]) * HW, B);
  }
  void split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n, int B,
                               int HW, bool overwrite) override {
    auto lock = enter();
    if (!dinp) return;
    const size_t total = total_channels(channels, n);
    size_t off = 0;
    for (int k = 0; k < n; off += size_t(channels[k]) * HW, ++k) {
      const size_t len = size_t(channels[k]) * HW;
      if (overwrite && doutputs[k]) copy_2d(dinp + off, total * HW, doutputs[k], len, len, B);
      else if (overwrite)
        check_cuda(cudaMemset2DAsync(dinp + off, total * HW * sizeof(float), 0, len * sizeof(float), size_t(B), stream_),
                   "cudaMemset2DAsync");
      else if (doutputs[k])
        launch_elementwise(stream_, StridedAccumulate{dinp + off, doutputs[k], size_t(B), len, total * HW, len});
    }
  }
  // Input k's planes are every n-th plane of the output, from plane k: one 2-D copy per input (rows
  // of HW floats, B * cpg of them, n * HW apart in the output).
  void interleave_channels_forward(float* out, const float* const* inputs, int n, int cpg, int B, int HW) override {
    auto lock = enter();
    DFL_CHECK(n > 0 && cpg > 0 && B > 0 && HW > 0, "interleave_channels_forward: sizes must be positive");
    const size_t rows = size_t(B) * cpg, hw = size_t(HW);
    for (int k = 0; k < n; ++k) copy_2d(out + k * hw, n * hw, inputs[k], hw, hw, int(rows));
  }
  void interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B, int HW,
                                    bool overwrite) override {
    auto lock = enter();
    DFL_CHECK(n > 0 && cpg > 0 && B > 0 && HW > 0, "interleave_channels_backward: sizes must be positive");
    const size_t rows = size_t(B) * cpg, hw = size_t(HW);
    for (int k = 0; k < n; ++k) {
      if (!dinputs[k]) continue;
      if (overwrite) copy_2d(dinputs[k], hw, dout + k * hw, n * hw, hw, int(rows));
      else launch_elementwise(stream_, StridedAccumulate{dinputs[k], dout + k * hw, rows, hw, hw, n * hw});
    }
  }
  void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups) override {
    DFL_CHECK(groups > 0 && C % groups == 0, "channel_shuffle_forward: groups (", groups, ") must divide C (", C, ")");
    run(ChannelShuffle{out, inp, size_t(B) * C * HW, C, HW, groups, false});
  }
  void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) override {
    DFL_CHECK(groups > 0 && C % groups == 0, "channel_shuffle_backward: groups (", groups, ") must divide C (", C, ")");
    if (dinp) run(ChannelShuffle{dinp, dout, size_t(B) * C * HW, C, HW, groups, true});
  }

  // ---- dropout ---------------------------------------------------------------------------------
  void dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed) override {
    DFL_CHECK(p >= 0.f && p <= 1.f, "dropout_forward: p must be in [0, 1], got ", p);
    run(DropoutForward{out, mask, inp, n, p, p < 1.f ? 1.f / (1.f - p) : 0.f, seed});
  }
  void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) override {
    if (dinp) run(DropoutBackward{dinp, dout, mask, n});
  }

  // ---- losses ----------------------------------------------------------------------------------
  void cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                             float label_smoothing, double* loss_sum) override {
    auto lock = enter();
    DFL_CHECK(B > 0 && NC > 0, "cross_entropy_forward: B and NC must be positive");
    DFL_CHECK(label_smoothing >= 0.f && label_smoothing <= 1.f, "cross_entropy_forward: label_smoothing must be in [0, 1]");
    launch_elementwise(stream_, CrossEntropyRow{losses, probs, logits, targets, B, NC, label_smoothing});
    launch_elementwise(stream_, RowSum{loss_sum, losses, size_t(B)});
  }
  void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                              float label_smoothing, float scale) override {
    run(CrossEntropyBackward{dlogits, probs, targets, B, NC, label_smoothing, scale});
  }
  void ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                           const float* teacher_logits, const float* weights, int K, int B, int NC, float T,
                           double* loss_sum) override {
    auto lock = enter();
    DFL_CHECK(K >= 1, "ensemble_kl_forward: needs at least one teacher (K = ", K, ")");
    DFL_CHECK(B > 0 && NC > 0, "ensemble_kl_forward: B and NC must be positive");
    DFL_CHECK(T > 0.f, "ensemble_kl_forward: temperature must be > 0, got ", T);
    double* mixture = static_cast<double*>(scratch(sizeof(double) * size_t(B) * NC));
    launch_elementwise(stream_, EnsembleKlRow{losses, student_probs, teacher_probs, mixture, student_logits,
                                              teacher_logits, weights, K, B, NC, T});
    launch_elementwise(stream_, RowSum{loss_sum, losses, size_t(B)});
  }
  void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B, int NC,
                            float T, float scale) override {
    run(EnsembleKlBackward{dlogits, student_probs, teacher_probs, size_t(B) * NC, scale * T});
  }
  void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) override {
    DFL_CHECK(K > 0 && B > 0 && NC > 0 && T > 0.f, "teacher_confidence: sizes and T must be positive");
    run(TeacherConfidence{weights, teacher_logits, size_t(K) * B, NC, T});
  }

  // ---- optimiser -------------------------------------------------------------------------------
  void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
                const SgdConfig& cfg) override {
    DFL_CHECK(momentum_buf || cfg.momentum == 0.f, "sgd_step: momentum > 0 needs a momentum buffer");
    run(SgdStep{params, momentum_buf, grads, decay_mask, n, cfg});
  }
  void sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                             const float* decay_mask, size_t n, const SgdConfig& cfg, int32_t* finite) override {
    auto lock = enter();
    DFL_CHECK(momentum_buf || cfg.momentum == 0.f, "sgd_step_stays_finite: momentum > 0 needs a momentum buffer");
    reduce_into(SgdFiniteValue{params, momentum_buf, grads, decay_mask, cfg}, n, finite);
  }

  // ---- batches ---------------------------------------------------------------------------------
  void augment_batch(float* out, const uint8_t* images, int B, int C, int H, int W, int pad,
                     const AugmentDraw* draws_host, const float* mean_host, const float* std_host) override {
    auto lock = enter();
    check_batch(B, C, H, W, mean_host, std_host, "augment_batch");
    DFL_CHECK(pad >= 0 && pad <= (1 << 20), "augment_apply: pad must be in [0, 2^20], got ", pad);
    for (int b = 0; b < B; ++b)
      DFL_CHECK(draws_host[b].dy >= 0 && draws_host[b].dy <= 2 * pad && draws_host[b].dx >= 0 &&
                    draws_host[b].dx <= 2 * pad,
                "augment_apply: crop offsets of image ", b, " outside [0, ", 2 * pad, "]");
    Staged st(*this);
    const auto mean = st.put(mean_host, C), stdv = st.put(std_host, C);
    const auto draws = st.put(draws_host, B);
    st.upload();
    launch_elementwise(stream_, AugmentBatch{out, images, st.at(draws), st.at(mean), st.at(stdv), B, C, H, W, pad});
  }
  void normalize_batch(float* out, const uint8_t* images, int B, int C, int H, int W, const float* mean_host,
                       const float* std_host) override {
    auto lock = enter();
    check_batch(B, C, H, W, mean_host, std_host, "normalize_batch");
    Staged st(*this);
    const auto mean = st.put(mean_host, C), stdv = st.put(std_host, C);
    st.upload();
    launch_elementwise(stream_, AugmentBatch{out, images, nullptr, st.at(mean), st.at(stdv), B, C, H, W, 0});
  }
  void gather_images(uint8_t* dst, const uint8_t* src, const int32_t* indices_host, int B,
                     size_t image_bytes) override {
    auto lock = enter();
    Staged st(*this);
    const auto indices = st.put(indices_host, size_t(B));
    st.upload();
    launch_elementwise(stream_, GatherImages{dst, src, st.at(indices), size_t(B), image_bytes});
  }

  // ---- reductions ------------------------------------------------------------------------------
  void sum_squares(const float* x, size_t n, double* out) override {
    auto lock = enter();
    reduce_into(SquareValue{x}, n, out);
  }
  void all_finite(const float* x, size_t n, int32_t* out) override {
    auto lock = enter();
    reduce_into(FiniteValue{x}, n, out);
  }
  void count_correct(const float* logits, const int32_t* labels, int B, int NC, int32_t* out) override {
    auto lock = enter();
    reduce_into(CorrectValue{logits, labels, NC}, size_t(B), out);
  }

 private:
  // The lock for one call, with this backend's device current on the calling thread.
  std::unique_lock<std::mutex> enter() const {
    std::unique_lock<std::mutex> lock(mu_);
    cudaSetDevice(device_);
    return lock;
  }
  template <typename Body>
  void run(const Body& body) {
    auto lock = enter();
    launch_elementwise(stream_, body);
  }

  static size_t total_channels(const int* channels, int n) {
    DFL_CHECK(n >= 1, "concat/split: needs at least one chunk");
    size_t total = 0;
    for (int k = 0; k < n; ++k) {
      DFL_CHECK(channels[k] > 0, "concat/split: chunk ", k, " has ", channels[k], " channels");
      total += size_t(channels[k]);
    }
    return total;
  }
  static void check_batch(int B, int C, int H, int W, const float* mean, const float* stdv, const char* who) {
    DFL_CHECK(B > 0 && C > 0 && H > 0 && W > 0, who, ": sizes must be positive");
    for (int c = 0; c < C; ++c)
      DFL_CHECK(std::isfinite(mean[c]) && std::isfinite(stdv[c]) && stdv[c] != 0.f, who, ": std[", c, "] = ", stdv[c],
                " must be finite and non-zero (mean finite)");
  }

  // rows x width floats from src (row stride src_ld) to dst (row stride dst_ld).
  void copy_2d(float* dst, size_t dst_ld, const float* src, size_t src_ld, size_t width, int rows) {
    check_cuda(cudaMemcpy2DAsync(dst, dst_ld * sizeof(float), src, src_ld * sizeof(float), width * sizeof(float),
                                 size_t(rows), cudaMemcpyDeviceToDevice, stream_),
               "cudaMemcpy2DAsync");
  }

  // Row-major C (M,N) = op(A) op(B) + beta C with alpha 1, as cpu::sgemm, on cuBLAS (column-major):
  // C^T = op(B)^T op(A)^T. bf16: A and B are cast to bf16 first (cast scratch), C stays float32 and
  // the products accumulate in float32 (CUBLAS_COMPUTE_32F), as PyTorch's autocast runs a linear layer.
  void gemm(bool trans_a, bool trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc, bool bf16) {
    const float alpha = 1.f;
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (!bf16) {
      check_cublas(cublasSgemm(cublas_, op_b, op_a, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc), "cublasSgemm",
                   gemm_text(trans_a, trans_b, M, N, K, "float32"));
      return;
    }
    // Both operands are dense row-major blocks: A has (trans_a ? K : M) rows of lda, B (trans_b ? N : K) rows of ldb.
    const size_t na = size_t(trans_a ? K : M) * lda, nb = size_t(trans_b ? N : K) * ldb;
    auto* a16 = static_cast<Bf16Bits*>(grow(cast_scratch_, &cast_scratch_bytes_, (na + nb) * sizeof(Bf16Bits)));
    Bf16Bits* b16 = a16 + na;
    cast_in(a16, A, 1, na, 1);
    cast_in(b16, B, 1, nb, 1);
    check_cublas(cublasGemmEx(cublas_, op_b, op_a, N, M, K, &alpha, b16, CUDA_R_16BF, ldb, a16, CUDA_R_16BF, lda, &beta,
                              C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx", gemm_text(trans_a, trans_b, M, N, K, "bf16"));
  }
  static std::string gemm_text(bool trans_a, bool trans_b, int M, int N, int K, const char* type) {
    return std::string("row-major GEMM M=") + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
           (trans_a ? " A^T" : "") + (trans_b ? " B^T" : "") + " " + type;
  }
  // dst (rows, HW, C) bf16 from src (rows, C, HW) float32 (HW = 1: a plain cast).
  void cast_in(Bf16Bits* dst, const float* src, size_t rows, size_t C, size_t HW) {
    launch_elementwise(stream_, ToBf16ChannelsLast{dst, src, rows, C, HW});
  }
  const ConvPlan& plan(const Conv2dShape& s) {
    check_math(s.math);
    return plans_->get(s);
  }
  void check_math(const MathMode& math) const {
    std::string why;
    DFL_CHECK(supports(math, &why), "cuda backend: ", why);
  }

  // Device scratch of at least `bytes` (grown, never shrunk; stream-ordered).
  void* scratch(size_t bytes) { return grow(scratch_, &scratch_bytes_, bytes); }
  void* grow(DeviceMemory& buf, size_t* have, size_t bytes) {
    if (bytes <= *have) return buf;
    if (void* old = buf.release()) cudaFreeAsync(old, stream_);
    *have = 0;
    void* fresh = nullptr;
    check_cuda(cudaMallocAsync(&fresh, bytes, stream_), "allocating backend scratch");
    buf.reset(fresh);
    *have = bytes;
    return fresh;
  }

  // Small host arrays of one call (draws, mean/std, indices), gathered with put() and copied in one
  // go into the device staging buffer by upload(). Calls are serialised and stream-ordered, so the
  // next call's copy lands after this call's kernels have read the buffer.
  class Staged {
   public:
    template <typename T>
    struct Ref {
      size_t offset;
    };
    explicit Staged(CudaBackend& be) : be_(be) {}
    template <typename T>
    Ref<T> put(const T* host, size_t n) {
      const size_t at = (host_.size() + 15) / 16 * 16;
      host_.resize(at + n * sizeof(T));
      std::memcpy(host_.data() + at, host, n * sizeof(T));
      return {at};
    }
    void upload() {
      be_.grow(be_.staging_, &be_.staging_bytes_, std::max<size_t>(host_.size(), 4096));
      check_cuda(cudaMemcpyAsync(be_.staging_, host_.data(), host_.size(), cudaMemcpyHostToDevice, be_.stream_),
                 "staging call arguments");
    }
    template <typename T>
    const T* at(Ref<T> r) const {
      return reinterpret_cast<const T*>(static_cast<const char*>(be_.staging_.get()) + r.offset);
    }

   private:
    CudaBackend& be_;
    std::vector<char> host_;
  };

  // A whole-array reduction in two fixed stages (bodies/reduce.h), its result into device memory.
  template <typename V, typename Out>
  void reduce_into(const V& value, size_t n, Out* out) {
    using Acc = typename V::Acc;
    static_assert(sizeof(Acc) == sizeof(Out), "the result slot holds the reduction's accumulator");
    Acc* result = reinterpret_cast<Acc*>(out);
    if (n == 0) {  // a copy from pageable memory returns once staged: the local may go
      const Acc identity = V::identity();
      check_cuda(cudaMemcpyAsync(result, &identity, sizeof(Acc), cudaMemcpyHostToDevice, stream_), "reduce_into");
      return;
    }
    const size_t chunk = std::max<size_t>(8192, (n + 1023) / 1024);
    const int rows = int((n + chunk - 1) / chunk);
    Acc* partials = static_cast<Acc*>(scratch(sizeof(Acc) * size_t(rows)));
    launch_rows(stream_, ChunkReduce<V>{value, n, chunk, partials});
    launch_rows(stream_, PartialsReduce<V>{partials, rows, result});
  }

  const std::string name_ = "cuda";
  std::string description_;
  int device_;
  mutable std::mutex mu_;  // one call at a time (see the top of this file)
  // Owners, in the order they are made (they go in reverse): the stream, the handles on it, the
  // plans made with cuDNN's, then device buffers (freed after the destructor's synchronisation).
  OwnedStream stream_;
  OwnedCudnn cudnn_;
  OwnedCublas cublas_;
  std::unique_ptr<ConvPlans> plans_;
  DeviceMemory scratch_;
  size_t scratch_bytes_ = 0;
  DeviceMemory cast_scratch_;  // bf16 operands of linear layers
  size_t cast_scratch_bytes_ = 0;
  int compute_major_ = 0, compute_minor_ = 0;
  DeviceMemory staging_;
  size_t staging_bytes_ = 0;
};

// The driver's or the libraries' words when the GPU cannot be used.
std::string runtime_error(cudaError_t e, const char* what) {
  return std::string(what) + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
}

}  // namespace

}  // namespace dfl::cuda

extern "C" __attribute__((visibility("default"))) dfl::Backend* dfl_create_backend(const char* abi, std::string* error) {
  using dfl::cuda::runtime_error;
  try {
    if (std::string(abi) != DFL_BACKEND_ABI) {
      *error = std::string("libdfl_cuda.so was built against another version of backend.h (") + DFL_BACKEND_ABI +
               ", the addon has " + abi + "); rebuild both (npm run build:native)";
      return nullptr;
    }
    const dfl::cuda::VersionCheck libraries = dfl::cuda::check_library_versions(dfl::cuda::library_versions());
    if (!libraries.ok) {
      *error = libraries.text;
      return nullptr;
    }
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      *error = runtime_error(e, "no usable GPU (cudaGetDeviceCount)");
      return nullptr;
    }
    if (count == 0) {
      *error = "no CUDA GPU found (cudaGetDeviceCount returned 0)";
      return nullptr;
    }
    int device = 0;
    if (const char* d = std::getenv("DFL_CUDA_DEVICE")) device = std::atoi(d);
    if (device < 0 || device >= count) {
      *error = "DFL_CUDA_DEVICE=" + std::to_string(device) + " but " + std::to_string(count) + " GPU(s) found";
      return nullptr;
    }
    return new dfl::cuda::CudaBackend(device);
  } catch (const std::exception& ex) {
    *error = ex.what();
    return nullptr;
  }
}

// For scripts/gpu/check-cuda-build.sh (ctypes, no Node): constructs the backend on device 0 without
// asking for a device first, so that on a machine with no driver the constructor itself fails, then
// returns how many of its handles (stream, cuDNN, cuBLAS, device buffers) are still held: 0 unless
// a failure leaked one. `message` gets the constructor's error, or the device when it succeeded
// (the backend is then destroyed before counting).
extern "C" __attribute__((visibility("default"))) int dfl_cuda_constructor_probe(char* message, size_t capacity) {
  using namespace dfl::cuda;
  std::string text;
  try {
    CudaBackend backend(0);
    text = "constructed: " + backend.description();
  } catch (const std::exception& ex) {
    text = ex.what();
  }
  if (message && capacity) {
    const size_t n = std::min(text.size(), capacity - 1);
    std::memcpy(message, text.data(), n);
    message[n] = 0;
  }
  return live_handles();
}

extern "C" __attribute__((visibility("default"))) bool dfl_library_versions(std::string* text) {
  try {
    const dfl::cuda::VersionCheck r = dfl::cuda::check_library_versions(dfl::cuda::library_versions());
    *text = r.text;
    return r.ok;
  } catch (const std::exception& ex) {
    *text = ex.what();
    return false;
  }
}
