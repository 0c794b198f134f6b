// The CPU kernels and one whole Model training step against PyTorch (golden fixtures in
// test/fixtures/, written by scripts/fixtures/make_fixtures.py; format in fixtures.h).
//
// Every backward is checked twice: once into zeroed gradient buffers (== PyTorch's gradient) and
// once more into the same buffers (== twice PyTorch's gradient), since backward kernels accumulate.
// Workspaces are filled with NaN first: a kernel must not rely on their contents.
//
// Tolerances (|got - want| <= atol + rtol * |want|, references are float64 rounded to float32):
//   elementwise, pooling, channel plumbing: exact or 1e-6; losses/softmax: 1e-5 / 1e-5;
//   SGD: 1e-5 / 1e-5; conv, linear, batchnorm: 1e-4 / 1e-4; the whole model step: see there.
// Each test prints the largest |diff| it saw.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/model.h"
#include "backend_ops.h"
#include "cpu/kernels.h"
#include "fixtures.h"
#include "harness.h"

namespace dfl::test {
namespace {

using Vec = std::vector<float>;

// Tracks the largest error of one test and prints it at the end.
struct MaxErr {
  std::string what;
  double v = 0;
  explicit MaxErr(std::string w) : what(std::move(w)) {}
  void operator()(double e) { v = std::max(v, e); }
  ~MaxErr() {  // only after a passing test (not while a failure unwinds)
    if (std::uncaught_exceptions() == 0) std::printf("     %-28s max |diff| vs PyTorch %.3g\n", what.c_str(), v);
  }
};

// Compares got with scale * fixture tensor `name`.
double fx_close(const Fixture& fx, const float* got, size_t n, const std::string& name, double atol, double rtol,
                const char* file, int line, float scale = 1.0f) {
  const Vec& ref = fx.f(name);
  if (n != ref.size())
    fail_at(
        file, line,
        fx.path() + " " + name + ": got " + std::to_string(n) + " values, fixture has " + std::to_string(ref.size()));
  Vec want(ref);
  for (float& w : want) w *= scale;
  const std::string what =
      fx.path() + " " + name + (scale != 1.0f ? " (x" + std::to_string(scale) + ", accumulated)" : "");
  return expect_close_arrays(got, want.data(), n, atol, rtol, what, file, line);
}
#define FX_CLOSE(fx, got, name, atol, rtol) \
  fx_close((fx), (got).data(), (got).size(), (name), (atol), (rtol), __FILE__, __LINE__)
#define FX_CLOSE2(fx, got, name, atol, rtol) \
  fx_close((fx), (got).data(), (got).size(), (name), (atol), (rtol), __FILE__, __LINE__, 2.0f)
#define FX_CLOSE_PTR(fx, ptr, n, name, atol, rtol) \
  fx_close((fx), (ptr), (n), (name), (atol), (rtol), __FILE__, __LINE__)

double scalar_close(float got, float want, double atol, double rtol, const std::string& what) {
  return expect_close_arrays(&got, &want, 1, atol, rtol, what, __FILE__, __LINE__);
}

Vec zeros_like(const Fixture& fx, const std::string& name) { return Vec(fx.numel(name), 0.0f); }
Vec nan_workspace(size_t n) { return Vec(std::max<size_t>(n, 1), std::numeric_limits<float>::quiet_NaN()); }

// ------------------------------------------------------------------------------------------------
void run_conv(const char* file) {
  const Fixture fx = Fixture::open(file);
  MaxErr err(file);
  Conv2dShape s{fx.cfg_int("B"),        fx.cfg_int("C"),     fx.cfg_int("H"),     fx.cfg_int("W"),
                fx.cfg_int("OC"),       fx.cfg_int("KH"),    fx.cfg_int("KW"),    fx.cfg_int("stride_h"),
                fx.cfg_int("stride_w"), fx.cfg_int("pad_h"), fx.cfg_int("pad_w"), fx.cfg_int("groups")};
  const bool has_bias = fx.cfg_int("bias") != 0;
  const auto& od = fx.dims("out");
  DFL_EXPECT(od[2] == s.OH() && od[3] == s.OW(),
             "output size " << s.OH() << "x" << s.OW() << " vs PyTorch " << od[2] << "x" << od[3]);
  const double atol = 1e-4, rtol = 1e-4;
  Vec ws = nan_workspace(cpu::conv2d_workspace_floats(s));
  const float* bias = has_bias ? fx.f("bias").data() : nullptr;
  Vec out = zeros_like(fx, "out");
  std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());  // forward overwrites
  ops::conv2d_forward(out.data(), fx.f("inp").data(), fx.f("weight").data(), bias, s, ws.data());
  err(FX_CLOSE(fx, out, "out", atol, rtol));

