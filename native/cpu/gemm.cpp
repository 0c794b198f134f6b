// Single-precision GEMM: cache-blocked and packed (Goto/BLIS loop order), with a register-blocked
// micro-kernel in three variants picked at run time: AVX-512F (8x32), AVX2+FMA (6x16), portable
// C++ (4x8). The build has no -march flags, so the SIMD kernels carry per-function target
// attributes and are only called after cpu_features() says they may run (the CPU has them and
// DFL_SIMD does not cap them, core/cpu_features.h).
//
// Determinism: every C element belongs to one fixed micro-tile (tiles start at multiples of MR/NR
// from C's origin, independent of threading) and its K sum runs in fixed KC blocks in k order.
// Threads only split C into regions of whole micro-tiles, never K, so the result is bitwise the
// same for any thread count (it does depend on the variant).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "core/check.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/gemm_internal.h"
#include "cpu/simd.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

// Micro-kernel: C[0:mr, 0:nr] = alpha * (Ap * Bp) + beta * C, with Ap a packed MR x kc panel
// (column of MR values per k) and Bp a packed kc x NR panel (row of NR values per k). Partial
// tiles (mr < MR or nr < NR) go through a local MR x NR tile so they use the very same vector ops.
// beta == 0: C is not read.
using MicroKernel = void (*)(int kc, const float* a, const float* b, float* c, int ldc, float alpha, float beta, int mr,
                             int nr);

// Copies the valid mr x nr part of C into a zeroed full tile (ld NR) when beta needs it.
template <int MR, int NR>
inline void tile_load(float* tile, const float* c, int ldc, int mr, int nr, float beta) {
  std::memset(tile, 0, sizeof(float) * MR * NR);
  if (beta == 0.0f) return;
  for (int i = 0; i < mr; ++i) std::memcpy(tile + i * NR, c + size_t(i) * ldc, sizeof(float) * nr);
}
template <int MR, int NR>
inline void tile_store(const float* tile, float* c, int ldc, int mr, int nr) {
  for (int i = 0; i < mr; ++i) std::memcpy(c + size_t(i) * ldc, tile + i * NR, sizeof(float) * nr);
}

// ---- portable 4x8 ------------------------------------------------------------------------------
constexpr int kPortMR = 4, kPortNR = 8;
void ukr_portable(int kc, const float* __restrict a, const float* __restrict b, float* c, int ldc, float alpha,
                  float beta, int mr, int nr) {
  constexpr int MR = kPortMR, NR = kPortNR;
  float acc[MR][NR] = {};
  for (int k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
    a += MR;
    b += NR;
  }
  float tile[MR * NR];
  const bool full = mr == MR && nr == NR;
  float* dst = c;
  int ld = ldc;
  if (!full) {
    tile_load<MR, NR>(tile, c, ldc, mr, nr, beta);
    dst = tile;
    ld = NR;
  }
  for (int i = 0; i < MR; ++i) {
    float* row = dst + size_t(i) * ld;
    if (beta == 0.0f) {
      for (int j = 0; j < NR; ++j) row[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < NR; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
    }
  }
  if (!full) tile_store<MR, NR>(tile, c, ldc, mr, nr);
}

#if DFL_X86
// ---- AVX2 + FMA 6x16: 12 ymm accumulators ------------------------------------------------------
constexpr int kAvx2MR = 6, kAvx2NR = 16;
__attribute__((target("avx2,fma"))) void ukr_avx2(int kc, const float* __restrict a, const float* __restrict b,
                                                  float* c, int ldc, float alpha, float beta, int mr, int nr) {
  constexpr int MR = kAvx2MR, NR = kAvx2NR;
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
#pragma GCC unroll 2
  for (int k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
    }
    a += MR;
    b += NR;
  }
  alignas(32) float tile[MR * NR];
  const bool full = mr == MR && nr == NR;
  float* dst = c;
  int ld = ldc;
  if (!full) {
    tile_load<MR, NR>(tile, c, ldc, mr, nr, beta);
    dst = tile;
    ld = NR;
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    float* row = dst + size_t(i) * ld;
    const __m256 r0 = _mm256_mul_ps(acc0[i], va), r1 = _mm256_mul_ps(acc1[i], va);
    if (beta == 0.0f) {
      _mm256_storeu_ps(row, r0);
      _mm256_storeu_ps(row + 8, r1);
    } else {
      _mm256_storeu_ps(row, _mm256_fmadd_ps(vb, _mm256_loadu_ps(row), r0));
      _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8), r1));
    }
  }
  if (!full) tile_store<MR, NR>(tile, c, ldc, mr, nr);
}

