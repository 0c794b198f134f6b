#include "core/rng.h"

#include <cmath>
#include <sstream>

#include "core/check.h"

namespace dfl {

void Rng::reseed(uint64_t seed) {
  // mt19937 takes a 32-bit seed; fold the high half in so 64-bit seeds stay distinct.
  engine_.seed(static_cast<uint32_t>(seed ^ (seed >> 32)));
  has_cached_ = false;
  cached_ = 0.f;
}

uint32_t Rng::below(uint32_t n) {
  DFL_CHECK(n > 0, "Rng::below needs n > 0");
  const uint32_t limit = UINT32_MAX - (UINT32_MAX % n);
  uint32_t r;
  do {
    r = engine_();
  } while (r >= limit);
  return r % n;
}

float Rng::normal() {
  if (has_cached_) {
    has_cached_ = false;
    return cached_;
  }
  // u1 in (0, 1] so log(u1) is finite.
  const double u1 = 1.0 - static_cast<double>(uniform());
  const double u2 = static_cast<double>(uniform());
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 6.283185307179586 * u2;
  cached_ = static_cast<float>(r * std::sin(theta));
  has_cached_ = true;
  return static_cast<float>(r * std::cos(theta));
}

std::string Rng::state() const {
  std::ostringstream os;
  os << engine_ << ' ' << (has_cached_ ? 1 : 0) << ' ';
  os.precision(9);
  os << cached_;
  return os.str();
}

void Rng::set_state(const std::string& s) {
  std::istringstream is(s);
  std::mt19937 e;
  int cached_flag = 0;
  float cached = 0.f;
  is >> e >> cached_flag >> cached;
  DFL_CHECK(!is.fail() && (cached_flag == 0 || cached_flag == 1),
            "Malformed RNG state (expected the text form written by Rng::state)");
  engine_ = e;
  has_cached_ = cached_flag == 1;
  cached_ = cached;
}

uint64_t derive_seed(uint64_t base, uint64_t index) {
  uint64_t z = base + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace dfl
