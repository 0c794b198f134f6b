// Every CPU convolution algorithm against the reference (the plain double loops of
// reference.cpp): forward with and without bias, and each backward output accumulated onto
// random values (the += contract), on shapes that reach every block size and tail of the fast
// paths; the reference itself against finite differences; thread-count invariance of each
// algorithm; and the automatic choice.
#include <cmath>
#include <cstring>
#include <array>
#include <functional>
#include <limits>
#include <sstream>
#include <vector>

#include <unistd.h>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"
#include "harness.h"

namespace {

using dfl::Conv2dShape;
using dfl::Rng;
using dfl::cpu::ConvAlgo;
using Vec = std::vector<float>;

size_t in_size(const Conv2dShape& s) { return size_t(s.B) * s.C * s.H * s.W; }
size_t out_size(const Conv2dShape& s) { return size_t(s.B) * s.OC * s.OH() * s.OW(); }
size_t w_size(const Conv2dShape& s) { return size_t(s.OC) * (s.C / s.groups) * s.KH * s.KW; }

std::string describe(const Conv2dShape& s) {
  std::ostringstream os;
  os << "B" << s.B << " C" << s.C << " " << s.H << "x" << s.W << " OC" << s.OC << " k" << s.KH << "x" << s.KW << " s"
     << s.stride_h << " p" << s.pad_h << " g" << s.groups;
  return os.str();
}

// 3x3 / stride 1 / pad 1 shapes: row lengths 8..64 (every register block and chunk tail), output
// channel counts that leave every block tail (1..7 past a multiple of 3, 5, 7), single rows, odd
// batches, single input channels.
std::vector<Conv2dShape> direct_shapes() {
  std::vector<Conv2dShape> v;
  auto add = [&](int B, int C, int H, int W, int OC) { v.push_back({B, C, H, W, OC, 3, 3, 1, 1, 1, 1, 1}); };
  add(2, 3, 5, 8, 7);
  add(2, 3, 4, 8, 10);  // a last block of 3 (of 7) and, below, of 4 (of 5): the 4-channel tail kernels
  add(1, 2, 3, 16, 9);
  add(3, 4, 4, 8, 8);
  add(1, 5, 3, 16, 5);
  add(2, 3, 6, 16, 11);
  add(3, 2, 2, 24, 6);
  add(2, 6, 3, 32, 4);
  add(1, 3, 7, 32, 16);
  add(2, 1, 1, 40, 2);
  add(2, 4, 4, 48, 3);
  add(1, 2, 3, 64, 10);
  add(5, 16, 8, 8, 1);
  add(2, 3, 32, 32, 16);  // a CIFAR stem (the 32x32 path)
  // Winograd (channels multiples of 8): maps of whole 4x4 tiles and of partial ones (1x1, 2x2, 5x7,
  // 6x10), tile rows of 1..8 tiles, blocks of tile rows spanning several samples (3x3 maps: one tile
  // each) and splitting a sample (40x40: 100 tiles), and several weight-gradient blocks (3 x 64x64:
  // 768 tiles, blocks of 512).
  add(3, 8, 4, 4, 8);
  add(2, 16, 32, 32, 8);
  add(3, 8, 5, 7, 16);
  add(2, 24, 6, 10, 8);
  add(4, 8, 1, 1, 8);
  add(3, 16, 2, 2, 24);
  add(40, 8, 3, 3, 16);
  add(2, 8, 40, 40, 8);
  add(2, 64, 8, 8, 32);
  add(3, 8, 64, 64, 8);
  // Stride 2 with output rows of 8, 16, 24 and 32 (split rows; odd input widths and heights too).
  auto add2 = [&](int B, int C, int H, int W, int OC) { v.push_back({B, C, H, W, OC, 3, 3, 2, 2, 1, 1, 1}); };
  add2(2, 3, 16, 16, 5);
  add2(1, 4, 15, 31, 7);
  add2(2, 5, 32, 32, 9);
  add2(1, 3, 8, 64, 4);
  add2(1, 7, 48, 48, 6);  // rows of 24: the input gradient's one-vector chunks, a partial channel block
  // What only the general and output-channel algorithms take: small maps, strides, other kernels
  // and paddings, 1x1 convolutions, channel counts around multiples of 8, pixel counts off 8.
  auto conv = [&](int B, int C, int H, int W, int OC, int K, int st, int pad) {
    v.push_back({B, C, H, W, OC, K, K, st, st, pad, pad, 1});
  };
  conv(3, 5, 4, 4, 9, 3, 1, 1);
  conv(2, 7, 2, 2, 16, 3, 1, 1);
  conv(2, 4, 1, 1, 17, 3, 1, 1);
  conv(2, 3, 9, 7, 8, 3, 2, 1);
  conv(2, 6, 8, 8, 12, 1, 2, 0);
  // Strided 1x1 (the dense copy goes to the pointwise kernels at 8k pixels, else to a GEMM).
  conv(2, 5, 9, 7, 6, 1, 2, 0);
  conv(2, 64, 8, 8, 64, 1, 2, 0);
  conv(3, 4, 16, 16, 9, 1, 2, 0);
  v.push_back({2, 3, 7, 12, 5, 1, 1, 2, 3, 0, 0, 1});
  conv(3, 5, 6, 5, 7, 1, 1, 0);
  conv(2, 3, 7, 9, 5, 5, 1, 2);
  conv(2, 4, 6, 6, 3, 3, 1, 0);
  conv(2, 3, 5, 5, 10, 2, 2, 1);
  v.push_back({2, 3, 6, 7, 4, 3, 1, 2, 1, 0, 0, 1});  // 3x1 rect, stride (2,1)
  // Valid-taps classes: a 2x2 kernel with padding 2 (corner pixels see no tap: bias only), a 3x1
  // kernel padded in one dimension, and a map whose interior class spans more than one sample's
  // GEMM chunk (1,024 columns), so chunks of samples accumulate the weight gradient.
  v.push_back({2, 3, 3, 3, 4, 2, 2, 1, 1, 2, 2, 1});
  v.push_back({2, 3, 5, 4, 6, 3, 1, 1, 1, 1, 0, 1});
  conv(3, 2, 34, 34, 3, 3, 1, 1);
  // Depthwise 3x3, pad 1, stride 1 and 2: rows of 8k (full chunks), the masked tails of short and
  // odd rows (1..7, 9, 13, 17), single rows and columns, odd heights, and the CIFAR sizes.
  for (const auto& [B, C, H, W] : {std::array<int, 4>{2, 5, 4, 8},
                                   {3, 3, 2, 16},
                                   {1, 7, 5, 24},
                                   {2, 4, 32, 32},
                                   {2, 3, 4, 4},
                                   {3, 5, 2, 2},
                                   {2, 2, 1, 1},
                                   {2, 3, 3, 7},
                                   {1, 4, 5, 9},
                                   {2, 2, 1, 13},
                                   {2, 3, 6, 1},
                                   {1, 6, 8, 17}})
    for (int st : {1, 2}) v.push_back({B, C, H, W, C, 3, 3, st, st, 1, 1, C});
  v.push_back({2, 3, 16, 16, 3, 3, 3, 2, 2, 1, 1, 3});
  v.push_back({2, 2, 7, 33, 2, 3, 3, 2, 2, 1, 1, 2});
  // Pointwise: planes of 8, 16, 32*32; output and input channel tails around 3 and 4.
  conv(2, 5, 2, 4, 7, 1, 1, 0);
  conv(3, 4, 4, 4, 6, 1, 1, 0);
  conv(2, 29, 4, 6, 10, 1, 1, 0);
  conv(2, 6, 32, 32, 11, 1, 1, 0);
  return v;
}

struct Data {
  Conv2dShape s;
  Vec x, w, bias, dout, dinp0, dw0, db0;
  Data(const Conv2dShape& sh, Rng& rng) : s(sh) {
    x = dfl::test::randn(in_size(s), rng);
    w = dfl::test::randn(w_size(s), rng, 0.5f);
    bias = dfl::test::randn(s.OC, rng);
    dout = dfl::test::randn(out_size(s), rng);
    dinp0 = dfl::test::randn(in_size(s), rng);  // backward adds onto these
    dw0 = dfl::test::randn(w_size(s), rng);
    db0 = dfl::test::randn(s.OC, rng);
  }
};

struct Results {
  Vec out, out_nobias, dinp, dw, db;
};

// Runs algorithm a with a NaN-filled workspace (no algorithm may read stale scratch).
Results run(ConvAlgo a, const Data& d) {
  Vec ws(dfl::cpu::conv2d_workspace_floats_with(a, d.s) + 1, std::numeric_limits<float>::quiet_NaN());
  Results r;
  r.out.assign(out_size(d.s), std::numeric_limits<float>::quiet_NaN());
  r.out_nobias = r.out;
  dfl::cpu::conv2d_forward_with(a, r.out.data(), d.x.data(), d.w.data(), d.bias.data(), d.s, ws.data());
  dfl::cpu::conv2d_forward_with(a, r.out_nobias.data(), d.x.data(), d.w.data(), nullptr, d.s, ws.data());
  r.dinp = d.dinp0;
  r.dw = d.dw0;
  r.db = d.db0;
  dfl::cpu::conv2d_backward_with(a, r.dinp.data(), r.dw.data(), r.db.data(), d.dout.data(), d.x.data(), d.w.data(), d.s,
                                 ws.data());
  return r;
}

double rms(const Vec& v) {
  double ss = 0;
  for (float x : v) ss += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(ss / double(v.size()));
}
// The absolute tolerance of algorithm a's forward and gradients (see the test below).
double atol(ConvAlgo a, const Vec& want) { return 2e-4 + (a == ConvAlgo::Winograd ? 1e-4 * rms(want) : 0.0); }

std::vector<float> concat(const Results& r) {
  Vec all;
  for (const Vec* v : {&r.out, &r.out_nobias, &r.dinp, &r.dw, &r.db}) all.insert(all.end(), v->begin(), v->end());
  return all;
}

}  // namespace