// ---- AVX-512F 8x32: 16 zmm accumulators (2 FMA ports x 4-cycle latency needs >= 8) --------------
constexpr int kAvx512MR = 8, kAvx512NR = 32;
__attribute__((target("avx512f,fma"))) void ukr_avx512(int kc, const float* __restrict a, const float* __restrict b,
                                                       float* c, int ldc, float alpha, float beta, int mr, int nr) {
  constexpr int MR = kAvx512MR, NR = kAvx512NR;
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
    }
    a += MR;
    b += NR;
  }
  alignas(64) float tile[MR * NR];
  const bool full = mr == MR && nr == NR;
  float* dst = c;
  int ld = ldc;
  if (!full) {
    tile_load<MR, NR>(tile, c, ldc, mr, nr, beta);
    dst = tile;
    ld = NR;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* row = dst + size_t(i) * ld;
    const __m512 r0 = _mm512_mul_ps(acc0[i], va), r1 = _mm512_mul_ps(acc1[i], va);
    if (beta == 0.0f) {
      _mm512_storeu_ps(row, r0);
      _mm512_storeu_ps(row + 16, r1);
    } else {
      _mm512_storeu_ps(row, _mm512_fmadd_ps(vb, _mm512_loadu_ps(row), r0));
      _mm512_storeu_ps(row + 16, _mm512_fmadd_ps(vb, _mm512_loadu_ps(row + 16), r1));
    }
  }
  if (!full) tile_store<MR, NR>(tile, c, ldc, mr, nr);
}
#endif

struct Variant {
  int MR, NR;
  int MC, KC, NC;  // MC multiple of MR, NC multiple of NR
  MicroKernel ukr;
};

// KC x NR B micro-panel (<= 32 KiB) stays in L1 while A micro-panels stream from an MC x KC block
// in L2; the KC x NC B panel lives in L2/L3.
constexpr int kKC = 256;
constexpr int kMCMax = 192, kNCMax = 2048;

const Variant& variant_of(GemmKernel k) {
  static const Variant portable{kPortMR, kPortNR, 128, kKC, kNCMax, ukr_portable};
#if DFL_X86
  static const Variant avx2{kAvx2MR, kAvx2NR, 192, kKC, kNCMax, ukr_avx2};
  static const Variant avx512{kAvx512MR, kAvx512NR, 192, kKC, kNCMax, ukr_avx512};
  if (k == GemmKernel::Avx512) return avx512;
  if (k == GemmKernel::Avx2) return avx2;
#endif
  return portable;
}

// Per-thread packing buffers, allocated once per thread at their maximum size (not per call).
struct PackBuffers {
  std::unique_ptr<float[]> raw;
  float* a = nullptr;  // MC x KC
  float* b = nullptr;  // KC x NC
  PackBuffers() {
    const size_t na = size_t(kMCMax) * kKC, nb = size_t(kKC) * kNCMax;
    raw.reset(new float[na + nb + 32]);
    const uintptr_t p = reinterpret_cast<uintptr_t>(raw.get());
    a = reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
    b = a + na;  // na is a multiple of 16 floats, so b stays 64-byte aligned
  }
};
PackBuffers& pack_buffers() {
  thread_local PackBuffers buf;
  return buf;
}

