// The CPU convolution algorithms behind conv2d_forward/backward (kernels.h), one file each in this
// folder, for tests and the kernel lab (native/dev/conv_lab.cpp), which exercise each one
// explicitly. Production code calls the kernels.h entry points, which pick an algorithm with
// conv2d_choose_algo from the table in conv2d.cpp.
//   Reference  plain loops in double: the readable specification the others are tested against
//              (reference.cpp).
//   General    any shape: depthwise direct loops, 1x1 GEMMs, im2col + GEMM (general.cpp).
//   Direct3x3  3x3, stride 1 or 2, pad 1, groups 1, output rows of 8k, AVX2+FMA: forward, input
//              gradient (stride 2: on even sizes, by row and column phases) and weight gradient as
//              direct register-blocked loops (direct3x3.cpp, on row_kernels.h), no im2col.
//   DirectOC   groups 1, any kernel/stride/padding, AVX2+FMA: forward (and the input gradient at
//              stride 1) as direct loops vectorised over output channels (direct_oc.cpp);
//              the weight gradient, and strided input gradients, by the general algorithm.
//   Depthwise3x3  depthwise 3x3, pad 1, stride 1 or 2, any map size, AVX2+FMA: padded-row loops
//              per channel plane, stride-2 rows split into even and odd halves (depthwise3x3.cpp).
//   Pointwise  1x1, stride 1, pad 0, groups 1, H*W % 8 == 0, AVX2+FMA: the row kernels with one tap
//              (pointwise.cpp), each plane one row; weight gradient by 3x4-channel register blocks.
//   ValidTaps  stride 1, padded, groups 1: GEMMs over the in-image taps per class of output pixels,
//              for small maps (valid_taps.cpp).
//   StridedPointwise  1x1 with a stride: a dense copy of the pixels read, then the stride-1 1x1
//              algorithm the chooser picks for it (strided_pointwise.cpp).
//   Winograd   3x3, stride 1, pad 1, groups 1, channels multiples of 8, AVX2+FMA: forward and both
//              gradients as F(4x4, 3x3) Winograd transforms around 36 GEMMs (winograd.cpp).
// Every algorithm is bitwise identical for any thread count; they differ from each other in
// float rounding (summation order) only. Adding one: docs/native.md, "Adding a convolution algorithm".
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/shapes.h"

namespace dfl::cpu {

enum class ConvAlgo {
  Reference,
  General,
  Direct3x3,
  DirectOC,
  Depthwise3x3,
  Pointwise,
  ValidTaps,
  StridedPointwise,
  Winograd
};
// Every algorithm but the reference (tests and the kernel lab go over this list).
inline constexpr ConvAlgo kFastConvAlgos[] = {ConvAlgo::General,          ConvAlgo::Direct3x3, ConvAlgo::DirectOC,
                                              ConvAlgo::Depthwise3x3,     ConvAlgo::Pointwise, ConvAlgo::ValidTaps,
                                              ConvAlgo::StridedPointwise, ConvAlgo::Winograd};
const char* conv_algo_label(ConvAlgo a);
// Whether the direct 3x3 and pointwise row kernels take their AVX-512 form here (else AVX2).
bool conv_rows_use_avx512();
bool conv2d_algo_applies(ConvAlgo a, const Conv2dShape& s);
ConvAlgo conv2d_choose_algo(const Conv2dShape& s);
size_t conv2d_workspace_floats_with(ConvAlgo a, const Conv2dShape& s);
// act: the activation applied to the output (fused into the store where the algorithm can).
void conv2d_forward_with(ConvAlgo a, float* out, const float* inp, const float* weight, const float* bias,
                         const Conv2dShape& s, float* workspace, Activation act = Activation::None);
void conv2d_backward_with(ConvAlgo a, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const Conv2dShape& s, float* workspace, bool overwrite_dinp = false);

// Steps every algorithm shares (conv2d.cpp).
// Fails with a message naming the bad size unless s is a valid convolution.
void conv2d_check_shape(const Conv2dShape& s);
// dbias[o] += the sum of dout's channel o over samples and positions (in double; thread-count free).
void conv2d_bias_gradient(float* dbias, const float* dout, const Conv2dShape& s);
// The parallel_for grain for items of per_item elements of work: chunks of at least 16k elements,
// below which a chunk is not worth a thread.
inline int64_t conv_grain(int64_t per_item) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, per_item));
}

