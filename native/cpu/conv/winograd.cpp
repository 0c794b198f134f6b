// Winograd F(4x4, 3x3) convolution (3x3, stride 1, pad 1, groups 1, channels multiples of 8, AVX2+FMA):
// the forward, the input gradient (the same computation on dout with the weights transposed and
// flipped) and the weight gradient (the adjoint of the forward's transforms; weight_gradient).
// Each 4x4 block of outputs ("tile") comes from the 6x6 input patch around it as
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
// so the 9*16 multiply-adds per input channel of a direct convolution become 36, spent in 36
// independent GEMMs (one per position xi of the 6x6 transformed tile):
//   M[xi](tiles x Cout) = V[xi](tiles x Cin) * U[xi](Cin x Cout)
// where U = G g G^T are the transformed weights (once per call) and V = B^T d B the transformed input.
// The transforms are vectorised over 8 channels: each thread's block of tile rows is first copied
// into channels-last (HWC) strips of 6 padded rows, so the 36 taps of 8 channels are contiguous.
//
// Accuracy: the transforms scale values by up to ~100 before the GEMM and back after, so the float
// rounding is larger than a direct convolution's: max |diff| ~2e-5 to 4e-5 of the RMS of the exact
// result at 8-256 channels (test/native/test_conv_algos.cpp measures it), far below what training
// notices (cuDNN and oneDNN offer the same algorithm).
//
// Threads: forward and input gradient: blocks of tile rows, fixed by the shape, go to threads whole;
// every GEMM runs on one thread and sums over input channels in the same order whatever the blocks.
// Weight gradient: see weight_gradient. Results are bitwise identical for any thread count.
#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/simd.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

constexpr int kTaps = 36;  // 6x6 transformed positions
// Tiles per block of the forward and input gradient: V and M of a block within 2 MiB (they stay in
// one core's L2/L3), but at least 32, for the GEMMs to reuse each packed U panel (its packing costs
// ~8/tiles of the block's work). The bounds are the kernel lab's (native/dev/conv_lab.cpp): many
// channels on small maps run faster near the lower one, few channels on large maps near the upper.
// The weight gradient's blocks are the K of its GEMMs, so longer (and shared by the threads): up to
// 512 tiles in 8 MiB.
struct Blocking {
  size_t bytes;
  int min_tiles, max_tiles;
};
constexpr Blocking kDataBlocks{size_t(2) << 20, 32, 96}, kWeightBlocks{size_t(8) << 20, 32, 512};

struct Geometry {
  int B, Cin, Cout, H, W;  // of the convolution as computed (the input gradient swaps the channels)
  int TH, TW;              // tiles per column and row
  int PW;                  // padded strip width, 4*TW + 2
  int rows_per_block;      // tile rows per block
  int blocks;              // over all B*TH tile rows
  int tiles_per_block() const { return rows_per_block * TW; }
  size_t strip_floats() const { return size_t(rows_per_block) * 6 * PW * Cin; }
  size_t v_floats() const { return size_t(kTaps) * tiles_per_block() * Cin; }
  size_t m_floats() const { return size_t(kTaps) * tiles_per_block() * Cout; }
  size_t per_thread_floats() const { return strip_floats() + v_floats() + m_floats() + 16; }
  size_t u_floats() const { return size_t(kTaps) * Cin * Cout; }
};

// The weight gradient's per-thread strips: 6 padded input rows and 4 rows of dout for one tile row.
size_t weight_strip_floats(const Geometry& g) { return size_t(6) * g.PW * g.Cin + size_t(16) * g.TW * g.Cout; }

Geometry geometry(int B, int Cin, int Cout, int H, int W, const Blocking& blocking = kDataBlocks) {
  Geometry g{B, Cin, Cout, H, W, (H + 3) / 4, (W + 3) / 4, 0, 0, 0};
  g.PW = 4 * g.TW + 2;
  const size_t tile_bytes = sizeof(float) * kTaps * size_t(Cin + Cout);
  const int target = int(std::clamp<size_t>(blocking.bytes / tile_bytes, blocking.min_tiles, blocking.max_tiles));
  g.rows_per_block = std::max(1, std::min(g.B * g.TH, (target + g.TW - 1) / g.TW));
  g.blocks = (g.B * g.TH + g.rows_per_block - 1) / g.rows_per_block;
  return g;
}

