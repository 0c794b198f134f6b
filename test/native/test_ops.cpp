// Tests for batchnorm, activations, add, pooling, channel plumbing, dropout and augmentation.
//
// Gradient checks: loss = dot(out, r) with a random upstream gradient r, central differences in
// float32 inputs with the loss summed in double. Unless a test says otherwise: h = 1e-2,
// |analytic - numeric| <= 2e-3 + 1e-2 * max(|analytic|, |numeric|). The float32 forward carries
// ~1e-7 relative rounding, which after dividing by 2h is ~1e-5 in the numeric gradient, so these
// tolerances leave two orders of margin while still catching any wrong term.
// Inputs are kept away from kinks (relu at 0, relu6 at 0/6) and ties (maxpool) by more than h.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <limits>
#include <vector>

#include "core/counter_rng.h"
#include "core/parallel.h"
#include "backend_ops.h"
#include "cpu/kernels.h"
#include "harness.h"

using namespace dfl;
using namespace dfl::test::ops;
using dfl::test::dot;
using dfl::test::on_cpu;
using dfl::test::randn;
using dfl::test::randu;

namespace {

using Vec = std::vector<float>;

// Runs `bwd` once on zeroed gradient buffers and once on buffers pre-filled with random values, and
// checks the second result equals prefill + first (the += contract). Leaves the zero-start result
// in the buffers for the gradient check that follows. Tolerance: 1e-6 abs + 1e-6 rel (one float add).
void expect_accumulates(const char* what, const std::vector<Vec*>& grads, const std::function<void()>& bwd,
                        const char* file, int line) {
  for (Vec* g : grads) std::fill(g->begin(), g->end(), 0.f);
  bwd();
  std::vector<Vec> fresh;
  for (Vec* g : grads) fresh.push_back(*g);
  Rng rng(999);
  std::vector<Vec> pre;
  for (Vec* g : grads) {
    pre.push_back(randn(g->size(), rng));
    *g = pre.back();
  }
  bwd();
  for (size_t k = 0; k < grads.size(); ++k) {
    Vec want(fresh[k].size());
    for (size_t i = 0; i < want.size(); ++i) want[i] = pre[k][i] + fresh[k][i];
    dfl::test::expect_close_arrays(grads[k]->data(), want.data(), want.size(), 1e-6, 1e-6,
                                   std::string(what) + " accumulates (+=) into grad #" + std::to_string(k), file, line);
    *grads[k] = fresh[k];
  }
}
// Variadic so a lambda argument may contain unparenthesised commas.
#define EXPECT_ACCUMULATES(what, grads, ...) expect_accumulates((what), (grads), (__VA_ARGS__), __FILE__, __LINE__)

void append(Vec& dst, const Vec& src) { dst.insert(dst.end(), src.begin(), src.end()); }

// Values in [lo, hi) at least `gap` away from each kink.
Vec away_from(size_t n, Rng& rng, float lo, float hi, std::initializer_list<float> kinks, float gap) {
  Vec v(n);
  for (auto& x : v) {
    bool ok;
    do {
      x = rng.uniform(lo, hi);
      ok = true;
      for (float k : kinks) ok = ok && std::fabs(x - k) > gap;
    } while (!ok);
  }
  return v;
}

// Distinct values spaced 0.05 apart in random order (no ties within 2h for h = 1e-2).
Vec distinct_values(size_t n, Rng& rng) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  for (size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[rng.below(uint32_t(i))]);
  Vec v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.05f * float(idx[i]) - 0.025f * float(n);
  return v;
}

constexpr double kH = 1e-2, kAtol = 2e-3, kRtol = 1e-2;

}  // namespace

// ------------------------------------------------------------------------------------------------
// BatchNorm

// Naive double reference for the training forward.
static void bn_reference(Vec& out, Vec& mean, Vec& var_b, Vec& var_u, const Vec& x, const Vec& g, const Vec& be, int B,
                         int C, int HW, double eps) {
  out.assign(x.size(), 0.f);
  mean.assign(C, 0.f);
  var_b.assign(C, 0.f);
  var_u.assign(C, 0.f);
  const double N = double(B) * HW;
  for (int c = 0; c < C; ++c) {
    double s = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < HW; ++i) s += x[(size_t(b) * C + c) * HW + i];
    const double m = s / N;
    double q = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < HW; ++i) q += std::pow(x[(size_t(b) * C + c) * HW + i] - m, 2);
    mean[c] = float(m);
    var_b[c] = float(q / N);
    var_u[c] = float(q / (N - 1));
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < HW; ++i) {
        const size_t k = (size_t(b) * C + c) * HW + i;
        out[k] = float((x[k] - m) / std::sqrt(q / N + eps) * g[c] + be[c]);
      }
  }
}

DFL_TEST(bn_train_forward_and_running_stats_match_reference) {
  Rng rng(1);
  const int B = 3, C = 5, HW = 7 * 5;
  const size_t n = size_t(B) * C * HW;
  const float momentum = 0.1f, eps = 1e-5f;
  Vec gamma = randu(C, rng, 0.5f, 1.5f), beta = randn(C, rng);
  Vec rm(C, 0.f), rv(C, 1.f), rm_ref(C, 0.f), rv_ref(C, 1.f);
  for (int step = 0; step < 2; ++step) {
    // Offset mean and scale so the variance computation is exercised away from 0 and 1.
    Vec x = randn(n, rng, 3.f);
    for (auto& v : x) v += 10.f;
    Vec out(n), sm(C), si(C);
    batchnorm2d_forward_train(out.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(), gamma.data(),
                              beta.data(), B, C, HW, momentum, eps);
    Vec out_ref, mean, vb, vu;
    bn_reference(out_ref, mean, vb, vu, x, gamma, beta, B, C, HW, eps);
    // float32 output of a normalised value: 2e-5 abs.
    DFL_EXPECT_CLOSE(out.data(), out_ref.data(), n, 2e-5, 1e-5, "bn train out");
    DFL_EXPECT_CLOSE(sm.data(), mean.data(), C, 1e-6, 1e-6, "save_mean");
    Vec invstd(C);
    for (int c = 0; c < C; ++c) invstd[c] = float(1.0 / std::sqrt(double(vb[c]) + eps));
    DFL_EXPECT_CLOSE(si.data(), invstd.data(), C, 1e-7, 1e-6, "save_invstd");
    // Running stats: r = (1 - m) r + m x with the UNBIASED variance.
    for (int c = 0; c < C; ++c) {
      rm_ref[c] = float((1.0 - momentum) * rm_ref[c] + momentum * double(mean[c]));
      rv_ref[c] = float((1.0 - momentum) * rv_ref[c] + momentum * double(vu[c]));
    }
  }
  DFL_EXPECT_CLOSE(rm.data(), rm_ref.data(), C, 1e-6, 1e-6, "running_mean after 2 steps");
  DFL_EXPECT_CLOSE(rv.data(), rv_ref.data(), C, 1e-6, 1e-6, "running_var after 2 steps");
}

