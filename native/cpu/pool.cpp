// Max / average / global-average pooling, PyTorch semantics (floor mode, implicit -inf padding for
// max, count_include_pad=True for avg). Parallel over (b, c) planes: each plane's outputs and input
// gradients are produced by one thread in a fixed order.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

// PyTorch's own preconditions (pad <= kernel/2 also guarantees every window overlaps the input,
// so the max is always taken over real values).
void check_shape(const Pool2dShape& s, const char* who) {
  DFL_CHECK(s.B > 0 && s.C > 0 && s.H > 0 && s.W > 0, who, ": input sizes must be positive");
  DFL_CHECK(s.KH > 0 && s.KW > 0 && s.stride_h > 0 && s.stride_w > 0, who,
            ": kernel and stride must be positive");
  DFL_CHECK(s.pad_h >= 0 && s.pad_w >= 0 && s.pad_h <= s.KH / 2 && s.pad_w <= s.KW / 2, who,
            ": padding must be >= 0 and at most half the kernel");
  DFL_CHECK(s.H + 2 * s.pad_h >= s.KH && s.W + 2 * s.pad_w >= s.KW, who, ": the ", s.KH, "x", s.KW,
            " window does not fit the padded ", s.H, "x", s.W, " input");
}

int64_t plane_grain(int64_t work_per_plane) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, work_per_plane)); }

}  // namespace

void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) {
  check_shape(s, "maxpool2d_forward");
  const int H = s.H, W = s.W, OH = s.OH(), OW = s.OW();
  const size_t in_plane = size_t(H) * W, out_plane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane) * s.KH * s.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* x = inp + p * in_plane;
      float* y = out + p * out_plane;
      int32_t* am = argmax ? argmax + p * out_plane : nullptr;  // null: inference
      if (s.KH == 2 && s.KW == 2 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 0 && s.pad_w == 0) {
        // The VGG pool, unrolled: the same comparisons in the same order as the general loop below.
        for (int oh = 0; oh < OH; ++oh) {
          const float* r0 = x + size_t(2 * oh) * W;
          const float* r1 = r0 + W;
          for (int ow = 0; ow < OW; ++ow) {
            const int i0 = 2 * oh * W + 2 * ow;
            const float v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
            const int32_t idx[4] = {i0, i0 + 1, i0 + W, i0 + W + 1};
            float best = -std::numeric_limits<float>::infinity();
            int32_t best_i = i0;
            for (int k = 0; k < 4; ++k)
              if (v[k] > best || v[k] != v[k]) {
                best = v[k];
                best_i = idx[k];
              }
            y[oh * OW + ow] = best;
            if (am) am[oh * OW + ow] = best_i;
          }
        }
        continue;
      }
      for (int oh = 0; oh < OH; ++oh) {
        const int h0 = std::max(oh * s.stride_h - s.pad_h, 0);
        const int h1 = std::min(oh * s.stride_h - s.pad_h + s.KH, H);
        for (int ow = 0; ow < OW; ++ow) {
          const int w0 = std::max(ow * s.stride_w - s.pad_w, 0);
          const int w1 = std::min(ow * s.stride_w - s.pad_w + s.KW, W);
          // As PyTorch: start at the first real element, strict '>' so the first max wins, and a
          // NaN is always taken (it propagates).
          float best = -std::numeric_limits<float>::infinity();
          int32_t best_i = h0 * W + w0;
          for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) {
              const float v = x[h * W + w];
              if (v > best || std::isnan(v)) {
                best = v;
                best_i = h * W + w;
              }
            }
          y[oh * OW + ow] = best;
          if (am) am[oh * OW + ow] = best_i;
        }
      }
    }
  });
}

void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) {
  check_shape(s, "maxpool2d_backward");
  if (!dinp) return;
  const size_t in_plane = size_t(s.H) * s.W, out_plane = size_t(s.OH()) * s.OW();
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dx = dinp + p * in_plane;
      const float* dy = dout + p * out_plane;
      const int32_t* am = argmax + p * out_plane;
      for (size_t o = 0; o < out_plane; ++o) dx[am[o]] += dy[o];
    }
  });
}

void avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) {
  check_shape(s, "avgpool2d_forward");
  const int H = s.H, W = s.W, OH = s.OH(), OW = s.OW();
  const size_t in_plane = size_t(H) * W, out_plane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane) * s.KH * s.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* x = inp + p * in_plane;
      float* y = out + p * out_plane;
      for (int oh = 0; oh < OH; ++oh) {
        const int hs = oh * s.stride_h - s.pad_h;
        const int he = std::min(hs + s.KH, H + s.pad_h);
        for (int ow = 0; ow < OW; ++ow) {
          const int ws = ow * s.stride_w - s.pad_w;
          const int we = std::min(ws + s.KW, W + s.pad_w);
          // count_include_pad=True: divide by the window clipped to the PADDED input (PyTorch).
          const int count = (he - hs) * (we - ws);
          float sum = 0.f;
          for (int h = std::max(hs, 0); h < std::min(he, H); ++h)
            for (int w = std::max(ws, 0); w < std::min(we, W); ++w) sum += x[h * W + w];
          y[oh * OW + ow] = sum / float(count);
        }
      }
    }
  });
}

void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) {
  check_shape(s, "avgpool2d_backward");
  if (!dinp) return;
  const int H = s.H, W = s.W, OH = s.OH(), OW = s.OW();
  const size_t in_plane = size_t(H) * W, out_plane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, plane_grain(int64_t(out_plane) * s.KH * s.KW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dx = dinp + p * in_plane;
      const float* dy = dout + p * out_plane;
      for (int oh = 0; oh < OH; ++oh) {
        const int hs = oh * s.stride_h - s.pad_h;
        const int he = std::min(hs + s.KH, H + s.pad_h);
        for (int ow = 0; ow < OW; ++ow) {
          const int ws = ow * s.stride_w - s.pad_w;
          const int we = std::min(ws + s.KW, W + s.pad_w);
          const float g = dy[oh * OW + ow] / float((he - hs) * (we - ws));
          for (int h = std::max(hs, 0); h < std::min(he, H); ++h)
            for (int w = std::max(ws, 0); w < std::min(we, W); ++w) dx[h * W + w] += g;
        }
      }
    }
  });
}

void global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, "global_avgpool_forward: sizes must be positive");
  parallel_for(int64_t(B) * C, std::max<int64_t>(1, 8192 / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* x = inp + p * HW;
      double sum = 0.0;
      for (int i = 0; i < HW; ++i) sum += x[i];
      out[p] = float(sum / HW);
    }
  });
}

void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) {
  DFL_CHECK(B > 0 && C > 0 && HW > 0, "global_avgpool_backward: sizes must be positive");
  if (!dinp) return;
  parallel_for(int64_t(B) * C, std::max<int64_t>(1, 8192 / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dx = dinp + p * HW;
      const float g = dout[p] / float(HW);
      for (int i = 0; i < HW; ++i) dx[i] += g;
    }
  });
}

}  // namespace dfl::cpu
