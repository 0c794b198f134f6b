// The CUDA backend's class (cuda/cuda_backend.cu: construction, memory and the library's entry
// points; cuda/kernels_*.cu: its kernels, one file per family as native/cpu is). Internal to
// libdfl_cuda.so: nothing outside native/cuda includes it.
//
// Every call is enqueued on the backend's one stream in call order; reductions write their results
// to device memory, and only download() synchronises. Models on different host threads may share the
// backend: one lock serialises the calls (the handles, the plans and the scratch buffers below are
// shared), and the GPU runs one stream anyway. Memory is stream-ordered (cudaMallocAsync /
// cudaFreeAsync), so a buffer released while kernels that read it are queued stays valid until they ran.
#pragma once
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
#include "core/check.h"
#include "core/kernel_math.h"
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

using namespace dfl::cuda_bodies;

inline void check_cublas(cublasStatus_t s, const char* what, const std::string& context = std::string()) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail(library_error_text(what, cublasGetStatusName(s), "cuBLAS", cublasGetStatusString(s), context));
}

// What this library was built against and runs with (no GPU needed: none of these calls starts CUDA).
inline LibraryVersions library_versions() {
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
inline int live_handles() {
  return DeviceMemory::live() + OwnedStream::live() + OwnedCudnn::live() + OwnedCublas::live();
}

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

  // ---- kernels: every row of core/backend_kernels.def, defined by family in cuda/kernels_*.cu ----
  // bf16 needs tensor cores that take it (sm_80, Ampere, and newer).
  bool supports(const MathMode& math, std::string* why) const override {
    if (!math.bf16 || compute_major_ >= 8) return true;
    *why = "bf16 needs a GPU with compute capability 8.0 or newer (this one is " + std::to_string(compute_major_) +
           "." + std::to_string(compute_minor_) + ")";
    return false;
  }

#define DFL_KERNEL(name, params, args) void name params override;
#define DFL_KERNEL_OWN(ret, name, params, args) ret name params override;
#define DFL_KERNEL_FUSED(name, params, args) void name params override;
#include "core/backend_kernels.def"

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
    return std::string("row-major GEMM M=") + std::to_string(M) + " N=" + std::to_string(N) +
           " K=" + std::to_string(K) + (trans_a ? " A^T" : "") + (trans_b ? " B^T" : "") + " " + type;
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

}  // namespace dfl::cuda
