// Ownership of one handle of a C library (a CUDA stream, a cuDNN or cuBLAS handle, device memory):
// released once, by the library's own destroy function, when its owner goes. A constructor that
// fails half way (cuda_backend.cu) thereby releases what it had made and nothing else. Plain C++
// (no CUDA header), so the CPU tests check it (test/native/test_cuda_messages.cpp).
#pragma once
#include <atomic>
#include <utility>

namespace dfl::cuda {

template <typename T, auto Destroy>
class Owned {
 public:
  Owned() = default;
  explicit Owned(T handle) { reset(handle); }
  Owned(Owned&& o) noexcept : handle_(std::exchange(o.handle_, T{})) {}
  Owned& operator=(Owned&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { reset(); }

  T get() const { return handle_; }
  // How many handles of this kind are held now, by all owners: the check that a failed constructor
  // left none behind (dfl_cuda_constructor_probe, test_cuda_messages.cpp).
  static int live() { return live_.load(); }
  // The handle itself, so that an owner is passed to the library's calls as the handle is.
  operator T() const { return handle_; }
  // Gives the handle up without destroying it (the caller frees it another way).
  T release() noexcept {
    if (handle_ != T{}) --live_;
    return std::exchange(handle_, T{});
  }
  // Releases the handle held (if any) and takes `handle`.
  void reset(T handle = T{}) noexcept {
    if (handle_ != T{}) {
      Destroy(handle_);
      --live_;
    }
    handle_ = handle;
    if (handle_ != T{}) ++live_;
  }

 private:
  T handle_{};
  inline static std::atomic<int> live_{0};
};

}  // namespace dfl::cuda
