// The CUDA kernel bodies (native/cuda/bodies/) run on the host over their whole index space, with
// the device's reduction order (emulate.h), against the CPU reference kernels. Most GPU bugs are
// index bugs; these catch them with no GPU. Shapes are odd on purpose (not multiples of a block),
// and reductions run with 32 and 256 emulated threads.
// Exact (bitwise) where the body does the same float operations in the same order as the CPU
// kernel; otherwise the tolerances of numerics.h (double sums taken in another order, rounded once).
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/augment_draws.h"
#include "cpu/kernels.h"
#include "cuda/bodies/augment.h"
#include "cuda/bodies/batchnorm.h"
#include "cuda/bodies/cast.h"
#include "cuda/bodies/elementwise.h"
#include "cuda/bodies/loss.h"
#include "cuda/bodies/optim.h"
#include "cuda/bodies/pool.h"
#include "cuda/bodies/reduce.h"
#include "emulate.h"
#include "harness.h"
#include "numerics.h"

using namespace dfl;
using namespace dfl::cuda_bodies;
using dfl::test::randn;
using dfl::test::randu;
using dfl::test::run_elementwise;
using dfl::test::run_rows;

namespace {

using Vec = std::vector<float>;

#define EXPECT_SAME(got, want, what) DFL_EXPECT_CLOSE((got).data(), (want).data(), (want).size(), 0.0, 0.0, (what))
#define EXPECT_NEAR(got, want, what)                                                            \
  DFL_EXPECT_CLOSE((got).data(), (want).data(), (want).size(), dfl::test::numerics::kReordered, \
                   dfl::test::numerics::kReordered, (what))
constexpr double kBn = dfl::test::numerics::kBatchNorm;

const int kThreadCounts[] = {32, 256};

}  // namespace

DFL_CPU_TEST(cuda_bodies_activations_add_accumulate) {
  Rng rng(1);
  const size_t n = 1031;
  Vec x = randn(n, rng, 4.f), dy = randn(n, rng), b = randn(n, rng);
  x[3] = 0.f;
  x[5] = 6.f;
  x[7] = -0.f;
  for (bool six : {false, true}) {
    Vec got(n), want(n);
    run_elementwise(ReluForward{got.data(), x.data(), n, six});
    (six ? cpu::relu6_forward : cpu::relu_forward)(want.data(), x.data(), n);
    EXPECT_SAME(got, want, six ? "relu6 forward" : "relu forward");
    Vec dg = randn(n, rng), dw = dg;
    run_elementwise(ReluBackward{dg.data(), dy.data(), x.data(), n, six});
    (six ? cpu::relu6_backward : cpu::relu_backward)(dw.data(), dy.data(), x.data(), n);
    EXPECT_SAME(dg, dw, six ? "relu6 backward" : "relu backward");
  }
  Vec got(n), want(n);
  run_elementwise(AddForward{got.data(), x.data(), b.data(), n});
  cpu::add_forward(want.data(), x.data(), b.data(), n);
  EXPECT_SAME(got, want, "add forward");
  // The fused forms: act(a + b), and the in-place mask of a fused activation's gradient (y = the
  // activation's output, with its 0s and 6s and a NaN).
  Vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = cuda_bodies::relu6(x[i]);
  y[9] = std::numeric_limits<float>::quiet_NaN();
  for (Activation act : {Activation::Relu, Activation::Relu6}) {
    Vec sum(n), sum_want(n);
    run_elementwise(AddForward{sum.data(), x.data(), b.data(), n, act});
    cpu::add_forward(sum_want.data(), x.data(), b.data(), n);
    (act == Activation::Relu ? cpu::relu_forward : cpu::relu6_forward)(sum_want.data(), sum_want.data(), n);
    EXPECT_SAME(sum, sum_want, "add + activation");
    Vec masked = dy, masked_want = dy;
    run_elementwise(ActivationMask{masked.data(), y.data(), n, act});
    cpu::activation_backward_inplace(masked_want.data(), y.data(), n, act);
    EXPECT_SAME(masked, masked_want, "activation mask in place");
  }
  Vec acc = b, acc_want = b;
  run_elementwise(Accumulate{acc.data(), dy.data(), n});
  cpu::accumulate(acc_want.data(), dy.data(), n);
  EXPECT_SAME(acc, acc_want, "accumulate");
  run_elementwise(AddScalar{acc.data(), 1.5f, n});
  cpu::add_scalar(acc_want.data(), 1.5f, n);
  EXPECT_SAME(acc, acc_want, "add_scalar");
}

