// conv2d and linear: forward against naive double references, finite-difference gradients
// (including the += accumulate contract), workspace bounds and thread determinism.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "backend_ops.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"
#include "harness.h"

namespace {

using dfl::Conv2dShape;
using dfl::Rng;

struct ConvCase {
  Conv2dShape s;
  bool bias;
  const char* name;
};

// B C H W OC KH KW sh sw ph pw groups
const ConvCase kConvCases[] = {
    {{1, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1}, true, "3x3 pad1 B=1 odd HW"},
    {{2, 4, 9, 7, 6, 3, 3, 2, 2, 1, 1, 1}, false, "3x3 stride2 pad1"},
    {{2, 3, 8, 8, 5, 5, 5, 1, 1, 2, 2, 1}, true, "5x5 pad2"},
    {{2, 3, 9, 9, 4, 3, 3, 2, 2, 0, 0, 1}, true, "3x3 stride2 pad0"},
    {{2, 6, 7, 7, 8, 1, 1, 1, 1, 0, 0, 1}, true, "1x1 pointwise (no im2col)"},
    {{3, 4, 7, 6, 6, 1, 1, 2, 2, 0, 0, 1}, false, "1x1 stride2"},
    {{2, 4, 5, 5, 6, 1, 1, 1, 1, 1, 1, 2}, true, "1x1 pad1 groups2"},
    {{2, 4, 7, 8, 6, 1, 3, 1, 1, 0, 1, 2}, true, "1x3 rect groups2"},
    {{2, 4, 9, 9, 4, 3, 3, 2, 1, 1, 0, 2}, false, "3x3 stride(2,1) pad(1,0) groups2"},
    {{2, 3, 5, 5, 4, 3, 2, 1, 2, 0, 2, 1}, true, "3x2 rect stride(1,2) pad(0,2)"},
    {{2, 5, 9, 7, 5, 3, 3, 1, 1, 1, 1, 5}, true, "depthwise 3x3"},
    {{2, 6, 8, 8, 6, 3, 3, 2, 2, 1, 1, 6}, false, "depthwise 3x3 stride2"},
    {{1, 4, 7, 7, 4, 5, 5, 1, 1, 2, 2, 4}, true, "depthwise 5x5 B=1"},
    {{2, 3, 6, 5, 3, 3, 1, 2, 1, 0, 0, 3}, true, "depthwise 3x1 rect pad0"},
    {{2, 3, 5, 6, 6, 3, 3, 1, 1, 1, 1, 3}, true, "depthwise multiplier 2 (general path)"},
    {{2, 2, 4, 4, 3, 4, 4, 1, 1, 0, 0, 1}, true, "kernel = whole image"},
    {{1, 16, 10, 10, 32, 3, 3, 1, 1, 1, 1, 1}, true, "16->32 3x3"},
    {{2, 4, 16, 15, 6, 3, 3, 2, 2, 1, 1, 1}, true, "3x3 stride2 on 16x15 (direct, split rows)"},
    {{2, 5, 2, 2, 7, 3, 3, 1, 1, 1, 1, 1}, true, "3x3 pad1 on 2x2 (valid taps)"},
};

size_t in_size(const Conv2dShape& s) { return size_t(s.B) * s.C * s.H * s.W; }
size_t out_size(const Conv2dShape& s) { return size_t(s.B) * s.OC * s.OH() * s.OW(); }
size_t w_size(const Conv2dShape& s) { return size_t(s.OC) * (s.C / s.groups) * s.KH * s.KW; }

// Direct convolution in double, the definition.
std::vector<float> ref_conv(const std::vector<float>& inp, const std::vector<float>& w, const float* bias,
                            const Conv2dShape& s) {
  const int OH = s.OH(), OW = s.OW(), Cg = s.C / s.groups, OCg = s.OC / s.groups;
  std::vector<float> out(out_size(s));
  for (int b = 0; b < s.B; ++b)
    for (int oc = 0; oc < s.OC; ++oc) {
      const int g = oc / OCg;
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          double acc = bias ? bias[oc] : 0.0;
          for (int c = 0; c < Cg; ++c)
            for (int kh = 0; kh < s.KH; ++kh)
              for (int kw = 0; kw < s.KW; ++kw) {
                const int ih = oh * s.stride_h - s.pad_h + kh, iw = ow * s.stride_w - s.pad_w + kw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                acc += double(inp[((size_t(b) * s.C + g * Cg + c) * s.H + ih) * s.W + iw]) *
                       w[((size_t(oc) * Cg + c) * s.KH + kh) * s.KW + kw];
              }
          out[((size_t(b) * s.OC + oc) * OH + oh) * OW + ow] = float(acc);
        }
    }
  return out;
}

