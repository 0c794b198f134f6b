// conv2d (PyTorch semantics) on the CPU: the general algorithm (any shape), and the choice between
// it and the direct 3x3 kernels (conv3x3.cpp) behind the public entry points. The general
// algorithm has three paths:
//   * depthwise (C/groups == 1 and OC/groups == 1): direct loops, no workspace;
//   * 1x1, stride 1, pad 0: the input plane IS the im2col matrix, GEMM straight on it;
//   * everything else: im2col of one (sample, group) into the workspace + sgemm.
// Small outputs (P < 1024): S = ceil(1024/P) samples side by side form one wide GEMM per chunk
// (weights packed once, full micro-tiles), threaded inside; the results per element are the same
// as per sample (a GEMM element does not depend on N), dweight sums each chunk in one GEMM.
// Threading otherwise: ungrouped convs run samples in parallel, one sample per thread at a time (forward and
// dinp: each sample's output belongs to one thread; the GEMMs and im2col inside run serially), in
// chunks of max_thread_slots() samples whose column matrices sit side by side in the workspace.
// dweight then sums the chunk's samples in sample order, threads splitting the OC rows. A GEMM's
// value per element does not depend on how C is split (whole micro-tiles, K never split), so every
// result is bitwise identical for any thread count. Grouped convs and single samples take the
// sequential path, where the threads work inside each GEMM/im2col instead.
#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv_internal.h"
#include "cpu/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DFL_CONV2D_X86 1
#else
#define DFL_CONV2D_X86 0
#endif

namespace dfl::cpu {

namespace {

// ---- stride-2 rows of im2col and col2im ------------------------------------------------------------
// A stride-2 convolution's column rows read every other input column (im2col) and its input
// gradient adds them back there (col2im): scalar loops, a quarter of ResNet's strided 3x3 backward.
// AVX2 moves 8 columns at a time: 16 input floats deinterleaved (their even half), or 8 values
// interleaved into 16 floats whose even lanes take the sums (the odd ones are stored back unchanged).
#if DFL_CONV2D_X86
// All lanes but the last: the final vector of a row leaves out the odd float past its last even one
// (past the row, maybe past the tensor or into another thread's plane).
alignas(32) const int32_t kAllButLast[8] = {-1, -1, -1, -1, -1, -1, -1, 0};

// dst[i] = src[2i], i in [0, n); reads src[0, 2n - 2] only.
__attribute__((target("avx2"))) void gather_even_avx2(float* dst, const float* src, int n) {
  const __m256i all_but_last = _mm256_load_si256(reinterpret_cast<const __m256i*>(kAllButLast));
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(src + 2 * i);
    const __m256 b = i + 8 < n ? _mm256_loadu_ps(src + 2 * i + 8) : _mm256_maskload_ps(src + 2 * i + 8, all_but_last);
    const __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
    _mm256_storeu_ps(dst + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0))));
  }
  for (; i < n; ++i) dst[i] = src[2 * i];
}
// dst[2i] += src[i], i in [0, n); touches dst[0, 2n - 2] only (the odd floats between are loaded
// and stored unchanged: they lie in the caller's row).
__attribute__((target("avx2"))) void scatter_add_even_avx2(float* dst, const float* src, int n) {
  const __m256i all_but_last = _mm256_load_si256(reinterpret_cast<const __m256i*>(kAllButLast));
  const __m256 zero = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    const __m256 lo = _mm256_unpacklo_ps(v, zero),
                 hi = _mm256_unpackhi_ps(v, zero);  // v0 0 v1 0 | v4 0 v5 0, v2 0 v3 0 | ...
    const __m256 d0 = _mm256_loadu_ps(dst + 2 * i);
    _mm256_storeu_ps(dst + 2 * i, _mm256_blend_ps(d0, _mm256_add_ps(d0, _mm256_permute2f128_ps(lo, hi, 0x20)), 0x55));
    float* p1 = dst + 2 * i + 8;
    if (i + 8 < n) {
      const __m256 d1 = _mm256_loadu_ps(p1);
      _mm256_storeu_ps(p1, _mm256_blend_ps(d1, _mm256_add_ps(d1, _mm256_permute2f128_ps(lo, hi, 0x31)), 0x55));
    } else {
      const __m256 d1 = _mm256_maskload_ps(p1, all_but_last);
      _mm256_maskstore_ps(p1, all_but_last,
                          _mm256_blend_ps(d1, _mm256_add_ps(d1, _mm256_permute2f128_ps(lo, hi, 0x31)), 0x55));
    }
  }
  for (; i < n; ++i) dst[2 * i] += src[i];
}
#endif