// The algorithms themselves (same contracts as kernels.h's conv2d_*).
void conv2d_reference_forward(float* out, const float* inp, const float* weight, const float* bias,
                              const Conv2dShape& s);
void conv2d_reference_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, const Conv2dShape& s);
size_t general_workspace_floats(const Conv2dShape& s);
void general_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                     float* workspace);
void general_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                      const float* weight, const Conv2dShape& s, float* workspace);
// Whether the general path's im2col goes by a table of tap offsets (output rows under 8).
bool tap_table_applies(const Conv2dShape& s);
bool direct3x3_applies(const Conv2dShape& s);
size_t direct3x3_workspace_floats(const Conv2dShape& s);
void direct3x3_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                       float* workspace, Activation act = Activation::None);
// Stride 1, or stride 2 on even input sizes (row and column phases).
bool direct3x3_data_gradient_applies(const Conv2dShape& s);
// dinp += the input gradient of dout (overwrite: dinp =).
void direct3x3_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dShape& s,
                             float* workspace, bool overwrite = false);
bool pointwise_applies(const Conv2dShape& s);
size_t pointwise_workspace_floats(const Conv2dShape& s);
void pointwise_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                       float* workspace, Activation act = Activation::None);
// dinp and dweight (either may be null) += (overwrite: dinp =).
void pointwise_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                        const Conv2dShape& s, float* workspace, bool overwrite_dinp = false);
bool depthwise3x3_applies(const Conv2dShape& s);
size_t depthwise3x3_workspace_floats(const Conv2dShape& s);
void depthwise3x3_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                          float* workspace, Activation act = Activation::None);
// dinp and dweight (either may be null) += (overwrite: dinp =).
void depthwise3x3_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                           const Conv2dShape& s, float* workspace, bool overwrite_dinp = false);
// Stride 1, padded, ungrouped: GEMMs over the in-image taps per class of output pixels (small maps).
bool valid_taps_applies(const Conv2dShape& s);
size_t valid_taps_workspace_floats(const Conv2dShape& s);
void valid_taps_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                        float* workspace);
// dinp and dweight (either may be null) +=.
void valid_taps_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                         const Conv2dShape& s, float* workspace);
bool direct_oc_applies(const Conv2dShape& s);
bool direct_oc_data_gradient_applies(const Conv2dShape& s);
size_t direct_oc_workspace_floats(const Conv2dShape& s);
void direct_oc_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                       float* workspace);
// dinp += the input gradient of dout (stride 1).
void direct_oc_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dShape& s,
                             float* workspace);
bool strided_pointwise_applies(const Conv2dShape& s);
size_t strided_pointwise_workspace_floats(const Conv2dShape& s);
void strided_pointwise_forward(float* out, const float* inp, const float* weight, const float* bias,
                               const Conv2dShape& s, float* workspace);
void strided_pointwise_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                const float* weight, const Conv2dShape& s, float* workspace);
bool winograd_applies(const Conv2dShape& s);
size_t winograd_workspace_floats(const Conv2dShape& s);
void winograd_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                      float* workspace, Activation act = Activation::None);
// dinp += the input gradient of dout (overwrite: dinp =).
void winograd_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dShape& s, float* workspace,
                            bool overwrite = false);
// dweight += the weight gradient.
void winograd_backward_weights(float* dweight, const float* dout, const float* inp, const Conv2dShape& s,
                               float* workspace);
// Whether the direct weight gradient beats the general one for this shape (the kernel lab's finding:
// on rows of 16+ or with few input channels); conv2d_backward uses the general one otherwise.
bool direct3x3_weights_preferred(const Conv2dShape& s);
// dweight += the weight gradient.
void direct3x3_backward_weights(float* dweight, const float* dout, const float* inp, const Conv2dShape& s,
                                float* workspace);

}  // namespace dfl::cpu
