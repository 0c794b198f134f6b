// Ownership of one handle of a C library (a CUDA stream, a cuDNN or cuBLAS handle, device memory):
// released once, by the library's own destroy function, when its owner goes. A constructor that
// fails half way (cuda_backend.cu) thereby releases what it had made and nothing else. Plain C++
// (no CUDA header), so the CPU tests check it (test/native/test_cuda_messages.cpp).
#pragma once
#include <utility>

namespace dfl::cuda {

template <typename T, auto Destroy>
class Owned {
 public:
  Owned() = default;
  explicit Owned(T handle) : handle_(handle) {}
  Owned(Owned&& o) noexcept : handle_(std::exchange(o.handle_, T{})) {}
  Owned& operator=(Owned&& o) noexcept {
    if (this != &o) reset(std::exchange(o.handle_, T{}));
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { reset(); }

  T get() const { return handle_; }
  // The handle itself, so that an owner is passed to the library's calls as the handle is.
  operator T() const { return handle_; }
  // Gives the handle up without destroying it (the caller frees it another way).
  T release() noexcept { return std::exchange(handle_, T{}); }
  // Releases the handle held (if any) and takes `handle`.
  void reset(T handle = T{}) noexcept {
    if (handle_ != T{}) Destroy(handle_);
    handle_ = handle;
  }

 private:
  T handle_{};
};

}  // namespace dfl::cuda