DFL_CPU_TEST(cuda_bodies_bias_activation_matches_reference_layers) {
  Rng rng(2);
  const int B = 3, OC = 5;
  const size_t P = 7;
  Vec y = randn(size_t(B) * OC * P, rng), bias = randn(OC, rng);
  for (Activation act : {Activation::None, Activation::Relu, Activation::Relu6}) {
    Vec got = y, want(y.size());
    run_elementwise(BiasActivation{got.data(), bias.data(), got.size(), OC, P, act});
    for (size_t i = 0; i < y.size(); ++i) {
      const float v = y[i] + bias[(i / P) % OC];
      want[i] = act == Activation::Relu    ? (v <= 0.f ? 0.f : v)
                : act == Activation::Relu6 ? (v <= 0.f   ? 0.f
                                              : v >= 6.f ? 6.f
                                                         : v)
                                           : v;
    }
    EXPECT_SAME(got, want, "bias + activation");
  }
}

DFL_CPU_TEST(cuda_bodies_dropout_masks_are_the_cpu_masks) {
  Rng rng(3);
  const size_t n = 2053;
  Vec x = randn(n, rng), dy = randn(n, rng);
  for (float p : {0.f, 0.3f, 1.f}) {
    Vec y(n), m(n), yw(n), mw(n);
    run_elementwise(DropoutForward{y.data(), m.data(), x.data(), n, p, p < 1.f ? 1.f / (1.f - p) : 0.f, 77});
    cpu::dropout_forward(yw.data(), mw.data(), x.data(), n, p, 77);
    EXPECT_SAME(m, mw, "dropout mask");
    EXPECT_SAME(y, yw, "dropout forward");
    Vec dx = randn(n, rng), dxw = dx;
    run_elementwise(DropoutBackward{dx.data(), dy.data(), m.data(), n});
    cpu::dropout_backward(dxw.data(), dy.data(), mw.data(), n);
    EXPECT_SAME(dx, dxw, "dropout backward");
  }
}

DFL_CPU_TEST(cuda_bodies_channel_plumbing) {
  Rng rng(4);
  const int B = 3, HW = 5;
  const int channels[] = {2, 3, 4};
  const int total = 9;
  Vec big = randn(size_t(B) * total * HW, rng);
  // Concat backward and split backward as one strided accumulate per chunk (cuda_backend.cu).
  std::vector<Vec> chunks, chunks_want;
  for (int c : channels) chunks.push_back(randn(size_t(B) * c * HW, rng));
  chunks_want = chunks;
  size_t off = 0;
  for (int k = 0; k < 3; ++k) {
    const size_t len = size_t(channels[k]) * HW;
    run_elementwise(StridedAccumulate{chunks[k].data(), big.data() + off, size_t(B), len, len, size_t(total) * HW});
    off += len;
  }
  float* dins[] = {chunks_want[0].data(), chunks_want[1].data(), chunks_want[2].data()};
  cpu::concat_channels_backward(dins, big.data(), channels, 3, B, HW);
  for (int k = 0; k < 3; ++k) EXPECT_SAME(chunks[k], chunks_want[k], "concat backward chunk");

  Vec dbig = randn(big.size(), rng), dbig_want = dbig;
  off = 0;
  for (int k = 0; k < 3; ++k) {
    const size_t len = size_t(channels[k]) * HW;
    run_elementwise(StridedAccumulate{dbig.data() + off, chunks[k].data(), size_t(B), len, size_t(total) * HW, len});
    off += len;
  }
  const float* douts[] = {chunks[0].data(), chunks[1].data(), chunks[2].data()};
  cpu::split_channels_backward(dbig_want.data(), douts, channels, 3, B, HW);
  EXPECT_SAME(dbig, dbig_want, "split backward");

  for (int groups : {1, 3, 9}) {
    Vec y(big.size()), yw(big.size());
    run_elementwise(ChannelShuffle{y.data(), big.data(), big.size(), total, HW, groups, false});
    cpu::channel_shuffle_forward(yw.data(), big.data(), B, total, HW, groups);
    EXPECT_SAME(y, yw, "channel shuffle forward");
    Vec dx = randn(big.size(), rng), dxw = dx;
    run_elementwise(ChannelShuffle{dx.data(), y.data(), big.size(), total, HW, groups, true});
    cpu::channel_shuffle_backward(dxw.data(), y.data(), B, total, HW, groups);
    EXPECT_SAME(dx, dxw, "channel shuffle backward");
  }
}