// The one-pass shifted sums (forward) and sum(dy*x) - mean*sum(dy) (backward) against double
// references where cancellation would show: a mean of 1000 and a spread of 1e-3 (float spacing at
// 1000 is 6e-5, so the values themselves carry about 4 significant digits of spread).
DFL_TEST(bn_statistics_hold_for_a_large_mean_and_a_small_spread) {
  Rng rng(5);
  const int B = 16, C = 3, HW = 64;
  const size_t n = size_t(B) * C * HW;
  Vec x = randn(n, rng, 1e-3f), dy = randn(n, rng);
  for (auto& v : x) v += 1000.f;
  const Vec gamma(C, 1.f), beta(C, 0.f);
  Vec out(n), sm(C), si(C), rm(C, 0.f), rv(C, 1.f);
  batchnorm2d_forward_train(out.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(), gamma.data(), beta.data(),
                            B, C, HW, 0.1f, 1e-12f);
  Vec dgamma(C, 0.f), dbeta(C, 0.f);
  batchnorm2d_backward(nullptr, dgamma.data(), dbeta.data(), dy.data(), x.data(), gamma.data(), sm.data(), si.data(), B,
                       C, HW);
  for (int c = 0; c < C; ++c) {
    double mean = 0, var = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < HW; ++i) mean += x[(size_t(b) * C + c) * HW + i];
    mean /= double(B) * HW;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < HW; ++i) {
        const double d = x[(size_t(b) * C + c) * HW + i] - mean;
        var += d * d;
      }
    var /= double(B) * HW;
    const double invstd = 1.0 / std::sqrt(var + 1e-12);
    DFL_EXPECT(std::fabs(si[c] - invstd) <= 1e-5 * invstd, "invstd " << si[c] << " want " << invstd);
    // dgamma = sum(dy * xhat): the mean is stored as float, so compare against the same float mean.
    double sdyx_f = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < HW; ++i)
        sdyx_f += dy[(size_t(b) * C + c) * HW + i] * (double(x[(size_t(b) * C + c) * HW + i]) - double(sm[c]));
    const double want = sdyx_f * double(si[c]);
    DFL_EXPECT(std::fabs(dgamma[c] - want) <= 1e-4 * std::fabs(want) + 1e-3,
               "dgamma " << dgamma[c] << " want " << want);
  }
}

DFL_TEST(bn_running_var_hand_example) {
  // One channel, values {1, 2, 3, 4}: mean 2.5, biased var 1.25, unbiased var 5/3.
  const Vec x = {1, 2, 3, 4}, g = {1}, be = {0};
  Vec out(4), sm(1), si(1), rm = {0}, rv = {1};
  batchnorm2d_forward_train(out.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(), g.data(), be.data(), 2, 1,
                            2, 0.1f, 0.f);
  DFL_EXPECT(std::fabs(rm[0] - 0.25f) < 1e-7f, "running_mean " << rm[0]);
  DFL_EXPECT(std::fabs(rv[0] - float(0.9 + 0.1 * 5.0 / 3.0)) < 1e-7f, "running_var " << rv[0]);
  DFL_EXPECT(std::fabs(out[0] - float(-1.5 / std::sqrt(1.25))) < 1e-6f, "out[0] " << out[0]);
  if (on_cpu())
    DFL_EXPECT_THROWS(batchnorm2d_forward_train(out.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(),
                                                g.data(), be.data(), 1, 1, 1, 0.1f, 1e-5f),
                      "one value per channel");
}

DFL_TEST(bn_eval_forward_matches_reference) {
  Rng rng(2);
  const int B = 3, C = 5, HW = 35;
  const size_t n = size_t(B) * C * HW;
  Vec x = randn(n, rng), g = randu(C, rng, 0.5f, 1.5f), be = randn(C, rng), rm = randn(C, rng),
      rv = randu(C, rng, 0.2f, 2.f), out(n), ref(n);
  const float eps = 1e-3f;
  batchnorm2d_forward_eval(out.data(), x.data(), g.data(), be.data(), rm.data(), rv.data(), B, C, HW, eps);
  for (size_t k = 0; k < n; ++k) {
    const int c = int((k / HW) % C);
    ref[k] = float((x[k] - double(rm[c])) / std::sqrt(double(rv[c]) + eps) * g[c] + be[c]);
  }
  DFL_EXPECT_CLOSE(out.data(), ref.data(), n, 1e-5, 1e-5, "bn eval out");
}

DFL_TEST(bn_backward_gradcheck_inp_gamma_beta) {
  Rng rng(3);
  const int B = 3, C = 5, HW = 35;
  const size_t n = size_t(B) * C * HW;
  Vec x = randn(n, rng, 2.f), gamma = randu(C, rng, 0.5f, 1.5f), beta = randn(C, rng), r = randn(n, rng);
  Vec out(n), sm(C), si(C), rm(C), rv(C);
  auto loss = [&] {
    batchnorm2d_forward_train(out.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(), gamma.data(),
                              beta.data(), B, C, HW, 0.1f, 1e-5f);
    return dot(out.data(), r.data(), n);
  };
  loss();
  Vec dx(n), dg(C), db(C);
  EXPECT_ACCUMULATES("bn backward", (std::vector<Vec*>{&dx, &dg, &db}), [&] {
    batchnorm2d_backward(dx.data(), dg.data(), db.data(), r.data(), x.data(), gamma.data(), sm.data(), si.data(), B, C,
                         HW);
  });
  DFL_GRADCHECK("bn dinp", x, dx, loss, kH, kAtol, kRtol);
  DFL_GRADCHECK("bn dgamma", gamma, dg, loss, kH, kAtol, kRtol);
  DFL_GRADCHECK("bn dbeta", beta, db, loss, kH, kAtol, kRtol);
  // Null gradient pointers are skipped; the others are unaffected.
  Vec dx2(n, 0.f);
  batchnorm2d_backward(dx2.data(), nullptr, nullptr, r.data(), x.data(), gamma.data(), sm.data(), si.data(), B, C, HW);
  DFL_EXPECT_CLOSE(dx2.data(), dx.data(), n, 0.0, 0.0, "bn dinp alone");
}