  Vec dinp = zeros_like(fx, "inp"), dw = zeros_like(fx, "weight"), db(s.OC, 0.0f);
  for (int pass = 1; pass <= 2; ++pass) {
    std::fill(ws.begin(), ws.end(), std::numeric_limits<float>::quiet_NaN());
    ops::conv2d_backward(dinp.data(), dw.data(), has_bias ? db.data() : nullptr, fx.f("dout").data(),
                         fx.f("inp").data(), fx.f("weight").data(), s, ws.data());
    const float k = float(pass);
    err(fx_close(fx, dinp.data(), dinp.size(), "dinp", atol, rtol, __FILE__, __LINE__, k));
    err(fx_close(fx, dw.data(), dw.size(), "dweight", atol, rtol, __FILE__, __LINE__, k));
    if (has_bias) err(fx_close(fx, db.data(), db.size(), "dbias", atol, rtol, __FILE__, __LINE__, k));
  }
  // dinp == nullptr (a first layer): weight gradient alone.
  Vec dw2 = zeros_like(fx, "weight");
  std::fill(ws.begin(), ws.end(), std::numeric_limits<float>::quiet_NaN());
  ops::conv2d_backward(nullptr, dw2.data(), nullptr, fx.f("dout").data(), fx.f("inp").data(), fx.f("weight").data(), s,
                       ws.data());
  err(FX_CLOSE(fx, dw2, "dweight", atol, rtol));
}

}  // namespace

DFL_TEST(fixture_conv2d_basic) { run_conv("conv2d_basic.bin"); }
DFL_TEST(fixture_conv2d_stride2_pad1) { run_conv("conv2d_stride2_pad1.bin"); }
DFL_TEST(fixture_conv2d_groups2) { run_conv("conv2d_groups2.bin"); }
DFL_TEST(fixture_conv2d_depthwise) { run_conv("conv2d_depthwise.bin"); }
DFL_TEST(fixture_conv2d_5x5_rect) { run_conv("conv2d_5x5_rect.bin"); }
DFL_TEST(fixture_conv2d_1x1) { run_conv("conv2d_1x1.bin"); }
DFL_TEST(fixture_conv2d_rect_kernel) { run_conv("conv2d_rect_kernel.bin"); }
// CIFAR-sized maps: each reaches one of the CPU backend's fast algorithms (see make_fixtures.py).
DFL_TEST(fixture_conv2d_cifar32_stem) { run_conv("conv2d_cifar32_stem.bin"); }
DFL_TEST(fixture_conv2d_cifar16) { run_conv("conv2d_cifar16.bin"); }
DFL_TEST(fixture_conv2d_cifar8_c64) { run_conv("conv2d_cifar8_c64.bin"); }
DFL_TEST(fixture_conv2d_cifar32_stride2) { run_conv("conv2d_cifar32_stride2.bin"); }
DFL_TEST(fixture_conv2d_cifar16_pointwise) { run_conv("conv2d_cifar16_pointwise.bin"); }
DFL_TEST(fixture_conv2d_cifar16_depthwise) { run_conv("conv2d_cifar16_depthwise.bin"); }
DFL_TEST(fixture_conv2d_cifar4) { run_conv("conv2d_cifar4.bin"); }

