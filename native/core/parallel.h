// Threading model. All parallel loops go through parallel_for, which splits [0, n) into contiguous
// static chunks (OpenMP schedule(static) when built with OpenMP, a plain loop otherwise).
//
// Determinism rule for every kernel: parallelise only over independent OUTPUT elements (samples,
// channels, GEMM tiles), never over a reduction axis. Each output value is then summed by one thread
// in a fixed order, so results are bitwise identical for any thread count (test/native checks this).
#pragma once
#include <cstdint>
#include <functional>

namespace dfl {

// Threads used by native kernels; 0 or less means "all hardware threads". Process-wide.
void set_num_threads(int n);
int num_threads();
int hardware_threads();
bool openmp_enabled();

// fn(begin, end) is called on disjoint sub-ranges covering [0, n). Chunks are at least `grain` long,
// so tiny loops stay on one thread. Called from inside another parallel_for, it runs serially on
// the calling thread (outer loops own the threads; no oversubscription).
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// One compute thread for the process. libgomp keeps a team of threads per thread that opens a
// parallel region, and once more OpenMP threads exist than cores it stops spinning between regions,
// so every region pays a futex wake-up. A Node process calls in from the main thread and from
// libuv's pool (several threads): the addon therefore runs its work on this one thread, which keeps
// one team whose threads spin between the thousands of short regions of a step (docs/native.md,
// "Threads", has what the wake-ups cost).
// Runs fn on the compute thread and waits for it (directly when called on it); fn's exception is
// rethrown here. Calls from several threads take turns.
void run_on_compute_thread(const std::function<void()>& fn);
// From now on, a parallel_for started on any other thread runs on the compute thread (the addon
// turns this on when it loads; the C++ tests and tools keep opening regions where they are;
// false turns it off again).
void route_parallel_work_to_compute_thread(bool on = true);
bool on_compute_thread();

// The most threads any parallel_for may use at once (hardware threads): what per-thread scratch
// buffers are sized for.
int max_thread_slots();
// The calling thread's slot in [0, max_thread_slots()): inside parallel_for each running thread has
// its own (0 outside), so per-thread scratch can be indexed by it.
int thread_slot();

}  // namespace dfl
