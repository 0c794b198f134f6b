// The CUDA backend's error and version texts. Plain C++ with no CUDA header, so that the CPU tests
// (test/native/test_cuda_messages.cpp) check them on machines with no GPU and no CUDA libraries;
// cuda_backend.cu and conv_cudnn.cu fill them with the libraries' own words and numbers.
#pragma once
#include <cstddef>
#include <string>

#include "core/shapes.h"

namespace dfl::cuda {

// A convolution as cuDNN's messages and logs name it (K output channels, R x S kernel), with the
// type it runs in: "conv N=128 C=64 H=32 W=32 K=128 R=3 S=3 stride 1x1 pad 1x1 groups 1 float32".
inline std::string conv_shape_text(const Conv2dShape& s, bool bf16) {
  auto n = [](int v) { return std::to_string(v); };
  return "conv N=" + n(s.B) + " C=" + n(s.C) + " H=" + n(s.H) + " W=" + n(s.W) + " K=" + n(s.OC) + " R=" + n(s.KH) +
         " S=" + n(s.KW) + " stride " + n(s.stride_h) + "x" + n(s.stride_w) + " pad " + n(s.pad_h) + "x" + n(s.pad_w) +
         " groups " + n(s.groups) + (bf16 ? " bf16" : " float32") +
         (s.math.nondeterministic ? " (non-deterministic algorithms allowed)" : "");
}

// "what: STATUS (library: its last message) for CONTEXT"; the parts that are empty are left out.
inline std::string library_error_text(const std::string& what, const std::string& status, const std::string& library,
                                      const std::string& detail, const std::string& context) {
  std::string t = what + ": " + status;
  if (!detail.empty()) t += " (" + library + ": " + detail + ")";
  if (!context.empty()) t += " for " + context;
  return t;
}

// The versions the CUDA backend was built against and the ones it runs with. Encodings are the
// libraries' own: CUDA runtime and driver major*1000 + minor*10 (13000 = 13.0), cuDNN 9 and cuBLAS
// major*10000 + minor*100 + patch.
struct LibraryVersions {
  int runtime = 0;          // cudaRuntimeGetVersion (linked statically: the toolkit's)
  int runtime_built = 0;    // CUDART_VERSION of the headers
  int driver = 0;           // cudaDriverGetVersion; 0 when no driver is installed
  size_t cudnn = 0;         // cudnnGetVersion
  size_t cudnn_built = 0;   // CUDNN_VERSION of the headers
  size_t cudnn_cudart = 0;  // cudnnGetCudartVersion: the CUDA runtime cuDNN itself was built with
  int cublas = 0;           // cublasGetProperty (major, minor, patch)
  int cublas_built = 0;     // CUBLAS_VERSION of the headers
};

struct VersionCheck {
  bool ok = true;    // false: the libraries cannot work together (the backend refuses to start)
  std::string text;  // one line for `info`; says what disagrees and what to do
};

inline std::string cuda_version_text(long v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }
inline std::string library_version_text(long v) {
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

// Majors must agree (a cuDNN or cuBLAS of another major, or a cuDNN built for another CUDA major,
// is another ABI); minor differences are reported and allowed (CUDA's minor version compatibility).
inline VersionCheck check_library_versions(const LibraryVersions& v) {
  VersionCheck r;
  r.text = "CUDA runtime " + cuda_version_text(v.runtime) + " (static";
  if (v.runtime != v.runtime_built) r.text += ", headers " + cuda_version_text(v.runtime_built);
  r.text += "), driver " + (v.driver ? cuda_version_text(v.driver) : std::string("none"));
  if (v.driver && v.driver < v.runtime) r.text += " (older than the runtime)";
  r.text +=
      "; cuDNN " + library_version_text(long(v.cudnn)) + " built for CUDA " + cuda_version_text(long(v.cudnn_cudart));
  if (v.cudnn != v.cudnn_built) r.text += " (headers " + library_version_text(long(v.cudnn_built)) + ")";
  r.text += "; cuBLAS " + library_version_text(v.cublas);
  if (v.cublas != v.cublas_built) r.text += " (headers " + library_version_text(v.cublas_built) + ")";
  std::string problems;
  auto problem = [&](const std::string& p) { problems += (problems.empty() ? "" : "; ") + p; };
  if (v.cudnn / 10000 != v.cudnn_built / 10000)
    problem("cuDNN " + library_version_text(long(v.cudnn)) + " was loaded but libdfl_cuda.so was built against cuDNN " +
            library_version_text(long(v.cudnn_built)) +
            ": rebuild (npm run build:native) or set CUDNN_ROOT to a cuDNN " + std::to_string(v.cudnn_built / 10000));
  if (long(v.cudnn_cudart) / 1000 != v.runtime / 1000)
    problem("cuDNN was built for CUDA " + cuda_version_text(long(v.cudnn_cudart)) + " but libdfl_cuda.so runs CUDA " +
            cuda_version_text(v.runtime) + ": install the cuDNN build for CUDA " + std::to_string(v.runtime / 1000) +
            " (pip install nvidia-cudnn-cu" + std::to_string(v.runtime / 1000) + ")");
  if (v.cublas / 10000 != v.cublas_built / 10000)
    problem("cuBLAS " + library_version_text(v.cublas) + " was loaded but libdfl_cuda.so was built against cuBLAS " +
            library_version_text(v.cublas_built) + ": set CUBLAS_ROOT to a cuBLAS " +
            std::to_string(v.cublas_built / 10000) + " or rebuild");
  if (!problems.empty()) {
    r.ok = false;
    r.text += ". Mismatch: " + problems;
  }
  return r;
}

}  // namespace dfl::cuda
