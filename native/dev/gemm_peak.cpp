// The machine's measured SGEMM peak: the roofline that scripts/bench/bench-vs-torch.mjs divides each
// phase's achieved GFLOP/s by. Times cpu::sgemm (the variant this CPU runs, capped by DFL_SIMD) on
// a few large shapes where the packed GEMM is compute-bound, each repeated for at least --ms
// milliseconds after a warm-up, and takes the best repetition of the best shape. Prints one JSON line.
//   dfl_gemm_peak [--threads 2] [--ms 300]
// Built with the C++ tests (build/native-tests); the benchmark script builds and runs it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "cpu/kernels.h"

using namespace dfl;
using Clock = std::chrono::steady_clock;

namespace {

const char* flag(int argc, char** argv, const char* name, const char* dflt) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == name) return argv[i + 1];
  return dflt;
}

struct Shape {
  int M, N, K;
};

// Best milliseconds of one C = A B over repetitions filling at least min_ms (and at least 5).
double best_ms(const Shape& s, double min_ms) {
  Rng rng(1);
  std::vector<float> A(size_t(s.M) * s.K), B(size_t(s.K) * s.N), C(size_t(s.M) * s.N);
  for (auto& v : A) v = rng.normal();
  for (auto& v : B) v = rng.normal();
  auto once = [&] {
    const auto t0 = Clock::now();
    cpu::sgemm(false, false, s.M, s.N, s.K, 1.0f, A.data(), s.K, B.data(), s.N, 0.0f, C.data(), s.N);
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  for (int i = 0; i < 2; ++i) once();  // warm-up: page faults, packing buffers, caches
  double best = 1e300, total = 0;
  for (int r = 0; r < 5 || total < min_ms; ++r) {
    const double ms = once();
    best = std::min(best, ms);
    total += ms;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = std::atoi(flag(argc, argv, "--threads", "0"));
  const double min_ms = std::atof(flag(argc, argv, "--ms", "300"));
  if (threads < 0 || !(min_ms > 0)) {
    std::fprintf(stderr, "usage: dfl_gemm_peak [--threads N >= 0] [--ms milliseconds > 0]\n");
    return 2;
  }
  set_num_threads(threads);
  // Square-ish and the tall-K shapes convolutions hand the GEMM, all large enough to be compute-bound.
  const Shape shapes[] = {{512, 512, 512}, {768, 768, 768}, {1024, 1024, 256}, {1152, 1024, 128}, {128, 1024, 1152}};
  std::string rows;
  double peak = 0;
  for (const Shape& s : shapes) {
    const double ms = best_ms(s, min_ms);
    const double gflop_s = 2.0 * s.M * s.N * s.K / ms / 1e6;
    peak = std::max(peak, gflop_s);
    char row[160];
    std::snprintf(row, sizeof row, "%s{\"m\": %d, \"n\": %d, \"k\": %d, \"ms\": %.4f, \"gflop_s\": %.2f}",
                  rows.empty() ? "" : ", ", s.M, s.N, s.K, ms, gflop_s);
    rows += row;
  }
  std::printf(
      "{\"threads\": %d, \"gemm\": \"%s\", \"simd\": \"%s\", \"min_ms_per_shape\": %.0f, \"shapes\": [%s], "
      "\"peak_gflop_s\": %.2f}\n",
      num_threads(), gemm_kernel_name().c_str(), simd_paths_summary().c_str(), min_ms, rows.c_str(), peak);
  return 0;
}
