// Which vector instruction sets this CPU offers, asked at run time, so one binary picks its fastest
// kernels on whatever machine it lands on (the build has no -march flags: SIMD kernels carry
// per-function target attributes and run only after cpu_features() says they may).
//
// DFL_SIMD=portable|avx2|avx512 in the environment caps what every kernel may use (read once, on
// first use): DFL_SIMD=avx2 on an AVX-512 machine runs the AVX2 paths, so one machine tests both.
// It only ever lowers the choice. docs/native.md ("CPU dispatch") lists the paths.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace dfl {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bf16 = false;
};

// Instruction-set levels the kernels have code for, lowest first.
enum class SimdLevel { Portable = 0, Avx2 = 1, Avx512 = 2 };

// What the kernels may use: the CPU's features lowered by DFL_SIMD. Every dispatch asks this.
const CpuFeatures& cpu_features();
// What the CPU has, whatever DFL_SIMD says (for reports).
const CpuFeatures& cpu_hardware_features();
std::vector<std::string> cpu_feature_names();  // of cpu_hardware_features()

const char* simd_level_label(SimdLevel l);
// The highest level the kernels may use here (the CPU's, lowered by DFL_SIMD).
SimdLevel simd_level();
// The highest level the CPU itself reaches.
SimdLevel hardware_simd_level();
// The DFL_SIMD value as given ("" when unset) and whether it was one of the labels above (an
// unknown value caps nothing; the addon's loader refuses it before any kernel runs).
std::string simd_request();
bool simd_request_valid();

// The GEMM kernel actually in use: "avx512", "avx2" or "portable". DFL_GEMM=portable|avx2|avx512
// lowers it further, for GEMM alone (micro-kernel A/B in the kernel lab).
std::string gemm_kernel_name();
// Each kernel family with SIMD code and the path it runs here: {"gemm", "avx512"}, {"conv", "avx2"},
// ... (families and their levels: docs/native.md, "CPU dispatch").
std::vector<std::pair<std::string, std::string>> simd_paths();
// "gemm avx512, conv avx2, batchnorm avx2, pool avx2": for benchmark headers.
std::string simd_paths_summary();

}  // namespace dfl