// The fused backward (activation mask applied on the fly, dinp written instead of added to when it
// is the first writer) against its definition: mask dout, zero dinp if overwriting, plain backward.
// Bitwise: the masked values and every sum are the same. The overwritten dinp starts as NaN, which
// must not be read.
DFL_TEST(bn_backward_fused_equals_mask_then_plain_backward) {
  Rng rng(6);
  const int B = 3, C = 5, HW = 37;
  const size_t n = size_t(B) * C * HW;
  const Vec x = randn(n, rng, 2.f), gamma = randu(C, rng, 0.5f, 1.5f), dy = randn(n, rng), dx0 = randn(n, rng),
            dg0 = randn(C, rng), db0 = randn(C, rng);
  Vec y = randn(n, rng, 4.f);  // a fused activation's output: with exact 0s and 6s
  for (size_t i = 0; i < n; i += 7) y[i] = 0.f;
  for (size_t i = 3; i < n; i += 11) y[i] = 6.f;
  Vec out(n), sm(C), si(C), rm(C), rv(C);
  batchnorm2d_forward_train(out.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(), gamma.data(), nullptr, B,
                            C, HW, 0.1f, 1e-5f);
  for (Activation act : {Activation::None, Activation::Relu, Activation::Relu6})
    for (bool overwrite : {false, true}) {
      Vec masked = dy;
      for (size_t i = 0; i < n; ++i) {
        const bool blocked = act != Activation::None && (y[i] <= 0.f || (act == Activation::Relu6 && y[i] >= 6.f));
        if (blocked) masked[i] = 0.f;
      }
      Vec dx_want = overwrite ? Vec(n, 0.f) : dx0, dg_want = dg0, db_want = db0;
      batchnorm2d_backward(dx_want.data(), dg_want.data(), db_want.data(), masked.data(), x.data(), gamma.data(),
                           sm.data(), si.data(), B, C, HW);
      Vec dx = overwrite ? Vec(n, std::numeric_limits<float>::quiet_NaN()) : dx0, dg = dg0, db = db0, d = dy;
      batchnorm2d_backward_fused(dx.data(), dg.data(), db.data(), d.data(), y.data(), x.data(), gamma.data(), sm.data(),
                                 si.data(), B, C, HW, act, overwrite);
      const std::string what = std::string(act == Activation::None   ? "none"
                                           : act == Activation::Relu ? "relu"
                                                                     : "relu6") +
                               (overwrite ? " overwrite" : " accumulate");
      DFL_EXPECT_CLOSE(dx.data(), dx_want.data(), n, 0.0, 0.0, "fused bn dinp " + what);
      DFL_EXPECT_CLOSE(dg.data(), dg_want.data(), C, 0.0, 0.0, "fused bn dgamma " + what);
      DFL_EXPECT_CLOSE(db.data(), db_want.data(), C, 0.0, 0.0, "fused bn dbeta " + what);
    }
}

DFL_TEST(bn_thread_determinism) {
  Rng rng(4);
  const int B = 4, C = 24, HW = 100;
  const size_t n = size_t(B) * C * HW;
  const Vec x = randn(n, rng), g = randu(C, rng, 0.5f, 1.5f), be = randn(C, rng), r = randn(n, rng);
  DFL_EXPECT_THREAD_DETERMINISTIC("batchnorm", [&] {
    Vec out(n), sm(C), si(C), rm(C, 0.f), rv(C, 1.f), dx(n, 0.f), dg(C, 0.f), db(C, 0.f), eout(n);
    batchnorm2d_forward_train(out.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(), g.data(), be.data(), B,
                              C, HW, 0.1f, 1e-5f);
    batchnorm2d_backward(dx.data(), dg.data(), db.data(), r.data(), x.data(), g.data(), sm.data(), si.data(), B, C, HW);
    batchnorm2d_forward_eval(eout.data(), x.data(), g.data(), be.data(), rm.data(), rv.data(), B, C, HW, 1e-5f);
    Vec all;
    for (const Vec* v : {&out, &sm, &si, &rm, &rv, &dx, &dg, &db, &eout}) append(all, *v);
    return all;
  });
}

// ------------------------------------------------------------------------------------------------
// Activations and add

DFL_TEST(relu_relu6_forward_and_kink_convention) {
  const Vec x = {-2.f, -0.f, 0.f, 1e-7f, 3.f, 6.f, 6.5f, -1e-7f};
  Vec y(x.size()), y6(x.size());
  relu_forward(y.data(), x.data(), x.size());
  relu6_forward(y6.data(), x.data(), x.size());
  const Vec want = {0, 0, 0, 1e-7f, 3, 6, 6.5f, 0}, want6 = {0, 0, 0, 1e-7f, 3, 6, 6, 0};
  DFL_EXPECT_CLOSE(y.data(), want.data(), x.size(), 0.0, 0.0, "relu");
  DFL_EXPECT_CLOSE(y6.data(), want6.data(), x.size(), 0.0, 0.0, "relu6");
  // PyTorch: relu grad is 0 at x <= 0; relu6 grad is 1 only on the open interval (0, 6).
  const Vec ones(x.size(), 1.f);
  Vec d(x.size(), 0.f), d6(x.size(), 0.f);
  relu_backward(d.data(), ones.data(), x.data(), x.size());
  relu6_backward(d6.data(), ones.data(), x.data(), x.size());
  const Vec gw = {0, 0, 0, 1, 1, 1, 1, 0}, gw6 = {0, 0, 0, 1, 1, 0, 0, 0};
  DFL_EXPECT_CLOSE(d.data(), gw.data(), x.size(), 0.0, 0.0, "relu grad at kinks");
  DFL_EXPECT_CLOSE(d6.data(), gw6.data(), x.size(), 0.0, 0.0, "relu6 grad at kinks");
  // NaN propagates through the forward, as in PyTorch.
  const float nan = std::nanf("");
  float o;
  relu_forward(&o, &nan, 1);
  DFL_EXPECT(std::isnan(o), "relu(NaN) should be NaN");
  relu6_forward(&o, &nan, 1);
  DFL_EXPECT(std::isnan(o), "relu6(NaN) should be NaN");
}

