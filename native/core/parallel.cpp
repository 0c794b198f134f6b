#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#ifdef __linux__
#include <pthread.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace dfl {

namespace {
std::atomic<int> g_threads{0};
std::atomic<bool> g_route_to_compute_thread{false};

// A thread that runs one job at a time for whoever hands it one (see parallel.h). Never destroyed:
// it sleeps on its condition variable when idle and ends with the process.
class ComputeThread {
 public:
  ComputeThread() : thread_([this] { loop(); }) {
    id_ = thread_.get_id();
#ifdef __linux__
    pthread_setname_np(thread_.native_handle(), "dfl-compute");
#endif
    thread_.detach();
  }
  std::thread::id id() const { return id_; }

  void run(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> turn(submit_);  // one caller's job at a time
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = &fn;
    error_ = nullptr;
    done_ = false;
    wake_.notify_one();
    finished_.wait(lock, [this] { return done_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return job_ != nullptr; });
      const std::function<void()>* job = job_;
      lock.unlock();
      std::exception_ptr error;
      try {
        (*job)();
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      job_ = nullptr;
      error_ = error;
      done_ = true;
      finished_.notify_one();
    }
  }

  std::mutex submit_, mutex_;
  std::condition_variable wake_, finished_;
  const std::function<void()>* job_ = nullptr;
  std::exception_ptr error_;
  bool done_ = false;
  std::thread::id id_;
  std::thread thread_;
};

ComputeThread& compute_thread() {
  static ComputeThread* t = new ComputeThread();  // leaked on purpose: outlives every caller
  return *t;
}
}  // namespace

bool on_compute_thread() { return std::this_thread::get_id() == compute_thread().id(); }

void run_on_compute_thread(const std::function<void()>& fn) {
  if (on_compute_thread()) return fn();
  compute_thread().run(fn);
}

void route_parallel_work_to_compute_thread(bool on) { g_route_to_compute_thread.store(on); }

int hardware_threads() {
  // Read once: glibc answers hardware_concurrency() by opening and parsing
  // /sys/devices/system/cpu/online on every call, and num_threads() runs for every GEMM and
  // parallel loop (thousands of times per training step).
  static const int n = [] {
    const unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? 1 : static_cast<int>(hc);
  }();
  return n;
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
  if (g_route_to_compute_thread.load(std::memory_order_relaxed) && !on_compute_thread()) {
    run_on_compute_thread([&] { parallel_for(n, grain, fn); });
    return;
  }
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
