// Seeded random numbers: one generator definition for initialisation, dropout and augmentation, so a
// run is reproducible from its seed on any platform.
//
// Engine: std::mt19937 (MT19937, 32-bit), whose output sequence the C++ standard fixes. We do NOT use
// std::uniform_real_distribution / std::normal_distribution, whose algorithms differ between standard
// libraries; the transforms below are ours and therefore portable:
//   uniform(): 24 high bits of one draw -> [0, 1) with float spacing 2^-24.
//   normal():  Box-Muller on two uniforms (the second variate is cached and used next).
// State (for checkpoints) is the engine's standard text form plus the cached normal.
#pragma once
#include <cstdint>
#include <random>
#include <string>

namespace dfl {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint32_t next_u32() { return engine_(); }
  // Uniform in [0, 1).
  float uniform() { return static_cast<float>(engine_() >> 8) * (1.0f / 16777216.0f); }
  // Uniform in [lo, hi).
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n) without modulo bias (n > 0).
  uint32_t below(uint32_t n);
  // Standard normal.
  float normal();
  std::string state() const;
  void set_state(const std::string& s);  // throws dfl::Error on a malformed state

 private:
  std::mt19937 engine_;
  bool has_cached_ = false;
  float cached_ = 0.f;
};

// Derive an independent seed for a sub-stream (e.g. one per layer) from a base seed and an index,
// with the SplitMix64 finaliser, so streams do not overlap in practice.
uint64_t derive_seed(uint64_t base, uint64_t index);

}  // namespace dfl
