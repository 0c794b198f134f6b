// MathMode (core/shapes.h): bf16 tensor-core math and cuDNN's non-deterministic algorithms.
// A backend that supports bf16 (cuda on sm_80+) must match float32 arithmetic on bf16-rounded
// operands: the products of two bf16 values are exact in float32, so what is left is the order of
// the float32 sums and the rounding of bf16 outputs (one bf16 step, 2^-8 relative). A backend that
// does not (cpu) must refuse bf16 with a message that says what to do, at the model and per call.
// Tolerances (stated for users in docs/cli.md): layer outputs within 2^-7 relative plus 1e-3 of
// their RMS of the float32 reference on rounded operands; a teacher's soft targets (T = 4) within
// 0.02 absolute of float32's; a bf16 training step's loss within 1% of float32's.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/model.h"
#include "cpu/conv/conv_internal.h"
#include "cpu/kernels.h"
#include "cuda/bodies/cast.h"
#include "backend_ops.h"
#include "fixtures.h"
#include "harness.h"

namespace dfl::test {
namespace {

using Vec = std::vector<float>;
using cuda_bodies::bf16_to_float;
using cuda_bodies::float_to_bf16;

Vec rounded(const Vec& v) {
  Vec r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = bf16_to_float(float_to_bf16(v[i]));
  return r;
}
double rms(const Vec& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s / double(v.empty() ? 1 : v.size()));
}
bool all_bf16(const Vec& v) {
  for (float x : v) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if (u & 0xFFFFu) return false;
  }
  return true;
}
// The message of what fn throws ("" when it does not).
template <typename F>
std::string thrown(F fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

MathMode bf16() {
  MathMode m;
  m.bf16 = true;
  return m;
}

#define EXPECT_BF16_CLOSE(got, want, what) \
  DFL_EXPECT_CLOSE((got).data(), (want).data(), (want).size(), 1e-3 * rms(want), 1.0 / 128, (what))

}  // namespace

