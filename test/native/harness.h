// A small test harness for the C++ kernel tests (no third-party framework, so CI needs nothing).
//   DFL_TEST(name) { ... DFL_EXPECT(cond, "msg"); DFL_EXPECT_CLOSE(a, b, atol, rtol, "what"); }
// DFL_TEST runs once per usable backend (backend() is the one under test; ops::X in
// backend_ops.h runs kernel X on it); DFL_CPU_TEST runs once, for what only the CPU has (GEMM
// variants, workspace sizing, thread counts).
// Run: dfl_native_tests [--backend NAME] [substring-filter]. Prints one line per test ("[cuda]
// name" for other backends), why a compiled backend is skipped, and a closing "N passed, N failed"
// line; exits non-zero on any failure. NAME checking:cpu (checking:cuda) runs the per-backend tests
// through the checking wrapper (core/checking_backend.h), which npm test does for the CPU.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/rng.h"

namespace dfl::test {

struct TestCase {
  std::string name;
  std::function<void()> fn;
  bool per_backend = true;
};
std::vector<TestCase>& registry();
struct Registrar {
  Registrar(const char* name, std::function<void()> fn, bool per_backend) {
    registry().push_back({name, std::move(fn), per_backend});
  }
};

// The digest of the convolution row kernels' outputs on the test shapes (test_conv_algos.cpp);
// `dfl_native_tests --conv-rows-digest` prints it, so a test can compare two SIMD forms.
std::string conv_rows_digest();

// The backend the current test runs on.
Backend& backend();
const std::shared_ptr<Backend>& backend_ptr();
// True on the CPU backend, and on the checking wrapper over it (same arithmetic).
bool on_cpu();

// Thrown by a failed expectation; the runner catches it and marks the test failed.
struct Failure {
  std::string message;
};
[[noreturn]] void fail_at(const char* file, int line, const std::string& msg);

// Max abs/rel comparison of two arrays. Passes when |a-b| <= atol + rtol*|b| for every element.
// On failure reports the worst element. Returns the max abs error (for reporting).
double expect_close_arrays(const float* got, const float* want, size_t n, double atol, double rtol,
                           const std::string& what, const char* file, int line);

// Random helpers.
std::vector<float> randn(size_t n, Rng& rng, float scale = 1.0f);
std::vector<float> randu(size_t n, Rng& rng, float lo, float hi);

// Finite-difference gradient check. `loss` must compute a scalar (in double) from the current
// contents of x; `analytic` holds dloss/dx computed by the kernel's backward. Central differences
// with step h on every element (or a random subset of `max_checks` elements for big tensors).
// Passes when |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
void gradcheck(const std::string& what, std::vector<float>& x, const std::vector<float>& analytic,
               const std::function<double()>& loss, double h, double atol, double rtol, const char* file, int line,
               size_t max_checks = 4000);

// Runs fn (all outputs concatenated as floats) with 1, 2 and 3 threads and demands bitwise-identical
// results: the threading rule of core/parallel.h.
void expect_thread_deterministic(const std::string& what, const std::function<std::vector<float>()>& fn,
                                 const char* file, int line);

// sum_i out[i] * r[i] in double: the scalar used to turn a kernel output into a loss, so that
// dloss/dout = r (a random "upstream gradient").
double dot(const float* out, const float* r, size_t n);

}  // namespace dfl::test

#define DFL_TEST(name)                                                              \
  static void dfl_test_##name();                                                    \
  static ::dfl::test::Registrar dfl_registrar_##name(#name, dfl_test_##name, true); \
  static void dfl_test_##name()

#define DFL_CPU_TEST(name)                                                           \
  static void dfl_test_##name();                                                     \
  static ::dfl::test::Registrar dfl_registrar_##name(#name, dfl_test_##name, false); \
  static void dfl_test_##name()

#define DFL_EXPECT(cond, msg)                                  \
  do {                                                         \
    if (!(cond)) {                                             \
      std::ostringstream dfl_os_;                              \
      dfl_os_ << "expected " #cond ": " << msg;                \
      ::dfl::test::fail_at(__FILE__, __LINE__, dfl_os_.str()); \
    }                                                          \
  } while (0)

#define DFL_EXPECT_CLOSE(got, want, n, atol, rtol, what) \
  ::dfl::test::expect_close_arrays((got), (want), (n), (atol), (rtol), (what), __FILE__, __LINE__)

#define DFL_GRADCHECK(what, x, analytic, loss, h, atol, rtol) \
  ::dfl::test::gradcheck((what), (x), (analytic), (loss), (h), (atol), (rtol), __FILE__, __LINE__)

#define DFL_EXPECT_THREAD_DETERMINISTIC(what, ...) \
  ::dfl::test::expect_thread_deterministic((what), (__VA_ARGS__), __FILE__, __LINE__)

#define DFL_EXPECT_THROWS(stmt, msg)                                                                      \
  do {                                                                                                    \
    bool dfl_threw_ = false;                                                                              \
    try {                                                                                                 \
      stmt;                                                                                               \
    } catch (const std::exception&) {                                                                     \
      dfl_threw_ = true;                                                                                  \
    }                                                                                                     \
    if (!dfl_threw_) ::dfl::test::fail_at(__FILE__, __LINE__, std::string("expected a throw: ") + (msg)); \
  } while (0)