void gather_even(float* dst, const float* src, int n) {
#if DFL_CONV2D_X86
  if (cpu_features().avx2) return gather_even_avx2(dst, src, n);
#endif
  for (int i = 0; i < n; ++i) dst[i] = src[2 * i];
}
void scatter_add_even(float* dst, const float* src, int n) {
#if DFL_CONV2D_X86
  if (cpu_features().avx2) return scatter_add_even_avx2(dst, src, n);
#endif
  for (int i = 0; i < n; ++i) dst[2 * i] += src[i];
}

void check_shape(const Conv2dShape& s) {
  DFL_CHECK(s.B > 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.OC > 0, "conv2d: sizes must be positive");
  DFL_CHECK(s.KH > 0 && s.KW > 0 && s.stride_h > 0 && s.stride_w > 0, "conv2d: kernel ", s.KH, "x", s.KW, " stride ",
            s.stride_h, "x", s.stride_w, " must be positive");
  DFL_CHECK(s.pad_h >= 0 && s.pad_w >= 0, "conv2d: padding must be >= 0");
  DFL_CHECK(s.groups > 0 && s.C % s.groups == 0 && s.OC % s.groups == 0, "conv2d: groups ", s.groups, " must divide C ",
            s.C, " and OC ", s.OC);
  DFL_CHECK(s.H + 2 * s.pad_h >= s.KH && s.W + 2 * s.pad_w >= s.KW, "conv2d: kernel ", s.KH, "x", s.KW,
            " larger than padded input ", s.H + 2 * s.pad_h, "x", s.W + 2 * s.pad_w);
}

bool is_depthwise(const Conv2dShape& s) { return s.C == s.groups && s.OC == s.groups; }
bool is_pointwise(const Conv2dShape& s) {
  return s.KH == 1 && s.KW == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

// Output columns [lo, hi) whose input column o*stride - pad + k lies inside [0, W).
inline void valid_range(int k, int stride, int pad, int W, int OW, int& lo, int& hi) {
  // o*stride >= pad - k  and  o*stride <= W - 1 + pad - k
  const int a = pad - k;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  const int b = W - 1 + pad - k;
  hi = b < 0 ? 0 : std::min(OW, b / stride + 1);
  if (lo > hi) lo = hi;
}

// Elements of work below which a parallel_for chunk is not worth a thread.
constexpr int64_t kGrainElems = 1 << 14;
int64_t grain_for(int64_t per_item) { return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, per_item)); }

// Small outputs (rows under 8, at most kTapTableInts (tap, pixel) pairs): im2col and col2im go by a
// table of where each (tap, output pixel) reads in a channel plane (-1: padding), not row by row,
// whose per-row bookkeeping cost more than the copies on 4x4 maps (ResNet's last stride-2 conv).
constexpr int kTapTableInts = 4096;
bool tap_table_applies(const Conv2dShape& s) {
  return s.OW() < 8 && int64_t(s.KH) * s.KW * s.OH() * s.OW() <= kTapTableInts;
}
// table[k * P + p]: the offset in a plane that tap k (kh * KW + kw) of output pixel p reads, or -1.
void fill_tap_table(int* table, const Conv2dShape& s) {
  const int OH = s.OH(), OW = s.OW(), P = OH * OW;
  for (int kh = 0; kh < s.KH; ++kh)
    for (int kw = 0; kw < s.KW; ++kw)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          const int ih = oh * s.stride_h - s.pad_h + kh, iw = ow * s.stride_w - s.pad_w + kw;
          const bool inside = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W;
          table[(kh * s.KW + kw) * P + oh * OW + ow] = inside ? ih * s.W + iw : -1;
        }
}

