#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace dfl {

namespace {
std::atomic<int> g_threads{0};
}

int hardware_threads() {
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

void set_num_threads(int n) { g_threads.store(n <= 0 ? 0 : n); }

int num_threads() {
  // Capped at the hardware threads: more would only oversubscribe the cores (and per-thread
  // scratch is sized for that many).
  const int n = g_threads.load();
  return n <= 0 ? hardware_threads() : std::min(n, hardware_threads());
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int max_thread_slots() { return hardware_threads(); }

int thread_slot() {
#ifdef _OPENMP
  return omp_in_parallel() ? omp_get_thread_num() : 0;
#else
  return 0;
#endif
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
#ifdef _OPENMP
  if (omp_in_parallel()) {
    fn(0, n);
    return;
  }
#endif
  grain = std::max<int64_t>(grain, 1);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int nt = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (nt <= 1) {
    fn(0, n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    const int T = omp_get_num_threads();
    const int64_t begin = n * t / T;
    const int64_t end = n * (t + 1) / T;
    if (begin < end) fn(begin, end);
  }
#else
  fn(0, n);
#endif
}

}  // namespace dfl