DFL_CPU_TEST(cuda_bodies_pooling_matches_the_cpu_exactly) {
  Rng rng(5);
  const Pool2dShape shapes[] = {
      {2, 3, 8, 8, 2, 2, 2, 2, 0, 0},  // the VGG pool
      {2, 3, 7, 9, 3, 3, 1, 1, 1, 1},  // overlapping windows
      {1, 2, 9, 7, 3, 3, 2, 2, 1, 1},  // ResNet stem pool
      {2, 2, 5, 6, 3, 2, 2, 1, 0, 1},
  };
  for (const Pool2dShape& s : shapes) {
    const size_t nin = size_t(s.B) * s.C * s.H * s.W, nout = size_t(s.B) * s.C * s.OH() * s.OW();
    Vec x = randn(nin, rng);
    x[4] = x[5];  // a tie: the first max wins
    Vec dy = randn(nout, rng);
    Vec y(nout), yw(nout);
    std::vector<int32_t> am(nout), amw(nout);
    run_elementwise(MaxPoolForward{y.data(), am.data(), x.data(), s});
    cpu::maxpool2d_forward(yw.data(), amw.data(), x.data(), s);
    EXPECT_SAME(y, yw, "maxpool forward");
    DFL_EXPECT(am == amw, "maxpool argmax");
    Vec dx = randn(nin, rng), dxw = dx;
    run_elementwise(MaxPoolBackward{dx.data(), dy.data(), am.data(), s});
    cpu::maxpool2d_backward(dxw.data(), dy.data(), amw.data(), s);
    EXPECT_SAME(dx, dxw, "maxpool backward");

    run_elementwise(AvgPoolForward{y.data(), x.data(), s});
    cpu::avgpool2d_forward(yw.data(), x.data(), s);
    EXPECT_SAME(y, yw, "avgpool forward");
    dx = randn(nin, rng);
    dxw = dx;
    run_elementwise(AvgPoolBackward{dx.data(), dy.data(), s});
    cpu::avgpool2d_backward(dxw.data(), dy.data(), s);
    EXPECT_SAME(dx, dxw, "avgpool backward");
  }
  const int B = 3, C = 5, HW = 17;
  Vec x = randn(size_t(B) * C * HW, rng), dy = randn(size_t(B) * C, rng);
  Vec y(size_t(B) * C), yw(size_t(B) * C);
  run_elementwise(GlobalAvgPoolForward{y.data(), x.data(), size_t(B) * C, HW});
  cpu::global_avgpool_forward(yw.data(), x.data(), B, C, HW);
  EXPECT_SAME(y, yw, "global avgpool forward");
  Vec dx = randn(x.size(), rng), dxw = dx;
  run_elementwise(GlobalAvgPoolBackward{dx.data(), dy.data(), size_t(B) * C, HW});
  cpu::global_avgpool_backward(dxw.data(), dy.data(), B, C, HW);
  EXPECT_SAME(dx, dxw, "global avgpool backward");
}