struct ConvData {
  Conv2dShape s;
  std::vector<float> inp, w, bias, ws, r;
  ConvData(const Conv2dShape& sh, bool has_bias, Rng& rng) : s(sh) {
    inp = dfl::test::randn(in_size(s), rng);
    w = dfl::test::randn(w_size(s), rng);
    if (has_bias) bias = dfl::test::randn(s.OC, rng);
    ws.assign(dfl::cpu::conv2d_workspace_floats(s), 0.0f);  // exactly what the kernel asks for
    r = dfl::test::randn(out_size(s), rng);
  }
  const float* b() const { return bias.empty() ? nullptr : bias.data(); }
  std::vector<float> forward() {
    std::vector<float> out(out_size(s), std::numeric_limits<float>::quiet_NaN());  // overwritten
    dfl::test::ops::conv2d_forward(out.data(), inp.data(), w.data(), b(), s, ws.empty() ? nullptr : ws.data());
    return out;
  }
  // dot(conv(inp, w) + b, r) by the double-precision definition: the finite differences check the
  // backward against the function itself, not against a fast forward's rounding (Winograd's moves
  // with every input it transforms, ~1e-5 of the outputs' size).
  double loss() const {
    const auto out = ref_conv(inp, w, b(), s);
    return dfl::test::dot(out.data(), r.data(), out.size());
  }
  // Backward with dout = r into buffers pre-filled with `fill` (to exercise +=).
  void backward(std::vector<float>& dinp, std::vector<float>& dw, std::vector<float>& db, float fill) {
    dinp.assign(inp.size(), fill);
    dw.assign(w.size(), fill);
    db.assign(bias.size(), fill);
    dfl::test::ops::conv2d_backward(dinp.data(), dw.data(), bias.empty() ? nullptr : db.data(), r.data(), inp.data(),
                                    w.data(), s, ws.empty() ? nullptr : ws.data());
  }
};

std::string conv_name(const ConvCase& c) {
  std::ostringstream os;
  const Conv2dShape& s = c.s;
  os << c.name << " [B" << s.B << " C" << s.C << " " << s.H << "x" << s.W << " OC" << s.OC << " k" << s.KH << "x"
     << s.KW << " s" << s.stride_h << "," << s.stride_w << " p" << s.pad_h << "," << s.pad_w << " g" << s.groups
     << (c.bias ? " bias]" : "]");
  return os.str();
}

// memcmp of two float vectors (empty ones compare equal; memcmp must not get null pointers).
bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

std::vector<float> minus(const std::vector<float>& a, float c) {
  std::vector<float> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = float(double(a[i]) - c);
  return r;
}

}  // namespace

// Tolerance: the sums have <= 400 terms of N(0,1) products, float accumulation error ~1e-5; a
// wrong index gives O(1) errors. atol 1e-4 + rtol 1e-4 (measured max printed).
DFL_TEST(conv2d_forward_vs_direct_reference_all_shapes) {
  Rng rng(21);
  double worst = 0.0;
  for (const ConvCase& c : kConvCases) {
    ConvData d(c.s, c.bias, rng);
    const auto got = d.forward();
    const auto want = ref_conv(d.inp, d.w, d.b(), c.s);
    worst = std::max(worst, DFL_EXPECT_CLOSE(got.data(), want.data(), got.size(), 1e-4, 1e-4, conv_name(c)));
  }
  std::printf("     (max |forward - ref|: %.3g)\n", worst);
}