// col (Cg*KH*KW, OH*OW) from in (Cg, H, W): col[(c*KH+kh)*KW+kw][oh*OW+ow] = in[c][ih][iw] or 0.
// ld: row stride of col (P, or wider when several samples sit side by side).
void im2col(float* col, const float* in, int Cg, const Conv2dShape& s, size_t ld) {
  const int OH = s.OH(), OW = s.OW(), P = OH * OW, KK = s.KH * s.KW;
  if (tap_table_applies(s)) {
    int table[kTapTableInts];
    fill_tap_table(table, s);
    parallel_for(Cg, grain_for(int64_t(KK) * P), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const float* plane = in + size_t(c) * s.H * s.W;
        for (int k = 0; k < KK; ++k) {
          float* dst = col + size_t(c * KK + k) * ld;
          const int* t = table + k * P;
          for (int p = 0; p < P; ++p) dst[p] = t[p] >= 0 ? plane[t[p]] : 0.0f;
        }
      }
    });
    return;
  }
  parallel_for(int64_t(Cg) * KK, grain_for(P), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int c = int(r / KK), kh = int(r % KK) / s.KW, kw = int(r % KK) % s.KW;
      const float* plane = in + size_t(c) * s.H * s.W;
      float* dst = col + size_t(r) * ld;
      int lo, hi;
      valid_range(kw, s.stride_w, s.pad_w, s.W, OW, lo, hi);
      for (int oh = 0; oh < OH; ++oh, dst += OW) {
        const int ih = oh * s.stride_h - s.pad_h + kh;
        if (ih < 0 || ih >= s.H) {
          std::fill(dst, dst + OW, 0.0f);
          continue;
        }
        const float* src = plane + size_t(ih) * s.W - s.pad_w + kw;  // src[ow*stride] is iw
        std::fill(dst, dst + lo, 0.0f);
        if (s.stride_w == 1) {
          std::memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
        } else if (s.stride_w == 2) {
          gather_even(dst + lo, src + 2 * lo, hi - lo);
        } else {
          for (int ow = lo; ow < hi; ++ow) dst[ow] = src[ow * s.stride_w];
        }
        std::fill(dst + hi, dst + OW, 0.0f);
      }
    }
  });
}

// in (Cg, H, W) += col2im(col): the adjoint of im2col. One thread per channel, rows in fixed order.
void col2im_add(float* in, const float* col, int Cg, const Conv2dShape& s, size_t ld) {
  const int OH = s.OH(), OW = s.OW(), P = OH * OW, KK = s.KH * s.KW;
  if (tap_table_applies(s)) {  // taps in the same order as below, so the sums are the same
    int table[kTapTableInts];
    fill_tap_table(table, s);
    parallel_for(Cg, grain_for(int64_t(KK) * P), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        float* plane = in + size_t(c) * s.H * s.W;
        for (int k = 0; k < KK; ++k) {
          const float* src = col + size_t(c * KK + k) * ld;
          const int* t = table + k * P;
          for (int p = 0; p < P; ++p)
            if (t[p] >= 0) plane[t[p]] += src[p];
        }
      }
    });
    return;
  }
  parallel_for(Cg, grain_for(int64_t(KK) * P), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* plane = in + size_t(c) * s.H * s.W;
      for (int kh = 0; kh < s.KH; ++kh) {
        for (int kw = 0; kw < s.KW; ++kw) {
          const float* src = col + (size_t(c) * KK + kh * s.KW + kw) * ld;
          int lo, hi;
          valid_range(kw, s.stride_w, s.pad_w, s.W, OW, lo, hi);
          for (int oh = 0; oh < OH; ++oh, src += OW) {
            const int ih = oh * s.stride_h - s.pad_h + kh;
            if (ih < 0 || ih >= s.H) continue;
            float* dst = plane + size_t(ih) * s.W - s.pad_w + kw;
            if (s.stride_w == 2)
              scatter_add_even(dst + 2 * lo, src + lo, hi - lo);
            else
              for (int ow = lo; ow < hi; ++ow) dst[ow * s.stride_w] += src[ow];
          }
        }
      }
    }
  });
}

// ---- depthwise direct path -------------------------------------------------------------------
void depthwise_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s) {
  const int C = s.C, OH = s.OH(), OW = s.OW(), KK = s.KH * s.KW;
  parallel_for(int64_t(s.B) * C, grain_for(int64_t(OH) * OW * KK), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int c = int(p % C);
      const float* in = inp + size_t(p) * s.H * s.W;
      const float* w = weight + size_t(c) * KK;
      float* o = out + size_t(p) * OH * OW;
      std::fill(o, o + size_t(OH) * OW, bias ? bias[c] : 0.0f);
      for (int oh = 0; oh < OH; ++oh) {
        float* orow = o + size_t(oh) * OW;
        for (int kh = 0; kh < s.KH; ++kh) {
          const int ih = oh * s.stride_h - s.pad_h + kh;
          if (ih < 0 || ih >= s.H) continue;
          for (int kw = 0; kw < s.KW; ++kw) {
            int lo, hi;
            valid_range(kw, s.stride_w, s.pad_w, s.W, OW, lo, hi);
            const float wv = w[kh * s.KW + kw];
            const float* src = in + size_t(ih) * s.W - s.pad_w + kw;
            if (s.stride_w == 1) {
              for (int ow = lo; ow < hi; ++ow) orow[ow] += wv * src[ow];
            } else {
              for (int ow = lo; ow < hi; ++ow) orow[ow] += wv * src[ow * s.stride_w];
            }
          }
        }
      }
    }
  });
}