DFL_CPU_TEST(cuda_bodies_batchnorm) {
  Rng rng(6);
  const int B = 3, C = 5, HW = 37;
  const size_t n = size_t(B) * C * HW;
  Vec x = randn(n, rng, 2.f), gamma = randu(C, rng, 0.5f, 1.5f), beta = randn(C, rng), dy = randn(n, rng);
  for (float& v : x) v += 3.f;  // a mean far from 0
  for (int slices : {1, 3, 7}) {
    const int threads = slices == 3 ? 32 : 256;
    std::vector<Sum2> partials(size_t(C) * slices);
    std::vector<Scale> coef(C);
    Vec y(n), sm(C), si(C), rm = randn(C, rng), rv = randu(C, rng, 0.5f, 2.f);
    Vec yw(n), smw(C), siw(C), rmw = rm, rvw = rv;
    run_rows(BatchNormMoments{partials.data(), x.data(), B, C, HW, slices}, threads);
    run_rows(BatchNormTrainStats{coef.data(), sm.data(), si.data(), rm.data(), rv.data(), partials.data(), gamma.data(),
                                 beta.data(), B, C, HW, slices, 0.1f, 1e-5f},
             threads);
    run_elementwise(BatchNormApply{y.data(), x.data(), coef.data(), n, C, HW});
    cpu::batchnorm2d_forward_train(yw.data(), smw.data(), siw.data(), rmw.data(), rvw.data(), x.data(), gamma.data(),
                                   beta.data(), B, C, HW, 0.1f, 1e-5f);
    EXPECT_NEAR(sm, smw, "bn save_mean");
    EXPECT_NEAR(si, siw, "bn save_invstd");
    EXPECT_NEAR(rm, rmw, "bn running_mean");
    EXPECT_NEAR(rv, rvw, "bn running_var");
    DFL_EXPECT_CLOSE(y.data(), yw.data(), n, kBn, kBn, "bn train forward");
    // With the activation fused into the normalisation pass (statistics as above).
    for (Activation act : {Activation::Relu, Activation::Relu6}) {
      Vec ya(n), yaw(n), sm2(C), si2(C);
      run_elementwise(BatchNormApply{ya.data(), x.data(), coef.data(), n, C, HW, act});
      cpu::batchnorm2d_forward_train(yaw.data(), sm2.data(), si2.data(), nullptr, nullptr, x.data(), gamma.data(),
                                     beta.data(), B, C, HW, 0.1f, 1e-5f, act);
      DFL_EXPECT_CLOSE(ya.data(), yaw.data(), n, kBn, kBn, "bn train forward + activation");
    }

    std::vector<BatchNormGradCoef> gcoef(C);
    Vec dx = randn(n, rng), dg = randn(C, rng), db = randn(C, rng);
    Vec dxw = dx, dgw = dg, dbw = db;
    run_rows(BatchNormGradSums{partials.data(), dy.data(), x.data(), smw.data(), siw.data(), B, C, HW, slices},
             threads);
    run_rows(BatchNormGradTotals{gcoef.data(), dg.data(), db.data(), partials.data(), gamma.data(), smw.data(),
                                 siw.data(), B, C, HW, slices},
             threads);
    run_elementwise(BatchNormGradInput{dx.data(), dy.data(), x.data(), gcoef.data(), n, C, HW});
    cpu::batchnorm2d_backward(dxw.data(), dgw.data(), dbw.data(), dy.data(), x.data(), gamma.data(), smw.data(),
                              siw.data(), B, C, HW);
    DFL_EXPECT_CLOSE(dx.data(), dxw.data(), n, kBn, kBn, "bn backward dx");
    DFL_EXPECT_CLOSE(dg.data(), dgw.data(), size_t(C), kBn, kBn, "bn backward dgamma");
    DFL_EXPECT_CLOSE(db.data(), dbw.data(), size_t(C), kBn, kBn, "bn backward dbeta");
  }
  DFL_EXPECT(batchnorm_slices(512, 64, 1024) == 16 && batchnorm_slices(2, 512, 16) == 1 &&
                 batchnorm_slices(512, 8, 1024) == 128,
             "slices per channel");
  Vec rm = randn(C, rng), rv = randu(C, rng, 0.5f, 2.f), y(n), yw(n);
  run_elementwise(BatchNormEval{y.data(), x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), n, C, HW, 1e-5f});
  cpu::batchnorm2d_forward_eval(yw.data(), x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), B, C, HW, 1e-5f);
  EXPECT_SAME(y, yw, "bn eval");
  for (Activation act : {Activation::Relu, Activation::Relu6}) {
    run_elementwise(
        BatchNormEval{y.data(), x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), n, C, HW, 1e-5f, act});
    cpu::batchnorm2d_forward_eval(yw.data(), x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), B, C, HW, 1e-5f,
                                  act);
    EXPECT_SAME(y, yw, "bn eval + activation");
  }

  const size_t per_oc = 11;
  Vec w = randn(C * per_oc, rng), bi = randn(C, rng), wo(w.size()), bo(C), wow(w.size()), bow(C);
  run_elementwise(FoldBatchNorm{wo.data(), bo.data(), w.data(), bi.data(), gamma.data(), beta.data(), rm.data(),
                                rv.data(), C, per_oc, 1e-5f});
  cpu::fold_batchnorm(wow.data(), bow.data(), w.data(), bi.data(), gamma.data(), beta.data(), rm.data(), rv.data(), C,
                      per_oc, 1e-5f);
  EXPECT_SAME(wo, wow, "fold weights");
  EXPECT_SAME(bo, bow, "fold biases");
}