DFL_TEST(bf16_layers_match_float32_on_rounded_operands_or_are_refused) {
  std::string why;
  if (!backend().supports(bf16(), &why)) {
    DFL_EXPECT(!why.empty(), "an unsupported mode comes with a reason");
    Conv2dShape s{2, 4, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1};
    s.math = bf16();
    const std::string msg = thrown([&] { backend().conv2d_workspace_bytes(s); });
    DFL_EXPECT(msg.find(why) != std::string::npos, "a bf16 convolution is refused with the reason, got: " << msg);
    Vec x(8, 1.f), w(8, 1.f), y(4);
    DFL_EXPECT(!thrown([&] {
                  ops::linear_forward(y.data(), x.data(), w.data(), nullptr, 2, 4, 2, Activation::None, bf16());
                }).empty(),
               "a bf16 linear layer is refused");
    return;
  }
  Rng rng(31);
  // The 64-channel 3x3 convolution has bf16 tensor-core kernels on every sm_80+ GPU: its outputs must
  // be bf16 values (proof that the bf16 path ran). The others may fall back to float32 per shape.
  const Conv2dShape shapes[] = {{8, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1},
                                {4, 32, 16, 16, 64, 3, 3, 2, 2, 1, 1, 1},
                                {4, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1, 32},
                                {4, 64, 8, 8, 128, 1, 1, 1, 1, 0, 0, 1},
                                {4, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1}};
  for (Conv2dShape s : shapes) {
    s.math = bf16();
    const std::string what = "conv C" + std::to_string(s.C) + " OC" + std::to_string(s.OC) + " k" +
                             std::to_string(s.KH) + " s" + std::to_string(s.stride_h) + " g" + std::to_string(s.groups);
    const size_t nx = size_t(s.B) * s.C * s.H * s.W, ny = size_t(s.B) * s.OC * s.OH() * s.OW(),
                 nw = size_t(s.OC) * (s.C / s.groups) * s.KH * s.KW;
    const Vec x = randn(nx, rng), w = randn(nw, rng, 0.1f), b = randn(size_t(s.OC), rng), dy = randn(ny, rng);
    const Vec xr = rounded(x), wr = rounded(w), dyr = rounded(dy);

    Vec y(ny), y_ref(ny);
    ops::conv2d_forward(y.data(), x.data(), w.data(), nullptr, s, nullptr);
    cpu::conv2d_reference_forward(y_ref.data(), xr.data(), wr.data(), nullptr, s);
    EXPECT_BF16_CLOSE(y, y_ref, what + ": bf16 forward");
    if (s.C == 64 && s.KH == 3) DFL_EXPECT(all_bf16(y), what << ": outputs are bf16 values (tensor-core path)");
    Vec yb(ny), yb_ref(ny);
    ops::conv2d_forward(yb.data(), x.data(), w.data(), b.data(), s, nullptr, Activation::Relu);
    cpu::conv2d_reference_forward(yb_ref.data(), xr.data(), wr.data(), b.data(), s);
    cpu::relu_forward(yb_ref.data(), yb_ref.data(), ny);
    EXPECT_BF16_CLOSE(yb, yb_ref, what + ": bf16 forward + bias + ReLU");

    // Backward accumulates (+=) into gradients that already hold values.
    const Vec dx0 = randn(nx, rng), dw0 = randn(nw, rng), db0 = randn(size_t(s.OC), rng);
    Vec dx = dx0, dw = dw0, db = db0;
    ops::conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s, nullptr);
    Vec dx_ref(nx, 0.f), dw_ref(nw, 0.f), db_ref(size_t(s.OC), 0.f);
    cpu::conv2d_reference_backward(dx_ref.data(), dw_ref.data(), nullptr, dyr.data(), xr.data(), wr.data(), s);
    cpu::conv2d_reference_backward(nullptr, nullptr, db_ref.data(), dy.data(), x.data(), w.data(), s);
    // The bias gradient is a float32 reduction of the float32 gradient.
    for (size_t i = 0; i < nx; ++i) dx[i] -= dx0[i];
    for (size_t i = 0; i < nw; ++i) dw[i] -= dw0[i];
    for (size_t i = 0; i < db.size(); ++i) db[i] -= db0[i];
    EXPECT_BF16_CLOSE(dx, dx_ref, what + ": bf16 input gradient");
    EXPECT_BF16_CLOSE(dw, dw_ref, what + ": bf16 weight gradient");
    DFL_EXPECT_CLOSE(db.data(), db_ref.data(), db.size(), 1e-4, 1e-4, what + ": bias gradient (float32)");
  }

  // Linear layers: bf16 operands, float32 output, accumulating backward.
  const int B = 16, IN = 96, OUT = 40;
  const Vec x = randn(size_t(B) * IN, rng), w = randn(size_t(OUT) * IN, rng, 0.1f), b = randn(OUT, rng),
            dy = randn(size_t(B) * OUT, rng);
  const Vec xr = rounded(x), wr = rounded(w), dyr = rounded(dy);
  Vec y(size_t(B) * OUT), y_ref(y.size());
  ops::linear_forward(y.data(), x.data(), w.data(), b.data(), B, IN, OUT, Activation::None, bf16());
  cpu::linear_forward(y_ref.data(), xr.data(), wr.data(), b.data(), B, IN, OUT);
  DFL_EXPECT_CLOSE(y.data(), y_ref.data(), y.size(), 1e-4 * rms(y_ref), 1e-5, "bf16 linear forward");
  Vec dx(x.size(), 0.f), dw(w.size(), 0.f), dx_ref(x.size(), 0.f), dw_ref(w.size(), 0.f);
  ops::linear_backward(dx.data(), dw.data(), nullptr, dy.data(), x.data(), w.data(), B, IN, OUT, bf16());
  cpu::linear_backward(dx_ref.data(), dw_ref.data(), nullptr, dyr.data(), xr.data(), wr.data(), B, IN, OUT);
  DFL_EXPECT_CLOSE(dx.data(), dx_ref.data(), dx.size(), 1e-4 * rms(dx_ref), 1e-5, "bf16 linear input gradient");
  DFL_EXPECT_CLOSE(dw.data(), dw_ref.data(), dw.size(), 1e-4 * rms(dw_ref), 1e-5, "bf16 linear weight gradient");
}