DFL_TEST(relu_relu6_gradcheck) {
  Rng rng(5);
  const size_t n = 3 * 5 * 7 * 5;
  const Vec r = randn(n, rng);
  for (int which = 0; which < 2; ++which) {
    Vec x = away_from(n, rng, -3.f, 9.f, {0.f, 6.f}, 0.05f), y(n), dx(n);
    auto fwd = which == 0 ? relu_forward : relu6_forward;
    auto bwd = which == 0 ? relu_backward : relu6_backward;
    auto loss = [&] {
      fwd(y.data(), x.data(), n);
      return dot(y.data(), r.data(), n);
    };
    EXPECT_ACCUMULATES(which == 0 ? "relu" : "relu6", (std::vector<Vec*>{&dx}),
                       [&] { bwd(dx.data(), r.data(), x.data(), n); });
    DFL_GRADCHECK(which == 0 ? "relu dinp" : "relu6 dinp", x, dx, loss, kH, 1e-4, 1e-4);
  }
}

DFL_TEST(add_forward_backward) {
  Rng rng(6);
  const size_t n = 3 * 5 * 7 * 5;
  Vec a = randn(n, rng), b = randn(n, rng), r = randn(n, rng), y(n), da(n), db(n);
  add_forward(y.data(), a.data(), b.data(), n);
  for (size_t i = 0; i < n; ++i) DFL_EXPECT(y[i] == a[i] + b[i], "add at " << i);
  auto loss = [&] {
    add_forward(y.data(), a.data(), b.data(), n);
    return dot(y.data(), r.data(), n);
  };
  EXPECT_ACCUMULATES("add", (std::vector<Vec*>{&da, &db}), [&] { add_backward(da.data(), db.data(), r.data(), n); });
  DFL_GRADCHECK("add da", a, da, loss, kH, 1e-4, 1e-4);
  DFL_GRADCHECK("add db", b, db, loss, kH, 1e-4, 1e-4);
  Vec db2(n, 0.f);
  add_backward(nullptr, db2.data(), r.data(), n);  // nullable da
  DFL_EXPECT_CLOSE(db2.data(), r.data(), n, 0.0, 0.0, "add db with da == nullptr");
}

// ------------------------------------------------------------------------------------------------
// Pooling

static Pool2dShape pool_shape() { return Pool2dShape{3, 5, 7, 5, 3, 3, 2, 2, 1, 1}; }

DFL_TEST(maxpool_forward_matches_naive_and_argmax_rules) {
  Rng rng(7);
  const Pool2dShape s = pool_shape();
  const int OH = s.OH(), OW = s.OW();
  DFL_EXPECT(OH == 4 && OW == 3, "pool output " << OH << "x" << OW);
  const size_t n = size_t(s.B) * s.C * s.H * s.W, no = size_t(s.B) * s.C * OH * OW;
  // All negative: zero padding, if it were ever selected, would show up as 0.
  Vec x = randu(n, rng, -5.f, -1.f), y(no);
  std::vector<int32_t> am(no);
  maxpool2d_forward(y.data(), am.data(), x.data(), s);
  for (int p = 0; p < s.B * s.C; ++p)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        float best = -INFINITY;
        int bi = -1;
        for (int kh = 0; kh < s.KH; ++kh)
          for (int kw = 0; kw < s.KW; ++kw) {
            const int h = oh * 2 - 1 + kh, w = ow * 2 - 1 + kw;
            if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
            const float v = x[size_t(p) * s.H * s.W + h * s.W + w];
            if (v > best) best = v, bi = h * s.W + w;
          }
        const size_t o = (size_t(p) * OH + oh) * OW + ow;
        DFL_EXPECT(y[o] == best && am[o] == bi,
                   "maxpool at " << o << ": " << y[o] << "/" << am[o] << " want " << best << "/" << bi);
        DFL_EXPECT(y[o] < 0.f, "padding selected at " << o);
      }
  // Ties: the first max in row-major window order wins.
  const Pool2dShape t{1, 1, 2, 2, 2, 2, 1, 1, 0, 0};
  const Vec tie = {1.f, 3.f, 3.f, 3.f};
  float ty;
  int32_t ta;
  maxpool2d_forward(&ty, &ta, tie.data(), t);
  DFL_EXPECT(ty == 3.f && ta == 1, "tie: got " << ty << " at " << ta);
}

// The 2x2/stride-2 path (VGG's pool; rows of 8 and 4 outputs in vector selects) must make exactly
// the general rule's choices: ties (values on a coarse grid) keep the first max, a NaN wins and the
// last NaN in the window is taken, a window of -inf keeps its first element. Output rows of 2 (all
// scalar), 6 (4 + 2), 12 (8 + 4) and 16 (two vectors, from an odd input row of 33).
DFL_TEST(maxpool_2x2_stride2_fast_path_matches_rule_with_ties_and_nan) {
  Rng rng(17);
  for (const Pool2dShape& s :
       {Pool2dShape{2, 3, 7, 5, 2, 2, 2, 2, 0, 0}, Pool2dShape{1, 2, 4, 13, 2, 2, 2, 2, 0, 0},
        Pool2dShape{1, 2, 8, 24, 2, 2, 2, 2, 0, 0}, Pool2dShape{2, 3, 6, 33, 2, 2, 2, 2, 0, 0}}) {
    const int OH = s.OH(), OW = s.OW();
    const size_t n = size_t(s.B) * s.C * s.H * s.W, no = size_t(s.B) * s.C * OH * OW;
    Vec x(n);
    for (auto& v : x) v = float(int(rng.below(4))) - 2.f;  // many ties
    for (int k = 0; k < 6; ++k) x[rng.below(uint32_t(n))] = NAN;
    for (int k = 0; k < 6; ++k) x[rng.below(uint32_t(n))] = -INFINITY;
    for (int w = 0; w < 2; ++w)  // one window all -inf
      for (int h = 0; h < 2; ++h) x[size_t(h) * s.W + 2 + w] = -INFINITY;
    Vec y(no);
    std::vector<int32_t> am(no);
    maxpool2d_forward(y.data(), am.data(), x.data(), s);
    for (int p = 0; p < s.B * s.C; ++p)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          float best = -INFINITY;
          int bi = (2 * oh) * s.W + 2 * ow;
          for (int kh = 0; kh < 2; ++kh)
            for (int kw = 0; kw < 2; ++kw) {
              const int h = 2 * oh + kh, w = 2 * ow + kw;
              const float v = x[size_t(p) * s.H * s.W + h * s.W + w];
              if (v > best || std::isnan(v)) best = v, bi = h * s.W + w;
            }
          const size_t o = (size_t(p) * OH + oh) * OW + ow;
          const bool same = (std::isnan(best) ? std::isnan(y[o]) : y[o] == best) && am[o] == bi;
          DFL_EXPECT(same, "2x2 pool " << s.H << "x" << s.W << " at " << o << ": " << y[o] << "/" << am[o] << " want "
                                       << best << "/" << bi);
        }
  }
}

