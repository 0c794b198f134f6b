// Internal GEMM entry points, for tests and benchmarks that need to exercise every micro-kernel
// variant in one process. Production code calls dfl::cpu::sgemm (kernels.h), which uses
// active_gemm_kernel().
#pragma once
#include <string>

namespace dfl::cpu {

enum class GemmKernel { Portable = 0, Avx2 = 1, Avx512 = 2 };

// Whether this CPU can run variant k (Portable always can).
bool gemm_kernel_supported(GemmKernel k);
// The variant sgemm uses: the best one cpu_features() allows (DFL_SIMD caps it), lowered further by
// DFL_GEMM=portable|avx2|avx512 (read once, on first use).
GemmKernel active_gemm_kernel();
const char* gemm_kernel_label(GemmKernel k);

// sgemm (same contract as kernels.h) with an explicit variant; throws dfl::Error if unsupported.
void sgemm_with(GemmKernel k, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc);

}  // namespace dfl::cpu
