// sgemm against a naive double-accumulating reference, for every micro-kernel variant this CPU
// runs (portable always; avx2 / avx512 when present), plus thread determinism.
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/gemm_internal.h"
#include "cpu/kernels.h"
#include "harness.h"

namespace {

using dfl::Rng;
using dfl::cpu::GemmKernel;

std::vector<GemmKernel> supported_kernels() {
  std::vector<GemmKernel> ks;
  for (GemmKernel k : {GemmKernel::Portable, GemmKernel::Avx2, GemmKernel::Avx512})
    if (dfl::cpu::gemm_kernel_supported(k)) ks.push_back(k);
  return ks;
}

// C = alpha * op(A) op(B) + beta * C in double (C not read when beta == 0).
void ref_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) {
        const double a = ta ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k];
        const double b = tb ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j];
        s += a * b;
      }
      double c = double(alpha) * s;
      if (beta != 0.0f) c += double(beta) * C[size_t(i) * ldc + j];
      C[size_t(i) * ldc + j] = float(c);
    }
}

struct Case {
  int M, N, K;
};

// Runs one (variant, trans, size, alpha, beta) case with padded leading dimensions and checks it.
// Tolerance: with N(0,1) inputs a float K-term dot product has rounding error ~ sqrt(K)*eps*sqrt(K)
// typically and grows ~ K*eps in bad cases; atol = 2e-6 * K * (|alpha| + |beta|) + 1e-6 sits well
// above the measured max (printed by the test: 8.4e-5 over all cases, K up to 520) yet far below
// any indexing/packing bug (errors O(1)).
double run_case(GemmKernel kern, bool ta, bool tb, Case cs, float alpha, float beta, Rng& rng) {
  const int M = cs.M, N = cs.N, K = cs.K;
  const int arows = ta ? K : M, acols = ta ? M : K;
  const int brows = tb ? N : K, bcols = tb ? K : N;
  const int lda = acols + 3, ldb = bcols + 5, ldc = N + 2;  // leading dims larger than the rows
  auto A = dfl::test::randn(size_t(arows) * lda, rng);
  auto B = dfl::test::randn(size_t(brows) * ldb, rng);
  std::vector<float> C(size_t(M) * ldc);
  if (beta == 0.0f) {
    std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());  // must not be read
  } else {
    C = dfl::test::randn(C.size(), rng);
  }
  std::vector<float> want = C;
  ref_gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
  dfl::cpu::sgemm_with(kern, ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  // Padding columns of C past N must be untouched: compare only the M x N part, and the pad as is.
  std::vector<float> got_mn, want_mn;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < ldc; ++j) {
      const size_t at = size_t(i) * ldc + j;
      if (j < N) {
        got_mn.push_back(C[at]);
        want_mn.push_back(want[at]);
      } else {
        DFL_EXPECT(std::memcmp(&C[at], &want[at], sizeof(float)) == 0, "sgemm wrote past N");
      }
    }
  std::ostringstream what;
  what << dfl::cpu::gemm_kernel_label(kern) << " ta=" << ta << " tb=" << tb << " M=" << M << " N=" << N << " K=" << K
       << " alpha=" << alpha << " beta=" << beta;
  const double atol = 2e-6 * K * (std::fabs(alpha) + std::fabs(beta)) + 1e-6;
  return DFL_EXPECT_CLOSE(got_mn.data(), want_mn.data(), got_mn.size(), atol, 1e-5, what.str());
}

}  // namespace

DFL_CPU_TEST(gemm_kernel_name_is_a_supported_variant) {
  const std::string name = dfl::gemm_kernel_name();
  const GemmKernel k = dfl::cpu::active_gemm_kernel();
  DFL_EXPECT(name == dfl::cpu::gemm_kernel_label(k), name);
  DFL_EXPECT(dfl::cpu::gemm_kernel_supported(k), name);
  DFL_EXPECT(dfl::cpu::gemm_kernel_supported(GemmKernel::Portable), "portable always runs");
}

// DFL_SIMD caps what every kernel may use (core/cpu_features.h): the kernels' features are the CPU's
// lowered to the request, the level is the lower of the two, and every family's reported path is at
// or below it (GEMM's is the variant sgemm runs). The second C++ pass of `npm test` runs with
// DFL_SIMD=avx2 on AVX-512 machines, where this checks that the cap took hold.
DFL_CPU_TEST(simd_cap_lowers_every_kernel_family) {
  using dfl::SimdLevel;
  const dfl::CpuFeatures &hw = dfl::cpu_hardware_features(), &f = dfl::cpu_features();
  DFL_EXPECT((!f.avx2 || hw.avx2) && (!f.fma || hw.fma) && (!f.avx512f || hw.avx512f), "features beyond the CPU's");
  SimdLevel want = hw.avx512f && hw.avx2 && hw.fma ? SimdLevel::Avx512
                   : hw.avx2 && hw.fma             ? SimdLevel::Avx2
                                                   : SimdLevel::Portable;
  const std::string request = dfl::simd_request();
  for (SimdLevel l : {SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512})
    if (request == dfl::simd_level_label(l)) want = std::min(want, l);
  DFL_EXPECT(dfl::simd_level() == want,
             std::string("level ") + dfl::simd_level_label(dfl::simd_level()) + ", DFL_SIMD '" + request + "'");
  auto level_of = [](const std::string& label) {
    for (SimdLevel l : {SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512})
      if (label == dfl::simd_level_label(l)) return l;
    throw std::runtime_error("unknown SIMD path " + label);
  };
  const auto paths = dfl::simd_paths();
  DFL_EXPECT(!paths.empty() && paths[0].first == "gemm" && paths[0].second == dfl::gemm_kernel_name(),
             dfl::simd_paths_summary());
  for (const auto& [family, path] : paths) DFL_EXPECT(level_of(path) <= want, family + " " + path);
  DFL_EXPECT(dfl::cpu::gemm_kernel_supported(GemmKernel::Avx512) == (want == SimdLevel::Avx512), "avx512 GEMM");
  DFL_EXPECT(dfl::cpu::gemm_kernel_supported(GemmKernel::Avx2) == (want >= SimdLevel::Avx2), "avx2 GEMM");
}