// Tolerance: float sums of up to C*9 (forward, input gradient) or B*H*W (weight gradient) products
// against double references: |diff| <= 2e-4 + 2e-4 |want|. Winograd's transforms scale the summands
// before the GEMM and back after, so its rounding follows the size of the sums, not of each result:
// it adds 1e-4 * rms(want) (measured ~4e-5 * rms at 256 channels; its weight gradient sums over
// B*H*W too). A wrong index or a lost tail gives O(rms).
DFL_CPU_TEST(conv_algorithms_match_the_reference_forward_and_backward) {
  Rng rng(77);
  double worst = 0, winograd_worst = 0;  // the latter relative to the RMS of the reference
  auto relative = [](const Vec& got, const Vec& want) {
    double m = 0;
    for (size_t i = 0; i < got.size(); ++i) m = std::max(m, std::fabs(double(got[i]) - want[i]));
    return m / std::max(rms(want), 1e-30);
  };
  for (const Conv2dShape& s : direct_shapes()) {
    const Data d(s, rng);
    const Results want = run(ConvAlgo::Reference, d);
    for (ConvAlgo a : dfl::cpu::kFastConvAlgos) {
      DFL_EXPECT(dfl::cpu::conv2d_algo_applies(a, s) || a != ConvAlgo::General, describe(s));
      if (!dfl::cpu::conv2d_algo_applies(a, s)) continue;  // the direct algorithms need AVX2+FMA
      const Results got = run(a, d);
      const std::string what = std::string(dfl::cpu::conv_algo_label(a)) + " " + describe(s);
      worst = std::max(worst, DFL_EXPECT_CLOSE(got.out.data(), want.out.data(), got.out.size(), atol(a, want.out), 2e-4,
                                               what + " forward"));
      worst = std::max(worst, DFL_EXPECT_CLOSE(got.out_nobias.data(), want.out_nobias.data(), got.out.size(),
                                               atol(a, want.out_nobias), 2e-4, what + " forward without bias"));
      worst = std::max(worst, DFL_EXPECT_CLOSE(got.dinp.data(), want.dinp.data(), got.dinp.size(), atol(a, want.dinp),
                                               2e-4, what + " dinp"));
      worst = std::max(worst, DFL_EXPECT_CLOSE(got.dw.data(), want.dw.data(), got.dw.size(), atol(a, want.dw), 2e-4,
                                               what + " dweight"));
      worst =
          std::max(worst, DFL_EXPECT_CLOSE(got.db.data(), want.db.data(), got.db.size(), 2e-4, 2e-4, what + " dbias"));
      if (a == ConvAlgo::Winograd)
        winograd_worst = std::max(
            {winograd_worst, relative(got.out, want.out), relative(got.dinp, want.dinp), relative(got.dw, want.dw)});
    }
  }
  std::printf("     (max |algorithm - reference|: %.3g; Winograd's max |diff| / rms(reference): %.3g)\n", worst,
              winograd_worst);
}