void depthwise_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const Conv2dShape& s) {
  const int C = s.C, OH = s.OH(), OW = s.OW(), KK = s.KH * s.KW, HW = s.H * s.W;
  const int64_t work = int64_t(OH) * OW * KK;
  if (dinp) {  // one thread per (sample, channel) plane
    parallel_for(int64_t(s.B) * C, grain_for(work), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int c = int(p % C);
        const float* w = weight + size_t(c) * KK;
        const float* g = dout + size_t(p) * OH * OW;
        float* di = dinp + size_t(p) * HW;
        for (int oh = 0; oh < OH; ++oh) {
          const float* grow = g + size_t(oh) * OW;
          for (int kh = 0; kh < s.KH; ++kh) {
            const int ih = oh * s.stride_h - s.pad_h + kh;
            if (ih < 0 || ih >= s.H) continue;
            for (int kw = 0; kw < s.KW; ++kw) {
              int lo, hi;
              valid_range(kw, s.stride_w, s.pad_w, s.W, OW, lo, hi);
              const float wv = w[kh * s.KW + kw];
              float* dst = di + size_t(ih) * s.W - s.pad_w + kw;
              for (int ow = lo; ow < hi; ++ow) dst[ow * s.stride_w] += wv * grow[ow];
            }
          }
        }
      }
    });
  }
  if (dweight || dbias) {  // one thread per channel; samples summed in order
    parallel_for(C, grain_for(work * s.B), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double bsum = 0.0;
        for (int b = 0; b < s.B; ++b) {
          const size_t p = size_t(b) * C + c;
          const float* g = dout + p * OH * OW;
          const float* in = inp + p * HW;
          if (dbias)
            for (int i = 0; i < OH * OW; ++i) bsum += g[i];
          if (!dweight) continue;
          for (int kh = 0; kh < s.KH; ++kh) {
            for (int kw = 0; kw < s.KW; ++kw) {
              int lo, hi;
              valid_range(kw, s.stride_w, s.pad_w, s.W, OW, lo, hi);
              float sum = 0.0f;
              for (int oh = 0; oh < OH; ++oh) {
                const int ih = oh * s.stride_h - s.pad_h + kh;
                if (ih < 0 || ih >= s.H) continue;
                const float* grow = g + size_t(oh) * OW;
                const float* src = in + size_t(ih) * s.W - s.pad_w + kw;
                for (int ow = lo; ow < hi; ++ow) sum += grow[ow] * src[ow * s.stride_w];
              }
              dweight[size_t(c) * KK + kh * s.KW + kw] += sum;  // sample by sample, in order
            }
          }
        }
        if (dbias) dbias[c] += float(bsum);
      }
    });
  }
}

}  // namespace