DFL_CPU_TEST(cuda_bodies_bias_gradients) {
  Rng rng(7);
  const int B = 5, OUT = 13, IN = 3;
  Vec dout = randn(size_t(B) * OUT, rng), x = randn(size_t(B) * IN, rng), w = randn(size_t(OUT) * IN, rng);
  for (int threads : kThreadCounts) {
    Vec db = randn(OUT, rng), dbw = db;
    run_rows(BiasGradient{db.data(), dout.data(), B, OUT, 1}, threads);
    cpu::linear_backward(nullptr, nullptr, dbw.data(), dout.data(), x.data(), w.data(), B, IN, OUT);
    EXPECT_NEAR(db, dbw, "linear bias gradient");
  }
  // A conv's (B, OC, P): against a double sum per channel.
  const int OC = 4, P = 301;
  Vec d = randn(size_t(B) * OC * P, rng), db(OC, 0.f), want(OC);
  run_rows(BiasGradient{db.data(), d.data(), B, OC, P}, 32);
  for (int oc = 0; oc < OC; ++oc) {
    double s = 0;
    for (int b = 0; b < B; ++b)
      for (int p = 0; p < P; ++p) s += d[(size_t(b) * OC + oc) * P + p];
    want[oc] = float(s);
  }
  EXPECT_NEAR(db, want, "conv bias gradient");
}

DFL_CPU_TEST(cuda_bodies_losses) {
  Rng rng(8);
  const int B = 7, NC = 11, K = 3;
  Vec logits = randn(size_t(B) * NC, rng, 3.f), dl = randn(logits.size(), rng);
  std::vector<int32_t> targets(B);
  for (int b = 0; b < B; ++b) targets[b] = int32_t(rng.below(NC));
  for (float eps : {0.f, 0.1f}) {
    Vec l(B), p(logits.size()), lw(B), pw(logits.size());
    run_elementwise(CrossEntropyRow{l.data(), p.data(), logits.data(), targets.data(), B, NC, eps});
    const float mean_w = cpu::cross_entropy_forward(lw.data(), pw.data(), logits.data(), targets.data(), B, NC, eps);
    EXPECT_SAME(l, lw, "cross-entropy losses");
    EXPECT_SAME(p, pw, "cross-entropy probs");
    double sum = 0;
    run_elementwise(RowSum{&sum, l.data(), size_t(B)});
    DFL_EXPECT(float(sum / B) == mean_w, "cross-entropy mean " << sum / B << " vs " << mean_w);
    Vec d = dl, dw = dl;
    run_elementwise(CrossEntropyBackward{d.data(), p.data(), targets.data(), B, NC, eps, 0.25f});
    cpu::cross_entropy_backward(dw.data(), pw.data(), targets.data(), B, NC, eps, 0.25f);
    EXPECT_SAME(d, dw, "cross-entropy backward");
  }
  Vec tl = randn(size_t(K) * B * NC, rng, 3.f), conf(size_t(K) * B), confw(size_t(K) * B);
  run_elementwise(TeacherConfidence{conf.data(), tl.data(), size_t(K) * B, NC, 4.f});
  cpu::teacher_confidence(confw.data(), tl.data(), K, B, NC, 4.f);
  EXPECT_SAME(conf, confw, "teacher confidence");
  std::vector<double> mixture(size_t(B) * NC);
  for (const float* weights : {static_cast<const float*>(nullptr), static_cast<const float*>(conf.data())}) {
    Vec l(B), q(logits.size()), pt(logits.size()), lw(B), qw(logits.size()), ptw(logits.size());
    run_elementwise(
        EnsembleKlRow{l.data(), q.data(), pt.data(), mixture.data(), logits.data(), tl.data(), weights, K, B, NC, 2.f});
    cpu::ensemble_kl_forward(lw.data(), qw.data(), ptw.data(), logits.data(), tl.data(), weights, K, B, NC, 2.f);
    EXPECT_SAME(l, lw, "ensemble KL losses");
    EXPECT_SAME(q, qw, "ensemble KL student probs");
    EXPECT_SAME(pt, ptw, "ensemble KL teacher mixture");
    Vec d = dl, dw = dl;
    run_elementwise(EnsembleKlBackward{d.data(), q.data(), pt.data(), d.size(), 0.5f * 2.f});
    cpu::ensemble_kl_backward(dw.data(), qw.data(), ptw.data(), B, NC, 2.f, 0.5f);
    EXPECT_SAME(d, dw, "ensemble KL backward");
  }
}