// All trans combos, odd sizes (micro-tile edges), sizes crossing the KC=256 / MC / NC=2048 blocks.
DFL_CPU_TEST(gemm_all_variants_vs_double_reference_odd_sizes_trans_alpha_beta) {
  Rng rng(7);
  const Case small[] = {{1, 1, 1},   {1, 17, 3}, {3, 1, 17},   {17, 33, 5},   {33, 17, 65},
                        {65, 3, 33}, {9, 65, 1}, {7, 31, 257}, {13, 47, 300}, {70, 40, 9}};
  const Case big[] = {{200, 70, 520}, {3, 2100, 20}, {257, 33, 64}};
  const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.25f}, {2.0f, -1.0f}};
  double worst = 0.0;
  for (GemmKernel kern : supported_kernels()) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      for (const Case& cs : small)
        for (const auto& p : ab) worst = std::max(worst, run_case(kern, ta, tb, cs, p[0], p[1], rng));
      for (const Case& cs : big) worst = std::max(worst, run_case(kern, ta, tb, cs, 1.0f, 0.0f, rng));
    }
  }
  std::printf("     (max |sgemm - ref| over all cases: %.3g)\n", worst);
}

DFL_CPU_TEST(gemm_k0_and_alpha0_scale_c_only_and_beta0_ignores_nan) {
  Rng rng(3);
  auto A = dfl::test::randn(64, rng), B = dfl::test::randn(64, rng);
  A[0] = std::numeric_limits<float>::quiet_NaN();  // alpha == 0: A must not matter (BLAS rule)
  for (GemmKernel kern : supported_kernels()) {
    std::vector<float> C(12, std::numeric_limits<float>::quiet_NaN());
    dfl::cpu::sgemm_with(kern, false, false, 3, 4, 0, 1.0f, A.data(), 1, B.data(), 4, 0.0f, C.data(), 4);
    for (float v : C) DFL_EXPECT(v == 0.0f, "K=0, beta=0 gives zeros");
    std::vector<float> D(12, 2.0f);
    dfl::cpu::sgemm_with(kern, false, false, 3, 4, 5, 0.0f, A.data(), 5, B.data(), 4, 0.5f, D.data(), 4);
    for (float v : D) DFL_EXPECT(v == 1.0f, "alpha=0 gives beta*C");
  }
  DFL_EXPECT_THROWS(dfl::cpu::sgemm(false, false, 2, 2, 2, 1.0f, A.data(), 1, B.data(), 2, 0.0f, A.data(), 2),
                    "lda < K");
}

DFL_CPU_TEST(gemm_bitwise_identical_for_1_2_3_threads_every_variant) {
  Rng rng(11);
  const Case cases[] = {{64, 1024, 576}, {256, 64, 300}, {37, 129, 70}, {300, 50, 40}};
  const int saved = dfl::num_threads();
  for (GemmKernel kern : supported_kernels()) {
    for (const Case& cs : cases) {
      for (int t = 0; t < 4; ++t) {
        const bool ta = t & 1, tb = t & 2;
        auto A = dfl::test::randn(size_t(cs.M) * cs.K, rng);
        auto B = dfl::test::randn(size_t(cs.K) * cs.N, rng);
        auto C0 = dfl::test::randn(size_t(cs.M) * cs.N, rng);
        std::vector<float> base;
        for (int nt : {1, 2, 3}) {
          dfl::set_num_threads(nt);
          std::vector<float> C = C0;
          dfl::cpu::sgemm_with(kern, ta, tb, cs.M, cs.N, cs.K, 0.7f, A.data(), ta ? cs.M : cs.K, B.data(),
                               tb ? cs.K : cs.N, 0.3f, C.data(), cs.N);
          if (nt == 1)
            base = C;
          else
            DFL_EXPECT(std::memcmp(base.data(), C.data(), C.size() * sizeof(float)) == 0,
                       dfl::cpu::gemm_kernel_label(kern) << " threads " << nt << " M=" << cs.M);
        }
      }
    }
  }
  dfl::set_num_threads(saved);
}