struct GemmArgs {
  bool ta, tb;
  int M, N, K;
  float alpha;
  const float* A;
  int lda;
  const float* B;
  int ldb;
  float beta;
  float* C;
  int ldc;
};

// Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels: dst[panel][k][r], zero rows past mc.
template <int MR>
void pack_a(float* dst, const GemmArgs& g, int i0, int mc, int p0, int kc) {
  for (int ir = 0; ir < mc; ir += MR) {
    const int mr = std::min(MR, mc - ir);
    if (g.ta) {  // A stored (K, M): each k gives MR contiguous values
      for (int k = 0; k < kc; ++k) {
        const float* src = g.A + size_t(p0 + k) * g.lda + (i0 + ir);
        int r = 0;
        for (; r < mr; ++r) dst[r] = src[r];
        for (; r < MR; ++r) dst[r] = 0.0f;
        dst += MR;
      }
    } else {  // A stored (M, K): MR row streams
      const float* rows[MR];
      for (int r = 0; r < MR; ++r) rows[r] = g.A + size_t(i0 + ir + std::min(r, mr - 1)) * g.lda + p0;
      if (mr == MR) {
        for (int k = 0; k < kc; ++k) {
          for (int r = 0; r < MR; ++r) dst[r] = rows[r][k];
          dst += MR;
        }
      } else {
        for (int k = 0; k < kc; ++k) {
          for (int r = 0; r < MR; ++r) dst[r] = r < mr ? rows[r][k] : 0.0f;
          dst += MR;
        }
      }
    }
  }
}

#if DFL_X86
// B stored (N, K), a full panel of NR columns: 8 columns x 8 k at a time through an 8x8 transpose
// (the scalar copy below writes one float per 64-byte row of the panel per step). Same values.
template <int NR>
__attribute__((target("avx2"))) void pack_b_transposed_panel(float* dst, const GemmArgs& g, int p0, int kc, int col0) {
  int k = 0;
  for (; k + 8 <= kc; k += 8)
    for (int c = 0; c < NR; c += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(g.B + size_t(col0 + c + i) * g.ldb + p0 + k);
      transpose8(r);  // r[i]: k + i, columns c..c+7
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + size_t(k + i) * NR + c, r[i]);
    }
  for (; k < kc; ++k)
    for (int c = 0; c < NR; ++c) dst[size_t(k) * NR + c] = g.B[size_t(col0 + c) * g.ldb + p0 + k];
}
#endif

// Packs op(B)[p0:p0+kc, j0:j0+nc] into NR-column panels: dst[panel][k][c], zero columns past nc.
template <int NR>
void pack_b(float* dst, const GemmArgs& g, int p0, int kc, int j0, int nc) {
#if DFL_X86
  // The transposed panels with AVX2 (every x86 variant but the portable one runs on AVX2 CPUs).
  static const bool avx2 = cpu_features().avx2;
  const bool fast_transpose = g.tb && NR % 8 == 0 && avx2;
#endif
  for (int jr = 0; jr < nc; jr += NR) {
    const int nr = std::min(NR, nc - jr);
#if DFL_X86
    if (fast_transpose && nr == NR) {
      pack_b_transposed_panel<NR>(dst, g, p0, kc, j0 + jr);
      dst += size_t(kc) * NR;
      continue;
    }
#endif
    if (!g.tb) {  // B stored (K, N): each k gives NR contiguous values
      for (int k = 0; k < kc; ++k) {
        const float* src = g.B + size_t(p0 + k) * g.ldb + (j0 + jr);
        if (nr == NR) {
          std::memcpy(dst, src, sizeof(float) * NR);
        } else {
          int c = 0;
          for (; c < nr; ++c) dst[c] = src[c];
          for (; c < NR; ++c) dst[c] = 0.0f;
        }
        dst += NR;
      }
    } else {  // B stored (N, K): column c of the panel is a contiguous row of B
      for (int c = 0; c < NR; ++c) {
        float* d = dst + c;
        if (c < nr) {
          const float* src = g.B + size_t(j0 + jr + c) * g.ldb + p0;
          for (int k = 0; k < kc; ++k) d[size_t(k) * NR] = src[k];
        } else {
          for (int k = 0; k < kc; ++k) d[size_t(k) * NR] = 0.0f;
        }
      }
      dst += size_t(kc) * NR;
    }
  }
}