// loss = dot(out, r), out by the double reference. Conv is linear in each of inp / weight / bias, so
// central differences are exact up to the float rounding of the outputs one element touches,
// re-rounded when it moves: noise ~ |out| * 1e-7 * sqrt(#touched) / 2h with h = 1e-2; atol 2e-3 +
// rtol 2e-3 (a missing/duplicated term is O(0.1..1)). Grads are pre-filled with 0.25 and the fill is
// subtracted before comparing, so a kernel that overwrites instead of += fails.
DFL_TEST(conv2d_backward_gradcheck_dinp_dweight_dbias_accumulate) {
  Rng rng(22);
  const float fill = 0.25f;
  for (const ConvCase& c : kConvCases) {
    ConvData d(c.s, c.bias, rng);
    std::vector<float> dinp, dw, db, dinp0, dw0, db0;
    d.backward(dinp, dw, db, fill);
    d.backward(dinp0, dw0, db0, 0.0f);
    const std::string n = conv_name(c);
    // += contract: filled result == fill + zero-started result. The fill changes the rounding of
    // each addition (col2im adds up to KH*KW terms onto it; the portable kernel rounds alpha*acc and
    // + beta*C separately), so allow ~10 ulps of |grad| <= ~20: 2e-5 abs + 2e-5 rel. An overwrite
    // instead of += is off by the fill (0.25).
    const auto plus_in = minus(dinp, fill), plus_w = minus(dw, fill), plus_b = minus(db, fill);
    DFL_EXPECT_CLOSE(plus_in.data(), dinp0.data(), dinp0.size(), 2e-5, 2e-5, n + " dinp +=");
    DFL_EXPECT_CLOSE(plus_w.data(), dw0.data(), dw0.size(), 2e-5, 2e-5, n + " dweight +=");
    DFL_EXPECT_CLOSE(plus_b.data(), db0.data(), db0.size(), 2e-5, 2e-5, n + " dbias +=");
    // 400 random elements per tensor (the double reference is slow on the 16->32 case's 6,200): an
    // index error spoils many elements at once.
    auto loss = [&] { return d.loss(); };
    dfl::test::gradcheck(n + " dinp", d.inp, plus_in, loss, 1e-2, 2e-3, 2e-3, __FILE__, __LINE__, 400);
    dfl::test::gradcheck(n + " dweight", d.w, plus_w, loss, 1e-2, 2e-3, 2e-3, __FILE__, __LINE__, 400);
    if (c.bias) dfl::test::gradcheck(n + " dbias", d.bias, plus_b, loss, 1e-2, 2e-3, 2e-3, __FILE__, __LINE__, 400);
  }
}

DFL_TEST(conv2d_backward_null_grads_are_skipped) {
  Rng rng(23);
  for (const ConvCase& c : kConvCases) {
    ConvData d(c.s, c.bias, rng);
    std::vector<float> dinp, dw, db;
    d.backward(dinp, dw, db, 0.0f);
    std::vector<float> only_w(d.w.size(), 0.0f), only_in(d.inp.size(), 0.0f);
    float* ws = d.ws.empty() ? nullptr : d.ws.data();
    dfl::test::ops::conv2d_backward(nullptr, only_w.data(), nullptr, d.r.data(), d.inp.data(), d.w.data(), c.s, ws);
    dfl::test::ops::conv2d_backward(only_in.data(), nullptr, nullptr, d.r.data(), d.inp.data(), d.w.data(), c.s, ws);
    DFL_EXPECT(bitwise_equal(only_w, dw), conv_name(c));
    DFL_EXPECT(bitwise_equal(only_in, dinp), conv_name(c));
  }
}

namespace {
size_t general_ws(const Conv2dShape& s) {
  return dfl::cpu::conv2d_workspace_floats_with(dfl::cpu::ConvAlgo::General, s);
}
}  // namespace