namespace {
// dbias[o] += the sum of dout's channel o over samples and positions, in double. Each thread owns a
// range of channels and walks the samples in order (memory order: a channel's planes lie a whole
// sample apart, which walked channel by channel maps to the same cache sets, as batch norm's sums
// did); a plane's vector part goes into 4 double lanes, its tail into a scalar, combined in a fixed
// order at the end: the same result for any thread count, without a serial double add per float
// (docs/native.md, "Training memory and fusion").
#if DFL_CONV2D_X86
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

void bias_gradient(float* dbias, const float* dout, const Conv2dShape& s) {
  const size_t P = size_t(s.OH()) * s.OW();
  parallel_for(s.OC, grain_for(int64_t(s.B) * int64_t(P)), [&](int64_t o0, int64_t o1) {
    std::vector<std::array<double, 4>> lanes(size_t(o1 - o0), {0.0, 0.0, 0.0, 0.0});
    std::vector<double> tails(size_t(o1 - o0), 0.0);
#if DFL_CONV2D_X86
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

// Samples per chunk of the batched path: one column matrix (and one dcol) per slot.
int chunk_slots(const Conv2dShape& s) { return std::max(1, std::min(s.B, max_thread_slots())); }
// Small outputs (P = OH*OW below 1024, i.e. below 32x32): S samples side by side make one GEMM with
// N = S*P >= kWideN columns, so the weights are packed once per chunk and the micro-kernel is full.
constexpr int kWideN = 1024;
int wide_samples(const Conv2dShape& s) {
  if (s.groups != 1) return 1;
  const int P = s.OH() * s.OW();
  return std::max(1, std::min(s.B, (kWideN + P - 1) / P));
}
bool batched_path(const Conv2dShape& s) { return s.groups == 1 && s.B > 1 && num_threads() > 1; }
size_t col_floats(const Conv2dShape& s) { return size_t(s.C / s.groups) * s.KH * s.KW * size_t(s.OH()) * s.OW(); }
}  // namespace

size_t general_workspace_floats(const Conv2dShape& s) {
  check_shape(s);
  if (is_depthwise(s)) return 0;
  // Batched path: per slot a column matrix and its gradient (pointwise convs need no columns but
  // still a dcol-free path, so nothing); the sequential path uses the first column matrix only.
  const int S = wide_samples(s);
  if (S > 1)  // columns, their gradient and the gathered output, all (rows, S*P)
    return (2 * size_t(s.C) * s.KH * s.KW + size_t(s.OC)) * size_t(S) * s.OH() * s.OW();
  if (is_pointwise(s)) return 0;
  return 2 * col_floats(s) * size_t(chunk_slots(s));
}

namespace {
// The wide path's columns for samples [b0, b0+n): col (K, n*P), sample i in columns [i*P, (i+1)*P).
void wide_columns(float* col, const float* inp, int b0, int n, const Conv2dShape& s) {
  const int P = s.OH() * s.OW(), HW = s.H * s.W;
  const size_t ld = size_t(n) * P;
  const bool pw = is_pointwise(s);
  parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* in = inp + size_t(b0 + i) * s.C * HW;
      if (pw) {
        for (int c = 0; c < s.C; ++c) std::memcpy(col + c * ld + i * P, in + size_t(c) * P, sizeof(float) * P);
      } else {
        im2col(col + i * P, in, s.C, s, ld);
      }
    }
  });
}
}  // namespace

void general_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                     float* workspace) {
  check_shape(s);
  if (is_depthwise(s)) return depthwise_forward(out, inp, weight, bias, s);
  const int G = s.groups, Cg = s.C / G, OCg = s.OC / G, OH = s.OH(), OW = s.OW(), P = OH * OW;
  const int Kg = Cg * s.KH * s.KW, HW = s.H * s.W;
  const bool pw = is_pointwise(s);
  DFL_CHECK(pw || workspace != nullptr, "conv2d_forward: workspace required");
  // One sample: out_b (OC, P) = W (per group) @ col_b, using the column buffer `ws`.
  auto sample = [&](int b, float* ws) {
    float* ob = out + size_t(b) * s.OC * P;
    if (bias)
      for (int o = 0; o < s.OC; ++o) std::fill(ob + size_t(o) * P, ob + size_t(o + 1) * P, bias[o]);
    for (int g = 0; g < G; ++g) {
      const float* in = inp + (size_t(b) * s.C + size_t(g) * Cg) * HW;  // (Cg, H, W)
      const float* col = in;                                            // (Kg, P)
      if (!pw) {
        im2col(ws, in, Cg, s, P);
        col = ws;
      }
      // out_g (OCg, P) = W_g (OCg, Kg) @ col (Kg, P) [+ bias already there]
      sgemm(false, false, OCg, P, Kg, 1.0f, weight + size_t(g) * OCg * Kg, Kg, col, P, bias ? 1.0f : 0.0f,
            ob + size_t(g) * OCg * P, P);
    }
  };
  if (const int S = wide_samples(s); S > 1) {
    float* colc = workspace;                           // (Kg, n*P)
    float* outc = workspace + 2 * size_t(Kg) * S * P;  // (OC, n*P)
    for (int c0 = 0; c0 < s.B; c0 += S) {
      const int n = std::min(S, s.B - c0);
      const size_t ld = size_t(n) * P;
      wide_columns(colc, inp, c0, n, s);
      sgemm(false, false, s.OC, int(ld), Kg, 1.0f, weight, Kg, colc, int(ld), 0.0f, outc, int(ld));
      parallel_for(int64_t(n) * s.OC, grain_for(P), [&](int64_t j0, int64_t j1) {
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t i = j / s.OC, o = j % s.OC;
          const float* src = outc + o * ld + i * P;
          float* dst = out + (size_t(c0 + i) * s.OC + o) * P;
          if (bias) {
            for (int p = 0; p < P; ++p) dst[p] = src[p] + bias[o];
          } else {
            std::memcpy(dst, src, sizeof(float) * P);
          }
        }
      });
    }
    return;
  }
  if (batched_path(s)) {
    const size_t slot = 2 * col_floats(s);
    const int T = chunk_slots(s);
    for (int c0 = 0; c0 < s.B; c0 += T) {
      const int n = std::min(T, s.B - c0);
      parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) sample(c0 + int(i), pw ? nullptr : workspace + size_t(i) * slot);
      });
    }
  } else {
    for (int b = 0; b < s.B; ++b) sample(b, workspace);
  }
}

