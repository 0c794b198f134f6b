// conv2d on the CPU: the table of convolution algorithms (one row each: the shapes it applies to,
// its workspace, its forward and its backward), the rule that picks one per shape
// (conv2d_choose_algo), the public entry points of kernels.h, and the two steps every algorithm
// shares: the shape check and the bias gradient. Each algorithm lives in its own file beside this
// one (conv_internal.h lists them).
#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace dfl::cpu {

void conv2d_check_shape(const Conv2dShape& s) {
  DFL_CHECK(s.B > 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.OC > 0, "conv2d: sizes must be positive");
  DFL_CHECK(s.KH > 0 && s.KW > 0 && s.stride_h > 0 && s.stride_w > 0, "conv2d: kernel ", s.KH, "x", s.KW, " stride ",
            s.stride_h, "x", s.stride_w, " must be positive");
  DFL_CHECK(s.pad_h >= 0 && s.pad_w >= 0, "conv2d: padding must be >= 0");
  DFL_CHECK(s.groups > 0 && s.C % s.groups == 0 && s.OC % s.groups == 0, "conv2d: groups ", s.groups, " must divide C ",
            s.C, " and OC ", s.OC);
  DFL_CHECK(s.H + 2 * s.pad_h >= s.KH && s.W + 2 * s.pad_w >= s.KW, "conv2d: kernel ", s.KH, "x", s.KW,
            " larger than padded input ", s.H + 2 * s.pad_h, "x", s.W + 2 * s.pad_w);
}

namespace {
// dbias[o] += the sum of dout's channel o over samples and positions, in double. Each thread owns a
// range of channels and walks the samples in order (memory order: a channel's planes lie a whole
// sample apart, which walked channel by channel maps to the same cache sets, as batch norm's sums
// did); a plane's vector part goes into 4 double lanes, its tail into a scalar, combined in a fixed
// order at the end: the same result for any thread count, without a serial double add per float
// (docs/native.md, "Training memory and fusion").
#if DFL_X86
__attribute__((target("avx2"))) void bias_sums_avx2(std::array<double, 4>* lanes, double* tails, const float* dout,
                                                    const Conv2dShape& s, int64_t o0, int64_t o1) {
  const size_t P = size_t(s.OH()) * s.OW(), vec = P / 8 * 8;
  for (int b = 0; b < s.B; ++b)
    for (int64_t o = o0; o < o1; ++o) {
      const float* g = dout + (size_t(b) * s.OC + o) * P;
      __m256d acc = _mm256_loadu_pd(lanes[o - o0].data());
      for (size_t i = 0; i < vec; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i);
        acc = _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                               _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
      }
      _mm256_storeu_pd(lanes[o - o0].data(), acc);
      for (size_t i = vec; i < P; ++i) tails[o - o0] += g[i];
    }
}
#endif
}  // namespace

void conv2d_bias_gradient(float* dbias, const float* dout, const Conv2dShape& s) {
  const size_t P = size_t(s.OH()) * s.OW();
  parallel_for(s.OC, conv_grain(int64_t(s.B) * int64_t(P)), [&](int64_t o0, int64_t o1) {
    std::vector<std::array<double, 4>> lanes(size_t(o1 - o0), {0.0, 0.0, 0.0, 0.0});
    std::vector<double> tails(size_t(o1 - o0), 0.0);
#if DFL_X86
    if (cpu_features().avx2) {
      bias_sums_avx2(lanes.data(), tails.data(), dout, s, o0, o1);
    } else
#endif
    {
      for (int b = 0; b < s.B; ++b)
        for (int64_t o = o0; o < o1; ++o) {
          const float* g = dout + (size_t(b) * s.OC + o) * P;
          for (size_t i = 0; i < P; ++i) tails[o - o0] += g[i];
        }
    }
    for (int64_t o = o0; o < o1; ++o) {
      const std::array<double, 4>& l = lanes[o - o0];
      dbias[o] += float(((l[0] + l[1]) + (l[2] + l[3])) + tails[o - o0]);
    }
  });
}