DFL_CPU_TEST(cuda_bodies_sgd_and_reductions) {
  Rng rng(9);
  const size_t n = 50021;
  Vec p = randn(n, rng), m = randn(n, rng), g = randn(n, rng), mask = randu(n, rng, 0.f, 1.f);
  for (bool nesterov : {false, true})
    for (bool decoupled : {false, true}) {
      const SgdConfig cfg{0.05f, 0.9f, 5e-4f, nesterov, decoupled};
      Vec pg = p, mg = m, pw = p, mw = m;
      run_elementwise(SgdStep{pg.data(), mg.data(), g.data(), mask.data(), n, cfg});
      cpu::sgd_step(pw.data(), mw.data(), g.data(), mask.data(), n, cfg);
      EXPECT_SAME(pg, pw, "sgd params");
      EXPECT_SAME(mg, mw, "sgd momentum");
    }
  const SgdConfig cfg{};
  for (size_t chunk : {size_t(1000), size_t(8192), size_t(1) << 20}) {
    for (int threads : kThreadCounts) {
      const double sq = dfl::test::reduce_all(SquareValue{g.data()}, n, chunk, threads);
      const double want = cpu::sum_squares(g.data(), n);
      DFL_EXPECT(std::fabs(sq - want) <= dfl::test::numerics::kSumOfSquares * want,
                 "sum of squares " << sq << " vs " << want);
      DFL_EXPECT(dfl::test::reduce_all(FiniteValue{g.data()}, n, chunk, threads) == 1, "all finite");
      DFL_EXPECT(
          dfl::test::reduce_all(SgdFiniteValue{p.data(), m.data(), g.data(), mask.data(), cfg}, n, chunk, threads) == 1,
          "sgd stays finite");
      Vec bad = g;
      bad[n - 1] = __builtin_huge_valf();
      DFL_EXPECT(dfl::test::reduce_all(FiniteValue{bad.data()}, n, chunk, threads) == 0, "an inf at the end");
      Vec big = p;
      big[n / 2] = 3e38f;
      DFL_EXPECT(
          dfl::test::reduce_all(
              SgdFiniteValue{big.data(), m.data(), g.data(), nullptr, SgdConfig{1e10f, 0.9f, 5e-4f, true, false}}, n,
              chunk, threads) == int(cpu::sgd_step_stays_finite(big.data(), m.data(), g.data(), nullptr, n,
                                                                SgdConfig{1e10f, 0.9f, 5e-4f, true, false})),
          "sgd overflow check agrees with the CPU");
    }
  }
  const int B = 301, NC = 10;
  Vec logits = randn(size_t(B) * NC, rng);
  logits[3] = logits[4];  // a tie: the first max counts
  std::vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) labels[b] = int32_t(rng.below(NC));
  labels[0] = 3;
  for (size_t chunk : {size_t(7), size_t(8192)})
    DFL_EXPECT(dfl::test::reduce_all(CorrectValue{logits.data(), labels.data(), NC}, size_t(B), chunk, 32) ==
                   cpu::count_correct(logits.data(), labels.data(), B, NC),
               "count correct");
}

DFL_CPU_TEST(cuda_bodies_augment_normalize_gather) {
  Rng rng(10);
  const int N = 6, B = 4, C = 3, H = 5, W = 7, pad = 2;
  std::vector<uint8_t> set(size_t(N) * C * H * W);
  for (auto& v : set) v = uint8_t(rng.below(256));
  const int32_t indices[B] = {5, 0, 3, 3};
  std::vector<uint8_t> batch(size_t(B) * C * H * W);
  run_elementwise(GatherImages{batch.data(), set.data(), indices, size_t(B), size_t(C) * H * W});
  for (int k = 0; k < B; ++k)
    DFL_EXPECT(std::memcmp(batch.data() + size_t(k) * C * H * W, set.data() + size_t(indices[k]) * C * H * W,
                           size_t(C) * H * W) == 0,
               "gathered image " << k);
  const float mean[C] = {0.4f, 0.5f, 0.6f}, stdv[C] = {0.2f, 0.25f, 0.3f};
  std::vector<AugmentDraw> draws(B);
  Rng draw_rng(11);
  augment_draws(draws.data(), B, pad, true, draw_rng);
  draws[0] = {0, 2 * pad, 1};  // extremes
  const size_t n = batch.size();
  Vec out(n), want(n);
  run_elementwise(AugmentBatch{out.data(), batch.data(), draws.data(), mean, stdv, B, C, H, W, pad});
  cpu::augment_apply(want.data(), batch.data(), B, C, H, W, pad, draws.data(), mean, stdv);
  EXPECT_SAME(out, want, "augment");
  run_elementwise(AugmentBatch{out.data(), batch.data(), nullptr, mean, stdv, B, C, H, W, 0});
  cpu::normalize_batch(want.data(), batch.data(), B, C, H, W, mean, stdv);
  EXPECT_SAME(out, want, "normalize");
}

