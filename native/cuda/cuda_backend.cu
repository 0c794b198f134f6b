// The CUDA backend (cuda/cuda_backend.h): construction, memory and the entry points
// core/backend.cpp opens libdfl_cuda.so by (dfl_create_backend, core/backend_plugin.h). Its kernels
// are in cuda/kernels_*.cu, each checked on the host against cpu/kernels.h by the CPU tests.
#include "cuda/cuda_backend.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/backend_plugin.h"

namespace dfl::cuda {

namespace {

// The driver's or the libraries' words when the GPU cannot be used.
std::string runtime_error(cudaError_t e, const char* what) {
  return std::string(what) + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
}

}  // namespace

}  // namespace dfl::cuda

extern "C" __attribute__((visibility("default"))) dfl::Backend* dfl_create_backend(const char* abi,
                                                                                   std::string* error) {
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