// Serial blocked GEMM over the C region [m0,m1) x [n0,n1) (m0, n0 multiples of MR, NR).
template <int MR, int NR>
void gemm_region(const Variant& v, const GemmArgs& g, int m0, int m1, int n0, int n1) {
  PackBuffers& buf = pack_buffers();
  for (int jc = n0; jc < n1; jc += v.NC) {
    const int nc = std::min(v.NC, n1 - jc);
    for (int pc = 0; pc < g.K; pc += v.KC) {
      const int kc = std::min(v.KC, g.K - pc);
      const float beta = pc == 0 ? g.beta : 1.0f;  // later K blocks add onto the partial sums
      pack_b<NR>(buf.b, g, pc, kc, jc, nc);
      for (int ic = m0; ic < m1; ic += v.MC) {
        const int mc = std::min(v.MC, m1 - ic);
        pack_a<MR>(buf.a, g, ic, mc, pc, kc);
        for (int jr = 0; jr < nc; jr += NR) {
          const int nr = std::min(NR, nc - jr);
          const float* bp = buf.b + size_t(jr) * kc;
          for (int ir = 0; ir < mc; ir += MR) {
            const int mr = std::min(MR, mc - ir);
            v.ukr(kc, buf.a + size_t(ir) * kc, bp, g.C + size_t(ic + ir) * g.ldc + (jc + jr), g.ldc, g.alpha, beta, mr,
                  nr);
          }
        }
      }
    }
  }
}

using RegionFn = void (*)(const Variant&, const GemmArgs&, int, int, int, int);

template <int MR, int NR>
RegionFn region_fn() {
  return &gemm_region<MR, NR>;
}

// Below this many multiply-adds a GEMM stays on one thread: a parallel region costs a few us.
constexpr double kMinParallelMacs = 1 << 19;

void run_gemm(const Variant& v, RegionFn region, const GemmArgs& g) {
  const int mtiles = (g.M + v.MR - 1) / v.MR, ntiles = (g.N + v.NR - 1) / v.NR;
  const double macs = double(g.M) * g.N * g.K;
  const int T = num_threads();
  // Split C into a x b regions of whole micro-tiles, one per thread; pick the split with the
  // smallest per-thread cost: its multiply-adds (~32/cycle) plus packing its A rows and B columns
  // (~2 floats/cycle). Threading never changes the values (see top of file).
  int best_a = 1, best_b = 1;
  if (T > 1 && macs >= kMinParallelMacs) {
    double best = 1e300;
    for (int a = 1; a <= std::min(T, mtiles); ++a) {
      for (int b = 1; a * b <= T && b <= ntiles; ++b) {
        const double rows = double((mtiles + a - 1) / a) * v.MR;
        const double cols = double((ntiles + b - 1) / b) * v.NR;
        const double cost = rows * cols * g.K / 32.0 + (rows + cols) * g.K / 2.0;
        if (cost < best * 0.999) {
          best = cost;
          best_a = a;
          best_b = b;
        }
      }
    }
  }
  const int na = best_a, nb = best_b;
  // grain = all tasks when there is only one, so parallel_for keeps tiny GEMMs on this thread.
  parallel_for(int64_t(na) * nb, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int ti = int(t / nb), tj = int(t % nb);
      const int m0 = int(int64_t(mtiles) * ti / na) * v.MR;
      const int m1 = std::min(g.M, int(int64_t(mtiles) * (ti + 1) / na) * v.MR);
      const int n0 = int(int64_t(ntiles) * tj / nb) * v.NR;
      const int n1 = std::min(g.N, int(int64_t(ntiles) * (tj + 1) / nb) * v.NR);
      if (m0 < m1 && n0 < n1) region(v, g, m0, m1, n0, n1);
    }
  });
}

