// Which vector instruction sets this CPU offers, asked at run time, so one binary picks its fastest
// GEMM micro-kernel (AVX-512 > AVX2+FMA > portable) on whatever machine it lands on.
#pragma once
#include <string>
#include <vector>

namespace dfl {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bf16 = false;
};

const CpuFeatures& cpu_features();
std::vector<std::string> cpu_feature_names();
// The GEMM kernel actually in use: "avx512", "avx2" or "portable". DFL_GEMM=portable|avx2|avx512 in
// the environment forces a lower one (for tests and benchmarks).
std::string gemm_kernel_name();

}  // namespace dfl