DFL_TEST(maxpool_gradcheck) {
  Rng rng(8);
  const Pool2dShape s = pool_shape();
  const size_t n = size_t(s.B) * s.C * s.H * s.W, no = size_t(s.B) * s.C * s.OH() * s.OW();
  Vec x = distinct_values(n, rng), r = randn(no, rng), y(no), dx(n);
  std::vector<int32_t> am(no);
  auto loss = [&] {
    maxpool2d_forward(y.data(), am.data(), x.data(), s);
    return dot(y.data(), r.data(), no);
  };
  loss();
  EXPECT_ACCUMULATES("maxpool", (std::vector<Vec*>{&dx}),
                     [&] { maxpool2d_backward(dx.data(), r.data(), am.data(), s); });
  DFL_GRADCHECK("maxpool dinp", x, dx, loss, kH, 1e-3, 1e-3);
}

DFL_TEST(avgpool_forward_count_include_pad_and_gradcheck) {
  Rng rng(9);
  const Pool2dShape s = pool_shape();
  const int OH = s.OH(), OW = s.OW();
  const size_t n = size_t(s.B) * s.C * s.H * s.W, no = size_t(s.B) * s.C * OH * OW;
  Vec x = randn(n, rng), y(no), ref(no), r = randn(no, rng), dx(n);
  avgpool2d_forward(y.data(), x.data(), s);
  for (int p = 0; p < s.B * s.C; ++p)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        double sum = 0;
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw) {
            const int h = oh * 2 - 1 + kh, w = ow * 2 - 1 + kw;
            if (h >= 0 && h < s.H && w >= 0 && w < s.W) sum += x[size_t(p) * s.H * s.W + h * s.W + w];
          }
        ref[(size_t(p) * OH + oh) * OW + ow] = float(sum / 9.0);  // padding counts: always / 9
      }
  DFL_EXPECT_CLOSE(y.data(), ref.data(), no, 1e-6, 1e-6, "avgpool out");
  // Hand example: corner window of an all-ones 2x2 image with pad 1 sees 4 ones of 9.
  const Pool2dShape c{1, 1, 2, 2, 3, 3, 2, 2, 1, 1};
  const Vec ones(4, 1.f);
  float cy;
  avgpool2d_forward(&cy, ones.data(), c);
  DFL_EXPECT(std::fabs(cy - 4.f / 9.f) < 1e-7f, "count_include_pad corner " << cy);
  auto loss = [&] {
    avgpool2d_forward(y.data(), x.data(), s);
    return dot(y.data(), r.data(), no);
  };
  EXPECT_ACCUMULATES("avgpool", (std::vector<Vec*>{&dx}), [&] { avgpool2d_backward(dx.data(), r.data(), s); });
  DFL_GRADCHECK("avgpool dinp", x, dx, loss, kH, 1e-3, 1e-3);
}

DFL_TEST(global_avgpool_forward_gradcheck) {
  Rng rng(10);
  const int B = 3, C = 5, HW = 35;
  const size_t n = size_t(B) * C * HW, no = size_t(B) * C;
  Vec x = randn(n, rng), y(no), ref(no), r = randn(no, rng), dx(n);
  global_avgpool_forward(y.data(), x.data(), B, C, HW);
  for (size_t p = 0; p < no; ++p) {
    double s = 0;
    for (int i = 0; i < HW; ++i) s += x[p * HW + i];
    ref[p] = float(s / HW);
  }
  DFL_EXPECT_CLOSE(y.data(), ref.data(), no, 1e-7, 1e-6, "gap out");
  auto loss = [&] {
    global_avgpool_forward(y.data(), x.data(), B, C, HW);
    return dot(y.data(), r.data(), no);
  };
  EXPECT_ACCUMULATES("gap", (std::vector<Vec*>{&dx}), [&] { global_avgpool_backward(dx.data(), r.data(), B, C, HW); });
  DFL_GRADCHECK("gap dinp", x, dx, loss, kH, 1e-3, 1e-3);
}

DFL_TEST(pool_thread_determinism) {
  Rng rng(11);
  const Pool2dShape s{4, 16, 33, 31, 3, 3, 2, 2, 1, 1};
  const size_t n = size_t(s.B) * s.C * s.H * s.W, no = size_t(s.B) * s.C * s.OH() * s.OW();
  const Vec x = randn(n, rng), r = randn(no, rng);
  DFL_EXPECT_THREAD_DETERMINISTIC("pools", [&] {
    Vec ym(no), ya(no), dm(n, 0.f), da(n, 0.f), yg(size_t(s.B) * s.C), dg(n, 0.f);
    std::vector<int32_t> am(no);
    maxpool2d_forward(ym.data(), am.data(), x.data(), s);
    maxpool2d_backward(dm.data(), r.data(), am.data(), s);
    avgpool2d_forward(ya.data(), x.data(), s);
    avgpool2d_backward(da.data(), r.data(), s);
    global_avgpool_forward(yg.data(), x.data(), s.B, s.C, s.H * s.W);
    global_avgpool_backward(dg.data(), r.data(), s.B, s.C, s.H * s.W);
    Vec all;
    for (const Vec* v : {&ym, &dm, &ya, &da, &yg, &dg}) append(all, *v);
    for (int32_t a : am) all.push_back(float(a));
    return all;
  });
}

DFL_CPU_TEST(pool_bad_shapes_throw) {
  Vec x(100), y(100);
  std::vector<int32_t> am(100);
  DFL_EXPECT_THROWS(cpu::maxpool2d_forward(y.data(), am.data(), x.data(), Pool2dShape{1, 1, 5, 5, 3, 3, 0, 1, 1, 1}),
                    "stride 0");
  DFL_EXPECT_THROWS(cpu::maxpool2d_forward(y.data(), am.data(), x.data(), Pool2dShape{1, 1, 5, 5, 3, 3, 1, 1, 2, 1}),
                    "pad > kernel/2");
  DFL_EXPECT_THROWS(cpu::avgpool2d_forward(y.data(), x.data(), Pool2dShape{1, 1, 2, 2, 5, 5, 1, 1, 1, 1}),
                    "window larger than padded input");
  DFL_EXPECT_THROWS(cpu::global_avgpool_forward(y.data(), x.data(), 1, 1, 0), "HW = 0");
}

// ------------------------------------------------------------------------------------------------
// Channel plumbing