#if DFL_X86
// G of F(4x4, 3x3) (6x3): U = G g G^T transforms a 3x3 kernel, and G^T X G brings a 6x6 weight
// gradient back.
constexpr float kG[6][3] = {{1.0f / 4, 0, 0},
                            {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                            {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                            {1.0f / 24, 1.0f / 12, 1.0f / 6},
                            {1.0f / 24, -1.0f / 12, 1.0f / 6},
                            {0, 0, 1}};

// U[(xi*Cin + ci)*Cout + co] = (G g G^T)[xi] for the kernel g of input ci and output co, 8 output
// channels at a time. flip: the input gradient's kernels, g[ci][co] = w[ci][co] rotated by 180
// degrees (w is then (Cin, Cout, 3, 3), the forward's (Cout, Cin, 3, 3) read the other way).
__attribute__((target("avx2,fma"))) void transform_input_channel(float* U, const float* w, int ci, int Cin, int Cout,
                                                                 bool flip) {
  for (int co = 0; co < Cout; co += 8) {
    alignas(32) float taps[9][8];
    for (int l = 0; l < 8; ++l) {
      const float* src = flip ? w + (size_t(ci) * Cout + co + l) * 9 : w + (size_t(co + l) * Cin + ci) * 9;
      for (int t = 0; t < 9; ++t) taps[t][l] = src[flip ? 8 - t : t];
    }
    __m256 k[3][3], gk[6][3];  // gk = G k
    DFL_UNROLL
    for (int t = 0; t < 9; ++t) k[t / 3][t % 3] = _mm256_load_ps(taps[t]);
    DFL_UNROLL
    for (int i = 0; i < 6; ++i) DFL_UNROLL
    for (int b = 0; b < 3; ++b)
      gk[i][b] = _mm256_fmadd_ps(
          _mm256_set1_ps(kG[i][0]), k[0][b],
          _mm256_fmadd_ps(_mm256_set1_ps(kG[i][1]), k[1][b], _mm256_mul_ps(_mm256_set1_ps(kG[i][2]), k[2][b])));
    DFL_UNROLL
    for (int i = 0; i < 6; ++i) DFL_UNROLL
    for (int j = 0; j < 6; ++j) {
      const __m256 u = _mm256_fmadd_ps(
          gk[i][0], _mm256_set1_ps(kG[j][0]),
          _mm256_fmadd_ps(gk[i][1], _mm256_set1_ps(kG[j][1]), _mm256_mul_ps(gk[i][2], _mm256_set1_ps(kG[j][2]))));
      _mm256_storeu_ps(U + (size_t(i * 6 + j) * Cin + ci) * Cout + co, u);
    }
  }
}
void transform_weights(float* U, const float* w, int Cin, int Cout, bool flip) {
  parallel_for(Cin, std::max(1, 512 / std::max(1, Cout)), [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) transform_input_channel(U, w, int(ci), Cin, Cout, flip);
  });
}

// dweight[o][c] += G^T X G for the 6x6 weight gradients X = dWt[xi][o][c], 8 input channels at a time.
__attribute__((target("avx2,fma"))) void untransform_output_channel(float* dweight, const float* dWt, int o, int OC,
                                                                    int C) {
  for (int c = 0; c < C; c += 8) {
    __m256 gx[3][6];  // G^T X
    DFL_UNROLL
    for (int j = 0; j < 6; ++j) {
      __m256 x[6];
      DFL_UNROLL
      for (int i = 0; i < 6; ++i) x[i] = _mm256_loadu_ps(dWt + (size_t(i * 6 + j) * OC + o) * C + c);
      DFL_UNROLL
      for (int a = 0; a < 3; ++a) {
        __m256 v = _mm256_mul_ps(_mm256_set1_ps(kG[0][a]), x[0]);
        DFL_UNROLL
        for (int i = 1; i < 6; ++i) v = _mm256_fmadd_ps(_mm256_set1_ps(kG[i][a]), x[i], v);
        gx[a][j] = v;
      }
    }
    alignas(32) float out[9][8];
    DFL_UNROLL
    for (int a = 0; a < 3; ++a) DFL_UNROLL
    for (int b = 0; b < 3; ++b) {
      __m256 v = _mm256_mul_ps(gx[a][0], _mm256_set1_ps(kG[0][b]));
      DFL_UNROLL
      for (int j = 1; j < 6; ++j) v = _mm256_fmadd_ps(gx[a][j], _mm256_set1_ps(kG[j][b]), v);
      _mm256_store_ps(out[a * 3 + b], v);
    }
    for (int l = 0; l < 8; ++l) {
      float* dw = dweight + (size_t(o) * C + c + l) * 9;
      for (int t = 0; t < 9; ++t) dw[t] += out[t][l];
    }
  }
}
void untransform_weight_gradient(float* dweight, const float* dWt, int OC, int C) {
  parallel_for(OC, std::max(1, 512 / std::max(1, C)), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) untransform_output_channel(dweight, dWt, int(o), OC, C);
  });
}