// bf16 rounding against a reference that picks the nearer of the two neighbouring bf16 values in
// double (ties to the even one), then the channels-last casts against plain index loops.
DFL_CPU_TEST(cuda_bodies_bf16_casts) {
  auto reference = [](float f) -> uint16_t {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
    const double d = f, dlo = bf16_to_float(lo), dhi = bf16_to_float(hi);
    const double elo = std::fabs(d - dlo), ehi = std::fabs(d - dhi);
    if (elo != ehi) return elo < ehi ? lo : hi;
    return (lo & 1) ? hi : lo;
  };
  Rng rng(7);
  Vec x = randn(4099, rng, 3.f);
  for (int e = -30; e <= 30; e += 3) x.push_back(std::ldexp(1.0f + 1.0f / 256, e));  // exact ties
  x.push_back(1.01171875f);  // 1 + 3/256: a tie between 0x3F81 and 0x3F82
  x.push_back(1e-40f);       // subnormal
  x.push_back(-0.0f);
  for (float f : x) {
    const uint16_t got = float_to_bf16(f), want = reference(f);
    DFL_EXPECT(got == want, "float_to_bf16(" << f << ") = " << got << ", nearest-even is " << want);
  }
  DFL_EXPECT(float_to_bf16(1.0f) == 0x3F80 && float_to_bf16(1.00390625f) == 0x3F80, "ties go to even (down)");
  DFL_EXPECT(float_to_bf16(1.01171875f) == 0x3F82, "ties go to even (up)");
  DFL_EXPECT(float_to_bf16(-0.0f) == 0x8000, "-0 keeps its sign");
  DFL_EXPECT(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80, "overflow rounds to infinity");
  DFL_EXPECT(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80, "-inf stays -inf");
  DFL_EXPECT(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))), "NaN stays NaN");
  // A NaN whose payload sits in the low 16 bits only must not round to infinity.
  uint32_t low_nan = 0x7F800001u;
  float fn;
  std::memcpy(&fn, &low_nan, 4);
  DFL_EXPECT(std::isnan(bf16_to_float(float_to_bf16(fn))), "a low-payload NaN stays NaN");

  // (B, C, HW) <-> (B, HW, C) on odd sizes; HW = 1 is the plain cast.
  for (const auto& [B, C, HW] :
       {std::array<size_t, 3>{3, 5, 7}, std::array<size_t, 3>{2, 17, 1}, std::array<size_t, 3>{1, 1, 9}}) {
    const size_t n = B * C * HW;
    Vec src = randn(n, rng, 2.f);
    std::vector<Bf16Bits> cl(n, 0xFFFF);
    run_elementwise(ToBf16ChannelsLast{cl.data(), src.data(), B, C, HW});
    for (size_t b = 0; b < B; ++b)
      for (size_t c = 0; c < C; ++c)
        for (size_t p = 0; p < HW; ++p)
          DFL_EXPECT(cl[(b * HW + p) * C + c] == float_to_bf16(src[(b * C + c) * HW + p]),
                     "channels-last cast at b=" << b << " c=" << c << " p=" << p);
    Vec back(n, std::numeric_limits<float>::quiet_NaN()), want(n);
    run_elementwise(FromBf16ChannelsLast{back.data(), cl.data(), B, C, HW, false});
    for (size_t i = 0; i < n; ++i) want[i] = bf16_to_float(float_to_bf16(src[i]));
    EXPECT_SAME(back, want, "channels-last round trip = rounding in place");
    Vec acc = randn(n, rng), acc_want = acc;
    run_elementwise(FromBf16ChannelsLast{acc.data(), cl.data(), B, C, HW, true});
    for (size_t i = 0; i < n; ++i) acc_want[i] += want[i];
    EXPECT_SAME(acc, acc_want, "channels-last cast back, accumulating");
  }
}