// ---- the algorithm table ------------------------------------------------------------------------
// One row per algorithm (in ConvAlgo order): the shapes it applies to, its workspace, its forward and
// its backward. The entry points below and conv2d_choose_algo only look rows up; an algorithm is
// added here and in conv_internal.h, nowhere else.
namespace {

using ForwardFn = void (*)(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                           float* workspace, Activation act);
// Backward with the bias gradient, and the input gradient overwritten (writes_dinp) or added.
using BackwardFn = void (*)(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, const Conv2dShape& s, float* workspace, bool writes_dinp);

struct ConvAlgorithm {
  ConvAlgo id;
  const char* label;
  bool (*applies)(const Conv2dShape& s);
  size_t (*workspace_floats)(const Conv2dShape& s);
  ForwardFn forward;
  bool fuses_activation;  // forward applies act as it stores; otherwise a pass after it does
  // Whether backward can write the input gradient directly (else it adds to zeros).
  bool (*overwrites_dinp)(const Conv2dShape& s);
  BackwardFn backward;
};

bool always(const Conv2dShape&) { return true; }
bool never(const Conv2dShape&) { return false; }
size_t no_workspace(const Conv2dShape&) { return 0; }

const ConvAlgorithm kConvAlgorithms[] = {
    {ConvAlgo::Reference, "reference", always, no_workspace,
     [](float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s, float*,
        Activation) { conv2d_reference_forward(out, inp, weight, bias, s); },
     false, never,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float*, bool) { conv2d_reference_backward(dinp, dweight, dbias, dout, inp, weight, s); }},
    {ConvAlgo::General, "general", always, general_workspace_floats,
     [](float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s, float* ws,
        Activation) { general_forward(out, inp, weight, bias, s, ws); },
     false, never,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool) { general_backward(dinp, dweight, dbias, dout, inp, weight, s, ws); }},
    {ConvAlgo::Direct3x3, "direct3x3", direct3x3_applies, direct3x3_workspace_floats, direct3x3_forward, true,
     direct3x3_data_gradient_applies,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool writes_dinp) {
       if (dbias) conv2d_bias_gradient(dbias, dout, s);
       // Stride 2 on odd sizes: the input gradient is the general path's (its GEMM and col2im).
       if (dinp && direct3x3_data_gradient_applies(s))
         direct3x3_backward_data(dinp, dout, weight, s, ws, writes_dinp);
       else if (dinp)
         general_backward(dinp, nullptr, nullptr, dout, inp, weight, s, ws);
       if (dweight) direct3x3_backward_weights(dweight, dout, inp, s, ws);
     }},
    {ConvAlgo::DirectOC, "direct-oc", direct_oc_applies, direct_oc_workspace_floats,
     [](float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s, float* ws,
        Activation) { direct_oc_forward(out, inp, weight, bias, s, ws); },
     false, never,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool) {
       if (dbias) conv2d_bias_gradient(dbias, dout, s);
       if (dinp && direct_oc_data_gradient_applies(s)) {
         direct_oc_backward_data(dinp, dout, weight, s, ws);
         dinp = nullptr;
       }
       if (dinp || dweight) general_backward(dinp, dweight, nullptr, dout, inp, weight, s, ws);
     }},
    {ConvAlgo::Depthwise3x3, "depthwise3x3", depthwise3x3_applies, depthwise3x3_workspace_floats, depthwise3x3_forward,
     true, always,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool writes_dinp) {
       if (dbias) conv2d_bias_gradient(dbias, dout, s);
       depthwise3x3_backward(dinp, dweight, dout, inp, weight, s, ws, writes_dinp);
     }},
    {ConvAlgo::Pointwise, "pointwise", pointwise_applies, pointwise_workspace_floats, pointwise_forward, true, always,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool writes_dinp) {
       if (dbias) conv2d_bias_gradient(dbias, dout, s);
       pointwise_backward(dinp, dweight, dout, inp, weight, s, ws, writes_dinp);
     }},
    {ConvAlgo::ValidTaps, "valid-taps", valid_taps_applies, valid_taps_workspace_floats,
     [](float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s, float* ws,
        Activation) { valid_taps_forward(out, inp, weight, bias, s, ws); },
     false, never,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool) {
       if (dbias) conv2d_bias_gradient(dbias, dout, s);
       valid_taps_backward(dinp, dweight, dout, inp, weight, s, ws);
     }},
    {ConvAlgo::StridedPointwise, "strided-1x1", strided_pointwise_applies, strided_pointwise_workspace_floats,
     [](float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s, float* ws,
        Activation) { strided_pointwise_forward(out, inp, weight, bias, s, ws); },
     false, never,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws,
        bool) { strided_pointwise_backward(dinp, dweight, dbias, dout, inp, weight, s, ws); }},
    {ConvAlgo::Winograd, "winograd", winograd_applies,
     [](const Conv2dShape& s) {  // + the weight gradient's algorithm
       return std::max({winograd_workspace_floats(s), general_workspace_floats(s),
                        direct3x3_applies(s) ? direct3x3_workspace_floats(s) : size_t(0)});
     },
     winograd_forward, true, always,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool writes_dinp) {
       if (dbias) conv2d_bias_gradient(dbias, dout, s);
       if (dinp) winograd_backward_data(dinp, dout, weight, s, ws, writes_dinp);
       if (dweight) winograd_backward_weights(dweight, dout, inp, s, ws);
     }},
};
constexpr size_t kConvAlgorithmCount = sizeof(kConvAlgorithms) / sizeof(kConvAlgorithms[0]);
static_assert(kConvAlgorithmCount == size_t(ConvAlgo::Winograd) + 1, "one table row per ConvAlgo");

