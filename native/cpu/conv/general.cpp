// The general conv2d algorithm (PyTorch semantics, any shape) on the CPU. It has three paths:
//   (the table that picks between it and the specialised algorithms is conv2d.cpp)
//
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
#include <cstring>
#include <vector>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace dfl::cpu {

namespace {
// Small outputs (rows under 8, at most kTapTableInts (tap, pixel) pairs): im2col and col2im go by a
// table of where each (tap, output pixel) reads in a channel plane (-1: padding), not row by row,
// whose per-row bookkeeping cost more than the copies on 4x4 maps (ResNet's last stride-2 conv).
constexpr int kTapTableInts = 4096;
}  // namespace

bool tap_table_applies(const Conv2dShape& s) {
  return s.OW() < 8 && int64_t(s.KH) * s.KW * s.OH() * s.OW() <= kTapTableInts;
}

namespace {

// ---- stride-2 rows of im2col and col2im ------------------------------------------------------------
// A stride-2 convolution's column rows read every other input column (im2col) and its input
// gradient adds them back there (col2im): scalar loops, a quarter of ResNet's strided 3x3 backward.
// AVX2 moves 8 columns at a time: 16 input floats deinterleaved (their even half), or 8 values
// interleaved into 16 floats whose even lanes take the sums (the odd ones are stored back unchanged).
#if DFL_X86
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
#if DFL_X86
  if (cpu_features().avx2) return gather_even_avx2(dst, src, n);
#endif
  for (int i = 0; i < n; ++i) dst[i] = src[2 * i];
}
void scatter_add_even(float* dst, const float* src, int n) {
#if DFL_X86
  if (cpu_features().avx2) return scatter_add_even_avx2(dst, src, n);
#endif
  for (int i = 0; i < n; ++i) dst[2 * i] += src[i];
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
    parallel_for(Cg, conv_grain(int64_t(KK) * P), [&](int64_t c0, int64_t c1) {
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
  parallel_for(int64_t(Cg) * KK, conv_grain(P), [&](int64_t r0, int64_t r1) {
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
    parallel_for(Cg, conv_grain(int64_t(KK) * P), [&](int64_t c0, int64_t c1) {
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
  parallel_for(Cg, conv_grain(int64_t(KK) * P), [&](int64_t c0, int64_t c1) {
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
  parallel_for(int64_t(s.B) * C, conv_grain(int64_t(OH) * OW * KK), [&](int64_t p0, int64_t p1) {
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
    parallel_for(int64_t(s.B) * C, conv_grain(work), [&](int64_t p0, int64_t p1) {
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
    parallel_for(C, conv_grain(work * s.B), [&](int64_t c0, int64_t c1) {
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
  conv2d_check_shape(s);
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
  conv2d_check_shape(s);
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
      parallel_for(int64_t(n) * s.OC, conv_grain(P), [&](int64_t j0, int64_t j1) {
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
  conv2d_check_shape(s);
  if (is_depthwise(s)) return depthwise_backward(dinp, dweight, dbias, dout, inp, weight, s);
  const int G = s.groups, Cg = s.C / G, OCg = s.OC / G, OH = s.OH(), OW = s.OW(), P = OH * OW;
  const int Kg = Cg * s.KH * s.KW, HW = s.H * s.W;
  const bool pw = is_pointwise(s);
  DFL_CHECK(pw || workspace != nullptr || (!dinp && !dweight), "conv2d_backward: workspace required");
  if (dbias) conv2d_bias_gradient(dbias, dout, s);
  if (!dinp && !dweight) return;
  if (const int S = wide_samples(s); S > 1) {
    float* colc = workspace;                            // (Kg, n*P)
    float* dcolc = workspace + size_t(Kg) * S * P;      // (Kg, n*P)
    float* doutc = workspace + 2 * size_t(Kg) * S * P;  // (OC, n*P)
    for (int c0 = 0; c0 < s.B; c0 += S) {
      const int n = std::min(S, s.B - c0);
      const size_t ld = size_t(n) * P;
      parallel_for(int64_t(n) * s.OC, conv_grain(P), [&](int64_t j0, int64_t j1) {
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
      parallel_for(s.OC, std::max<int64_t>(1, conv_grain(int64_t(Kg) * P * n) / 4), [&](int64_t o0, int64_t o1) {
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

}  // namespace dfl::cpu
