// Kernel lab: times conv2d forward, backward-data and backward-weights for the 3x3 shapes of the zoo
// at CIFAR sizes (batch 128), each algorithm the CPU backend has, with GFLOP/s. Not shipped; built
// with -DDFL_BUILD_LAB=ON:
//   cmake -S . -B build/lab -DDFL_BUILD_ADDON=OFF -DDFL_BUILD_LAB=ON && cmake --build build/lab
//   build/lab/dfl_conv_lab [threads] [reps] [case-name filter]
// Timings need an otherwise idle machine. DFL_LAB_COLD=1 evicts the caches before every timed run
// (a training step finds its activations in DRAM or L3, not in L1/L2 as a repeated call does).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"

using namespace dfl;
using Clock = std::chrono::steady_clock;

// Writes 64 MiB (more than the last-level cache) so the next run starts cold.
void evict_caches() {
  static std::vector<char> junk(size_t(64) << 20);
  for (size_t i = 0; i < junk.size(); i += 64) junk[i]++;
}

template <typename F>
double best_ms(int reps, F&& f) {
  static const bool cold = std::getenv("DFL_LAB_COLD") && std::getenv("DFL_LAB_COLD")[0] == '1';
  f();  // warm-up
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    if (cold) evict_caches();
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return best;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 0;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  const std::string filter = argc > 3 ? argv[3] : "";
  set_num_threads(threads);
  struct Case {
    const char* what;
    int C, OC, H, K, stride, pad;
    bool depthwise = false;  // groups = C = OC
  };
  const Case cases[] = {
      {"vgg8/4 conv1", 3, 16, 32, 3, 1, 1},
      {"vgg8/4 conv2", 16, 32, 16, 3, 1, 1},
      {"vgg8/4 conv3", 32, 64, 8, 3, 1, 1},
      {"vgg8/4 conv4", 64, 128, 4, 3, 1, 1},
      {"vgg8/4 conv5", 128, 128, 2, 3, 1, 1},
      {"r18/4 layer1", 16, 16, 32, 3, 1, 1},
      {"r18/4 layer2", 32, 32, 16, 3, 1, 1},
      {"r18/4 layer3", 64, 64, 8, 3, 1, 1},
      {"r18/4 layer4", 128, 128, 4, 3, 1, 1},
      {"r18/4 l2 s2", 16, 32, 32, 3, 2, 1},
      {"r18/4 l3 s2", 32, 64, 16, 3, 2, 1},
      {"r18/4 l4 s2", 64, 128, 8, 3, 2, 1},
      {"r18/8 l4 s2", 32, 64, 8, 3, 2, 1},
      {"r18 l2 s2", 64, 128, 32, 3, 2, 1},
      {"r18 l4 s2", 256, 512, 8, 3, 2, 1},
      {"r18/4 down2", 16, 32, 32, 1, 2, 0},
      {"r18/4 down3", 32, 64, 16, 1, 2, 0},
      {"r18/4 down4", 64, 128, 8, 1, 2, 0},
      {"r18 down2", 64, 128, 32, 1, 2, 0},
      {"r18 down4", 256, 512, 8, 1, 2, 0},
      {"mbv2 pw 32", 16, 96, 32, 1, 1, 0},
      {"mbv2 pw 8", 64, 384, 8, 1, 1, 0},
      {"shuf pw 16", 29, 29, 16, 1, 1, 0},
      {"shuf/2 pw 8", 58, 58, 8, 1, 1, 0},
      {"shuf/2 pw 4", 116, 116, 4, 1, 1, 0},
      {"shuf1 pw116 8", 116, 116, 8, 1, 1, 0},
      {"shuf1 pw232 4", 232, 232, 4, 1, 1, 0},
      {"mbv2 pw 4", 160, 960, 4, 1, 1, 0},
      {"mbv2 pj 4", 960, 160, 4, 1, 1, 0},
      {"mbv2 pw96 8", 96, 576, 8, 1, 1, 0},
      {"pw64 8", 64, 128, 8, 1, 1, 0},
      {"shuf1 pw 16", 116, 116, 16, 1, 1, 0},
      {"shuf1 pw 8", 232, 232, 8, 1, 1, 0},
      {"shuf1 pw58 16", 58, 58, 16, 1, 1, 0},
      {"shuf1 pw 4", 464, 464, 4, 1, 1, 0},
      {"shuf1 conv5", 464, 1024, 4, 1, 1, 0},
      {"mbv2/4 pw 32", 4, 24, 32, 1, 1, 0},
      {"mbv2/4 pj 32", 36, 6, 32, 1, 1, 0},
      {"vgg8 conv2", 64, 128, 16, 3, 1, 1},
      {"r18 layer1", 64, 64, 32, 3, 1, 1},
      {"vgg16 4x4", 512, 512, 4, 3, 1, 1},
      {"vgg16 2x2", 512, 512, 2, 3, 1, 1},
      {"vgg/2 2x2", 256, 256, 2, 3, 1, 1},
      {"vgg16 8x8", 256, 256, 8, 3, 1, 1},
      {"mbv2/4 dw 32", 36, 36, 32, 3, 1, 1, true},
      {"mbv2/4 dw s2", 36, 36, 32, 3, 2, 1, true},
      {"mbv2/4 dw 4", 240, 240, 4, 3, 1, 1, true},
      {"shuf/2 dw s2", 29, 29, 32, 3, 2, 1, true},
      {"shuf/2 dw 4", 116, 116, 4, 3, 1, 1, true},
      {"shuf/2 dw 8", 58, 58, 8, 3, 1, 1, true},
      {"shuf/2 dw 16", 29, 29, 16, 3, 1, 1, true},
  };
  std::printf("%d threads, best of %d, SIMD paths: %s; GFLOP/s = 2 MACs / time\n", num_threads(), reps,
              simd_paths_summary().c_str());
  // The GEMM alone, at the shapes convolutions hand it.
  const int gemms[][3] = {{128, 1024, 1152}, {32, 1024, 144},   {16, 1024, 27},
                          {128, 1152, 1024}, {1152, 1024, 128}, {512, 512, 512}};
  for (const auto& g : gemms) {
    const int M = g[0], N = g[1], K = g[2];
    std::vector<float> A(size_t(M) * K, 0.5f), Bm(size_t(K) * N, 0.25f), Cm(size_t(M) * N);
    const double ms =
        best_ms(reps, [&] { cpu::sgemm(false, false, M, N, K, 1.0f, A.data(), K, Bm.data(), N, 0.0f, Cm.data(), N); });
    std::printf("sgemm %4d x %4d x %4d: %8.3f ms %7.1f GF/s\n", M, N, K, ms, 2.0 * M * N * K / ms / 1e6);
  }
  std::printf("convolutions at batch 128\n");
  std::printf("%-14s %-7s %9s %9s %9s %9s %9s %9s %9s\n", "shape", "algo", "fwd ms", "GF/s", "dinp ms", "GF/s", "dW ms",
              "GF/s", "both ms");
  Rng rng(1);
  for (const Case& c : cases) {
    if (std::string(c.what).find(filter) == std::string::npos) continue;
    const Conv2dShape s{128, c.C, c.H, c.H, c.OC, c.K, c.K, c.stride, c.stride, c.pad, c.pad, c.depthwise ? c.C : 1};
    std::vector<float> x(size_t(s.B) * s.C * s.H * s.W), w(size_t(s.OC) * (s.C / s.groups) * c.K * c.K),
        y(size_t(s.B) * s.OC * s.OH() * s.OW());
    for (auto& v : x) v = rng.normal();
    for (auto& v : w) v = rng.normal() * 0.1f;
    for (auto& v : y) v = rng.normal();
    std::vector<float> out(y.size()), dx(x.size()), dw(w.size());
    const double gflop = 2.0 * s.B * s.OC * s.OH() * s.OW() * (s.C / s.groups) * c.K * c.K / 1e9;
    for (cpu::ConvAlgo a : cpu::kFastConvAlgos) {
      if (!cpu::conv2d_algo_applies(a, s)) continue;
      std::vector<float> ws(cpu::conv2d_workspace_floats_with(a, s) + 1);
      const double f =
          best_ms(reps, [&] { cpu::conv2d_forward_with(a, out.data(), x.data(), w.data(), nullptr, s, ws.data()); });
      const double d = best_ms(reps, [&] {
        cpu::conv2d_backward_with(a, dx.data(), nullptr, nullptr, y.data(), x.data(), w.data(), s, ws.data());
      });
      const double g = best_ms(reps, [&] {
        cpu::conv2d_backward_with(a, nullptr, dw.data(), nullptr, y.data(), x.data(), w.data(), s, ws.data());
      });
      // Both gradients in one call, as a training step asks for them.
      const double both = best_ms(reps, [&] {
        cpu::conv2d_backward_with(a, dx.data(), dw.data(), nullptr, y.data(), x.data(), w.data(), s, ws.data());
      });
      std::printf("%-14s %-7s %9.2f %9.1f %9.2f %9.1f %9.2f %9.1f %9.2f\n", c.what, cpu::conv_algo_label(a), f,
                  gflop / f * 1e3, d, gflop / d * 1e3, g, gflop / g * 1e3, both);
    }
  }
  return 0;
}