// Inference plans fuse a ReLU/ReLU6 into the convolution: the vector kernels apply it as they store,
// the others in a pass after. Either way the result is the activation of the plain output, bit for
// bit (also where the input holds a NaN: it stays NaN).
DFL_CPU_TEST(conv_fused_activation_is_the_activation_of_the_output) {
  Rng rng(81);
  for (const Conv2dShape& s : direct_shapes()) {
    Data d(s, rng);
    if (s.C * s.H * s.W > 40) d.x[size_t(s.C) * s.H * s.W / 2 + 3] = std::numeric_limits<float>::quiet_NaN();
    for (ConvAlgo a : dfl::cpu::kFastConvAlgos) {
      if (!dfl::cpu::conv2d_algo_applies(a, s)) continue;
      Vec ws(dfl::cpu::conv2d_workspace_floats_with(a, s) + 1), plain(out_size(s)), fused(out_size(s)),
          want(out_size(s));
      dfl::cpu::conv2d_forward_with(a, plain.data(), d.x.data(), d.w.data(), d.bias.data(), s, ws.data());
      for (dfl::Activation act : {dfl::Activation::Relu, dfl::Activation::Relu6}) {
        if (act == dfl::Activation::Relu)
          dfl::cpu::relu_forward(want.data(), plain.data(), want.size());
        else
          dfl::cpu::relu6_forward(want.data(), plain.data(), want.size());
        dfl::cpu::conv2d_forward_with(a, fused.data(), d.x.data(), d.w.data(), d.bias.data(), s, ws.data(), act);
        DFL_EXPECT(std::memcmp(fused.data(), want.data(), sizeof(float) * want.size()) == 0,
                   std::string(dfl::cpu::conv_algo_label(a)) + " " + describe(s) +
                       (act == dfl::Activation::Relu ? " relu" : " relu6"));
      }
    }
  }
}

