// Training augmentation (random crop with zero padding + horizontal flip) and normalisation of
// uint8 NCHW batches into float NCHW.
//
// The random draws are core/augment_draws.h's (on the host, for every backend); the pixel work
// (augment_apply) runs parallel over rows.
//
// out[b,c,y,x] = norm_c(src[b,c, y + dy - pad, x' + dx - pad]),  x' = f ? W-1-x : x
// (crop, then flip the crop, as torchvision's RandomCrop -> RandomHorizontalFlip); source pixels
// outside the image are the zero padding. norm_c(v) = (v/255 - mean[c]) / std[c].
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/augment_draws.h"
#include "core/check.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

void check_args(int B, int C, int H, int W, const float* mean, const float* std, const char* who) {
  DFL_CHECK(B > 0 && C > 0 && H > 0 && W > 0, who, ": sizes must be positive");
  for (int c = 0; c < C; ++c) {
    DFL_CHECK(std::isfinite(mean[c]), who, ": mean[", c, "] is not finite");
    DFL_CHECK(std::isfinite(std[c]) && std[c] != 0.f, who, ": std[", c, "] = ", std[c], " must be finite and non-zero");
  }
}

// lut[c*256 + v] = (v/255 - mean[c]) / std[c], the exact float ops torchvision performs
// (ToTensor divides by 255, Normalize subtracts and divides).
std::vector<float> make_lut(int C, const float* mean, const float* std) {
  std::vector<float> lut(size_t(C) * 256);
  for (int c = 0; c < C; ++c)
    for (int v = 0; v < 256; ++v) lut[size_t(c) * 256 + v] = (float(v) / 255.f - mean[c]) / std[c];
  return lut;
}

int64_t row_grain(int W) { return std::max<int64_t>(1, 8192 / W); }

}  // namespace

void augment_apply(float* out, const uint8_t* inp, int B, int C, int H, int W, int pad, const AugmentDraw* draws,
                   const float* mean, const float* std) {
  check_args(B, C, H, W, mean, std, "augment_apply");
  DFL_CHECK(pad >= 0 && pad <= (1 << 20), "augment_apply: pad must be in [0, 2^20], got ", pad);
  for (int b = 0; b < B; ++b)
    DFL_CHECK(draws[b].dy >= 0 && draws[b].dy <= 2 * pad && draws[b].dx >= 0 && draws[b].dx <= 2 * pad,
              "augment_apply: crop offsets of image ", b, " outside [0, ", 2 * pad, "]");
  const std::vector<float> lut = make_lut(C, mean, std);
  const size_t plane = size_t(H) * W;
  parallel_for(int64_t(B) * C * H, row_grain(W), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int y = int(r % H);
      const int64_t bc = r / H;  // plane index b*C + c
      const int b = int(bc / C), c = int(bc % C);
      const AugmentDraw d = draws[b];
      const float* lc = lut.data() + size_t(c) * 256;
      float* o = out + bc * plane + size_t(y) * W;
      const int sy = y + d.dy - pad;
      if (sy < 0 || sy >= H) {
        std::fill(o, o + W, lc[0]);  // whole row is padding
        continue;
      }
      const uint8_t* src = inp + bc * plane + size_t(sy) * W;
      for (int x = 0; x < W; ++x) {
        const int sx = (d.flip ? W - 1 - x : x) + d.dx - pad;
        o[x] = (sx < 0 || sx >= W) ? lc[0] : lc[src[sx]];
      }
    }
  });
}

void augment_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, int pad, bool flip, const float* mean,
                   const float* std, Rng& rng) {
  check_args(B, C, H, W, mean, std, "augment_batch");
  std::vector<AugmentDraw> draws(static_cast<size_t>(B));
  augment_draws(draws.data(), B, pad, flip, rng);
  augment_apply(out, inp, B, C, H, W, pad, draws.data(), mean, std);
}

void normalize_batch(float* out, const uint8_t* inp, int B, int C, int H, int W, const float* mean, const float* std) {
  check_args(B, C, H, W, mean, std, "normalize_batch");
  const std::vector<float> lut = make_lut(C, mean, std);
  const size_t plane = size_t(H) * W;
  parallel_for(int64_t(B) * C * H, row_grain(W), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bc = r / H;
      const float* lc = lut.data() + size_t(bc % C) * 256;
      const size_t off = size_t(bc) * plane + size_t(r % H) * W;
      for (int x = 0; x < W; ++x) out[off + x] = lc[inp[off + x]];
    }
  });
}

}  // namespace dfl::cpu