const ConvAlgorithm& algorithm(ConvAlgo a) {
  const size_t i = size_t(a);
  DFL_CHECK(i < kConvAlgorithmCount && kConvAlgorithms[i].id == a, "conv2d: unknown algorithm ", int(a));
  return kConvAlgorithms[i];
}

// dinp = 0 (B x C x H x W floats), for the algorithms that can only add their input gradient.
void zero_input_gradient(float* dinp, const Conv2dShape& s) {
  const size_t plane = size_t(s.C) * s.H * s.W;
  parallel_for(s.B, 1,
               [&](int64_t b0, int64_t b1) { std::memset(dinp + b0 * plane, 0, sizeof(float) * plane * (b1 - b0)); });
}

}  // namespace

const char* conv_algo_label(ConvAlgo a) { return algorithm(a).label; }

bool conv2d_algo_applies(ConvAlgo a, const Conv2dShape& s) { return algorithm(a).applies(s); }

// The rules below are the kernel lab's findings (native/dev/conv_lab.cpp times every algorithm on
// the zoo's shapes; docs/native.md, "CPU convolution algorithms", has the measurements), first match:
//   - strided 1x1 (ResNet's shortcuts): a dense copy of the pixels they read, then the stride-1 path;
//   - Winograd for the stride-1 3x3 convolutions it applies to on maps of 4x4 and up, unless the
//     direct rows apply with at most 16 channels on both sides (there they win; with the rows'
//     AVX-512 form, at most 32 on rows of 16+), and only while its transformed weights fit the cap
//     below; on 2x2 maps its 4x4 tiles are 3/4 padding;
//   - the direct 3x3 rows wherever they apply at stride 1, and at stride 2 with fewer than 64 input
//     channels (128 with the AVX-512 rows; with more the general path's GEMMs win every strided 3x3
//     forward);
//   - depthwise rows wherever they apply;
//   - valid taps on padded 1x1 output maps at any width (one tap of nine) and on 2x2 maps with
//     256+ channels on both sides (fewer channels: the general path's tap-table columns win; on 4x4
//     valid taps only tied, and those maps are Winograd's);
//   - pointwise rows on 1x1 convolutions with fewer than 64 channels on a side or at most 160 x 1024
//     weights (wider ones: the GEMMs);
//   - the output-channel kernel for the remaining strided convolutions with fewer than 64 input
//     channels, except on output rows under 8 (the general path's tap-table columns win there);
//   - otherwise the general path (im2col + packed GEMM).
ConvAlgo conv2d_choose_algo(const Conv2dShape& s) {
  const bool strided = s.stride_h > 1 || s.stride_w > 1;
  if (strided_pointwise_applies(s)) return ConvAlgo::StridedPointwise;
  // Winograd's transformed weights (and weight gradient) take 36 floats per (C, OC) pair, 4x the
  // weights: capped at 64 MiB (about 680 channels on both sides; vgg16's 512 take 38 MiB), so a
  // very wide custom model does not trade its memory for speed.
  const bool winograd_weights_fit = 36.0 * 4.0 * double(s.C) * double(s.OC) <= double(64 << 20);
  const bool wide_rows = conv_rows_use_avx512();
  const int direct_channels = wide_rows && s.OW() >= 16 ? 32 : 16;
  if (winograd_applies(s) && winograd_weights_fit && s.H >= 4 && s.W >= 4 &&
      !(direct3x3_applies(s) && std::max(s.C, s.OC) <= direct_channels))
    return ConvAlgo::Winograd;
  if (direct3x3_applies(s) && (!strided || s.C < (wide_rows ? 128 : 64))) return ConvAlgo::Direct3x3;
  if (depthwise3x3_applies(s)) return ConvAlgo::Depthwise3x3;
  if (valid_taps_applies(s) && (s.OH() * s.OW() == 1 || (s.OH() * s.OW() <= 4 && std::min(s.C, s.OC) >= 256)))
    return ConvAlgo::ValidTaps;
  if (pointwise_applies(s) && (std::min(s.C, s.OC) < 64 || int64_t(s.C) * s.OC <= 160 * 1024))
    return ConvAlgo::Pointwise;
  if (direct_oc_applies(s) && strided && s.C < 64 && !tap_table_applies(s)) return ConvAlgo::DirectOC;
  return ConvAlgo::General;
}

