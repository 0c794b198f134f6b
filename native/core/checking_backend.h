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

  bool supports(const MathMode& math, std::string* why) const override { return inner_->supports(math, why); }

  // Every kernel of core/backend_kernels.def: its extents checked, then passed on (checking_backend.cpp).
#define DFL_KERNEL(name, params, args) void name params override;
#define DFL_KERNEL_OWN(ret, name, params, args) ret name params override;
#define DFL_KERNEL_FUSED(name, params, args) void name params override;
#include "core/backend_kernels.def"

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
  std::string pending_;               // a violation found in release()
  std::atomic<uint64_t> downloads_{0};
};

}  // namespace dfl
