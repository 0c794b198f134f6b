// The compute thread (core/parallel.h): the addon runs all its work there so that one OpenMP team
// serves every caller. Jobs from any thread run on that one thread, errors come back to the caller,
// a job may call in again, and parallel loops routed there give the same results.
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/parallel.h"
#include "cpu/kernels.h"
#include "harness.h"

namespace {

std::thread::id id_of_job() {
  std::thread::id id;
  dfl::run_on_compute_thread([&] { id = std::this_thread::get_id(); });
  return id;
}

}  // namespace

DFL_CPU_TEST(compute_thread_runs_every_callers_jobs_on_one_thread) {
  const std::thread::id here = std::this_thread::get_id(), worker = id_of_job();
  DFL_EXPECT(worker != here, "the job ran on the caller's thread");
  DFL_EXPECT(!dfl::on_compute_thread(), "the test's thread claims to be the compute thread");
  std::vector<std::thread::id> seen(4);
  std::vector<std::thread> callers;
  for (size_t i = 0; i < seen.size(); ++i)
    callers.emplace_back([&seen, i] {
      for (int k = 0; k < 50; ++k) seen[i] = id_of_job();  // four threads taking turns
    });
  for (auto& t : callers) t.join();
  for (const auto& id : seen) DFL_EXPECT(id == worker, "a caller's job ran on another thread");
}

DFL_CPU_TEST(compute_thread_rethrows_the_jobs_error_and_allows_nested_calls) {
  std::string message;
  try {
    dfl::run_on_compute_thread([] { throw std::runtime_error("conv2d: bad shape"); });
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  DFL_EXPECT(message == "conv2d: bad shape", "the error did not come back to the caller: '" << message << "'");
  int inner = 0;
  dfl::run_on_compute_thread([&] {
    dfl::run_on_compute_thread([&] { inner = dfl::on_compute_thread() ? 1 : -1; });  // runs directly
  });
  DFL_EXPECT(inner == 1, "the nested job did not run on the compute thread");
  DFL_EXPECT(id_of_job() != std::this_thread::get_id(), "the thread stopped serving after an error");
}

DFL_CPU_TEST(parallel_work_routed_to_the_compute_thread_gives_identical_results) {
  dfl::Rng rng(5);
  const int M = 96, N = 1024, K = 300;
  auto A = dfl::test::randn(size_t(M) * K, rng), B = dfl::test::randn(size_t(K) * N, rng);
  std::vector<float> direct(size_t(M) * N), routed(direct.size()), from_thread(direct.size());
  dfl::cpu::sgemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, direct.data(), N);
  dfl::route_parallel_work_to_compute_thread(true);
  dfl::cpu::sgemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, routed.data(), N);
  std::thread t(
      [&] { dfl::cpu::sgemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, from_thread.data(), N); });
  t.join();
  dfl::route_parallel_work_to_compute_thread(false);
  DFL_EXPECT(std::memcmp(direct.data(), routed.data(), direct.size() * sizeof(float)) == 0, "routed GEMM differs");
  DFL_EXPECT(std::memcmp(direct.data(), from_thread.data(), direct.size() * sizeof(float)) == 0,
             "GEMM routed from another thread differs");
}