// x (6 vectors) -> B^T x.
__attribute__((target("avx2,fma"))) inline void input_1d(const __m256 x[6], __m256 v[6]) {
  const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f), two = _mm256_set1_ps(2.0f);
  const __m256 t1 = _mm256_fnmadd_ps(four, x[2], x[4]);  // x4 - 4 x2
  const __m256 t2 = _mm256_fnmadd_ps(four, x[1], x[3]);  // x3 - 4 x1
  const __m256 t3 = _mm256_sub_ps(x[4], x[2]);
  const __m256 t4 = _mm256_mul_ps(two, _mm256_sub_ps(x[3], x[1]));
  v[0] = _mm256_fmadd_ps(four, x[0], _mm256_fnmadd_ps(five, x[2], x[4]));
  v[1] = _mm256_add_ps(t1, t2);
  v[2] = _mm256_sub_ps(t1, t2);
  v[3] = _mm256_add_ps(t3, t4);
  v[4] = _mm256_sub_ps(t3, t4);
  v[5] = _mm256_fmadd_ps(four, x[1], _mm256_fnmadd_ps(five, x[3], x[5]));
}

// m (6 vectors) -> A^T m (4 vectors).
__attribute__((target("avx2,fma"))) inline void output_1d(const __m256 m[6], __m256 y[4]) {
  const __m256 a = _mm256_add_ps(m[1], m[2]), b = _mm256_sub_ps(m[1], m[2]);
  const __m256 c = _mm256_add_ps(m[3], m[4]), d = _mm256_sub_ps(m[3], m[4]);
  y[0] = _mm256_add_ps(_mm256_add_ps(m[0], a), c);
  y[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), d, b);
  y[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), c, a);
  y[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), d, b), m[5]);
}

// The 6x6 patch at column x0 of a strip (6 rows of PW pixels, Cin channels each) -> V[xi][.] for
// every 8 channels; v points at this tile's row of V[0], vstride = tiles * Cin between positions.
__attribute__((target("avx2,fma"))) void input_tile(float* v, size_t vstride, const float* strip, int PW, int Cin,
                                                    int x0) {
  for (int c = 0; c < Cin; c += 8) {
    __m256 t[6][6];  // t[i][j] = (B^T d)[i][j]
    DFL_UNROLL
    for (int j = 0; j < 6; ++j) {
      __m256 col[6];
      DFL_UNROLL
      for (int i = 0; i < 6; ++i) col[i] = _mm256_loadu_ps(strip + (size_t(i) * PW + x0 + j) * Cin + c);
      __m256 out[6];
      input_1d(col, out);
      DFL_UNROLL
      for (int i = 0; i < 6; ++i) t[i][j] = out[i];
    }
    DFL_UNROLL
    for (int i = 0; i < 6; ++i) {
      __m256 out[6];
      input_1d(t[i], out);
      DFL_UNROLL
      for (int j = 0; j < 6; ++j) _mm256_storeu_ps(v + size_t(i * 6 + j) * vstride + c, out[j]);
    }
  }
}

