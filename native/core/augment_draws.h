// The random half of training augmentation: the crop offsets and flips of a batch, drawn on the
// host (whichever backend then does the pixel work, Backend::augment_batch). Per image in image
// order, on the calling thread; this order is part of the contract (same seed -> same batch on
// every platform, thread count and backend):
//   if pad > 0:  dy = rng.below(2*pad + 1), then dx = rng.below(2*pad + 1)   (crop offsets)
//   if flip:     f  = rng.below(2); the image is mirrored when f == 1
// Nothing is drawn for a disabled step (dy = dx = pad, f = 0: no shift, no mirror).
#pragma once
#include "core/rng.h"
#include "core/shapes.h"

namespace dfl {

void augment_draws(AugmentDraw* draws, int B, int pad, bool flip, Rng& rng);

}  // namespace dfl
