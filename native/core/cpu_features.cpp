#include "core/cpu_features.h"

namespace dfl {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
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
  }();
  return f;
}

std::vector<std::string> cpu_feature_names() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> out;
  if (f.avx2) out.push_back("avx2");
  if (f.fma) out.push_back("fma");
  if (f.avx512f) out.push_back("avx512f");
  if (f.avx512bf16) out.push_back("avx512bf16");
  return out;
}

}  // namespace dfl
