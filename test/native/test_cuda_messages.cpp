// The CUDA backend's host-side pieces that need no GPU: its error texts (a cuDNN error names the
// status, cuDNN's last message and the convolution), the library version check behind `info` and
// the backend's refusal, and the handle ownership that lets its constructor fail half way without
// leaking (cuda/messages.h, cuda/owned.h). Where libdfl_cuda.so is built and found, the versions
// it reports are checked too.
#include <stdexcept>
#include <string>
#include <vector>

#include "core/backend.h"
#include "cuda/messages.h"
#include "cuda/owned.h"
#include "harness.h"

using namespace dfl;
using namespace dfl::cuda;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A stand-in library: handles are small integers; destroying one records it.
std::vector<int>& destroyed() {
  static std::vector<int> d;
  return d;
}
int destroy_handle(int h) {
  destroyed().push_back(h);
  return 0;
}
using Handle = Owned<int, destroy_handle>;

// A constructor in the CUDA backend's pattern: each handle owned by a member as soon as it exists.
struct ThreeHandles {
  Handle a, b, c;
  explicit ThreeHandles(int fail_at) {
    a.reset(1);
    if (fail_at == 2) throw std::runtime_error("second step failed");
    b.reset(2);
    if (fail_at == 3) throw std::runtime_error("third step failed");
    c.reset(3);
  }
};

LibraryVersions agreeing() {
  LibraryVersions v;
  v.runtime = v.runtime_built = 13000;
  v.driver = 13000;
  v.cudnn = v.cudnn_built = 92400;
  v.cudnn_cudart = 13000;
  v.cublas = v.cublas_built = 130101;
  return v;
}

}  // namespace

DFL_CPU_TEST(cuda_error_texts_name_the_status_the_library_message_and_the_shape) {
  Conv2dShape s{128, 64, 32, 32, 128, 3, 3, 1, 1, 1, 1, 1};
  DFL_EXPECT(conv_shape_text(s, false) == "conv N=128 C=64 H=32 W=32 K=128 R=3 S=3 stride 1x1 pad 1x1 groups 1 float32",
             conv_shape_text(s, false));
  s.math.nondeterministic = true;
  s.stride_w = 2;
  DFL_EXPECT(conv_shape_text(s, true) ==
                 "conv N=128 C=64 H=32 W=32 K=128 R=3 S=3 stride 1x2 pad 1x1 groups 1 bf16 (non-deterministic "
                 "algorithms allowed)",
             conv_shape_text(s, true));
  DFL_EXPECT(library_error_text("cudnnConvolutionForward", "CUDNN_STATUS_BAD_PARAM", "cuDNN", "xDesc: bad stride",
                                "conv N=1") ==
                 "cudnnConvolutionForward: CUDNN_STATUS_BAD_PARAM (cuDNN: xDesc: bad stride) for conv N=1",
             "full text");
  DFL_EXPECT(library_error_text("cudnnCreate", "CUDNN_STATUS_NOT_INITIALIZED", "cuDNN", "", "") ==
                 "cudnnCreate: CUDNN_STATUS_NOT_INITIALIZED",
             "no library message, no context");
}