DFL_TEST(fixture_linear) {
  const Fixture fx = Fixture::open("linear.bin");
  MaxErr err("linear.bin");
  const int B = fx.cfg_int("B"), IN = fx.cfg_int("IN"), OUT = fx.cfg_int("OUT");
  const double atol = 1e-4, rtol = 1e-4;
  Vec out(size_t(B) * OUT, std::numeric_limits<float>::quiet_NaN());
  ops::linear_forward(out.data(), fx.f("inp").data(), fx.f("weight").data(), fx.f("bias").data(), B, IN, OUT);
  err(FX_CLOSE(fx, out, "out", atol, rtol));
  Vec dinp = zeros_like(fx, "inp"), dw = zeros_like(fx, "weight"), db = zeros_like(fx, "bias");
  for (int pass = 1; pass <= 2; ++pass) {
    ops::linear_backward(dinp.data(), dw.data(), db.data(), fx.f("dout").data(), fx.f("inp").data(),
                         fx.f("weight").data(), B, IN, OUT);
    err(fx_close(fx, dinp.data(), dinp.size(), "dinp", atol, rtol, __FILE__, __LINE__, float(pass)));
    err(fx_close(fx, dw.data(), dw.size(), "dweight", atol, rtol, __FILE__, __LINE__, float(pass)));
    err(fx_close(fx, db.data(), db.size(), "dbias", atol, rtol, __FILE__, __LINE__, float(pass)));
  }
  // Without bias: out - bias.
  Vec out_nb(out.size());
  ops::linear_forward(out_nb.data(), fx.f("inp").data(), fx.f("weight").data(), nullptr, B, IN, OUT);
  for (int b = 0; b < B; ++b)
    for (int o = 0; o < OUT; ++o) out_nb[size_t(b) * OUT + o] += fx.f("bias")[o];
  err(FX_CLOSE(fx, out_nb, "out", atol, rtol));
}

DFL_TEST(fixture_batchnorm_train) {
  const Fixture fx = Fixture::open("batchnorm_train.bin");
  MaxErr err("batchnorm_train.bin");
  const int B = fx.cfg_int("B"), C = fx.cfg_int("C"), HW = fx.cfg_int("H") * fx.cfg_int("W");
  const double atol = 1e-4, rtol = 1e-4;
  Vec out = zeros_like(fx, "inp"), mean(C), invstd(C);
  Vec rmean = fx.f("running_mean"), rvar = fx.f("running_var");
  ops::batchnorm2d_forward_train(out.data(), mean.data(), invstd.data(), rmean.data(), rvar.data(), fx.f("inp").data(),
                                 fx.f("gamma").data(), fx.f("beta").data(), B, C, HW, fx.cfg("momentum"),
                                 fx.cfg("eps"));
  err(FX_CLOSE(fx, out, "out", atol, rtol));
  err(FX_CLOSE(fx, mean, "save_mean", atol, rtol));
  err(FX_CLOSE(fx, invstd, "save_invstd", atol, rtol));
  err(FX_CLOSE(fx, rmean, "running_mean_after", atol, rtol));
  err(FX_CLOSE(fx, rvar, "running_var_after", atol, rtol));
  Vec dinp = zeros_like(fx, "inp"), dg(C, 0.f), db(C, 0.f);
  for (int pass = 1; pass <= 2; ++pass) {
    ops::batchnorm2d_backward(dinp.data(), dg.data(), db.data(), fx.f("dout").data(), fx.f("inp").data(),
                              fx.f("gamma").data(), mean.data(), invstd.data(), B, C, HW);
    err(fx_close(fx, dinp.data(), dinp.size(), "dinp", atol, rtol, __FILE__, __LINE__, float(pass)));
    err(fx_close(fx, dg.data(), dg.size(), "dgamma", atol, rtol, __FILE__, __LINE__, float(pass)));
    err(fx_close(fx, db.data(), db.size(), "dbeta", atol, rtol, __FILE__, __LINE__, float(pass)));
  }
}

DFL_TEST(fixture_batchnorm_eval) {
  const Fixture fx = Fixture::open("batchnorm_eval.bin");
  MaxErr err("batchnorm_eval.bin");
  const int B = fx.cfg_int("B"), C = fx.cfg_int("C"), HW = fx.cfg_int("H") * fx.cfg_int("W");
  Vec out = zeros_like(fx, "inp");
  ops::batchnorm2d_forward_eval(out.data(), fx.f("inp").data(), fx.f("gamma").data(), fx.f("beta").data(),
                                fx.f("running_mean").data(), fx.f("running_var").data(), B, C, HW, fx.cfg("eps"));
  err(FX_CLOSE(fx, out, "out", 1e-5, 1e-5));
}

