// What docs/native.md ("Numerics") states of every backend's kernels against the CPU reference
// kernels on the same inputs: the same bits where the arithmetic is the same, else the tolerances
// of numerics.h. On the CPU backend both sides are the same code; on the GPU this is the check of
// the statement (test_cuda_bodies.cpp checks the same bodies on the host). Convolutions and GEMMs
// (cuDNN, cuBLAS: their own summation orders) are held to their own tolerances elsewhere
// (test_conv_linear.cpp, test_fixtures.cpp).
// Also: a convolution shape the backend refuses is named in the error (cuDNN's words on the GPU).
#include <cmath>
#include <string>
#include <vector>

#include "backend_ops.h"
#include "cpu/kernels.h"
#include "harness.h"
#include "numerics.h"

using namespace dfl;
using dfl::test::backend;
using dfl::test::randn;
using dfl::test::randu;
namespace ops = dfl::test::ops;
namespace tol = dfl::test::numerics;

namespace {

using Vec = std::vector<float>;

#define EXPECT_BITS(got, want, what) DFL_EXPECT_CLOSE((got).data(), (want).data(), (want).size(), 0.0, 0.0, (what))
#define EXPECT_WITHIN(got, want, t, what) DFL_EXPECT_CLOSE((got).data(), (want).data(), (want).size(), (t), (t), (what))

}  // namespace