DFL_CPU_TEST(conv2d_workspace_bounded_independent_of_batch_and_bad_shapes_throw) {
  // The general algorithm: two column matrices (col, dcol) per thread slot: bounded by the hardware threads, never by B.
  Conv2dShape s{1, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1};
  const size_t col = size_t(64) * 9 * 32 * 32;
  DFL_EXPECT(general_ws(s) == 2 * col, general_ws(s));
  s.B = 512;
  const size_t big = general_ws(s);
  DFL_EXPECT(big == 2 * col * size_t(dfl::max_thread_slots()), big);
  s.B = 100000;
  DFL_EXPECT(general_ws(s) == big, "workspace grows with B");
  Conv2dShape pw{8, 64, 32, 32, 128, 1, 1, 1, 1, 0, 0, 1};
  DFL_EXPECT(general_ws(pw) == 0, "1x1 at 32x32 needs no workspace");
  // Small outputs: ceil(1024/P) samples side by side (columns, their gradient, the output), never more.
  Conv2dShape wide{8, 64, 16, 16, 128, 1, 1, 1, 1, 0, 0, 1};
  const size_t w4 = (2 * size_t(64) + 128) * 4 * 256;
  DFL_EXPECT(general_ws(wide) == w4, general_ws(wide));
  wide.B = 100000;
  DFL_EXPECT(general_ws(wide) == w4, "wide workspace grows with B");
  Conv2dShape dw{8, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 64};
  DFL_EXPECT(general_ws(dw) == 0, "depthwise needs no workspace");
  Conv2dShape bad{1, 6, 8, 8, 4, 3, 3, 1, 1, 1, 1, 4};  // 6 % 4 != 0
  DFL_EXPECT_THROWS(general_ws(bad), "groups must divide C");
  Conv2dShape big_k{1, 2, 3, 3, 2, 5, 5, 1, 1, 0, 0, 1};
  DFL_EXPECT_THROWS(general_ws(big_k), "kernel larger than input");
  // Whatever algorithm is chosen, the workspace stops growing with the batch.
  for (Conv2dShape t :
       {Conv2dShape{64, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1}, Conv2dShape{64, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 16},
        Conv2dShape{64, 16, 32, 32, 32, 3, 3, 2, 2, 1, 1, 1}, Conv2dShape{64, 512, 2, 2, 512, 3, 3, 1, 1, 1, 1, 1},
        Conv2dShape{64, 256, 4, 4, 256, 3, 3, 1, 1, 1, 1, 1}}) {
    t.B = 1024;  // small maps put up to 1,024 columns' worth of samples side by side, never more
    const size_t at1024 = dfl::cpu::conv2d_workspace_floats(t);
    t.B = 100000;
    DFL_EXPECT(dfl::cpu::conv2d_workspace_floats(t) == at1024,
               "workspace grows with B (" << dfl::cpu::conv_algo_label(dfl::cpu::conv2d_choose_algo(t)) << ")");
  }
}

// Shapes large enough that GEMM, im2col, col2im and the depthwise loops really split across threads.
DFL_TEST(conv2d_forward_backward_bitwise_identical_threads_1_2_3) {
  const ConvCase cases[] = {
      {{4, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1}, true, "3x3"},
      {{3, 32, 12, 12, 64, 3, 3, 2, 2, 1, 1, 2}, false, "3x3 s2 g2"},
      {{4, 64, 16, 16, 64, 1, 1, 1, 1, 0, 0, 1}, true, "1x1"},
      {{4, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 64}, true, "depthwise"},
  };
  Rng rng(24);
  const int saved = dfl::num_threads();
  for (const ConvCase& c : cases) {
    ConvData d(c.s, c.bias, rng);
    std::vector<float> out1, dinp1, dw1, db1;
    for (int nt : {1, 2, 3}) {
      dfl::set_num_threads(nt);
      auto out = d.forward();
      std::vector<float> dinp, dw, db;
      d.backward(dinp, dw, db, 0.5f);
      if (nt == 1) {
        out1 = out, dinp1 = dinp, dw1 = dw, db1 = db;
        continue;
      }
      const std::string n = conv_name(c) + " threads " + std::to_string(nt);
      DFL_EXPECT(bitwise_equal(out, out1), n + " out");
      DFL_EXPECT(bitwise_equal(dinp, dinp1), n + " dinp");
      DFL_EXPECT(bitwise_equal(dw, dw1), n + " dweight");
      DFL_EXPECT(bitwise_equal(db, db1), n + " dbias");
    }
  }
  dfl::set_num_threads(saved);
}

// ---- linear -------------------------------------------------------------------------------------
namespace {
struct LinCase {
  int B, IN, OUT;
  bool bias;
};
const LinCase kLinCases[] = {{1, 1, 1, true}, {3, 17, 5, true}, {5, 33, 65, false}, {7, 100, 10, true}};

std::vector<float> linear_out(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                              const LinCase& c) {
  std::vector<float> out(size_t(c.B) * c.OUT, std::numeric_limits<float>::quiet_NaN());
  dfl::test::ops::linear_forward(out.data(), x.data(), w.data(), b.empty() ? nullptr : b.data(), c.B, c.IN, c.OUT);
  return out;
}
}  // namespace

