#include "harness.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>

#include "core/cpu_features.h"
#include "core/parallel.h"

namespace dfl::test {

std::vector<TestCase>& registry() {
  static std::vector<TestCase> r;
  return r;
}

namespace {
std::shared_ptr<Backend> g_backend;
}
const std::shared_ptr<Backend>& backend_ptr() { return g_backend; }
Backend& backend() { return *g_backend; }
// The checking wrapper over the CPU computes as the CPU does (it only checks the calls).
bool on_cpu() { return g_backend->name() == "cpu" || g_backend->name() == "checking:cpu"; }

void fail_at(const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << file << ":" << line << ": " << msg;
  throw Failure{os.str()};
}

double expect_close_arrays(const float* got, const float* want, size_t n, double atol, double rtol,
                           const std::string& what, const char* file, int line) {
  double max_abs = 0.0;
  size_t worst = 0;
  double worst_excess = -1.0;
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    const double err = std::fabs(g - w);
    if (!(err == err) || std::isnan(g) != std::isnan(w)) {
      std::ostringstream os;
      os << what << ": NaN mismatch at " << i << " (got " << g << ", want " << w << ")";
      fail_at(file, line, os.str());
    }
    max_abs = std::max(max_abs, err);
    const double excess = err - (atol + rtol * std::fabs(w));
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (worst_excess > 0) {
    std::ostringstream os;
    os << what << ": element " << worst << " got " << got[worst] << " want " << want[worst] << " (|diff| "
       << std::fabs(double(got[worst]) - want[worst]) << " > atol " << atol << " + rtol " << rtol
       << "*|want|); max |diff| " << max_abs;
    fail_at(file, line, os.str());
  }
  return max_abs;
}

std::vector<float> randn(size_t n, Rng& rng, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng.normal() * scale;
  return v;
}

std::vector<float> randu(size_t n, Rng& rng, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform(lo, hi);
  return v;
}

void expect_thread_deterministic(const std::string& what, const std::function<std::vector<float>()>& fn,
                                 const char* file, int line) {
  set_num_threads(1);
  const std::vector<float> ref = fn();
  for (int t : {2, 3}) {
    set_num_threads(t);
    const std::vector<float> got = fn();
    if (got.size() != ref.size() || std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) != 0) {
      set_num_threads(0);
      fail_at(file, line, what + ": results differ between 1 and " + std::to_string(t) + " threads");
    }
  }
  set_num_threads(0);
}

double dot(const float* out, const float* r, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += double(out[i]) * double(r[i]);
  return s;
}

void gradcheck(const std::string& what, std::vector<float>& x, const std::vector<float>& analytic,
               const std::function<double()>& loss, double h, double atol, double rtol, const char* file, int line,
               size_t max_checks) {
  if (analytic.size() != x.size()) fail_at(file, line, what + ": analytic gradient has wrong size");
  std::vector<size_t> idx(x.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  if (idx.size() > max_checks) {
    Rng pick(12345);
    for (size_t i = 0; i < max_checks; ++i) std::swap(idx[i], idx[i + pick.below(uint32_t(idx.size() - i))]);
    idx.resize(max_checks);
  }
  for (size_t i : idx) {
    const float orig = x[i];
    x[i] = static_cast<float>(orig + h);
    const double lp = loss();
    x[i] = static_cast<float>(orig - h);
    const double lm = loss();
    x[i] = orig;
    const double num = (lp - lm) / (2.0 * h);
    const double ana = analytic[i];
    const double err = std::fabs(num - ana);
    if (err > atol + rtol * std::max(std::fabs(num), std::fabs(ana))) {
      std::ostringstream os;
      os << what << ": d/dx[" << i << "] analytic " << ana << " vs finite-difference " << num << " (|diff| " << err
         << ")";
      fail_at(file, line, os.str());
    }
  }
}

}  // namespace dfl::test

int main(int argc, char** argv) {
  using namespace dfl::test;
  const char* filter = nullptr;
  std::string only_backend;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "--backend" && a + 1 < argc)
      only_backend = argv[++a];
    else if (arg == "--conv-rows-digest") {  // for conv_row_kernels_avx512_and_avx2_forms_agree_bitwise
      std::printf("%s\n", conv_rows_digest().c_str());
      return 0;
    } else if (arg == "--hardware-simd-level") {  // for scripts/ci/run-tests.mjs: which passes to run
      std::printf("%s\n", dfl::simd_level_label(dfl::hardware_simd_level()));
      return 0;
    } else
      filter = argv[a];
  }
  // A misspelt DFL_SIMD would run the full instruction set while the log claims a lower one.
  if (!dfl::simd_request_valid()) {
    std::printf("DFL_SIMD=%s: expected portable, avx2 or avx512 (or unset)\n", dfl::simd_request().c_str());
    return 2;
  }
  int passed = 0, failed = 0;
  auto run = [&](const TestCase& t, const std::string& label) {
    if (filter && t.name.find(filter) == std::string::npos) return;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      t.fn();
      ++passed;
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("ok   %s%s (%.0f ms)\n", label.c_str(), t.name.c_str(), ms);
    } catch (const Failure& f) {
      ++failed;
      std::printf("FAIL %s%s\n     %s\n", label.c_str(), t.name.c_str(), f.message.c_str());
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL %s%s\n     unexpected exception: %s\n", label.c_str(), t.name.c_str(), e.what());
    }
    std::fflush(stdout);
  };
  // "checking:<name>": the per-backend tests through the checking wrapper (core/checking_backend.h).
  if (only_backend.rfind("checking:", 0) == 0) {
    try {
      g_backend = dfl::backend_by_name(only_backend);
    } catch (const std::exception& e) {
      std::printf("skip [%s] backend tests: %s\n", only_backend.c_str(), e.what());
      std::printf("native: 0 passed, 0 failed\n");
      return 0;
    }
    std::printf("== backend %s: %s\n", only_backend.c_str(), g_backend->description().c_str());
    for (const auto& t : registry())
      if (t.per_backend) run(t, "[" + only_backend + "] ");
    g_backend.reset();
    std::printf("native: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
  }
  for (const dfl::BackendStatus& b : dfl::backend_statuses()) {
    if (!only_backend.empty() && b.name != only_backend) continue;
    if (!b.usable) {
      std::printf("skip [%s] backend tests: %s\n", b.name.c_str(), b.detail.c_str());
      continue;
    }
    std::printf("== backend %s: %s\n", b.name.c_str(), b.detail.c_str());
    g_backend = dfl::backend_by_name(b.name);
    const std::string label = b.name == "cpu" ? "" : "[" + b.name + "] ";
    for (const auto& t : registry())
      if (t.per_backend || b.name == "cpu") run(t, label);
  }
  g_backend.reset();
  std::printf("native: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
