// bf16 operands for the tensor cores (MathMode::bf16): float32 -> bf16 by round-to-nearest-even
// (NaN stays NaN, overflow goes to infinity, as the hardware's conversion does) and back. Convolutions
// take their bf16 operands channels-last (NHWC, where cuDNN's tensor-core kernels work), so the
// casts move the channel dimension too; with HW = 1 they are plain casts (linear layers).
// bf16 values are held as their 16 bits (uint16_t), which the host can compute with too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/counter_rng.h"  // DFL_HOST_DEVICE

namespace dfl::cuda_bodies {

using Bf16Bits = uint16_t;

DFL_HOST_DEVICE inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
DFL_HOST_DEVICE inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Round to nearest, ties to even, on the upper 16 bits; a NaN keeps its sign and stays a (quiet) NaN.
DFL_HOST_DEVICE inline Bf16Bits float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return Bf16Bits((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return Bf16Bits(u >> 16);
}
DFL_HOST_DEVICE inline float bf16_to_float(Bf16Bits h) { return bits_float(uint32_t(h) << 16); }

// dst (B, HW, C) bf16 = src (B, C, HW) float32; one destination element per index (writes coalesce).
// Weights (OC, C/groups, KH, KW) become cuDNN's NHWC filter layout (OC, KH, KW, C/groups) with
// B = OC, C = C/groups, HW = KH*KW.
struct ToBf16ChannelsLast {
  Bf16Bits* dst;
  const float* src;
  size_t B, C, HW;
  DFL_HOST_DEVICE size_t count() const { return B * C * HW; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const size_t c = i % C, t = i / C, p = t % HW, b = t / HW;
    dst[i] = float_to_bf16(src[(b * C + c) * HW + p]);
  }
};

// dst (B, C, HW) float32 from src (B, HW, C) bf16: dst = value, or dst += value (a gradient).
struct FromBf16ChannelsLast {
  float* dst;
  const Bf16Bits* src;
  size_t B, C, HW;
  bool accumulate;
  DFL_HOST_DEVICE size_t count() const { return B * C * HW; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const size_t p = i % HW, t = i / HW, c = t % C, b = t / C;
    const float v = bf16_to_float(src[(b * HW + p) * C + c]);
    dst[i] = accumulate ? dst[i] + v : v;
  }
};

}  // namespace dfl::cuda_bodies