// Elementwise, pooling, plumbing, dropout, SGD, augmentation, BN eval and folding, the losses'
// backward passes: bitwise. Losses' forward and the teachers' confidence (exp, log): kReordered.
// BN training: statistics kReordered, outputs and gradients kBatchNorm. Reductions: integers
// exact, the sum of squares kSumOfSquares.
DFL_TEST(backend_kernels_give_the_cpu_bits_or_the_stated_tolerance) {
  Rng rng(28);
  const size_t n = 4099;  // not a multiple of any block
  const Vec x = randn(n, rng, 4.f), y = randn(n, rng), dy = randn(n, rng), acc0 = randn(n, rng);
  for (bool six : {false, true}) {
    Vec got(n), want(n);
    (six ? ops::relu6_forward : ops::relu_forward)(got.data(), x.data(), n);
    (six ? cpu::relu6_forward : cpu::relu_forward)(want.data(), x.data(), n);
    EXPECT_BITS(got, want, six ? "relu6 forward" : "relu forward");
    Vec dg = acc0, dw = acc0;
    (six ? ops::relu6_backward : ops::relu_backward)(dg.data(), dy.data(), x.data(), n);
    (six ? cpu::relu6_backward : cpu::relu_backward)(dw.data(), dy.data(), x.data(), n);
    EXPECT_BITS(dg, dw, six ? "relu6 backward" : "relu backward");
  }
  {
    Vec got(n), want(n), a = acc0, aw = acc0, b = y, bw = y;
    ops::add_forward(got.data(), x.data(), y.data(), n);
    cpu::add_forward(want.data(), x.data(), y.data(), n);
    EXPECT_BITS(got, want, "add forward");
    ops::add_backward(a.data(), b.data(), dy.data(), n);
    cpu::add_backward(aw.data(), bw.data(), dy.data(), n);
    EXPECT_BITS(a, aw, "add backward (a)");
    EXPECT_BITS(b, bw, "add backward (b)");
    ops::accumulate(a.data(), x.data(), n);
    cpu::accumulate(aw.data(), x.data(), n);
    ops::add_scalar(a.data(), 0.37f, n);
    cpu::add_scalar(aw.data(), 0.37f, n);
    EXPECT_BITS(a, aw, "accumulate, add_scalar");
  }
  for (float p : {0.f, 0.3f}) {
    Vec o(n), m(n), ow(n), mw(n), d = acc0, dw = acc0;
    ops::dropout_forward(o.data(), m.data(), x.data(), n, p, 91);
    cpu::dropout_forward(ow.data(), mw.data(), x.data(), n, p, 91);
    EXPECT_BITS(m, mw, "dropout mask");
    EXPECT_BITS(o, ow, "dropout forward");
    ops::dropout_backward(d.data(), dy.data(), m.data(), n);
    cpu::dropout_backward(dw.data(), dy.data(), mw.data(), n);
    EXPECT_BITS(d, dw, "dropout backward");
  }
  for (bool nesterov : {false, true})
    for (bool decoupled : {false, true}) {
      const SgdConfig cfg{0.05f, 0.9f, 5e-4f, nesterov, decoupled};
      const Vec mask = randu(n, rng, 0.f, 1.f);
      Vec p = x, m = y, pw = x, mw = y;
      for (int step = 0; step < 3; ++step) {
        ops::sgd_step(p.data(), m.data(), dy.data(), mask.data(), n, cfg);
        cpu::sgd_step(pw.data(), mw.data(), dy.data(), mask.data(), n, cfg);
      }
      EXPECT_BITS(p, pw, "sgd params after 3 steps");
      EXPECT_BITS(m, mw, "sgd momentum after 3 steps");
    }

  // Pooling and channel plumbing.
  for (const Pool2dShape& s : {Pool2dShape{2, 3, 8, 8, 2, 2, 2, 2, 0, 0}, Pool2dShape{2, 3, 9, 7, 3, 3, 2, 2, 1, 1}}) {
    const size_t nin = size_t(s.B) * s.C * s.H * s.W, nout = size_t(s.B) * s.C * s.OH() * s.OW();
    const Vec in = randn(nin, rng), g = randn(nout, rng), d0 = randn(nin, rng);
    Vec o(nout), ow(nout), d = d0, dw = d0;
    std::vector<int32_t> am(nout), amw(nout);
    ops::maxpool2d_forward(o.data(), am.data(), in.data(), s);
    cpu::maxpool2d_forward(ow.data(), amw.data(), in.data(), s);
    EXPECT_BITS(o, ow, "maxpool forward");
    DFL_EXPECT(am == amw, "maxpool argmax");
    ops::maxpool2d_backward(d.data(), g.data(), am.data(), s);
    cpu::maxpool2d_backward(dw.data(), g.data(), amw.data(), s);
    EXPECT_BITS(d, dw, "maxpool backward");
    ops::avgpool2d_forward(o.data(), in.data(), s);
    cpu::avgpool2d_forward(ow.data(), in.data(), s);
    EXPECT_BITS(o, ow, "avgpool forward");
    d = d0, dw = d0;
    ops::avgpool2d_backward(d.data(), g.data(), s);
    cpu::avgpool2d_backward(dw.data(), g.data(), s);
    EXPECT_BITS(d, dw, "avgpool backward");
  }
  {
    const int B = 3, C = 6, HW = 37, groups = 3;
    const Vec in = randn(size_t(B) * C * HW, rng), d0 = randn(in.size(), rng), g = randn(size_t(B) * C, rng);
    Vec o(size_t(B) * C), ow(o.size()), d = d0, dw = d0;
    ops::global_avgpool_forward(o.data(), in.data(), B, C, HW);
    cpu::global_avgpool_forward(ow.data(), in.data(), B, C, HW);
    EXPECT_BITS(o, ow, "global avgpool forward");
    ops::global_avgpool_backward(d.data(), g.data(), B, C, HW);
    cpu::global_avgpool_backward(dw.data(), g.data(), B, C, HW);
    EXPECT_BITS(d, dw, "global avgpool backward");
    Vec sh(in.size()), shw(in.size());
    ops::channel_shuffle_forward(sh.data(), in.data(), B, C, HW, groups);
    cpu::channel_shuffle_forward(shw.data(), in.data(), B, C, HW, groups);
    EXPECT_BITS(sh, shw, "channel shuffle forward");
    d = d0, dw = d0;
    ops::channel_shuffle_backward(d.data(), sh.data(), B, C, HW, groups);
    cpu::channel_shuffle_backward(dw.data(), sh.data(), B, C, HW, groups);
    EXPECT_BITS(d, dw, "channel shuffle backward");
    const int channels[] = {2, 4};
    Vec c0 = randn(size_t(B) * 2 * HW, rng), c1 = randn(size_t(B) * 4 * HW, rng), cat(in.size()), catw(in.size());
    const float* parts[] = {c0.data(), c1.data()};
    ops::concat_channels_forward(cat.data(), parts, channels, 2, B, HW);
    cpu::concat_channels_forward(catw.data(), parts, channels, 2, B, HW);
    EXPECT_BITS(cat, catw, "concat forward");
    Vec s0 = c0, s1 = c1, s0w = c0, s1w = c1;
    float* douts[] = {s0.data(), s1.data()};
    float* douts_w[] = {s0w.data(), s1w.data()};
    ops::concat_channels_backward(douts, d0.data(), channels, 2, B, HW);
    cpu::concat_channels_backward(douts_w, d0.data(), channels, 2, B, HW);
    EXPECT_BITS(s0, s0w, "concat backward (chunk 0)");
    EXPECT_BITS(s1, s1w, "concat backward (chunk 1)");
  }

  // Augmentation and normalisation of uint8 images (the draws are the host's).
  {
    const int B = 5, C = 3, H = 9, W = 7, pad = 2;
    std::vector<uint8_t> img(size_t(B) * C * H * W);
    for (auto& v : img) v = uint8_t(rng.below(256));
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, stdv[3] = {0.247f, 0.2435f, 0.2616f};
    Vec o(img.size()), ow(img.size());
    Rng a(5), b(5);
    ops::augment_batch(o.data(), img.data(), B, C, H, W, pad, true, mean, stdv, a);
    cpu::augment_batch(ow.data(), img.data(), B, C, H, W, pad, true, mean, stdv, b);
    EXPECT_BITS(o, ow, "augment batch");
    ops::normalize_batch(o.data(), img.data(), B, C, H, W, mean, stdv);
    cpu::normalize_batch(ow.data(), img.data(), B, C, H, W, mean, stdv);
    EXPECT_BITS(o, ow, "normalize batch");
  }

  // Batch norm: training (reordered sums), evaluation and folding (bitwise).
  {
    const int B = 4, C = 5, HW = 49;
    const size_t nb = size_t(B) * C * HW;
    Vec in = randn(nb, rng, 2.f);
    for (float& v : in) v += 3.f;  // a mean far from 0
    const Vec gamma = randu(C, rng, 0.5f, 1.5f), beta = randn(C, rng), g = randn(nb, rng), d0 = randn(nb, rng);
    const Vec rm0 = randn(C, rng), rv0 = randu(C, rng, 0.5f, 2.f), dg0 = randn(C, rng), db0 = randn(C, rng);
    Vec o(nb), sm(C), si(C), rm = rm0, rv = rv0, ow(nb), smw(C), siw(C), rmw = rm0, rvw = rv0;
    ops::batchnorm2d_forward_train(o.data(), sm.data(), si.data(), rm.data(), rv.data(), in.data(), gamma.data(),
                                   beta.data(), B, C, HW, 0.1f, 1e-5f);
    cpu::batchnorm2d_forward_train(ow.data(), smw.data(), siw.data(), rmw.data(), rvw.data(), in.data(), gamma.data(),
                                   beta.data(), B, C, HW, 0.1f, 1e-5f);
    EXPECT_WITHIN(sm, smw, tol::kReordered, "bn save_mean");
    EXPECT_WITHIN(si, siw, tol::kReordered, "bn save_invstd");
    EXPECT_WITHIN(rm, rmw, tol::kReordered, "bn running_mean");
    EXPECT_WITHIN(rv, rvw, tol::kReordered, "bn running_var");
    EXPECT_WITHIN(o, ow, tol::kBatchNorm, "bn train forward");
    Vec d = d0, dg = dg0, db = db0, dw = d0, dgw = dg0, dbw = db0;
    ops::batchnorm2d_backward(d.data(), dg.data(), db.data(), g.data(), in.data(), gamma.data(), smw.data(), siw.data(),
                              B, C, HW);
    cpu::batchnorm2d_backward(dw.data(), dgw.data(), dbw.data(), g.data(), in.data(), gamma.data(), smw.data(),
                              siw.data(), B, C, HW);
    EXPECT_WITHIN(d, dw, tol::kBatchNorm, "bn backward dinp");
    EXPECT_WITHIN(dg, dgw, tol::kBatchNorm, "bn backward dgamma");
    EXPECT_WITHIN(db, dbw, tol::kBatchNorm, "bn backward dbeta");
    ops::batchnorm2d_forward_eval(o.data(), in.data(), gamma.data(), beta.data(), rm0.data(), rv0.data(), B, C, HW,
                                  1e-5f);
    cpu::batchnorm2d_forward_eval(ow.data(), in.data(), gamma.data(), beta.data(), rm0.data(), rv0.data(), B, C, HW,
                                  1e-5f);
    EXPECT_BITS(o, ow, "bn eval");
    const size_t per_oc = 27;
    const Vec w = randn(size_t(C) * per_oc, rng), bias = randn(C, rng);
    Vec wo(w.size()), bo(C), wow(w.size()), bow(C);
    ops::fold_batchnorm(wo.data(), bo.data(), w.data(), bias.data(), gamma.data(), beta.data(), rm0.data(), rv0.data(),
                        C, per_oc, 1e-5f);
    cpu::fold_batchnorm(wow.data(), bow.data(), w.data(), bias.data(), gamma.data(), beta.data(), rm0.data(),
                        rv0.data(), C, per_oc, 1e-5f);
    EXPECT_BITS(wo, wow, "fold weights");
    EXPECT_BITS(bo, bow, "fold biases");
  }

  // Losses: forward through exp and log (kReordered), backward bitwise on the same probabilities.
  {
    const int B = 9, NC = 10, K = 3;
    const float T = 4.f;
    const Vec z = randn(size_t(B) * NC, rng, 3.f), zt = randn(size_t(K) * B * NC, rng, 3.f), d0 = randn(z.size(), rng);
    std::vector<int32_t> t(B);
    for (int b = 0; b < B; ++b) t[b] = int32_t(rng.below(NC));
    for (float eps : {0.f, 0.1f}) {
      Vec l(B), p(z.size()), lw(B), pw(z.size());
      const float mean = ops::cross_entropy_forward(l.data(), p.data(), z.data(), t.data(), B, NC, eps);
      const float mean_w = cpu::cross_entropy_forward(lw.data(), pw.data(), z.data(), t.data(), B, NC, eps);
      EXPECT_WITHIN(l, lw, tol::kReordered, "cross-entropy losses");
      EXPECT_WITHIN(p, pw, tol::kReordered, "cross-entropy probs");
      DFL_EXPECT(std::fabs(mean - mean_w) <= tol::kReordered * (1.0 + std::fabs(mean_w)),
                 "cross-entropy mean " << mean << " vs " << mean_w);
      Vec d = d0, dw = d0;
      ops::cross_entropy_backward(d.data(), pw.data(), t.data(), B, NC, eps, 0.25f);
      cpu::cross_entropy_backward(dw.data(), pw.data(), t.data(), B, NC, eps, 0.25f);
      EXPECT_BITS(d, dw, "cross-entropy backward");
    }
    Vec conf(size_t(K) * B), conf_w(conf.size());
    ops::teacher_confidence(conf.data(), zt.data(), K, B, NC, T);
    cpu::teacher_confidence(conf_w.data(), zt.data(), K, B, NC, T);
    EXPECT_WITHIN(conf, conf_w, tol::kReordered, "teacher confidence");
    Vec l(B), q(z.size()), pt(z.size()), lw(B), qw(z.size()), ptw(z.size());
    ops::ensemble_kl_forward(l.data(), q.data(), pt.data(), z.data(), zt.data(), conf_w.data(), K, B, NC, T);
    cpu::ensemble_kl_forward(lw.data(), qw.data(), ptw.data(), z.data(), zt.data(), conf_w.data(), K, B, NC, T);
    EXPECT_WITHIN(l, lw, tol::kReordered, "ensemble KL losses");
    EXPECT_WITHIN(q, qw, tol::kReordered, "ensemble KL student probs");
    EXPECT_WITHIN(pt, ptw, tol::kReordered, "ensemble KL teacher mixture");
    Vec d = d0, dw = d0;
    ops::ensemble_kl_backward(d.data(), qw.data(), ptw.data(), B, NC, T, 0.5f);
    cpu::ensemble_kl_backward(dw.data(), qw.data(), ptw.data(), B, NC, T, 0.5f);
    EXPECT_BITS(d, dw, "ensemble KL backward");
  }

  // Reductions.
  {
    const Vec big = randn(100003, rng);
    const double sq = ops::sum_squares(big.data(), big.size()), sq_w = cpu::sum_squares(big.data(), big.size());
    DFL_EXPECT(std::fabs(sq - sq_w) <= tol::kSumOfSquares * sq_w, "sum of squares " << sq << " vs " << sq_w);
    Vec bad = big;
    bad[77777] = std::nanf("");
    DFL_EXPECT(ops::all_finite(big.data(), big.size()) && !ops::all_finite(bad.data(), bad.size()), "all_finite");
    const int B = 301, NC = 10;
    const Vec logits = randn(size_t(B) * NC, rng);
    std::vector<int32_t> labels(B);
    for (int b = 0; b < B; ++b) labels[b] = int32_t(rng.below(NC));
    DFL_EXPECT(ops::count_correct(logits.data(), labels.data(), B, NC) ==
                   cpu::count_correct(logits.data(), labels.data(), B, NC),
               "count_correct");
  }
}