DFL_CPU_TEST(cuda_library_versions_agree_or_say_what_to_install) {
  VersionCheck ok = check_library_versions(agreeing());
  DFL_EXPECT(ok.ok, ok.text);
  DFL_EXPECT(ok.text == "CUDA runtime 13.0 (static), driver 13.0; cuDNN 9.24.0 built for CUDA 13.0; cuBLAS 13.1.1",
             ok.text);

  LibraryVersions v = agreeing();
  v.driver = 0;
  v.cudnn_cudart = 13010;  // a newer minor: allowed, and said
  v.cudnn = 92500;         // a newer cuDNN 9 than the headers: allowed, and said
  ok = check_library_versions(v);
  DFL_EXPECT(ok.ok, ok.text);
  DFL_EXPECT(contains(ok.text, "driver none") && contains(ok.text, "cuDNN 9.25.0 built for CUDA 13.1 (headers 9.24.0)"),
             ok.text);

  v = agreeing();
  v.driver = 12080;
  DFL_EXPECT(contains(check_library_versions(v).text, "driver 12.8 (older than the runtime)"),
             check_library_versions(v).text);

  v = agreeing();
  v.cudnn_cudart = 12080;  // cuDNN's CUDA 12 build next to our CUDA 13 runtime
  VersionCheck bad = check_library_versions(v);
  DFL_EXPECT(!bad.ok, bad.text);
  DFL_EXPECT(contains(bad.text, "Mismatch: cuDNN was built for CUDA 12.8 but libdfl_cuda.so runs CUDA 13.0") &&
                 contains(bad.text, "pip install nvidia-cudnn-cu13"),
             bad.text);

  v = agreeing();
  v.cublas = 120902;
  bad = check_library_versions(v);
  DFL_EXPECT(
      !bad.ok && contains(bad.text, "cuBLAS 12.9.2 was loaded but libdfl_cuda.so was built against cuBLAS 13.1.1"),
      bad.text);
  v.cudnn = 81000;
  bad = check_library_versions(v);
  DFL_EXPECT(
      !bad.ok && contains(bad.text, "cuDNN 8.10.0 was loaded") && contains(bad.text, "; cuBLAS 12.9.2 was loaded"),
      "both mismatches are named: " << bad.text);
}

DFL_CPU_TEST(cuda_handles_are_released_once_also_when_a_constructor_fails_half_way) {
  destroyed().clear();
  {
    ThreeHandles all(0);
    DFL_EXPECT(Handle::live() == 3, "three held: " << Handle::live());
  }
  DFL_EXPECT(Handle::live() == 0, "none held after the owner went: " << Handle::live());
  DFL_EXPECT((destroyed() == std::vector<int>{3, 2, 1}), "all three, in reverse order");
  for (int fail_at : {2, 3}) {
    destroyed().clear();
    bool threw = false;
    try {
      ThreeHandles partial(fail_at);
    } catch (const std::runtime_error&) {
      threw = true;
    }
    const std::vector<int> want = fail_at == 2 ? std::vector<int>{1} : std::vector<int>{2, 1};
    DFL_EXPECT(threw && destroyed() == want, "failing at step " << fail_at << " releases exactly what was made");
    DFL_EXPECT(Handle::live() == 0, "failing at step " << fail_at << " leaves " << Handle::live() << " held");
  }
  destroyed().clear();
  {
    Handle h(7);
    Handle moved(std::move(h));
    DFL_EXPECT(h.get() == 0 && moved.get() == 7, "a move hands the handle over");
    Handle other(8);
    other = std::move(moved);  // releases 8, takes 7
    DFL_EXPECT(destroyed() == std::vector<int>{8}, "assignment releases the handle it held");
    DFL_EXPECT(Handle::live() == 1, "a move and a move-assignment hold one: " << Handle::live());
    const int given_up = other.release();
    DFL_EXPECT(given_up == 7 && !other.get(), "release gives the handle up");
    DFL_EXPECT(Handle::live() == 0, "a released handle is no longer counted: " << Handle::live());
    Handle none;
  }
  DFL_EXPECT(destroyed() == std::vector<int>{8}, "released and empty owners destroy nothing");
}

// Where libdfl_cuda.so was built and opened (a machine with cuDNN and cuBLAS, GPU or not), it says
// which versions it found, and they agree; without it there is nothing to report.
DFL_CPU_TEST(cuda_backend_reports_its_library_versions) {
  for (const BackendStatus& b : backend_statuses()) {
    if (b.name == "cpu") DFL_EXPECT(b.libraries.empty(), "cpu: " << b.libraries);
    if (b.name != "cuda" || b.libraries.empty()) continue;
    DFL_EXPECT(contains(b.libraries, "CUDA runtime ") && contains(b.libraries, "; cuDNN 9.") &&
                   contains(b.libraries, " built for CUDA ") && contains(b.libraries, "; cuBLAS "),
               b.libraries);
    DFL_EXPECT(!contains(b.libraries, "Mismatch") || !b.usable,
               "a mismatch must keep the backend unusable: " << b.libraries);
  }
}
