// The reference convolution: the definition, written as plainly as possible (PyTorch semantics:
// cross-correlation, zero padding, groups; sums in double). Slow; the tests compare every fast
// algorithm with it, and it documents what they compute.
#include "cpu/conv/conv_internal.h"

namespace dfl::cpu {

namespace {
// The input index that output (oh, ow) reads at kernel tap (kh, kw); false in the padding.
bool input_at(const Conv2dShape& s, int oh, int ow, int kh, int kw, int* ih, int* iw) {
  *ih = oh * s.stride_h - s.pad_h + kh;
  *iw = ow * s.stride_w - s.pad_w + kw;
  return *ih >= 0 && *ih < s.H && *iw >= 0 && *iw < s.W;
}
}  // namespace

// out[b,o,oh,ow] = bias[o] + sum_{c in o's group, kh, kw} w[o, c - g*Cg, kh, kw] * inp[b, c, ih, iw]
void conv2d_reference_forward(float* out, const float* inp, const float* weight, const float* bias,
                              const Conv2dShape& s) {
  const int Cg = s.C / s.groups, OCg = s.OC / s.groups, OH = s.OH(), OW = s.OW();
  for (int b = 0; b < s.B; ++b)
    for (int o = 0; o < s.OC; ++o)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          double sum = bias ? bias[o] : 0.0;
          const int g = o / OCg;
          for (int c = 0; c < Cg; ++c)
            for (int kh = 0; kh < s.KH; ++kh)
              for (int kw = 0; kw < s.KW; ++kw) {
                int ih, iw;
                if (!input_at(s, oh, ow, kh, kw, &ih, &iw)) continue;
                sum += double(weight[((size_t(o) * Cg + c) * s.KH + kh) * s.KW + kw]) *
                       inp[((size_t(b) * s.C + g * Cg + c) * s.H + ih) * s.W + iw];
              }
          out[((size_t(b) * s.OC + o) * OH + oh) * OW + ow] = float(sum);
        }
}

// The adjoints of the forward: each (output, tap) pair adds its product's derivative.
void conv2d_reference_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, const Conv2dShape& s) {
  const int Cg = s.C / s.groups, OCg = s.OC / s.groups, OH = s.OH(), OW = s.OW();
  if (dbias)
    for (int o = 0; o < s.OC; ++o) {
      double sum = 0.0;
      for (int b = 0; b < s.B; ++b)
        for (int p = 0; p < OH * OW; ++p) sum += dout[(size_t(b) * s.OC + o) * OH * OW + p];
      dbias[o] += float(sum);
    }
  if (dweight)
    for (int o = 0; o < s.OC; ++o)
      for (int c = 0; c < Cg; ++c)
        for (int kh = 0; kh < s.KH; ++kh)
          for (int kw = 0; kw < s.KW; ++kw) {
            double sum = 0.0;
            const int g = o / OCg;
            for (int b = 0; b < s.B; ++b)
              for (int oh = 0; oh < OH; ++oh)
                for (int ow = 0; ow < OW; ++ow) {
                  int ih, iw;
                  if (!input_at(s, oh, ow, kh, kw, &ih, &iw)) continue;
                  sum += double(dout[((size_t(b) * s.OC + o) * OH + oh) * OW + ow]) *
                         inp[((size_t(b) * s.C + g * Cg + c) * s.H + ih) * s.W + iw];
                }
            dweight[((size_t(o) * Cg + c) * s.KH + kh) * s.KW + kw] += float(sum);
          }
  if (dinp)
    for (int b = 0; b < s.B; ++b)
      for (int ci = 0; ci < s.C; ++ci)
        for (int ih = 0; ih < s.H; ++ih)
          for (int iw = 0; iw < s.W; ++iw) {
            double sum = 0.0;
            const int g = ci / Cg, c = ci % Cg;
            for (int ol = 0; ol < OCg; ++ol)
              for (int kh = 0; kh < s.KH; ++kh)
                for (int kw = 0; kw < s.KW; ++kw) {
                  const int ohs = ih + s.pad_h - kh, ows = iw + s.pad_w - kw;  // oh * stride
                  if (ohs < 0 || ows < 0 || ohs % s.stride_h || ows % s.stride_w) continue;
                  const int oh = ohs / s.stride_h, ow = ows / s.stride_w;
                  if (oh >= OH || ow >= OW) continue;
                  const int o = g * OCg + ol;
                  sum += double(weight[((size_t(o) * Cg + c) * s.KH + kh) * s.KW + kw]) *
                         dout[((size_t(b) * s.OC + o) * OH + oh) * OW + ow];
                }
            dinp[((size_t(b) * s.C + ci) * s.H + ih) * s.W + iw] += float(sum);
          }
}

}  // namespace dfl::cpu