namespace {
template <typename Fwd, typename Bwd>
void run_activation(const char* file, Fwd fwd, Bwd bwd) {
  const Fixture fx = Fixture::open(file);
  MaxErr err(file);
  const size_t n = fx.numel("inp");
  Vec out(n, std::numeric_limits<float>::quiet_NaN()), dinp(n, 0.f);
  fwd(out.data(), fx.f("inp").data(), n);
  err(FX_CLOSE(fx, out, "out", 1e-6, 1e-6));
  for (int pass = 1; pass <= 2; ++pass) {
    bwd(dinp.data(), fx.f("dout").data(), fx.f("inp").data(), n);
    err(fx_close(fx, dinp.data(), n, "dinp", 1e-6, 1e-6, __FILE__, __LINE__, float(pass)));
  }
}
}  // namespace

DFL_TEST(fixture_relu) { run_activation("relu.bin", ops::relu_forward, ops::relu_backward); }
DFL_TEST(fixture_relu6) { run_activation("relu6.bin", ops::relu6_forward, ops::relu6_backward); }

namespace {
Pool2dShape pool_shape(const Fixture& fx) {
  return {fx.cfg_int("B"),  fx.cfg_int("C"),        fx.cfg_int("H"),        fx.cfg_int("W"),     fx.cfg_int("KH"),
          fx.cfg_int("KW"), fx.cfg_int("stride_h"), fx.cfg_int("stride_w"), fx.cfg_int("pad_h"), fx.cfg_int("pad_w")};
}

void run_maxpool(const char* file) {
  const Fixture fx = Fixture::open(file);
  MaxErr err(file);
  const Pool2dShape s = pool_shape(fx);
  const size_t no = fx.numel("out");
  DFL_EXPECT(no == size_t(s.B) * s.C * s.OH() * s.OW(), "output size mismatch");
  Vec out(no, std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> argmax(no, -1);
  ops::maxpool2d_forward(out.data(), argmax.data(), fx.f("inp").data(), s);
  err(FX_CLOSE(fx, out, "out", 0.0, 0.0));
  const auto& want = fx.i("argmax");
  for (size_t k = 0; k < no; ++k)
    DFL_EXPECT(argmax[k] == want[k], file << ": argmax[" << k << "] = " << argmax[k] << ", PyTorch " << want[k]
                                          << " (first max in the window wins)");
  Vec dinp = zeros_like(fx, "inp");
  for (int pass = 1; pass <= 2; ++pass) {
    ops::maxpool2d_backward(dinp.data(), fx.f("dout").data(), argmax.data(), s);
    err(fx_close(fx, dinp.data(), dinp.size(), "dinp", 1e-6, 1e-6, __FILE__, __LINE__, float(pass)));
  }
}
}  // namespace

DFL_TEST(fixture_maxpool) { run_maxpool("maxpool.bin"); }
DFL_TEST(fixture_maxpool_ties) { run_maxpool("maxpool_ties.bin"); }

DFL_TEST(fixture_avgpool) {
  const Fixture fx = Fixture::open("avgpool.bin");
  MaxErr err("avgpool.bin");
  const Pool2dShape s = pool_shape(fx);
  Vec out(fx.numel("out"), std::numeric_limits<float>::quiet_NaN());
  ops::avgpool2d_forward(out.data(), fx.f("inp").data(), s);
  err(FX_CLOSE(fx, out, "out", 1e-6, 1e-5));
  Vec dinp = zeros_like(fx, "inp");
  for (int pass = 1; pass <= 2; ++pass) {
    ops::avgpool2d_backward(dinp.data(), fx.f("dout").data(), s);
    err(fx_close(fx, dinp.data(), dinp.size(), "dinp", 1e-6, 1e-5, __FILE__, __LINE__, float(pass)));
  }
}

DFL_TEST(fixture_gap) {
  const Fixture fx = Fixture::open("gap.bin");
  MaxErr err("gap.bin");
  const int B = fx.cfg_int("B"), C = fx.cfg_int("C"), HW = fx.cfg_int("H") * fx.cfg_int("W");
  Vec out(size_t(B) * C, std::numeric_limits<float>::quiet_NaN());
  ops::global_avgpool_forward(out.data(), fx.f("inp").data(), B, C, HW);
  err(FX_CLOSE(fx, out, "out", 1e-6, 1e-5));
  Vec dinp = zeros_like(fx, "inp");
  for (int pass = 1; pass <= 2; ++pass) {
    ops::global_avgpool_backward(dinp.data(), fx.f("dout").data(), B, C, HW);
    err(fx_close(fx, dinp.data(), dinp.size(), "dinp", 1e-6, 1e-5, __FILE__, __LINE__, float(pass)));
  }
}

namespace {
void run_ce(const char* file) {
  const Fixture fx = Fixture::open(file);
  MaxErr err(file);
  const int B = fx.cfg_int("B"), NC = fx.cfg_int("NC");
  const float eps = fx.cfg("label_smoothing");
  const double atol = 1e-5, rtol = 1e-5;
  Vec losses(B), probs(size_t(B) * NC);
  const float loss = ops::cross_entropy_forward(losses.data(), probs.data(), fx.f("logits").data(),
                                                fx.i("targets").data(), B, NC, eps);
  err(scalar_close(loss, fx.scalar("loss"), atol, rtol, std::string(file) + " loss"));
  err(FX_CLOSE(fx, losses, "losses", atol, rtol));
  err(FX_CLOSE(fx, probs, "probs", atol, rtol));
  Vec dz(size_t(B) * NC, 0.f);
  for (int pass = 1; pass <= 2; ++pass) {
    ops::cross_entropy_backward(dz.data(), probs.data(), fx.i("targets").data(), B, NC, eps, fx.cfg("dloss") / B);
    err(fx_close(fx, dz.data(), dz.size(), "dlogits", atol, rtol, __FILE__, __LINE__, float(pass)));
  }
}
}  // namespace

DFL_TEST(fixture_cross_entropy) { run_ce("cross_entropy.bin"); }
DFL_TEST(fixture_cross_entropy_smooth) { run_ce("cross_entropy_smooth.bin"); }

DFL_TEST(fixture_ensemble_kl) {
  const Fixture fx = Fixture::open("ensemble_kl.bin");
  MaxErr err("ensemble_kl.bin");
  const int K = fx.cfg_int("K"), B = fx.cfg_int("B"), NC = fx.cfg_int("NC");
  const float T = fx.cfg("T");
  const double atol = 1e-5, rtol = 1e-5;
  Vec losses(B), q(size_t(B) * NC), pt(size_t(B) * NC);
  const float loss = ops::ensemble_kl_forward(losses.data(), q.data(), pt.data(), fx.f("student_logits").data(),
                                              fx.f("teacher_logits").data(), fx.f("weights").data(), K, B, NC, T);
  err(scalar_close(loss, fx.scalar("loss"), atol, rtol, "ensemble_kl.bin loss"));
  err(FX_CLOSE(fx, losses, "losses", atol, rtol));
  err(FX_CLOSE(fx, q, "student_probs", atol, rtol));
  err(FX_CLOSE(fx, pt, "teacher_probs", atol, rtol));
  Vec dz(size_t(B) * NC, 0.f);
  for (int pass = 1; pass <= 2; ++pass) {
    ops::ensemble_kl_backward(dz.data(), q.data(), pt.data(), B, NC, T, fx.cfg("dloss") / B);
    err(fx_close(fx, dz.data(), dz.size(), "dlogits", atol, rtol, __FILE__, __LINE__, float(pass)));
  }
  // weights == nullptr is uniform: the same as all-ones weights.
  Vec l1(B), q1(q.size()), p1(pt.size()), l2(B), q2(q.size()), p2(pt.size());
  const Vec ones(size_t(K) * B, 1.0f);
  const float a = ops::ensemble_kl_forward(l1.data(), q1.data(), p1.data(), fx.f("student_logits").data(),
                                           fx.f("teacher_logits").data(), nullptr, K, B, NC, T);
  const float b = ops::ensemble_kl_forward(l2.data(), q2.data(), p2.data(), fx.f("student_logits").data(),
                                           fx.f("teacher_logits").data(), ones.data(), K, B, NC, T);
  DFL_EXPECT(std::fabs(a - b) <= 1e-6f * std::max(1.0f, std::fabs(b)),
             "uniform weights: nullptr " << a << " vs ones " << b);
  DFL_EXPECT_CLOSE(p1.data(), p2.data(), p1.size(), 1e-6, 1e-6, "teacher_probs, nullptr vs all-ones weights");
}

namespace {
void run_sgd(const char* file) {
  const Fixture fx = Fixture::open(file);
  MaxErr err(file);
  const size_t n = size_t(fx.cfg_int("n"));
  SgdConfig cfg;
  cfg.lr = fx.cfg("lr");
  cfg.momentum = fx.cfg("momentum");
  cfg.weight_decay = fx.cfg("weight_decay");
  cfg.nesterov = fx.cfg_int("nesterov") != 0;
  cfg.decoupled = fx.cfg_int("decoupled") != 0;
  const float* mask = fx.cfg_int("has_mask") ? fx.f("decay_mask").data() : nullptr;
  Vec p = fx.f("params"), buf(n, 0.f);
  for (int step = 0; step < fx.cfg_int("steps"); ++step) {
    const std::string k = std::to_string(step);
    ops::sgd_step(p.data(), buf.data(), fx.f("grad." + k).data(), mask, n, cfg);
    err(FX_CLOSE(fx, p, "params." + k, 1e-5, 1e-5));
    err(FX_CLOSE(fx, buf, "momentum." + k, 1e-5, 1e-5));
  }
}
}  // namespace

DFL_TEST(fixture_sgd_nesterov_l2) { run_sgd("sgd_nesterov_l2.bin"); }
DFL_TEST(fixture_sgd_plain_decoupled) { run_sgd("sgd_plain_decoupled.bin"); }

DFL_TEST(fixture_channel_shuffle) {
  const Fixture fx = Fixture::open("channel_shuffle.bin");
  MaxErr err("channel_shuffle.bin");
  const int B = fx.cfg_int("B"), C = fx.cfg_int("C"), HW = fx.cfg_int("H") * fx.cfg_int("W"), g = fx.cfg_int("groups");
  Vec out(fx.numel("inp"), std::numeric_limits<float>::quiet_NaN()), dinp(fx.numel("inp"), 0.f);
  ops::channel_shuffle_forward(out.data(), fx.f("inp").data(), B, C, HW, g);
  err(FX_CLOSE(fx, out, "out", 0.0, 0.0));
  for (int pass = 1; pass <= 2; ++pass) {
    ops::channel_shuffle_backward(dinp.data(), fx.f("dout").data(), B, C, HW, g);
    err(fx_close(fx, dinp.data(), dinp.size(), "dinp", 1e-6, 1e-6, __FILE__, __LINE__, float(pass)));
  }
}

DFL_TEST(fixture_concat_split) {
  const Fixture fx = Fixture::open("concat_split.bin");
  MaxErr err("concat_split.bin");
  const int B = fx.cfg_int("B"), HW = fx.cfg_int("H") * fx.cfg_int("W"), n = fx.cfg_int("n");
  const auto& ch = fx.i("channels");
  std::vector<const float*> ins;
  for (int k = 0; k < n; ++k) ins.push_back(fx.f("concat.inp." + std::to_string(k)).data());
  Vec out(fx.numel("concat.out"), std::numeric_limits<float>::quiet_NaN());
  ops::concat_channels_forward(out.data(), ins.data(), ch.data(), n, B, HW);
  err(FX_CLOSE(fx, out, "concat.out", 0.0, 0.0));
  std::vector<Vec> d(n);
  std::vector<float*> dp(n);
  for (int k = 0; k < n; ++k) {
    d[k].assign(fx.numel("concat.inp." + std::to_string(k)), 0.f);
    dp[k] = d[k].data();
  }
  for (int pass = 1; pass <= 2; ++pass) {
    ops::concat_channels_backward(dp.data(), fx.f("concat.dout").data(), ch.data(), n, B, HW);
    for (int k = 0; k < n; ++k)
      err(fx_close(fx, d[k].data(), d[k].size(), "concat.dinp." + std::to_string(k), 1e-6, 1e-6, __FILE__, __LINE__,
                   float(pass)));
  }
  // A nullptr gradient slot is skipped.
  Vec d0(d[0].size(), 0.f);
  std::vector<float*> dpn = {d0.data(), nullptr, nullptr};
  dpn.resize(n, nullptr);
  ops::concat_channels_backward(dpn.data(), fx.f("concat.dout").data(), ch.data(), n, B, HW);
  err(FX_CLOSE(fx, d0, "concat.dinp.0", 1e-6, 1e-6));

  // split
  std::vector<Vec> outs(n);
  std::vector<float*> op(n);
  for (int k = 0; k < n; ++k) {
    outs[k].assign(fx.numel("split.out." + std::to_string(k)), std::numeric_limits<float>::quiet_NaN());
    op[k] = outs[k].data();
  }
  ops::split_channels_forward(op.data(), fx.f("split.inp").data(), ch.data(), n, B, HW);
  for (int k = 0; k < n; ++k) err(FX_CLOSE(fx, outs[k], "split.out." + std::to_string(k), 0.0, 0.0));
  // One chunk not needed (nullptr output).
  Vec only2(outs[2].size(), std::numeric_limits<float>::quiet_NaN());
  std::vector<float*> op2(n, nullptr);
  op2[n - 1] = only2.data();
  ops::split_channels_forward(op2.data(), fx.f("split.inp").data(), ch.data(), n, B, HW);
  err(FX_CLOSE(fx, only2, "split.out." + std::to_string(n - 1), 0.0, 0.0));
  std::vector<const float*> dop(n);
  for (int k = 0; k < n; ++k) dop[k] = fx.f("split.dout." + std::to_string(k)).data();
  Vec dinp(fx.numel("split.inp"), 0.f);
  for (int pass = 1; pass <= 2; ++pass) {
    ops::split_channels_backward(dinp.data(), dop.data(), ch.data(), n, B, HW);
    err(fx_close(fx, dinp.data(), dinp.size(), "split.dinp", 1e-6, 1e-6, __FILE__, __LINE__, float(pass)));
  }
  // Chunk 1 has no gradient.
  Vec dpart(dinp.size(), 0.f);
  std::vector<const float*> dop1 = dop;
  dop1[1] = nullptr;
  ops::split_channels_backward(dpart.data(), dop1.data(), ch.data(), n, B, HW);
  err(FX_CLOSE(fx, dpart, "split.dinp_partial", 1e-6, 1e-6));
  // Overwriting (the first writer of the slot): the old contents, NaN here, are not read.
  Vec fresh(dinp.size(), std::numeric_limits<float>::quiet_NaN());
  ops::split_channels_backward(fresh.data(), dop.data(), ch.data(), n, B, HW, /*overwrite=*/true);
  err(FX_CLOSE(fx, fresh, "split.dinp", 1e-6, 1e-6));
  std::fill(fresh.begin(), fresh.end(), std::numeric_limits<float>::quiet_NaN());
  ops::split_channels_backward(fresh.data(), dop1.data(), ch.data(), n, B, HW, /*overwrite=*/true);
  err(FX_CLOSE(fx, fresh, "split.dinp_partial", 1e-6, 1e-6));
}

// ------------------------------------------------------------------------------------------------
// One whole training step of a small graph (conv/bn/relu, maxpool, residual add, split, depthwise
// conv, pointwise conv with bias, relu6, concat, shuffle, avgpool, gap, flatten, dropout p=0,
// linear) against the PyTorch twin (scripts/fixtures/torch_twin.py): state loaded by state_dict name,
// forward logits, CE + alpha T^2 KL losses, every gradient, SGD (nesterov, L2) result, momentum and
// BN running statistics.
namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Copies fixture tensors "<prefix><name>" into the model's parameters and buffers (through copies,
// as every caller must); checks that the names and shapes match PyTorch's state_dict exactly (both
// ways).
void load_state(const Fixture& fx, Model& model, const std::string& prefix) {
  std::set<std::string> want;
  for (const auto& nm : fx.names())
    if (nm.compare(0, prefix.size(), prefix) == 0) want.insert(nm.substr(prefix.size()));
  std::set<std::string> have;
  Vec params = model.get_params(), buffers = model.get_buffers();
  for (const auto& t : model.params()) {
    have.insert(t.name);
    const std::string key = prefix + t.name;
    DFL_EXPECT(fx.has(key), "model parameter '" << t.name << "' is not in PyTorch's state_dict");
    DFL_EXPECT(fx.dims(key) == t.shape, "parameter '" << t.name << "' shape differs from PyTorch's");
    const Vec& v = fx.f(key);
    std::copy(v.begin(), v.end(), params.begin() + t.offset);
  }
  for (const auto& t : model.buffers()) {
    have.insert(t.name);
    const std::string key = prefix + t.name;
    DFL_EXPECT(fx.has(key), "model buffer '" << t.name << "' is not in PyTorch's state_dict");
    DFL_EXPECT(fx.numel(key) == t.size, "buffer '" << t.name << "' size differs from PyTorch's");
    if (ends_with(t.name, ".num_batches_tracked")) {
      buffers[t.offset] = static_cast<float>(fx.i(key)[0]);
    } else {
      DFL_EXPECT(fx.dims(key) == t.shape, "buffer '" << t.name << "' shape differs from PyTorch's");
      const Vec& v = fx.f(key);
      std::copy(v.begin(), v.end(), buffers.begin() + t.offset);
    }
  }
  for (const auto& nm : want) DFL_EXPECT(have.count(nm), "PyTorch state_dict key '" << nm << "' has no model tensor");
  model.set_params(params.data(), params.size());
  model.set_buffers(buffers.data(), buffers.size());
}
}  // namespace