DFL_TEST(concat_split_forward_roundtrip_and_gradcheck) {
  Rng rng(12);
  const int B = 3, HW = 35;
  const int ch[3] = {2, 5, 1};
  const int total = 8;
  std::vector<Vec> xs;
  for (int c : ch) xs.push_back(randn(size_t(B) * c * HW, rng));
  const size_t no = size_t(B) * total * HW;
  Vec y(no), r = randn(no, rng);
  auto fwd = [&] {
    const float* in[3] = {xs[0].data(), xs[1].data(), xs[2].data()};
    concat_channels_forward(y.data(), in, ch, 3, B, HW);
  };
  fwd();
  // Direct index check: y[b, off_i + c, k] == xs[i][b, c, k].
  for (int b = 0; b < B; ++b) {
    int off = 0;
    for (int i = 0; i < 3; ++i) {
      for (int c = 0; c < ch[i]; ++c)
        for (int k = 0; k < HW; ++k)
          DFL_EXPECT(y[(size_t(b) * total + off + c) * HW + k] == xs[i][(size_t(b) * ch[i] + c) * HW + k],
                     "concat b=" << b << " chunk " << i);
      off += ch[i];
    }
  }
  // split(concat(x)) == x, with a nullptr (unneeded) chunk.
  std::vector<Vec> back;
  for (int c : ch) back.push_back(Vec(size_t(B) * c * HW, -7.f));
  float* outs[3] = {back[0].data(), nullptr, back[2].data()};
  split_channels_forward(outs, y.data(), ch, 3, B, HW);
  DFL_EXPECT_CLOSE(back[0].data(), xs[0].data(), xs[0].size(), 0.0, 0.0, "split chunk 0");
  DFL_EXPECT_CLOSE(back[2].data(), xs[2].data(), xs[2].size(), 0.0, 0.0, "split chunk 2");
  DFL_EXPECT(back[1][0] == -7.f, "nullptr chunk must not be written");

  // concat backward: gradient of dot(concat(xs), r) w.r.t. each input, one of them nullptr.
  std::vector<Vec> dxs;
  for (int c : ch) dxs.push_back(Vec(size_t(B) * c * HW));
  EXPECT_ACCUMULATES("concat", (std::vector<Vec*>{&dxs[0], &dxs[1], &dxs[2]}), [&] {
    float* d[3] = {dxs[0].data(), dxs[1].data(), dxs[2].data()};
    concat_channels_backward(d, r.data(), ch, 3, B, HW);
  });
  auto closs = [&] {
    fwd();
    return dot(y.data(), r.data(), no);
  };
  for (int i = 0; i < 3; ++i) DFL_GRADCHECK("concat dinput", xs[i], dxs[i], closs, kH, 1e-4, 1e-4);
  Vec d1(dxs[1].size(), 0.f);
  float* dn[3] = {nullptr, d1.data(), nullptr};
  concat_channels_backward(dn, r.data(), ch, 3, B, HW);
  DFL_EXPECT_CLOSE(d1.data(), dxs[1].data(), d1.size(), 0.0, 0.0, "concat backward with nullptr chunks");

  // split backward: loss = sum_i dot(split_i(z), r_i) for chunks 0 and 2 only (chunk 1 has no grad).
  Vec z = randn(no, rng), dz(no);
  std::vector<Vec> rs;
  for (int c : ch) rs.push_back(randn(size_t(B) * c * HW, rng));
  auto sloss = [&] {
    std::vector<Vec> o;
    for (int c : ch) o.push_back(Vec(size_t(B) * c * HW));
    float* op[3] = {o[0].data(), o[1].data(), o[2].data()};
    split_channels_forward(op, z.data(), ch, 3, B, HW);
    return dot(o[0].data(), rs[0].data(), o[0].size()) + dot(o[2].data(), rs[2].data(), o[2].size());
  };
  EXPECT_ACCUMULATES("split", (std::vector<Vec*>{&dz}), [&] {
    const float* g[3] = {rs[0].data(), nullptr, rs[2].data()};
    split_channels_backward(dz.data(), g, ch, 3, B, HW);
  });
  DFL_GRADCHECK("split dinp", z, dz, sloss, kH, 1e-4, 1e-4);
  const int bad[2] = {2, 0};
  if (on_cpu()) DFL_EXPECT_THROWS(split_channels_forward(outs, y.data(), bad, 2, B, HW), "zero-channel chunk");
}

DFL_TEST(channel_shuffle_mapping_and_gradcheck) {
  Rng rng(13);
  const int B = 3, C = 6, HW = 35, G = 3, cpg = C / G;
  const size_t n = size_t(B) * C * HW;
  Vec x = randn(n, rng), y(n), r = randn(n, rng), dx(n);
  channel_shuffle_forward(y.data(), x.data(), B, C, HW, G);
  // out channel j*groups + g <- inp channel g*(C/groups) + j; e.g. C=6, G=3: order 0,2,4,1,3,5.
  const int expect_src[6] = {0, 2, 4, 1, 3, 5};
  for (int b = 0; b < B; ++b)
    for (int oc = 0; oc < C; ++oc) {
      DFL_EXPECT(expect_src[oc] == (oc % G) * cpg + oc / G, "mapping table");
      for (int k = 0; k < HW; ++k)
        DFL_EXPECT(y[(size_t(b) * C + oc) * HW + k] == x[(size_t(b) * C + expect_src[oc]) * HW + k],
                   "shuffle b=" << b << " oc=" << oc);
    }
  auto loss = [&] {
    channel_shuffle_forward(y.data(), x.data(), B, C, HW, G);
    return dot(y.data(), r.data(), n);
  };
  EXPECT_ACCUMULATES("shuffle", (std::vector<Vec*>{&dx}),
                     [&] { channel_shuffle_backward(dx.data(), r.data(), B, C, HW, G); });
  DFL_GRADCHECK("shuffle dinp", x, dx, loss, kH, 1e-4, 1e-4);
  if (on_cpu()) DFL_EXPECT_THROWS(channel_shuffle_forward(y.data(), x.data(), B, 5, HW, 2), "groups must divide C");
  if (on_cpu()) DFL_EXPECT_THROWS(channel_shuffle_forward(y.data(), x.data(), B, C, HW, 0), "groups 0");
}