// The executor lets the first writer of an input-gradient slot overwrite it (no zeroing pass):
// every algorithm, and the public entry, with overwrite_dinp writes into a NaN-filled dinp exactly
// what it adds onto zeros (values equal: 0 + -0 is +0), and leaves the other gradients' += alone.
DFL_CPU_TEST(conv_backward_overwrite_is_the_gradient_added_to_zeros) {
  Rng rng(82);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto same_values = [](const Vec& got, const Vec& want) {
    for (size_t i = 0; i < got.size(); ++i)
      if (!(got[i] == want[i])) return false;
    return true;
  };
  for (const Conv2dShape& s : direct_shapes()) {
    const Data d(s, rng);
    std::vector<std::pair<std::string, std::function<void(float*, float*, bool)>>> paths;
    for (ConvAlgo a : dfl::cpu::kFastConvAlgos) {
      if (!dfl::cpu::conv2d_algo_applies(a, s)) continue;
      paths.push_back({dfl::cpu::conv_algo_label(a), [&, a](float* dx, float* dw, bool overwrite) {
                         Vec ws(dfl::cpu::conv2d_workspace_floats_with(a, s) + 1, nan);
                         dfl::cpu::conv2d_backward_with(a, dx, dw, nullptr, d.dout.data(), d.x.data(), d.w.data(), s,
                                                        ws.data(), overwrite);
                       }});
    }
    paths.push_back({"conv2d_backward", [&](float* dx, float* dw, bool overwrite) {
                       Vec ws(dfl::cpu::conv2d_workspace_floats(s) + 1, nan);
                       dfl::cpu::conv2d_backward(dx, dw, nullptr, d.dout.data(), d.x.data(), d.w.data(), s, ws.data(),
                                                 overwrite);
                     }});
    for (const auto& [label, backward] : paths) {
      Vec want(in_size(s), 0.f), want_dw = d.dw0, got(in_size(s), nan), got_dw = d.dw0;
      backward(want.data(), want_dw.data(), false);
      backward(got.data(), got_dw.data(), true);
      DFL_EXPECT(same_values(got, want), label + " " + describe(s) + ": overwritten dinp");
      DFL_EXPECT(same_values(got_dw, want_dw), label + " " + describe(s) + ": dweight still +=");
      Vec only(in_size(s), nan);  // the input gradient alone
      backward(only.data(), nullptr, true);
      DFL_EXPECT(same_values(only, want), label + " " + describe(s) + ": overwritten dinp without dweight");
    }
  }
}