// M[xi][.] of one tile (8 output channels at a time) -> its 4x4 outputs: act(y + bias) written, or y
// added, into the planes of out (sample base, plane stride H*W), clipped to rows x cols of the map.
__attribute__((target("avx2,fma"))) void output_tile(float* out, size_t plane, int W, int rows, int cols,
                                                     const float* m, size_t mstride, int Cout, const float* bias,
                                                     bool accumulate, Activation act) {
  for (int o = 0; o < Cout; o += 8) {
    __m256 t[4][6];  // (A^T M) rows
    DFL_UNROLL
    for (int j = 0; j < 6; ++j) {
      __m256 col[6];
      DFL_UNROLL
      for (int i = 0; i < 6; ++i) col[i] = _mm256_loadu_ps(m + size_t(i * 6 + j) * mstride + o);
      __m256 r[4];
      output_1d(col, r);
      DFL_UNROLL
      for (int i = 0; i < 4; ++i) t[i][j] = r[i];
    }
    const __m256 b = bias ? _mm256_loadu_ps(bias + o) : _mm256_setzero_ps();
    for (int i = 0; i < rows; ++i) {
      __m256 r[4];
      output_1d(t[i], r);
      DFL_UNROLL
      for (int j = 0; j < 4; ++j) r[j] = activate(_mm256_add_ps(r[j], b), act);
      // 4 columns x 8 channels -> per channel a row of 4: two 4x4 transposes (channels 0-3, 4-7).
      for (int half = 0; half < 2; ++half) {
        __m128 q0 = half ? _mm256_extractf128_ps(r[0], 1) : _mm256_castps256_ps128(r[0]);
        __m128 q1 = half ? _mm256_extractf128_ps(r[1], 1) : _mm256_castps256_ps128(r[1]);
        __m128 q2 = half ? _mm256_extractf128_ps(r[2], 1) : _mm256_castps256_ps128(r[2]);
        __m128 q3 = half ? _mm256_extractf128_ps(r[3], 1) : _mm256_castps256_ps128(r[3]);
        _MM_TRANSPOSE4_PS(q0, q1, q2, q3);
        const __m128 q[4] = {q0, q1, q2, q3};
        DFL_UNROLL
        for (int l = 0; l < 4; ++l) {
          float* dst = out + size_t(o + 4 * half + l) * plane + size_t(i) * W;
          if (cols == 4) {
            _mm_storeu_ps(dst, accumulate ? _mm_add_ps(_mm_loadu_ps(dst), q[l]) : q[l]);
          } else {
            alignas(16) float v[4];
            _mm_store_ps(v, q[l]);
            for (int j = 0; j < cols; ++j) dst[j] = accumulate ? dst[j] + v[j] : v[j];
          }
        }
      }
    }
  }
}

// dst[x*ld + c] = src[c*plane + x] for c < 8, x < n (8 planes' row segments -> channels-last pixels).
__attribute__((target("avx2"))) void transpose_rows_8(float* dst, size_t ld, const float* src, size_t plane, int n) {
  int x = 0;
  for (; x + 8 <= n; x += 8) {
    __m256 r[8];
    DFL_UNROLL
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + size_t(k) * plane + x);
    transpose8(r);  // r[k]: pixel x + k, 8 channels
    DFL_UNROLL
    for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + size_t(x + k) * ld, r[k]);
  }
  for (; x < n; ++x) DFL_UNROLL
  for (int c = 0; c < 8; ++c) dst[size_t(x) * ld + c] = src[size_t(c) * plane + x];
}