void general_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                      const float* weight, const Conv2dShape& s, float* workspace) {
  check_shape(s);
  if (is_depthwise(s)) return depthwise_backward(dinp, dweight, dbias, dout, inp, weight, s);
  const int G = s.groups, Cg = s.C / G, OCg = s.OC / G, OH = s.OH(), OW = s.OW(), P = OH * OW;
  const int Kg = Cg * s.KH * s.KW, HW = s.H * s.W;
  const bool pw = is_pointwise(s);
  DFL_CHECK(pw || workspace != nullptr || (!dinp && !dweight), "conv2d_backward: workspace required");
  if (dbias) bias_gradient(dbias, dout, s);
  if (!dinp && !dweight) return;
  if (const int S = wide_samples(s); S > 1) {
    float* colc = workspace;                            // (Kg, n*P)
    float* dcolc = workspace + size_t(Kg) * S * P;      // (Kg, n*P)
    float* doutc = workspace + 2 * size_t(Kg) * S * P;  // (OC, n*P)
    for (int c0 = 0; c0 < s.B; c0 += S) {
      const int n = std::min(S, s.B - c0);
      const size_t ld = size_t(n) * P;
      parallel_for(int64_t(n) * s.OC, grain_for(P), [&](int64_t j0, int64_t j1) {
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t i = j / s.OC, o = j % s.OC;
          std::memcpy(doutc + o * ld + i * P, dout + (size_t(c0 + i) * s.OC + o) * P, sizeof(float) * P);
        }
      });
      if (dweight) {
        // dW (OC, Kg) += dout (OC, n*P) @ col^T: the chunk's samples in one GEMM, chunks in order.
        wide_columns(colc, inp, c0, n, s);
        sgemm(false, true, s.OC, Kg, int(ld), 1.0f, doutc, int(ld), colc, int(ld), 1.0f, dweight, Kg);
      }
      if (dinp) {
        sgemm(true, false, Kg, int(ld), s.OC, 1.0f, weight, Kg, doutc, int(ld), 0.0f, dcolc, int(ld));
        parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            float* di = dinp + size_t(c0 + i) * s.C * HW;
            if (pw) {
              for (int c = 0; c < s.C; ++c) {
                const float* src = dcolc + c * ld + i * P;
                float* dst = di + size_t(c) * P;
                for (int p = 0; p < P; ++p) dst[p] += src[p];
              }
            } else {
              col2im_add(di, dcolc + i * P, s.C, s, ld);
            }
          }
        });
      }
    }
    return;
  }
  if (batched_path(s)) {
    // Chunks of T samples: (1) per sample, in parallel: its column matrix and its dinp;
    // (2) dweight += dout_b @ col_b^T for the chunk's samples in order, threads splitting OC rows.
    const size_t cf = col_floats(s);
    const int T = chunk_slots(s);
    for (int c0 = 0; c0 < s.B; c0 += T) {
      const int n = std::min(T, s.B - c0);
      parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int b = c0 + int(i);
          float* col = pw ? nullptr : workspace + size_t(i) * 2 * cf;  // (Kg, P)
          float* dcol = pw ? nullptr : col + cf;                       // (Kg, P)
          const float* in = inp + size_t(b) * s.C * HW;
          const float* go = dout + size_t(b) * s.OC * P;
          if (dweight && !pw) im2col(col, in, Cg, s, P);
          if (!dinp) continue;
          float* di = dinp + size_t(b) * s.C * HW;
          if (pw) {
            sgemm(true, false, Kg, P, s.OC, 1.0f, weight, Kg, go, P, 1.0f, di, P);
          } else {
            sgemm(true, false, Kg, P, s.OC, 1.0f, weight, Kg, go, P, 0.0f, dcol, P);
            col2im_add(di, dcol, Cg, s, P);
          }
        }
      });
      if (!dweight) continue;
      parallel_for(s.OC, std::max<int64_t>(1, grain_for(int64_t(Kg) * P * n) / 4), [&](int64_t o0, int64_t o1) {
        const int rows = int(o1 - o0);
        for (int i = 0; i < n; ++i) {
          const int b = c0 + i;
          const float* col = pw ? inp + size_t(b) * s.C * HW : workspace + size_t(i) * 2 * cf;
          const float* go = dout + (size_t(b) * s.OC + o0) * P;
          sgemm(false, true, rows, Kg, P, 1.0f, go, P, col, P, 1.0f, dweight + size_t(o0) * Kg, Kg);
        }
      });
    }
    return;
  }
  for (int b = 0; b < s.B; ++b) {
    for (int g = 0; g < G; ++g) {
      const float* in = inp + (size_t(b) * s.C + size_t(g) * Cg) * HW;    // (Cg, H, W)
      const float* go = dout + (size_t(b) * s.OC + size_t(g) * OCg) * P;  // (OCg, P)
      const float* wg = weight + size_t(g) * OCg * Kg;                    // (OCg, Kg)
      if (dinp) {
        float* di = dinp + (size_t(b) * s.C + size_t(g) * Cg) * HW;  // (Cg, H, W)
        // dcol (Kg, P) = W_g^T @ dout_g; pointwise: dcol is dinp itself, accumulated by beta = 1.
        if (pw) {
          sgemm(true, false, Kg, P, OCg, 1.0f, wg, Kg, go, P, 1.0f, di, P);
        } else {
          sgemm(true, false, Kg, P, OCg, 1.0f, wg, Kg, go, P, 0.0f, workspace, P);
          col2im_add(di, workspace, Cg, s, P);
        }
      }
      if (dweight) {
        const float* col = in;
        if (!pw) {
          im2col(workspace, in, Cg, s, P);
          col = workspace;
        }
        // dW_g (OCg, Kg) += dout_g (OCg, P) @ col^T; samples added one by one, in order.
        sgemm(false, true, OCg, Kg, P, 1.0f, go, P, col, P, 1.0f, dweight + size_t(g) * OCg * Kg, Kg);
      }
    }
  }
}