GemmKernel best_supported() {
  if (gemm_kernel_supported(GemmKernel::Avx512)) return GemmKernel::Avx512;
  if (gemm_kernel_supported(GemmKernel::Avx2)) return GemmKernel::Avx2;
  return GemmKernel::Portable;
}

}  // namespace

bool gemm_kernel_supported(GemmKernel k) {
#if DFL_X86
  const CpuFeatures& f = cpu_features();
  switch (k) {
    case GemmKernel::Avx512:
      return f.avx512f && f.fma;
    case GemmKernel::Avx2:
      return f.avx2 && f.fma;
    case GemmKernel::Portable:
      return true;
  }
  return false;
#else
  return k == GemmKernel::Portable;
#endif
}

const char* gemm_kernel_label(GemmKernel k) {
  switch (k) {
    case GemmKernel::Avx512:
      return "avx512";
    case GemmKernel::Avx2:
      return "avx2";
    case GemmKernel::Portable:
      return "portable";
  }
  return "portable";
}

GemmKernel active_gemm_kernel() {
  static const GemmKernel k = [] {
    GemmKernel best = best_supported();
    const char* env = std::getenv("DFL_GEMM");
    if (env != nullptr) {
      const std::string e(env);
      GemmKernel want = best;
      if (e == "portable")
        want = GemmKernel::Portable;
      else if (e == "avx2")
        want = GemmKernel::Avx2;
      else if (e == "avx512")
        want = GemmKernel::Avx512;
      // Only ever lower the choice; an unknown or unsupported request keeps the best allowed.
      if (int(want) < int(best) && gemm_kernel_supported(want)) best = want;
    }
    return best;
  }();
  return k;
}

void sgemm_with(GemmKernel k, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc) {
  DFL_CHECK(gemm_kernel_supported(k), "sgemm: kernel ", gemm_kernel_label(k), " is not supported on this CPU");
  DFL_CHECK(M >= 0 && N >= 0 && K >= 0, "sgemm: negative size M=", M, " N=", N, " K=", K);
  if (M == 0 || N == 0) return;
  DFL_CHECK(ldc >= N, "sgemm: ldc ", ldc, " < N ", N);
  if (K == 0 || alpha == 0.0f) {  // C = beta * C; beta == 0 must not read C (may be NaN)
    for (int i = 0; i < M; ++i) {
      float* row = C + size_t(i) * ldc;
      if (beta == 0.0f)
        std::fill(row, row + N, 0.0f);
      else if (beta != 1.0f)
        for (int j = 0; j < N; ++j) row[j] *= beta;
    }
    return;
  }
  DFL_CHECK(lda >= (trans_a ? M : K), "sgemm: lda ", lda, " too small");
  DFL_CHECK(ldb >= (trans_b ? K : N), "sgemm: ldb ", ldb, " too small");
  const GemmArgs g{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  const Variant& v = variant_of(k);
#if DFL_X86
  if (k == GemmKernel::Avx512) return run_gemm(v, region_fn<kAvx512MR, kAvx512NR>(), g);
  if (k == GemmKernel::Avx2) return run_gemm(v, region_fn<kAvx2MR, kAvx2NR>(), g);
#endif
  run_gemm(v, region_fn<kPortMR, kPortNR>(), g);
}

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc) {
  sgemm_with(active_gemm_kernel(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace dfl::cpu

namespace dfl {
std::string gemm_kernel_name() { return cpu::gemm_kernel_label(cpu::active_gemm_kernel()); }
}  // namespace dfl