// The channels-last strip of tile row r (sample r / TH, tile row ty = r % TH) of x (B, C, H, W):
// `rows` rows of `width` pixels of C channels; strip row i is map row 4*ty + i - pad and strip
// column j map column j - pad, zero outside the map.
void fill_strip(float* strip, const float* x, int C, int H, int W, int TH, int r, int rows, int width, int pad) {
  const int n = r / TH, ty = r % TH;
  const size_t plane = size_t(H) * W;
  std::memset(strip, 0, sizeof(float) * rows * width * C);
  for (int i = 0; i < rows; ++i) {
    const int y = 4 * ty + i - pad;
    if (y < 0 || y >= H) continue;
    float* row = strip + (size_t(i) * width + pad) * C;
    const float* src = x + size_t(n) * C * plane + size_t(y) * W;
    const int n_cols = std::min(W, width - pad);
    for (int c = 0; c < C; c += 8) transpose_rows_8(row + c, C, src + size_t(c) * plane, plane, n_cols);
  }
}

// One block of tile rows: strips -> V -> 36 GEMMs -> M -> outputs.
void run_block(const Geometry& g, int block, float* out, const float* in, const float* U, const float* bias,
               bool accumulate, Activation act, float* scratch) {
  float* strips = scratch;
  float* V = strips + g.strip_floats();
  float* M = V + g.v_floats();
  const int r0 = block * g.rows_per_block, r1 = std::min(g.B * g.TH, r0 + g.rows_per_block);
  const int tiles = (r1 - r0) * g.TW;
  const size_t in_plane = size_t(g.H) * g.W;
  for (int r = r0; r < r1; ++r)
    fill_strip(strips + size_t(r - r0) * 6 * g.PW * g.Cin, in, g.Cin, g.H, g.W, g.TH, r, 6, g.PW, 1);
  const size_t vstride = size_t(tiles) * g.Cin, mstride = size_t(tiles) * g.Cout;
  for (int r = r0; r < r1; ++r) {
    const float* strip = strips + size_t(r - r0) * 6 * g.PW * g.Cin;
    for (int tx = 0; tx < g.TW; ++tx) {
      const int t = (r - r0) * g.TW + tx;
      input_tile(V + size_t(t) * g.Cin, vstride, strip, g.PW, g.Cin, 4 * tx);
    }
  }
  for (int xi = 0; xi < kTaps; ++xi)
    sgemm(false, false, tiles, g.Cout, g.Cin, 1.0f, V + xi * vstride, g.Cin, U + size_t(xi) * g.Cin * g.Cout, g.Cout,
          0.0f, M + xi * mstride, g.Cout);
  const size_t out_plane = in_plane;  // stride 1, pad 1: same map size
  for (int r = r0; r < r1; ++r) {
    const int n = r / g.TH, ty = r % g.TH;
    const int rows = std::min(4, g.H - 4 * ty);
    for (int tx = 0; tx < g.TW; ++tx) {
      const int t = (r - r0) * g.TW + tx;
      const int cols = std::min(4, g.W - 4 * tx);
      float* dst = out + size_t(n) * g.Cout * out_plane + size_t(4 * ty) * g.W + 4 * tx;
      output_tile(dst, out_plane, g.W, rows, cols, M + size_t(t) * g.Cout, mstride, g.Cout, bias, accumulate, act);
    }
  }
}

// out (B, Cout, H, W) = act(conv + bias) (or += conv) for the stride-1 pad-1 convolution of
// in (B, Cin, H, W) with the transformed weights U.
void run(const Geometry& g, float* out, const float* in, const float* U, const float* bias, bool accumulate,
         Activation act, float* thread_scratch) {
  parallel_for(g.blocks, 1, [&](int64_t b0, int64_t b1) {
    float* scratch = thread_scratch + size_t(thread_slot()) * g.per_thread_floats();
    for (int64_t b = b0; b < b1; ++b) run_block(g, int(b), out, in, U, bias, accumulate, act, scratch);
  });
}

// x (4 vectors) -> A x (6 vectors), A = (A^T)^T: the output transform's adjoint.
__attribute__((target("avx2,fma"))) inline void gradient_1d(const __m256 x[4], __m256 z[6]) {
  const __m256 p = _mm256_add_ps(x[0], x[2]), q = _mm256_add_ps(x[1], x[3]);
  const __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), x[2], x[0]);
  const __m256 t = _mm256_mul_ps(_mm256_set1_ps(2.0f), _mm256_fmadd_ps(_mm256_set1_ps(4.0f), x[3], x[1]));
  z[0] = x[0];
  z[1] = _mm256_add_ps(p, q);
  z[2] = _mm256_sub_ps(p, q);
  z[3] = _mm256_add_ps(r, t);
  z[4] = _mm256_sub_ps(r, t);
  z[5] = x[3];
}