// A shape the backend cannot run is refused with a message, and the backend stays usable. On the
// GPU the message is cuDNN's (status, its last error string) and names the convolution.
DFL_TEST(bad_conv_shapes_are_refused_naming_the_shape) {
  const Conv2dShape bad{2, 3, 8, 8, 4, 3, 3, 1, 1, -1, -1, 1};
  std::string message;
  try {
    backend().conv2d_workspace_bytes(bad);
  } catch (const std::exception& e) {
    message = e.what();
  }
  DFL_EXPECT(!message.empty(), "a padding of -1 was accepted");
  if (backend().name().find("cuda") != std::string::npos) {
    DFL_EXPECT(message.find("CUDNN_STATUS_") != std::string::npos, "no cuDNN status in: " << message);
    DFL_EXPECT(
        message.find("conv N=2 C=3 H=8 W=8 K=4 R=3 S=3 stride 1x1 pad -1x-1 groups 1 float32") != std::string::npos,
        "the shape is not named in: " << message);
  }
  const Conv2dShape good{2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1};
  Rng rng(3);
  const Vec x = randn(size_t(2) * 3 * 64, rng), w = randn(size_t(4) * 3 * 9, rng);
  Vec out(size_t(2) * 4 * 64), want(out.size());
  ops::conv2d_forward(out.data(), x.data(), w.data(), nullptr, good, nullptr);
  std::vector<float> ws(cpu::conv2d_workspace_floats(good));
  cpu::conv2d_forward(want.data(), x.data(), w.data(), nullptr, good, ws.data());
  EXPECT_WITHIN(out, want, 1e-5, "a convolution after the refusal");
}