// The specification itself: the reference backward against central differences of its forward.
DFL_CPU_TEST(conv_reference_backward_matches_finite_differences) {
  Rng rng(78);
  for (const Conv2dShape& s :
       {Conv2dShape{2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{2, 4, 7, 7, 6, 3, 3, 2, 2, 1, 1, 2},
        Conv2dShape{1, 3, 6, 5, 3, 3, 1, 2, 1, 0, 0, 3}}) {
    Vec x = dfl::test::randn(in_size(s), rng), w = dfl::test::randn(w_size(s), rng),
        r = dfl::test::randn(out_size(s), rng);
    auto loss = [&] {
      Vec out(out_size(s));
      dfl::cpu::conv2d_reference_forward(out.data(), x.data(), w.data(), nullptr, s);
      return dfl::test::dot(out.data(), r.data(), out.size());
    };
    Vec dx(x.size(), 0.f), dw(w.size(), 0.f);
    dfl::cpu::conv2d_reference_backward(dx.data(), dw.data(), nullptr, r.data(), x.data(), w.data(), s);
    DFL_GRADCHECK("reference dinp " + describe(s), x, dx, loss, 1e-2, 2e-3, 1e-2);
    DFL_GRADCHECK("reference dweight " + describe(s), w, dw, loss, 1e-2, 2e-3, 1e-2);
  }
}

// The row kernels' AVX-512 and AVX2 forms compute each output element with the same sums in the
// same order, so they must agree to the bit: a digest (FNV-1a over the bytes) of every output that
// only the row kernels compute (direct 3x3 forward, with and without a fused ReLU6, its stride-1 and
// stride-2 input gradient and weight gradient; pointwise forward and both gradients), on the test
// shapes, here and in a copy of this binary run with DFL_SIMD=avx2.
std::string dfl::test::conv_rows_digest() {
  Rng rng(91);
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const Vec& v) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(v.data());
    for (size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  int outputs = 0;
  for (const Conv2dShape& s : direct_shapes()) {
    const Data d(s, rng);
    for (ConvAlgo a : {ConvAlgo::Direct3x3, ConvAlgo::Pointwise}) {
      if (!dfl::cpu::conv2d_algo_applies(a, s)) continue;
      const Results r = run(a, d);
      Vec act(out_size(s));
      Vec ws(dfl::cpu::conv2d_workspace_floats_with(a, s) + 1);
      dfl::cpu::conv2d_forward_with(a, act.data(), d.x.data(), d.w.data(), d.bias.data(), s, ws.data(),
                                    dfl::Activation::Relu6);
      mix(r.out), mix(r.out_nobias), mix(act), mix(r.dw);
      outputs += 4;
      // stride 2 on odd sizes: the input gradient is the general path's GEMM, whose AVX-512 and
      // AVX2 micro-kernels round differently
      if (a == ConvAlgo::Pointwise || dfl::cpu::direct3x3_data_gradient_applies(s)) mix(r.dinp), ++outputs;
    }
  }
  std::ostringstream os;
  os << std::hex << h << " over " << std::dec << outputs << " outputs";
  return os.str();
}

DFL_CPU_TEST(conv_row_kernels_avx512_and_avx2_forms_agree_bitwise) {
  if (!dfl::cpu::conv_rows_use_avx512()) {
    std::printf("     (the row kernels run their AVX2 form here: no AVX-512, or DFL_SIMD caps it)\n");
    return;
  }
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  DFL_EXPECT(len > 0, "readlink /proc/self/exe");
  exe[len] = 0;
  const std::string command = std::string("DFL_SIMD=avx2 '") + exe + "' --conv-rows-digest";
  FILE* child = popen(command.c_str(), "r");
  DFL_EXPECT(child != nullptr, "popen " + command);
  std::string theirs;
  char buf[256];
  while (fgets(buf, sizeof(buf), child)) theirs += buf;
  DFL_EXPECT(pclose(child) == 0, command + " failed: " + theirs);
  while (!theirs.empty() && theirs.back() == '\n') theirs.pop_back();
  const std::string ours = dfl::test::conv_rows_digest();
  DFL_EXPECT(ours == theirs, "AVX-512 rows " + ours + " vs AVX2 rows " + theirs);
  std::printf("     (digest %s in both forms)\n", ours.c_str());
}

DFL_CPU_TEST(conv_algorithms_are_bitwise_identical_for_1_2_3_threads) {
  Rng rng(79);
  for (const Conv2dShape& s :
       {Conv2dShape{5, 3, 8, 32, 7, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{4, 6, 4, 16, 11, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{5, 6, 5, 5, 13, 3, 3, 2, 2, 1, 1, 1}, Conv2dShape{5, 6, 4, 16, 6, 3, 3, 1, 1, 1, 1, 6},
        Conv2dShape{5, 7, 9, 18, 7, 3, 3, 2, 2, 1, 1, 7}, Conv2dShape{6, 5, 4, 4, 5, 3, 3, 1, 1, 1, 1, 5},
        Conv2dShape{5, 7, 4, 8, 9, 1, 1, 1, 1, 0, 0, 1}, Conv2dShape{6, 9, 2, 2, 10, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{3, 2, 34, 34, 3, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{5, 7, 8, 16, 9, 1, 1, 2, 2, 0, 0, 1},
        Conv2dShape{5, 6, 10, 16, 11, 3, 3, 2, 2, 1, 1, 1}, Conv2dShape{40, 8, 3, 3, 16, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{3, 16, 12, 20, 8, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{3, 8, 64, 64, 8, 3, 3, 1, 1, 1, 1, 1}}) {
    const Data d(s, rng);
    for (ConvAlgo a : dfl::cpu::kFastConvAlgos) {
      if (!dfl::cpu::conv2d_algo_applies(a, s)) continue;
      DFL_EXPECT_THREAD_DETERMINISTIC(std::string(dfl::cpu::conv_algo_label(a)) + " " + describe(s),
                                      [&] { return concat(run(a, d)); });
    }
  }
}

// The public entry points as the backend calls them on small maps: 4x4 with 256 channels (Winograd
// on AVX2, else the general path) and 2x2 (valid taps).
DFL_CPU_TEST(conv_public_entry_matches_the_reference_on_small_maps) {
  Rng rng(80);
  for (const Conv2dShape& s :
       {Conv2dShape{2, 256, 4, 4, 256, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{3, 64, 2, 2, 40, 3, 3, 1, 1, 1, 1, 1}}) {
    const Data d(s, rng);
    const Results want = run(ConvAlgo::Reference, d);
    Vec ws(dfl::cpu::conv2d_workspace_floats(s) + 1, std::numeric_limits<float>::quiet_NaN());
    Vec out(out_size(s)), dinp = d.dinp0, dw = d.dw0, db = d.db0;
    dfl::cpu::conv2d_forward(out.data(), d.x.data(), d.w.data(), d.bias.data(), s, ws.data());
    dfl::cpu::conv2d_backward(dinp.data(), dw.data(), db.data(), d.dout.data(), d.x.data(), d.w.data(), s, ws.data());
    const ConvAlgo a = dfl::cpu::conv2d_choose_algo(s);
    DFL_EXPECT_CLOSE(out.data(), want.out.data(), out.size(), atol(a, want.out), 2e-4, describe(s) + " forward");
    DFL_EXPECT_CLOSE(dinp.data(), want.dinp.data(), dinp.size(), atol(a, want.dinp), 2e-4, describe(s) + " dinp");
    DFL_EXPECT_CLOSE(dw.data(), want.dw.data(), dw.size(), atol(a, want.dw), 2e-4, describe(s) + " dweight");
    DFL_EXPECT_CLOSE(db.data(), want.db.data(), db.size(), 2e-4, 2e-4, describe(s) + " dbias");
  }
}

DFL_CPU_TEST(conv_automatic_choice) {
  const Conv2dShape cifar{8, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1}, stem{8, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1},
      narrow{8, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1};
  const bool avx2 = dfl::cpu::conv2d_algo_applies(ConvAlgo::Direct3x3, cifar);
  // The direct kernels follow the reported SIMD level, which DFL_SIMD caps (core/cpu_features.h).
  DFL_EXPECT(avx2 == (dfl::simd_level() >= dfl::SimdLevel::Avx2), dfl::simd_paths_summary());
  // Stride-1 3x3 convolutions: Winograd with channels in multiples of 8 on maps of 4x4 and up, any
  // map size; the direct kernel for other channel counts (the 3-channel stem) and for 16 channels on
  // both sides (32 on rows of 16+ with the row kernels' AVX-512 form).
  const bool wide_rows = dfl::cpu::conv_rows_use_avx512();
  DFL_EXPECT(wide_rows == (dfl::simd_level() >= dfl::SimdLevel::Avx512), dfl::simd_paths_summary());
  for (const Conv2dShape& s :
       {Conv2dShape{8, 16, 4, 4, 32, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{8, 16, 30, 30, 32, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{8, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{8, 32, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{8, 256, 4, 4, 256, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{8, 512, 5, 7, 8, 3, 3, 1, 1, 1, 1, 1}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == (avx2 ? ConvAlgo::Winograd : ConvAlgo::General), describe(s));
  for (const Conv2dShape& s : {stem, narrow})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == (avx2 ? ConvAlgo::Direct3x3 : ConvAlgo::General), describe(s));
  const ConvAlgo at32 = wide_rows ? ConvAlgo::Direct3x3 : avx2 ? ConvAlgo::Winograd : ConvAlgo::General;
  for (const Conv2dShape& s : {cifar, Conv2dShape{8, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == at32, describe(s));
  // Not where its transformed weights would pass 64 MiB (1024 x 1024 channels: 144 MiB).
  const Conv2dShape wide{2, 1024, 8, 8, 1024, 3, 3, 1, 1, 1, 1, 1};
  DFL_EXPECT(dfl::cpu::conv2d_choose_algo(wide) == (avx2 ? ConvAlgo::Direct3x3 : ConvAlgo::General), describe(wide));
  // Stride-2 3x3 convolutions with fewer than 64 input channels (128 with the AVX-512 rows) take the direct kernel on output rows
  // of 8k, the output-channel algorithm on other rows of 8+; with 64+ channels or rows under 8 the
  // general one; strided 1x1 ones the dense copy (any width, any CPU); small maps and grouped
  // convolutions the general one.
  const Conv2dShape strided{8, 16, 32, 32, 32, 3, 3, 2, 2, 1, 1, 1}, strided12{8, 16, 24, 24, 32, 3, 3, 2, 2, 1, 1, 1};
  DFL_EXPECT(dfl::cpu::conv2d_choose_algo(strided) == (avx2 ? ConvAlgo::Direct3x3 : ConvAlgo::General),
             describe(strided));
  DFL_EXPECT(dfl::cpu::conv2d_choose_algo(strided12) == (avx2 ? ConvAlgo::DirectOC : ConvAlgo::General),
             describe(strided12));
  for (const Conv2dShape& s :
       {Conv2dShape{8, 128, 32, 32, 128, 3, 3, 2, 2, 1, 1, 1}, Conv2dShape{8, 64, 8, 8, 128, 3, 3, 2, 2, 1, 1, 1},
        Conv2dShape{8, 16, 8, 8, 32, 3, 3, 2, 2, 1, 1, 1}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == ConvAlgo::General, describe(s));
  // 64 input channels: the direct rows in their AVX-512 form, else the GEMMs.
  const Conv2dShape strided64{8, 64, 32, 32, 128, 3, 3, 2, 2, 1, 1, 1};
  DFL_EXPECT(dfl::cpu::conv2d_choose_algo(strided64) == (wide_rows ? ConvAlgo::Direct3x3 : ConvAlgo::General),
             describe(strided64));
  for (const Conv2dShape& s :
       {Conv2dShape{8, 16, 32, 32, 32, 1, 1, 2, 2, 0, 0, 1}, Conv2dShape{8, 256, 8, 8, 512, 1, 1, 2, 2, 0, 0, 1}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == ConvAlgo::StridedPointwise, describe(s));
  for (const Conv2dShape& s :
       {Conv2dShape{8, 12, 4, 4, 20, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{8, 12, 30, 30, 20, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{8, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1, 16}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == ConvAlgo::General, describe(s));
  // Padded small maps: valid-taps on 1x1 at any width and on 2x2 with 256+ channels on both sides;
  // fewer channels on 2x2 the general path (4x4: Winograd, above).
  for (const Conv2dShape& s :
       {Conv2dShape{8, 256, 2, 2, 512, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{8, 512, 2, 2, 512, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{8, 512, 1, 1, 512, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{8, 16, 1, 1, 32, 3, 3, 1, 1, 1, 1, 1}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == ConvAlgo::ValidTaps, describe(s));
  for (const Conv2dShape& s :
       {Conv2dShape{8, 16, 2, 2, 32, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{8, 128, 2, 2, 128, 3, 3, 1, 1, 1, 1, 1}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == ConvAlgo::General, describe(s));
  const Conv2dShape pw{8, 16, 32, 32, 32, 1, 1, 1, 1, 0, 0, 1};
  DFL_EXPECT(dfl::cpu::conv2d_choose_algo(pw) == (avx2 ? ConvAlgo::Pointwise : ConvAlgo::General),
             "1x1 with few channels");
  // 1x1 with up to 160 x 1024 weights too (ShuffleNetV2 x1's 116 and 232 channels); the GEMMs beyond.
  for (const Conv2dShape& s :
       {Conv2dShape{8, 116, 8, 8, 116, 1, 1, 1, 1, 0, 0, 1}, Conv2dShape{8, 160, 4, 4, 960, 1, 1, 1, 1, 0, 0, 1},
        Conv2dShape{8, 64, 8, 8, 128, 1, 1, 1, 1, 0, 0, 1}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == (avx2 ? ConvAlgo::Pointwise : ConvAlgo::General), describe(s));
  const Conv2dShape wide_pw{8, 464, 4, 4, 1024, 1, 1, 1, 1, 0, 0, 1};
  DFL_EXPECT(dfl::cpu::conv2d_choose_algo(wide_pw) == ConvAlgo::General, describe(wide_pw));
  const Conv2dShape dw{8, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 16};
  DFL_EXPECT(dfl::cpu::conv2d_choose_algo(dw) == (avx2 ? ConvAlgo::Depthwise3x3 : ConvAlgo::General), "depthwise 3x3");
  // Strided and small-map depthwise 3x3 too (MobileNetV2's and ShuffleNetV2's downsampling, 4x4 stages).
  for (const Conv2dShape& s :
       {Conv2dShape{8, 16, 32, 32, 16, 3, 3, 2, 2, 1, 1, 16}, Conv2dShape{8, 16, 4, 4, 16, 3, 3, 1, 1, 1, 1, 16}})
    DFL_EXPECT(dfl::cpu::conv2d_choose_algo(s) == (avx2 ? ConvAlgo::Depthwise3x3 : ConvAlgo::General), describe(s));
}