// One tile's 4x4 output gradient at column x0 of a dout strip (4 rows of `width` pixels, Cout
// channels) -> Z[xi][.] = (A dY A^T)[xi] for every 8 channels; z points at this tile's row of Z[0].
__attribute__((target("avx2,fma"))) void gradient_tile(float* z, size_t zstride, const float* strip, int width,
                                                       int Cout, int x0) {
  for (int o = 0; o < Cout; o += 8) {
    __m256 t[6][4];  // (A dY)
    DFL_UNROLL
    for (int j = 0; j < 4; ++j) {
      __m256 col[4], out[6];
      DFL_UNROLL
      for (int i = 0; i < 4; ++i) col[i] = _mm256_loadu_ps(strip + (size_t(i) * width + x0 + j) * Cout + o);
      gradient_1d(col, out);
      DFL_UNROLL
      for (int i = 0; i < 6; ++i) t[i][j] = out[i];
    }
    DFL_UNROLL
    for (int i = 0; i < 6; ++i) {
      __m256 out[6];
      gradient_1d(t[i], out);
      DFL_UNROLL
      for (int j = 0; j < 6; ++j) _mm256_storeu_ps(z + size_t(i * 6 + j) * zstride + o, out[j]);
    }
  }
}

// dweight += the weight gradient, dW = sum over tiles of G^T [ (B^T d B) (.) (A dY A^T) ] G: per
// block of tiles, the input (V) and output-gradient (Z) transforms, then for each of the 36 positions
// dWt[xi](Cout x Cin) += Z[xi]^T V[xi], a GEMM over the block's tiles. Blocks go in order, all threads
// on each (tiles split for the transforms, positions for the GEMMs), so every dWt element is summed
// in one fixed order whatever the thread count.
void weight_gradient(float* dweight, const float* dout, const float* inp, const Geometry& g, float* workspace) {
  const int C = g.Cin, OC = g.Cout;
  float* dWt = workspace;
  float* V = dWt + g.u_floats();
  float* Z = V + g.v_floats();
  float* strips = Z + g.m_floats();
  const size_t per_thread = weight_strip_floats(g);
  std::memset(dWt, 0, sizeof(float) * g.u_floats());
  for (int block = 0; block < g.blocks; ++block) {
    const int r0 = block * g.rows_per_block, r1 = std::min(g.B * g.TH, r0 + g.rows_per_block);
    const int tiles = (r1 - r0) * g.TW;
    const size_t vstride = size_t(tiles) * C, zstride = size_t(tiles) * OC;
    parallel_for(r1 - r0, 1, [&](int64_t a, int64_t b) {
      float* in_strip = strips + size_t(thread_slot()) * per_thread;
      float* d_strip = in_strip + size_t(6) * g.PW * C;
      for (int64_t r = r0 + a; r < r0 + b; ++r) {
        fill_strip(in_strip, inp, C, g.H, g.W, g.TH, int(r), 6, g.PW, 1);
        fill_strip(d_strip, dout, OC, g.H, g.W, g.TH, int(r), 4, 4 * g.TW, 0);
        for (int tx = 0; tx < g.TW; ++tx) {
          const size_t t = size_t(r - r0) * g.TW + tx;
          input_tile(V + t * C, vstride, in_strip, g.PW, C, 4 * tx);
          gradient_tile(Z + t * OC, zstride, d_strip, 4 * g.TW, OC, 4 * tx);
        }
      }
    });
    parallel_for(kTaps, 1, [&](int64_t x0, int64_t x1) {
      for (int64_t xi = x0; xi < x1; ++xi)
        sgemm(true, false, OC, C, tiles, 1.0f, Z + xi * zstride, OC, V + xi * vstride, C, 1.0f,
              dWt + size_t(xi) * OC * C, C);
    });
  }
  untransform_weight_gradient(dweight, dWt, OC, C);
}
#endif