// A model in bf16: refused on a backend without it; elsewhere its teachers' soft targets stay within
// the stated tolerance of float32's, and a training step's loss within 1%.
DFL_TEST(bf16_models_stay_within_the_stated_tolerance_of_float32) {
  const ModelSpec spec = read_model_spec_json(fixture_path("model_step_spec.json"));
  Model model(spec, 3, backend_ptr());
  std::string why;
  if (!backend().supports(bf16(), &why)) {
    const std::string msg = thrown([&] { model.set_math(bf16()); });
    DFL_EXPECT(
        msg.find("Cannot compute in bf16") != std::string::npos && msg.find("--precision fp32") != std::string::npos,
        "set_math(bf16) says what to do, got: " << msg);
    DFL_EXPECT(!model.math().bf16, "a refused mode is not kept");
    return;
  }
  const int B = 32, NC = model.num_classes();
  Rng rng(8);
  const Vec x = randn(size_t(B) * spec.in_channels * spec.height * spec.width, rng);
  std::vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) labels[b] = b % NC;
  const SgdConfig sgd{0.05f, 0.9f, 5e-4f, true, false};
  LossConfig loss;
  // A few float32 steps, so the weights and BN statistics are not the initial ones.
  for (int step = 0; step < 3; ++step) model.train_step(x.data(), labels.data(), B, Distillation{}, loss, sgd, step);

  const float T = 4.f;
  auto soft_targets = [&](const Teacher& t) {
    Vec logits(size_t(B) * NC), p(logits.size());
    t.forward(x.data(), B, logits.data());
    for (int b = 0; b < B; ++b) {
      const float* l = &logits[size_t(b) * NC];
      double mx = l[0], sum = 0;
      for (int c = 1; c < NC; ++c) mx = std::max(mx, double(l[c]));
      for (int c = 0; c < NC; ++c) sum += std::exp((l[c] - mx) / T);
      for (int c = 0; c < NC; ++c) p[size_t(b) * NC + c] = float(std::exp((l[c] - mx) / T) / sum);
    }
    return p;
  };
  const auto teacher32 = model.snapshot();
  model.set_math(bf16());
  const auto teacher16 = model.snapshot();
  DFL_EXPECT(teacher16->math().bf16 && !teacher32->math().bf16, "a snapshot computes as its model did when taken");
  const Vec p32 = soft_targets(*teacher32), p16 = soft_targets(*teacher16);
  DFL_EXPECT_CLOSE(p16.data(), p32.data(), p32.size(), 0.02, 0.0, "bf16 teacher soft targets vs float32 (T = 4)");

  // The same step from the same state in both modes.
  const std::vector<float> params = model.get_params(), buffers = model.get_buffers(), mom = model.get_momentum();
  const StepStats s16 = model.train_step(x.data(), labels.data(), B, Distillation{}, loss, sgd, 7);
  model.set_params(params.data(), params.size());
  model.set_buffers(buffers.data(), buffers.size());
  model.set_momentum(mom.data(), mom.size());
  model.set_math(MathMode{});
  const StepStats s32 = model.train_step(x.data(), labels.data(), B, Distillation{}, loss, sgd, 7);
  DFL_EXPECT(s16.finite && std::isfinite(s16.loss), "a bf16 step is finite");
  DFL_EXPECT(std::fabs(s16.loss - s32.loss) <= 0.01 * std::fabs(s32.loss),
             "bf16 step loss " << s16.loss << " vs float32 " << s32.loss << " (1% tolerance)");
  DFL_EXPECT(s16.correct >= 0 && s16.correct <= B, "correct count in range");
}

// MathMode::nondeterministic may pick other algorithms, never other results beyond float rounding.
DFL_TEST(nondeterministic_convolutions_agree_with_deterministic_ones) {
  Rng rng(12);
  Conv2dShape s{8, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1};
  const size_t nx = size_t(s.B) * s.C * s.H * s.W, ny = size_t(s.B) * s.OC * s.OH() * s.OW(),
               nw = size_t(s.OC) * s.C * 9;
  const Vec x = randn(nx, rng), w = randn(nw, rng, 0.1f), dy = randn(ny, rng);
  Vec y_det(ny), y_any(ny), dw_det(nw, 0.f), dw_any(nw, 0.f);
  ops::conv2d_forward(y_det.data(), x.data(), w.data(), nullptr, s, nullptr);
  ops::conv2d_backward(nullptr, dw_det.data(), nullptr, dy.data(), x.data(), w.data(), s, nullptr);
  s.math.nondeterministic = true;
  ops::conv2d_forward(y_any.data(), x.data(), w.data(), nullptr, s, nullptr);
  ops::conv2d_backward(nullptr, dw_any.data(), nullptr, dy.data(), x.data(), w.data(), s, nullptr);
  DFL_EXPECT_CLOSE(y_any.data(), y_det.data(), ny, 1e-4, 1e-4, "forward, any algorithm vs deterministic");
  DFL_EXPECT_CLOSE(dw_any.data(), dw_det.data(), nw, 1e-3, 1e-4, "weight gradient, any algorithm vs deterministic");
}

}  // namespace dfl::test
