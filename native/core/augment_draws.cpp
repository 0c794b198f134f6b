// The augmentation draws (core/augment_draws.h).
#include "core/augment_draws.h"

#include "core/check.h"

namespace dfl {

void augment_draws(AugmentDraw* draws, int B, int pad, bool flip, Rng& rng) {
  DFL_CHECK(B > 0, "augment_draws: batch size must be positive");
  DFL_CHECK(pad >= 0 && pad <= (1 << 20), "augment_draws: pad must be in [0, 2^20], got ", pad);
  for (int b = 0; b < B; ++b) {
    AugmentDraw d{pad, pad, 0};  // centred: no shift
    if (pad > 0) {
      d.dy = int32_t(rng.below(uint32_t(2 * pad + 1)));
      d.dx = int32_t(rng.below(uint32_t(2 * pad + 1)));
    }
    if (flip) d.flip = rng.below(2) == 1;
    draws[b] = d;
  }
}

}  // namespace dfl
