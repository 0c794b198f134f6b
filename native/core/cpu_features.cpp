#include "core/cpu_features.h"

#include <algorithm>
#include <cstdlib>

namespace dfl {

namespace {

CpuFeatures detect() {
  CpuFeatures r;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  r.avx2 = __builtin_cpu_supports("avx2");
  r.fma = __builtin_cpu_supports("fma");
  r.avx512f = __builtin_cpu_supports("avx512f");
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
  r.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
#endif
  return r;
}

// The level a feature set reaches: every AVX2 kernel also needs FMA, every AVX-512 one AVX2 too.
SimdLevel level_of(const CpuFeatures& f) {
  if (f.avx512f && f.avx2 && f.fma) return SimdLevel::Avx512;
  if (f.avx2 && f.fma) return SimdLevel::Avx2;
  return SimdLevel::Portable;
}

bool parse_level(const std::string& s, SimdLevel* out) {
  for (SimdLevel l : {SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512})
    if (s == simd_level_label(l)) {
      *out = l;
      return true;
    }
  return false;
}

}  // namespace

const CpuFeatures& cpu_hardware_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::string simd_request() {
  const char* e = std::getenv("DFL_SIMD");
  return e ? e : "";
}

bool simd_request_valid() {
  SimdLevel l;
  return simd_request().empty() || parse_level(simd_request(), &l);
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures r = cpu_hardware_features();
    SimdLevel cap;
    if (!parse_level(simd_request(), &cap)) return r;
    if (cap < SimdLevel::Avx512) r.avx512f = r.avx512bf16 = false;
    if (cap < SimdLevel::Avx2) r.avx2 = r.fma = false;
    return r;
  }();
  return f;
}

SimdLevel simd_level() { return level_of(cpu_features()); }
SimdLevel hardware_simd_level() { return level_of(cpu_hardware_features()); }

const char* simd_level_label(SimdLevel l) {
  switch (l) {
    case SimdLevel::Avx512:
      return "avx512";
    case SimdLevel::Avx2:
      return "avx2";
    case SimdLevel::Portable:
      return "portable";
  }
  return "portable";
}

std::vector<std::string> cpu_feature_names() {
  const CpuFeatures& f = cpu_hardware_features();
  std::vector<std::string> out;
  if (f.avx2) out.push_back("avx2");
  if (f.fma) out.push_back("fma");
  if (f.avx512f) out.push_back("avx512f");
  if (f.avx512bf16) out.push_back("avx512bf16");
  return out;
}

std::vector<std::pair<std::string, std::string>> simd_paths() {
  // The GEMM and the convolution row kernels have AVX-512, AVX2+FMA and portable code; the other
  // families AVX2+FMA and portable only: their path is the level here capped at AVX2. A family that
  // gains a path changes its row here.
  const SimdLevel others = std::min(simd_level(), SimdLevel::Avx2);
  return {{"gemm", gemm_kernel_name()},                   // cpu/gemm.cpp
          {"conv-rows", simd_level_label(simd_level())},  // cpu/conv/row_kernels.h: direct 3x3, pointwise
          {"conv", simd_level_label(others)},  // Winograd, depthwise, output-channel, im2col rows, weight gradients
          {"batchnorm", simd_level_label(others)},
          {"pool", simd_level_label(others)}};
}

std::string simd_paths_summary() {
  std::string s;
  for (const auto& [family, path] : simd_paths()) s += (s.empty() ? "" : ", ") + family + " " + path;
  return s;
}

}  // namespace dfl