size_t conv2d_workspace_floats_with(ConvAlgo a, const Conv2dShape& s) {
  conv2d_check_shape(s);
  return algorithm(a).workspace_floats(s);
}

void conv2d_forward_with(ConvAlgo a, float* out, const float* inp, const float* weight, const float* bias,
                         const Conv2dShape& s, float* workspace, Activation act) {
  conv2d_check_shape(s);
  const ConvAlgorithm& algo = algorithm(a);
  DFL_CHECK(algo.applies(s), "conv2d: algorithm ", algo.label, " does not apply to this shape");
  algo.forward(out, inp, weight, bias, s, workspace, act);
  if (algo.fuses_activation) return;
  const size_t n = size_t(s.B) * s.OC * s.OH() * s.OW();
  if (act == Activation::Relu) relu_forward(out, out, n);
  if (act == Activation::Relu6) relu6_forward(out, out, n);
}

void conv2d_backward_with(ConvAlgo a, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const Conv2dShape& s, float* workspace, bool overwrite_dinp) {
  conv2d_check_shape(s);
  const ConvAlgorithm& algo = algorithm(a);
  DFL_CHECK(algo.applies(s), "conv2d: algorithm ", algo.label, " does not apply to this shape");
  const bool writes_dinp = dinp && overwrite_dinp && algo.overwrites_dinp(s);
  if (dinp && overwrite_dinp && !writes_dinp) zero_input_gradient(dinp, s);
  algo.backward(dinp, dweight, dbias, dout, inp, weight, s, workspace, writes_dinp);
}

size_t conv2d_workspace_floats(const Conv2dShape& s) { return conv2d_workspace_floats_with(conv2d_choose_algo(s), s); }
void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                    float* workspace, Activation act) {
  conv2d_forward_with(conv2d_choose_algo(s), out, inp, weight, bias, s, workspace, act);
}
void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, const Conv2dShape& s, float* workspace, bool overwrite_dinp) {
  const ConvAlgo a = conv2d_choose_algo(s);
  if (a == ConvAlgo::Direct3x3 && dweight && !direct3x3_weights_preferred(s)) {
    // Many input channels on small maps: the general algorithm's GEMMs win for the weight gradient.
    conv2d_backward_with(a, dinp, nullptr, dbias, dout, inp, weight, s, workspace, overwrite_dinp);
    general_backward(nullptr, dweight, nullptr, dout, inp, weight, s, workspace);
    return;
  }
  conv2d_backward_with(a, dinp, dweight, dbias, dout, inp, weight, s, workspace, overwrite_dinp);
}

}  // namespace dfl::cpu
