// Pooling bodies, PyTorch semantics as cpu/pool.cpp. Backward bodies GATHER: one thread per input
// element visits, in increasing output order, the windows that contain it, which is the order in
// which the CPU's scatter adds into that element, so results match it exactly, with no atomics.
#pragma once
#include "core/shapes.h"
#include "cuda/bodies/launch.h"

namespace dfl::cuda_bodies {

DFL_HOST_DEVICE inline int imax(int a, int b) { return a > b ? a : b; }
DFL_HOST_DEVICE inline int imin(int a, int b) { return a < b ? a : b; }

// Pool2dShape::OH/OW are host functions; the same floor-mode rule for the device.
DFL_HOST_DEVICE inline int out_h(const Pool2dShape& s) { return (s.H + 2 * s.pad_h - s.KH) / s.stride_h + 1; }
DFL_HOST_DEVICE inline int out_w(const Pool2dShape& s) { return (s.W + 2 * s.pad_w - s.KW) / s.stride_w + 1; }

// Output positions o whose window [o*stride - pad, o*stride - pad + K) holds input position x.
DFL_HOST_DEVICE inline void windows_holding(int x, int K, int stride, int pad, int O, int& lo, int& hi) {
  // o*stride <= x + pad  and  o*stride > x + pad - K
  const int a = x + pad - K + 1;  // o*stride >= a
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = imin(O - 1, (x + pad) / stride);
}

// One output per index: out (B,C,OH,OW); argmax may be null (inference).
struct MaxPoolForward {
  float* out;
  int32_t* argmax;
  const float* inp;
  Pool2dShape s;
  DFL_HOST_DEVICE size_t count() const { return size_t(s.B) * s.C * out_h(s) * out_w(s); }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int OH = out_h(s), OW = out_w(s);
    const int ow = int(i % size_t(OW)), oh = int((i / size_t(OW)) % size_t(OH));
    const size_t plane = i / (size_t(OH) * OW);
    const float* x = inp + plane * size_t(s.H) * s.W;
    const int h0 = imax(oh * s.stride_h - s.pad_h, 0), h1 = imin(oh * s.stride_h - s.pad_h + s.KH, s.H);
    const int w0 = imax(ow * s.stride_w - s.pad_w, 0), w1 = imin(ow * s.stride_w - s.pad_w + s.KW, s.W);
    // First max wins (strict >); a NaN is always taken.
    float best = -__builtin_huge_valf();
    int32_t best_i = h0 * s.W + w0;
    for (int h = h0; h < h1; ++h)
      for (int w = w0; w < w1; ++w) {
        const float v = x[h * s.W + w];
        if (v > best || v != v) {
          best = v;
          best_i = h * s.W + w;
        }
      }
    out[i] = best;
    if (argmax) argmax[i] = best_i;
  }
};

struct MaxPoolBackward {
  float* dinp;
  const float* dout;
  const int32_t* argmax;
  Pool2dShape s;
  DFL_HOST_DEVICE size_t count() const { return size_t(s.B) * s.C * s.H * s.W; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int OH = out_h(s), OW = out_w(s);
    const int w = int(i % size_t(s.W)), h = int((i / size_t(s.W)) % size_t(s.H));
    const size_t plane = i / (size_t(s.H) * s.W);
    const float* dy = dout + plane * size_t(OH) * OW;
    const int32_t* am = argmax + plane * size_t(OH) * OW;
    const int32_t me = h * s.W + w;
    int oh0, oh1, ow0, ow1;
    windows_holding(h, s.KH, s.stride_h, s.pad_h, OH, oh0, oh1);
    windows_holding(w, s.KW, s.stride_w, s.pad_w, OW, ow0, ow1);
    float acc = dinp[i];
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow)
        if (am[oh * OW + ow] == me) acc += dy[oh * OW + ow];
    dinp[i] = acc;
  }
};

// count_include_pad=True: the divisor is the window clipped to the PADDED input.
DFL_HOST_DEVICE inline int avg_window_count(const Pool2dShape& s, int oh, int ow) {
  const int hs = oh * s.stride_h - s.pad_h, he = imin(hs + s.KH, s.H + s.pad_h);
  const int ws = ow * s.stride_w - s.pad_w, we = imin(ws + s.KW, s.W + s.pad_w);
  return (he - hs) * (we - ws);
}

struct AvgPoolForward {
  float* out;
  const float* inp;
  Pool2dShape s;
  DFL_HOST_DEVICE size_t count() const { return size_t(s.B) * s.C * out_h(s) * out_w(s); }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int OH = out_h(s), OW = out_w(s);
    const int ow = int(i % size_t(OW)), oh = int((i / size_t(OW)) % size_t(OH));
    const float* x = inp + (i / (size_t(OH) * OW)) * size_t(s.H) * s.W;
    const int hs = oh * s.stride_h - s.pad_h, ws = ow * s.stride_w - s.pad_w;
    const int he = imin(hs + s.KH, s.H + s.pad_h), we = imin(ws + s.KW, s.W + s.pad_w);
    float sum = 0.f;
    for (int h = imax(hs, 0); h < imin(he, s.H); ++h)
      for (int w = imax(ws, 0); w < imin(we, s.W); ++w) sum += x[h * s.W + w];
    out[i] = sum / float(avg_window_count(s, oh, ow));
  }
};

struct AvgPoolBackward {
  float* dinp;
  const float* dout;
  Pool2dShape s;
  DFL_HOST_DEVICE size_t count() const { return size_t(s.B) * s.C * s.H * s.W; }
  DFL_HOST_DEVICE void operator()(size_t i) const {
    const int OH = out_h(s), OW = out_w(s);
    const int w = int(i % size_t(s.W)), h = int((i / size_t(s.W)) % size_t(s.H));
    const float* dy = dout + (i / (size_t(s.H) * s.W)) * size_t(OH) * OW;
    int oh0, oh1, ow0, ow1;
    windows_holding(h, s.KH, s.stride_h, s.pad_h, OH, oh0, oh1);
    windows_holding(w, s.KW, s.stride_w, s.pad_w, OW, ow0, ow1);
    float acc = dinp[i];
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) acc += dy[oh * OW + ow] / float(avg_window_count(s, oh, ow));
    dinp[i] = acc;
  }
};

// One (b, c) plane per index: its mean in double, as the CPU.
struct GlobalAvgPoolForward {
  float* out;
  const float* inp;
  size_t planes;
  int HW;
  DFL_HOST_DEVICE size_t count() const { return planes; }
  DFL_HOST_DEVICE void operator()(size_t p) const {
    const float* x = inp + p * size_t(HW);
    double sum = 0.0;
    for (int k = 0; k < HW; ++k) sum += x[k];
    out[p] = float(sum / HW);
  }
};

struct GlobalAvgPoolBackward {
  float* dinp;
  const float* dout;
  size_t planes;
  int HW;
  DFL_HOST_DEVICE size_t count() const { return planes * size_t(HW); }
  DFL_HOST_DEVICE void operator()(size_t i) const { dinp[i] += dout[i / size_t(HW)] / float(HW); }
};

}  // namespace dfl::cuda_bodies