// ---- 1x1 convolutions with a stride (ResNet's downsampling shortcuts) ---------------------------
// A strided 1x1 convolution reads one pixel in stride_h x stride_w: its input is gathered into a
// dense (B, C, OH, OW) copy, and the stride-1 1x1 convolution of that copy runs on the algorithm
// conv2d_choose_algo picks for it (the pointwise row kernels or a GEMM); the input gradient is
// computed on the dense copy and added back into the strided pixels. Gathers and scatters go one
// (sample, channel) plane per task, each element written once: thread counts do not matter.
// Workspace: [dense input | its gradient | the inner algorithm's workspace].
namespace {
bool strided_pointwise_applies(const Conv2dShape& s) {
  return s.KH == 1 && s.KW == 1 && s.pad_h == 0 && s.pad_w == 0 && s.groups == 1 && (s.stride_h > 1 || s.stride_w > 1);
}
Conv2dShape dense_shape(const Conv2dShape& s) {
  Conv2dShape d = s;
  d.H = s.OH();
  d.W = s.OW();
  d.stride_h = d.stride_w = 1;
  return d;
}
size_t dense_floats(const Conv2dShape& s) { return size_t(s.B) * s.C * s.OH() * s.OW(); }
size_t strided_pointwise_workspace_floats(const Conv2dShape& s) {
  const Conv2dShape d = dense_shape(s);
  return 2 * dense_floats(s) + conv2d_workspace_floats_with(conv2d_choose_algo(d), d);
}
// f(strided pixel, dense pixel) for every output position of every (sample, channel) plane, with
// x[b,c,oy*sh,ox*sw] the strided pixel and dense[b,c,oy,ox] the dense one; one plane per task.
template <typename T, typename F>
void for_strided_pixels(T* x, const Conv2dShape& s, float* dense, F&& f) {
  const int OH = s.OH(), OW = s.OW();
  const size_t plane = size_t(s.H) * s.W, dplane = size_t(OH) * OW;
  parallel_for(int64_t(s.B) * s.C, grain_for(int64_t(dplane)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int oy = 0; oy < OH; ++oy) {
        T* xr = x + size_t(p) * plane + size_t(oy) * s.stride_h * s.W;
        float* dr = dense + size_t(p) * dplane + size_t(oy) * OW;
        for (int ox = 0; ox < OW; ++ox) f(xr[size_t(ox) * s.stride_w], dr[ox]);
      }
  });
}
void strided_pointwise_forward(float* out, const float* inp, const float* weight, const float* bias,
                               const Conv2dShape& s, float* workspace) {
  const Conv2dShape d = dense_shape(s);
  for_strided_pixels(inp, s, workspace, [](const float& x, float& d) { d = x; });
  conv2d_forward_with(conv2d_choose_algo(d), out, workspace, weight, bias, d, workspace + 2 * dense_floats(s));
}
void strided_pointwise_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                const float* weight, const Conv2dShape& s, float* workspace) {
  const Conv2dShape d = dense_shape(s);
  const size_t n = dense_floats(s);
  float* dense = workspace;
  float* ddense = dinp ? workspace + n : nullptr;
  if (dweight) for_strided_pixels(inp, s, dense, [](const float& x, float& d) { d = x; });
  if (ddense) std::fill(ddense, ddense + n, 0.0f);
  conv2d_backward_with(conv2d_choose_algo(d), ddense, dweight, dbias, dout, dense, weight, d, workspace + 2 * n);
  if (dinp) for_strided_pixels(dinp, s, ddense, [](float& x, const float& d) { x += d; });
}
}  // namespace

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
       if (dbias) bias_gradient(dbias, dout, s);
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
       if (dbias) bias_gradient(dbias, dout, s);
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
       if (dbias) bias_gradient(dbias, dout, s);
       depthwise3x3_backward(dinp, dweight, dout, inp, weight, s, ws, writes_dinp);
     }},
    {ConvAlgo::Pointwise, "pointwise", pointwise_applies, pointwise_workspace_floats, pointwise_forward, true, always,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool writes_dinp) {
       if (dbias) bias_gradient(dbias, dout, s);
       pointwise_backward(dinp, dweight, dout, inp, weight, s, ws, writes_dinp);
     }},
    {ConvAlgo::ValidTaps, "valid-taps", valid_taps_applies, valid_taps_workspace_floats,
     [](float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s, float* ws,
        Activation) { valid_taps_forward(out, inp, weight, bias, s, ws); },
     false, never,
     [](float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
        const Conv2dShape& s, float* ws, bool) {
       if (dbias) bias_gradient(dbias, dout, s);
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
       if (dbias) bias_gradient(dbias, dout, s);
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
//     direct rows apply with at most 16 channels on both sides (there they win), and only while its
//     transformed weights fit the cap below; on 2x2 maps its 4x4 tiles are 3/4 padding;
//   - the direct 3x3 rows wherever they apply at stride 1, and at stride 2 with fewer than 64 input
//     channels (with 64+ the general path's GEMMs win every strided 3x3 forward);
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
  if (winograd_applies(s) && winograd_weights_fit && s.H >= 4 && s.W >= 4 &&
      !(direct3x3_applies(s) && std::max(s.C, s.OC) <= 16))
    return ConvAlgo::Winograd;
  if (direct3x3_applies(s) && (!strided || s.C < 64)) return ConvAlgo::Direct3x3;
  if (depthwise3x3_applies(s)) return ConvAlgo::Depthwise3x3;
  if (valid_taps_applies(s) && (s.OH() * s.OW() == 1 || (s.OH() * s.OW() <= 4 && std::min(s.C, s.OC) >= 256)))
    return ConvAlgo::ValidTaps;
  if (pointwise_applies(s) && (std::min(s.C, s.OC) < 64 || int64_t(s.C) * s.OC <= 160 * 1024))
    return ConvAlgo::Pointwise;
  if (direct_oc_applies(s) && strided && s.C < 64 && !tap_table_applies(s)) return ConvAlgo::DirectOC;
  return ConvAlgo::General;
}

size_t conv2d_workspace_floats_with(ConvAlgo a, const Conv2dShape& s) {
  check_shape(s);
  return algorithm(a).workspace_floats(s);
}

void conv2d_forward_with(ConvAlgo a, float* out, const float* inp, const float* weight, const float* bias,
                         const Conv2dShape& s, float* workspace, Activation act) {
  check_shape(s);
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
  check_shape(s);
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