// Forward vs double reference: atol/rtol 1e-5 (<= 100-term sums). Gradcheck: linear in each
// argument, h = 1e-2, atol/rtol 2e-3 as for conv; grads pre-filled with -0.5 to test +=.
DFL_TEST(linear_forward_reference_and_gradcheck_accumulate) {
  Rng rng(31);
  const float fill = -0.5f;
  for (const LinCase& c : kLinCases) {
    std::ostringstream os;
    os << "linear B" << c.B << " IN" << c.IN << " OUT" << c.OUT << (c.bias ? " bias" : "");
    const std::string n = os.str();
    auto x = dfl::test::randn(size_t(c.B) * c.IN, rng);
    auto w = dfl::test::randn(size_t(c.OUT) * c.IN, rng);
    auto b = c.bias ? dfl::test::randn(c.OUT, rng) : std::vector<float>();
    auto r = dfl::test::randn(size_t(c.B) * c.OUT, rng);
    const auto out = linear_out(x, w, b, c);
    std::vector<float> want(out.size());
    for (int i = 0; i < c.B; ++i)
      for (int o = 0; o < c.OUT; ++o) {
        double s = c.bias ? b[o] : 0.0;
        for (int k = 0; k < c.IN; ++k) s += double(x[size_t(i) * c.IN + k]) * w[size_t(o) * c.IN + k];
        want[size_t(i) * c.OUT + o] = float(s);
      }
    DFL_EXPECT_CLOSE(out.data(), want.data(), out.size(), 1e-5, 1e-5, n + " forward");
    std::vector<float> dx(x.size(), fill), dw(w.size(), fill), db(b.size(), fill);
    dfl::test::ops::linear_backward(dx.data(), dw.data(), c.bias ? db.data() : nullptr, r.data(), x.data(), w.data(),
                                    c.B, c.IN, c.OUT);
    auto loss = [&] {
      const auto o = linear_out(x, w, b, c);
      return dfl::test::dot(o.data(), r.data(), o.size());
    };
    DFL_GRADCHECK(n + " dinp", x, minus(dx, fill), loss, 1e-2, 2e-3, 2e-3);
    DFL_GRADCHECK(n + " dweight", w, minus(dw, fill), loss, 1e-2, 2e-3, 2e-3);
    if (c.bias) DFL_GRADCHECK(n + " dbias", b, minus(db, fill), loss, 1e-2, 2e-3, 2e-3);
  }
}

DFL_TEST(linear_forward_backward_bitwise_identical_threads_1_2_3) {
  Rng rng(32);
  const int B = 128, IN = 512, OUT = 256;
  auto x = dfl::test::randn(size_t(B) * IN, rng), w = dfl::test::randn(size_t(OUT) * IN, rng);
  auto b = dfl::test::randn(OUT, rng), r = dfl::test::randn(size_t(B) * OUT, rng);
  const int saved = dfl::num_threads();
  std::vector<float> o1, dx1, dw1, db1;
  for (int nt : {1, 2, 3}) {
    dfl::set_num_threads(nt);
    std::vector<float> o(size_t(B) * OUT), dx(x.size(), 0.0f), dw(w.size(), 0.0f), db(OUT, 0.0f);
    dfl::test::ops::linear_forward(o.data(), x.data(), w.data(), b.data(), B, IN, OUT);
    dfl::test::ops::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), B, IN, OUT);
    if (nt == 1) {
      o1 = o, dx1 = dx, dw1 = dw, db1 = db;
      continue;
    }
    DFL_EXPECT(bitwise_equal(o, o1), "out threads " << nt);
    DFL_EXPECT(bitwise_equal(dx, dx1), "dinp threads " << nt);
    DFL_EXPECT(bitwise_equal(dw, dw1), "dweight threads " << nt);
    DFL_EXPECT(bitwise_equal(db, db1), "dbias threads " << nt);
  }
  dfl::set_num_threads(saved);
}