DFL_TEST(model_step_matches_pytorch) {
  const Fixture fx = Fixture::open("model_step.bin");
  MaxErr err("model_step.bin");
  const ModelSpec spec = read_model_spec_json(fixture_path("model_step_spec.json"));
  Model model(spec, 7, backend_ptr());
  const int B = fx.cfg_int("B"), K = fx.cfg_int("K"), NC = fx.cfg_int("NC");
  DFL_EXPECT(model.num_classes() == NC, "num_classes " << model.num_classes() << " vs " << NC);
  load_state(fx, model, "param.");
  const Vec zeros(model.num_params(), 0.0f);
  model.set_momentum(zeros.data(), zeros.size());
  const float* x = fx.f("input").data();

  // Logits of the training forward (batch statistics), then restore the BN buffers it updated.
  Vec logits(size_t(B) * NC);
  model.forward(x, B, true, logits.data());
  err(FX_CLOSE(fx, logits, "logits", 1e-4, 1e-4));
  load_state(fx, model, "param.");

  LossConfig loss;
  loss.label_smoothing = fx.cfg("label_smoothing");
  loss.distill_weight = fx.cfg("alpha");
  loss.temperature = fx.cfg("T");
  SgdConfig sgd;
  sgd.lr = fx.cfg("lr");
  sgd.momentum = fx.cfg("momentum");
  sgd.weight_decay = fx.cfg("weight_decay");
  sgd.nesterov = fx.cfg_int("nesterov") != 0;
  sgd.decoupled = fx.cfg_int("decoupled") != 0;
  Distillation distill;
  distill.teacher_logits_host = fx.f("teacher_logits").data();
  distill.given_k = K;
  distill.weights_host = fx.f("teacher_weights").data();
  const StepStats st = model.train_step(x, fx.i("labels").data(), B, distill, loss, sgd, 0);
  DFL_EXPECT(st.finite, "the step reported non-finite values");
  err(scalar_close(st.loss, fx.scalar("loss"), 1e-5, 1e-5, "total loss"));
  err(scalar_close(st.ce_loss, fx.scalar("ce_loss"), 1e-5, 1e-5, "ce loss"));
  err(scalar_close(st.distill_loss, fx.scalar("distill_loss"), 1e-5, 1e-5, "distill loss (T^2 KL)"));
  err(scalar_close(st.grad_norm, fx.scalar("grad_norm"), 1e-5, 1e-4, "grad norm"));
  DFL_EXPECT(st.correct == fx.cfg_int("correct"), "correct " << st.correct << " vs PyTorch " << fx.cfg_int("correct"));

  // Gradients of this step (kept after the SGD step), params after the step, momentum, and BN
  // running statistics after the forward.
  const Vec grads = model.get_grads(), params = model.get_params(), momentum = model.get_momentum();
  const Vec buffers = model.get_buffers();
  for (const auto& t : model.params()) {
    err(FX_CLOSE_PTR(fx, grads.data() + t.offset, t.size, "grad." + t.name, 1e-5, 1e-3));
    err(FX_CLOSE_PTR(fx, params.data() + t.offset, t.size, "after." + t.name, 1e-5, 1e-4));
    err(FX_CLOSE_PTR(fx, momentum.data() + t.offset, t.size, "momentum." + t.name, 1e-5, 1e-3));
  }
  for (const auto& t : model.buffers()) {
    if (ends_with(t.name, ".num_batches_tracked")) {
      const float got = buffers[t.offset];
      DFL_EXPECT(got == float(fx.i("after." + t.name)[0]),
                 t.name << " = " << got << ", PyTorch " << fx.i("after." + t.name)[0]);
    } else {
      err(FX_CLOSE_PTR(fx, buffers.data() + t.offset, t.size, "after." + t.name, 1e-5, 1e-4));
    }
  }
}

}  // namespace dfl::test