Geometry forward_geometry(const Conv2dShape& s) { return geometry(s.B, s.C, s.OC, s.H, s.W); }
Geometry data_gradient_geometry(const Conv2dShape& s) { return geometry(s.B, s.OC, s.C, s.H, s.W); }
Geometry weight_gradient_geometry(const Conv2dShape& s) { return geometry(s.B, s.C, s.OC, s.H, s.W, kWeightBlocks); }

size_t workspace_for(const Geometry& g) { return g.u_floats() + size_t(max_thread_slots()) * g.per_thread_floats(); }
// dWt, one block's V and Z, the threads' strips.
size_t weight_workspace_for(const Geometry& g) {
  return g.u_floats() + g.v_floats() + g.m_floats() + size_t(max_thread_slots()) * weight_strip_floats(g);
}

// g with its blocks evened out over the threads: with few blocks (a 4x4 map's 128 tiles in 3 blocks
// of 56), rows per block shrink until the count is a multiple of the threads (kernel lab, 128
// channels on 4x4: one thread idle a third of the time before). Only the forward and input gradient
// use it: their results do not depend on the blocks (each tile's GEMM row sums in the same order),
// and blocks only shrink, so the workspace sized for g still holds.
Geometry balanced(Geometry g) {
  const int rows = g.B * g.TH, T = num_threads();
  if (T <= 1 || g.blocks >= 8 * T || g.blocks % T == 0) return g;
  const int want = (g.blocks + T - 1) / T * T;
  g.rows_per_block = (rows + want - 1) / want;
  g.blocks = (rows + g.rows_per_block - 1) / g.rows_per_block;
  return g;
}

// The forward (out = conv(in) + bias) or the input gradient (out (+)= conv of dout with the weights
// transposed and flipped), the transformed weights at the front of the workspace.
void convolve(const Geometry& g, float* out, const float* in, const float* weight, const float* bias,
              bool data_gradient, bool accumulate, const Conv2dShape& s, float* workspace,
              Activation act = Activation::None) {
  DFL_CHECK(winograd_applies(s) && workspace, "conv2d: the Winograd algorithm does not apply to this shape");
#if DFL_X86
  transform_weights(workspace, weight, g.Cin, g.Cout, data_gradient);
  run(balanced(g), out, in, workspace, bias, accumulate, act, workspace + g.u_floats());
#else
  (void)g, (void)out, (void)in, (void)weight, (void)bias, (void)data_gradient, (void)accumulate, (void)act;
#endif
}

}  // namespace

bool winograd_applies(const Conv2dShape& s) {
  return DFL_X86 && cpu_features().avx2 && cpu_features().fma && s.KH == 3 && s.KW == 3 && s.stride_h == 1 &&
         s.stride_w == 1 && s.pad_h == 1 && s.pad_w == 1 && s.groups == 1 && s.C % 8 == 0 && s.OC % 8 == 0;
}

size_t winograd_workspace_floats(const Conv2dShape& s) {
  return std::max({workspace_for(forward_geometry(s)), workspace_for(data_gradient_geometry(s)),
                   weight_workspace_for(weight_gradient_geometry(s))});
}

void winograd_forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dShape& s,
                      float* workspace, Activation act) {
  convolve(forward_geometry(s), out, inp, weight, bias, /*data_gradient=*/false, /*accumulate=*/false, s, workspace,
           act);
}

void winograd_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dShape& s, float* workspace,
                            bool overwrite) {
  convolve(data_gradient_geometry(s), dinp, dout, weight, nullptr, /*data_gradient=*/true, /*accumulate=*/!overwrite, s,
           workspace);
}

void winograd_backward_weights(float* dweight, const float* dout, const float* inp, const Conv2dShape& s,
                               float* workspace) {
  DFL_CHECK(winograd_applies(s) && workspace, "conv2d: the Winograd algorithm does not apply to this shape");
#if DFL_X86
  weight_gradient(dweight, dout, inp, weight_gradient_geometry(s), workspace);
#else
  (void)dweight, (void)dout, (void)inp;
#endif
}

}  // namespace dfl::cpu