// A channel shuffle fused into the concat before it (ShuffleNet's blocks): the interleaved copy is
// the concat then the shuffle, bit for bit; its backward adds (or writes, onto NaN) the gradient the
// shuffle's and the concat's backward give, with a null input skipped.
DFL_TEST(interleave_is_concat_then_shuffle) {
  Rng rng(15);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const auto& [n, cpg, B, HW] : {std::array<int, 4>{2, 3, 2, 35}, {3, 2, 3, 16}, {2, 1, 1, 1}}) {
    const size_t part = size_t(B) * cpg * HW, all = part * n;
    std::vector<Vec> xs;
    std::vector<const float*> in;
    std::vector<int> ch(n, cpg);
    for (int k = 0; k < n; ++k) xs.push_back(randn(part, rng));
    for (const Vec& x : xs) in.push_back(x.data());
    Vec cat(all), want(all), got(all, nan);
    concat_channels_forward(cat.data(), in.data(), ch.data(), n, B, HW);
    channel_shuffle_forward(want.data(), cat.data(), B, n * cpg, HW, n);
    interleave_channels_forward(got.data(), in.data(), n, cpg, B, HW);
    DFL_EXPECT(got == want, "interleave forward, " << n << " inputs of " << cpg << " channels");

    const Vec r = randn(all, rng);
    Vec dcat(all, 0.f);
    channel_shuffle_backward(dcat.data(), r.data(), B, n * cpg, HW, n);
    std::vector<Vec> want_d, got_d;
    for (int k = 0; k < n; ++k) want_d.push_back(randn(part, rng));
    got_d = want_d;
    std::vector<float*> wp, gp;
    for (int k = 0; k < n; ++k) wp.push_back(want_d[k].data()), gp.push_back(k == 1 ? nullptr : got_d[k].data());
    wp[1] = nullptr;
    concat_channels_backward(wp.data(), dcat.data(), ch.data(), n, B, HW);
    interleave_channels_backward(gp.data(), r.data(), n, cpg, B, HW, false);
    for (int k = 0; k < n; ++k) DFL_EXPECT(got_d[k] == want_d[k], "interleave backward (+=), input " << k);
    // Overwrite: onto NaN, the plain gradient (the concat's backward onto zeros).
    std::vector<Vec> zero_d(n, Vec(part, 0.f)), fresh_d(n, Vec(part, nan));
    std::vector<float*> zp, fp;
    for (int k = 0; k < n; ++k) zp.push_back(zero_d[k].data()), fp.push_back(fresh_d[k].data());
    concat_channels_backward(zp.data(), dcat.data(), ch.data(), n, B, HW);
    interleave_channels_backward(fp.data(), r.data(), n, cpg, B, HW, true);
    for (int k = 0; k < n; ++k) DFL_EXPECT(fresh_d[k] == zero_d[k], "interleave backward (=), input " << k);
  }
  Vec y(8);
  const float* none[1] = {y.data()};
  if (on_cpu()) DFL_EXPECT_THROWS(interleave_channels_forward(y.data(), none, 1, 0, 1, 8), "zero channels per input");
}

// ------------------------------------------------------------------------------------------------
// Dropout

DFL_TEST(dropout_rate_scale_and_counter_rule) {
  const size_t n = 200000;
  const float p = 0.3f;
  Rng rng(14);
  const Vec x = randn(n, rng);
  Vec y(n), mask(n), y2(n), mask2(n);
  dropout_forward(y.data(), mask.data(), x.data(), n, p, 42);
  dropout_forward(y2.data(), mask2.data(), x.data(), n, p, 42);
  DFL_EXPECT(std::memcmp(mask.data(), mask2.data(), n * sizeof(float)) == 0, "same seed, same mask");
  size_t zeros = 0;
  const float keep = 1.f / (1.f - p);
  for (size_t i = 0; i < n; ++i) {
    // The documented rule, element by element: every backend draws exactly this mask.
    const bool dropped = counter_uniform(42, i) < p;
    DFL_EXPECT(mask[i] == (dropped ? 0.f : keep), "mask[" << i << "] = " << mask[i] << " breaks the counter rule");
    zeros += dropped;
    DFL_EXPECT(y[i] == x[i] * mask[i], "out = inp * mask at " << i);
  }
  // Binomial std of the rate is sqrt(p(1-p)/n) ~ 0.001; allow 0.006 (6 sigma).
  const double rate = double(zeros) / n;
  DFL_EXPECT(std::fabs(rate - p) < 0.006, "drop rate " << rate);
  // Another seed, another mask.
  dropout_forward(y2.data(), mask2.data(), x.data(), n, p, 43);
  DFL_EXPECT(std::memcmp(mask.data(), mask2.data(), n * sizeof(float)) != 0, "seed 43 gave seed 42's mask");
  DFL_EXPECT_THREAD_DETERMINISTIC("dropout", [&] {
    Vec yy(n), mm(n);
    dropout_forward(yy.data(), mm.data(), x.data(), n, p, 7);
    append(yy, mm);
    return yy;
  });
  // p = 0 keeps everything, p = 1 drops everything.
  Vec m0(8), y0(8);
  dropout_forward(y0.data(), m0.data(), x.data(), 8, 0.f, 1);
  for (float v : m0) DFL_EXPECT(v == 1.f, "p=0 mask " << v);
  dropout_forward(y0.data(), m0.data(), x.data(), 8, 1.f, 1);
  for (float v : m0) DFL_EXPECT(v == 0.f, "p=1 mask " << v);
}

DFL_CPU_TEST(dropout_p_outside_unit_interval_throws) {
  Vec x(8, 1.f), m0(8), y0(8);
  DFL_EXPECT_THROWS(cpu::dropout_forward(y0.data(), m0.data(), x.data(), 8, -0.1f, 1), "p < 0");
  DFL_EXPECT_THROWS(cpu::dropout_forward(y0.data(), m0.data(), x.data(), 8, 1.5f, 1), "p > 1");
}

DFL_TEST(dropout_backward_gradcheck_fixed_mask) {
  Rng rng(15);
  const size_t n = 3 * 5 * 7 * 5;
  Vec x = randn(n, rng), r = randn(n, rng), y(n), mask(n), dx(n);
  // The same seed keeps the mask fixed across finite-difference evaluations.
  auto loss = [&] {
    dropout_forward(y.data(), mask.data(), x.data(), n, 0.4f, 77);
    return dot(y.data(), r.data(), n);
  };
  loss();
  EXPECT_ACCUMULATES("dropout", (std::vector<Vec*>{&dx}),
                     [&] { dropout_backward(dx.data(), r.data(), mask.data(), n); });
  DFL_GRADCHECK("dropout dinp", x, dx, loss, kH, 1e-4, 1e-4);
}

// ------------------------------------------------------------------------------------------------
// Augmentation

// Independent reference: replays the documented draw order on a twin rng.
static Vec augment_reference(const std::vector<uint8_t>& img, int B, int C, int H, int W, int pad, bool flip,
                             const float* mean, const float* stdv, Rng& rng) {
  Vec out(img.size());
  for (int b = 0; b < B; ++b) {
    int dy = pad, dx = pad, f = 0;
    if (pad > 0) {
      dy = int(rng.below(2 * pad + 1));
      dx = int(rng.below(2 * pad + 1));
    }
    if (flip) f = int(rng.below(2));
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const int cx = f ? W - 1 - x : x;                 // flip the crop
          const int sy = y + dy - pad, sx = cx + dx - pad;  // crop of the zero-padded image
          const int v = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? img[((size_t(b) * C + c) * H + sy) * W + sx] : 0;
          out[((size_t(b) * C + c) * H + y) * W + x] = (float(v) / 255.f - mean[c]) / stdv[c];
        }
  }
  return out;
}

DFL_TEST(augment_matches_reference_and_is_reproducible) {
  const int B = 6, C = 3, H = 7, W = 5, pad = 2;
  Rng irng(16);
  std::vector<uint8_t> img(size_t(B) * C * H * W);
  for (auto& v : img) v = uint8_t(irng.below(256));
  const float mean[3] = {0.49f, 0.48f, 0.45f}, stdv[3] = {0.25f, 0.24f, 0.26f};
  for (int mode = 0; mode < 4; ++mode) {
    const int pd = (mode & 1) ? pad : 0;
    const bool fl = (mode & 2) != 0;
    Vec out(img.size());
    Rng a(123), twin(123);
    augment_batch(out.data(), img.data(), B, C, H, W, pd, fl, mean, stdv, a);
    const Vec ref = augment_reference(img, B, C, H, W, pd, fl, mean, stdv, twin);
    DFL_EXPECT_CLOSE(out.data(), ref.data(), out.size(), 0.0, 0.0,
                     "augment vs reference, mode " + std::to_string(mode));
    DFL_EXPECT(a.state() == twin.state(), "augment consumed a different number of draws, mode " << mode);
  }
  // pad = 0, flip = false is plain normalisation.
  Vec o1(img.size()), o2(img.size());
  Rng a(5);
  augment_batch(o1.data(), img.data(), B, C, H, W, 0, false, mean, stdv, a);
  normalize_batch(o2.data(), img.data(), B, C, H, W, mean, stdv);
  DFL_EXPECT_CLOSE(o1.data(), o2.data(), o1.size(), 0.0, 0.0, "no-op augment == normalize");
  // Same seed, same batch, for any thread count (a batch big enough to be split across threads).
  std::vector<uint8_t> big(size_t(8) * C * 32 * 32);
  for (auto& v : big) v = uint8_t(irng.below(256));
  DFL_EXPECT_THREAD_DETERMINISTIC("augment", [&] {
    Rng r(99);
    Vec o(big.size());
    augment_batch(o.data(), big.data(), 8, C, 32, 32, 4, true, mean, stdv, r);
    return o;
  });
}

DFL_TEST(augment_hand_examples_crop_flip_padfill) {
  // One 2x3 single-channel image; mean 0.5, std 0.25, so the pad fill is (0 - 0.5)/0.25 = -2.
  const std::vector<uint8_t> img = {10, 20, 30, 40, 50, 60};
  const float mean = 0.5f, stdv = 0.25f;
  auto nrm = [&](int v) { return (float(v) / 255.f - mean) / stdv; };
  DFL_EXPECT(nrm(0) == -2.f, "pad fill");
  // Zero-padded by 1 (4x5):      0  0  0  0  0
  //                              0 10 20 30  0
  //                              0 40 50 60  0
  //                              0  0  0  0  0
  struct Case {
    int dy, dx, f;
    std::vector<int> want;  // expected pixel values before normalisation
  };
  const std::vector<Case> cases = {
      {0, 2, 1, {0, 0, 0, 0, 30, 20}},      // rows 0-1, cols 2-4 = [0 0 0; 20 30 0], mirrored
      {2, 0, 0, {0, 40, 50, 0, 0, 0}},      // rows 2-3, cols 0-2
      {1, 1, 1, {30, 20, 10, 60, 50, 40}},  // centred crop, mirrored
      {1, 1, 0, {10, 20, 30, 40, 50, 60}},  // identity
  };
  for (const Case& cs : cases) {
    // Find a seed whose first draws (dy, dx, flip in the documented order) give this case.
    uint64_t seed = 0;
    for (;; ++seed) {
      Rng probe(seed);
      const int dy = int(probe.below(3)), dx = int(probe.below(3)), f = int(probe.below(2));
      if (dy == cs.dy && dx == cs.dx && f == cs.f) break;
    }
    Rng rng(seed);
    Vec out(6);
    augment_batch(out.data(), img.data(), 1, 1, 2, 3, 1, true, &mean, &stdv, rng);
    Vec want(6);
    for (int i = 0; i < 6; ++i) want[i] = nrm(cs.want[i]);
    DFL_EXPECT_CLOSE(
        out.data(), want.data(), 6, 0.0, 0.0,
        "crop dy=" + std::to_string(cs.dy) + " dx=" + std::to_string(cs.dx) + " f=" + std::to_string(cs.f));
  }
}

DFL_TEST(normalize_batch_values_and_errors) {
  const std::vector<uint8_t> img = {0, 51, 255, 128, 7, 200};  // B=1, C=2, H=1, W=3
  const float mean[2] = {0.5f, 0.1f}, stdv[2] = {0.5f, 2.f};
  Vec out(6);
  normalize_batch(out.data(), img.data(), 1, 2, 1, 3, mean, stdv);
  for (int i = 0; i < 6; ++i) {
    const int c = i / 3;
    const double want = (img[i] / 255.0 - mean[c]) / stdv[c];
    DFL_EXPECT(std::fabs(out[i] - want) < 1e-6, "normalize " << i << ": " << out[i] << " want " << want);
  }
  DFL_EXPECT(out[0] == -1.f && out[2] == 1.f, "0 -> -1 and 255 -> 1 for mean 0.5, std 0.5");
  const float zero_std[2] = {0.5f, 0.f};
  Rng rng(1);
  if (on_cpu()) DFL_EXPECT_THROWS(normalize_batch(out.data(), img.data(), 1, 2, 1, 3, mean, zero_std), "std 0");
  if (on_cpu())
    DFL_EXPECT_THROWS(augment_batch(out.data(), img.data(), 1, 2, 1, 3, 1, true, mean, zero_std, rng), "std 0");
  if (on_cpu())
    DFL_EXPECT_THROWS(augment_batch(out.data(), img.data(), 1, 2, 1, 3, -1, true, mean, stdv, rng), "pad < 0");
}
