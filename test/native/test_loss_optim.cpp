// Tests for cross-entropy, the fused ensemble KL, and SGD.
//
// Gradient checks differentiate the MEAN loss (sum of per-sample float losses, in double, / B) with
// the backward called at scale = 1/B, h = 1e-2 on float32 logits:
//   |analytic - numeric| <= 1e-3 + 1e-2 * max(|analytic|, |numeric|).
// Per-sample float losses carry ~1e-7 relative rounding (~1e-5 after / 2h), so the margin is large.
// Forward values are compared with direct double-precision references (1e-5 abs + 1e-5 rel on
// losses, 1e-6 on probabilities); SGD against a double re-implementation of torch.optim.SGD
// (1e-6 abs + 1e-5 rel after 3 steps, i.e. a few float roundings).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "core/parallel.h"
#include "backend_ops.h"
#include "cpu/kernels.h"
#include "harness.h"

using namespace dfl;
using namespace dfl::test::ops;
using dfl::test::on_cpu;
using dfl::test::randn;
using dfl::test::randu;

namespace {

using Vec = std::vector<float>;

void expect_accumulates(const char* what, Vec& grad, const std::function<void()>& bwd, const char* file, int line) {
  std::fill(grad.begin(), grad.end(), 0.f);
  bwd();
  const Vec fresh = grad;
  Rng rng(999);
  const Vec pre = randn(grad.size(), rng);
  grad = pre;
  bwd();
  Vec want(grad.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = pre[i] + fresh[i];
  // One float add: 1e-6 abs + 1e-6 rel.
  dfl::test::expect_close_arrays(grad.data(), want.data(), want.size(), 1e-6, 1e-6,
                                 std::string(what) + " accumulates (+=)", file, line);
  grad = fresh;
}
#define EXPECT_ACCUMULATES(what, grad, ...) expect_accumulates((what), (grad), (__VA_ARGS__), __FILE__, __LINE__)

double mean_of(const Vec& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / double(v.size());
}

// Direct double log-sum-exp.
double lse(const float* x, int n, double scale) {
  double m = -INFINITY;
  for (int i = 0; i < n; ++i) m = std::max(m, x[i] * scale);
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(x[i] * scale - m);
  return m + std::log(s);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Cross-entropy

DFL_TEST(ce_forward_matches_double_reference) {
  Rng rng(20);
  const int B = 3, NC = 7;
  const Vec logits = randn(size_t(B) * NC, rng, 3.f);
  const std::vector<int32_t> t = {0, 6, 3};
  for (float eps : {0.f, 0.1f}) {
    Vec losses(B), probs(size_t(B) * NC);
    const float mean = cross_entropy_forward(losses.data(), probs.data(), logits.data(), t.data(), B, NC, eps);
    Vec want(B), wprobs(size_t(B) * NC);
    for (int b = 0; b < B; ++b) {
      const float* x = logits.data() + b * NC;
      const double z = lse(x, NC, 1.0);
      double l = 0;
      for (int c = 0; c < NC; ++c) {
        const double target = (c == t[b] ? 1.0 - eps : 0.0) + eps / NC;
        l -= target * (x[c] - z);
        wprobs[size_t(b) * NC + c] = float(std::exp(x[c] - z));
      }
      want[b] = float(l);
    }
    DFL_EXPECT_CLOSE(losses.data(), want.data(), B, 1e-5, 1e-5, "ce per-sample losses");
    DFL_EXPECT_CLOSE(probs.data(), wprobs.data(), probs.size(), 1e-6, 1e-6, "ce probs");
    DFL_EXPECT(std::fabs(mean - mean_of(want)) < 1e-5, "ce mean " << mean << " vs " << mean_of(want));
  }
  // Stability: huge logits stay finite and exact.
  const Vec big = {1000.f, 0.f, -1000.f};
  const int32_t t0 = 1;
  float l, p[3];
  cross_entropy_forward(&l, p, big.data(), &t0, 1, 3, 0.f);
  DFL_EXPECT(std::isfinite(l) && std::fabs(l - 1000.f) < 1e-3f, "ce with logits +-1000: " << l);
  DFL_EXPECT(p[0] == 1.f && p[2] == 0.f, "probs saturate cleanly");
}

DFL_TEST(ce_backward_gradcheck_with_and_without_smoothing) {
  Rng rng(21);
  const int B = 3, NC = 7;
  const std::vector<int32_t> t = {2, 0, 6};
  for (float eps : {0.f, 0.1f}) {
    Vec logits = randn(size_t(B) * NC, rng, 2.f), losses(B), probs(size_t(B) * NC), d(size_t(B) * NC);
    auto loss = [&] {
      cross_entropy_forward(losses.data(), probs.data(), logits.data(), t.data(), B, NC, eps);
      return mean_of(losses);
    };
    loss();
    EXPECT_ACCUMULATES("ce backward", d,
                       [&] { cross_entropy_backward(d.data(), probs.data(), t.data(), B, NC, eps, 1.f / B); });
    DFL_GRADCHECK(eps == 0.f ? "ce dlogits" : "ce dlogits (smoothed)", logits, d, loss, 1e-2, 1e-3, 1e-2);
  }
}

DFL_CPU_TEST(ce_bad_targets_throw) {
  const Vec logits(6, 0.f);
  Vec losses(2), probs(6), d(6);
  const std::vector<int32_t> neg = {0, -1}, big = {3, 0};
  DFL_EXPECT_THROWS(cpu::cross_entropy_forward(losses.data(), probs.data(), logits.data(), neg.data(), 2, 3, 0.f),
                    "target -1");
  DFL_EXPECT_THROWS(cpu::cross_entropy_forward(losses.data(), probs.data(), logits.data(), big.data(), 2, 3, 0.f),
                    "target NC");
  DFL_EXPECT_THROWS(cpu::cross_entropy_backward(d.data(), probs.data(), big.data(), 2, 3, 0.f, 1.f),
                    "backward target NC");
  const std::vector<int32_t> ok = {0, 2};
  DFL_EXPECT_THROWS(cpu::cross_entropy_forward(losses.data(), probs.data(), logits.data(), ok.data(), 2, 3, 1.5f),
                    "label_smoothing > 1");
}

// ------------------------------------------------------------------------------------------------
// Ensemble KL

namespace {
// Direct double computation of the header's formula; returns per-sample losses, fills p and q.
std::vector<double> kl_reference(const Vec& s, const Vec& t, const float* w, int K, int B, int NC, double T,
                                 std::vector<double>& p, std::vector<double>& q) {
  std::vector<double> out(B);
  p.assign(size_t(B) * NC, 0.0);
  q.assign(size_t(B) * NC, 0.0);
  for (int b = 0; b < B; ++b) {
    double ws = 0;
    for (int k = 0; k < K; ++k) ws += w ? w[k * B + b] : 1.0;
    for (int k = 0; k < K; ++k) {
      const float* tk = t.data() + (size_t(k) * B + b) * NC;
      const double z = lse(tk, NC, 1.0 / T);
      for (int c = 0; c < NC; ++c) p[size_t(b) * NC + c] += (w ? w[k * B + b] : 1.0) / ws * std::exp(tk[c] / T - z);
    }
    const double z = lse(s.data() + size_t(b) * NC, NC, 1.0 / T);
    double kl = 0;
    for (int c = 0; c < NC; ++c) {
      const double lq = s[size_t(b) * NC + c] / T - z;
      q[size_t(b) * NC + c] = std::exp(lq);
      const double pc = p[size_t(b) * NC + c];
      if (pc > 0) kl += pc * (std::log(pc) - lq);
    }
    out[b] = T * T * kl;
  }
  return out;
}
}  // namespace

DFL_TEST(kl_forward_backward_all_modes) {
  Rng rng(22);
  const int B = 3, NC = 7;
  for (int K : {1, 3})
    for (bool weighted : {false, true})
      for (float T : {1.f, 4.f}) {
        const std::string tag =
            "K=" + std::to_string(K) + (weighted ? " weighted" : " uniform") + " T=" + std::to_string(int(T));
        Vec s = randn(size_t(B) * NC, rng, 2.f);
        const Vec t = randn(size_t(K) * B * NC, rng, 3.f);
        const Vec w = randu(size_t(K) * B, rng, 0.1f, 2.f);
        const float* wp = weighted ? w.data() : nullptr;
        Vec losses(B), sp(size_t(B) * NC), tp(size_t(B) * NC), d(size_t(B) * NC);
        const float mean =
            ensemble_kl_forward(losses.data(), sp.data(), tp.data(), s.data(), t.data(), wp, K, B, NC, T);
        std::vector<double> p, q;
        const std::vector<double> ref = kl_reference(s, t, wp, K, B, NC, T, p, q);
        Vec reff(ref.begin(), ref.end()), pf(p.begin(), p.end()), qf(q.begin(), q.end());
        DFL_EXPECT_CLOSE(losses.data(), reff.data(), B, 1e-5, 1e-5, "kl losses " + tag);
        DFL_EXPECT_CLOSE(tp.data(), pf.data(), pf.size(), 1e-6, 1e-6, "kl teacher probs " + tag);
        DFL_EXPECT_CLOSE(sp.data(), qf.data(), qf.size(), 1e-6, 1e-6, "kl student probs " + tag);
        DFL_EXPECT(std::fabs(mean - mean_of(reff)) < 1e-5, tag << " mean");
        for (float l : losses) DFL_EXPECT(l >= -1e-6f, tag << " KL must be >= 0, got " << l);
        // Backward is exactly scale * T * (q - p).
        const float scale = 0.7f;
        Vec formula(d.size());
        for (size_t i = 0; i < d.size(); ++i) formula[i] = scale * T * (sp[i] - tp[i]);
        EXPECT_ACCUMULATES("kl backward", d,
                           [&] { ensemble_kl_backward(d.data(), sp.data(), tp.data(), B, NC, T, scale); });
        DFL_EXPECT_CLOSE(d.data(), formula.data(), d.size(), 1e-7, 1e-6, "kl grad formula " + tag);
        // Finite differences of the mean loss w.r.t. the student logits.
        std::fill(d.begin(), d.end(), 0.f);
        ensemble_kl_backward(d.data(), sp.data(), tp.data(), B, NC, T, 1.f / B);
        auto loss = [&] {
          ensemble_kl_forward(losses.data(), sp.data(), tp.data(), s.data(), t.data(), wp, K, B, NC, T);
          return mean_of(losses);
        };
        DFL_GRADCHECK("kl dstudent " + tag, s, d, loss, 1e-2, 1e-3, 1e-2);
      }
}

DFL_TEST(kl_weights_normalised_per_sample) {
  Rng rng(23);
  const int K = 3, B = 3, NC = 5;
  const Vec s = randn(size_t(B) * NC, rng), t = randn(size_t(K) * B * NC, rng, 2.f);
  Vec w = randu(size_t(K) * B, rng, 0.1f, 1.f), w2 = w;
  for (int k = 0; k < K; ++k) w2[size_t(k) * B + 1] *= 8.f;  // rescale sample 1's weights only
  Vec l1(B), l2(B), sp(size_t(B) * NC), tp(size_t(B) * NC), tp2(size_t(B) * NC);
  ensemble_kl_forward(l1.data(), sp.data(), tp.data(), s.data(), t.data(), w.data(), K, B, NC, 2.f);
  ensemble_kl_forward(l2.data(), sp.data(), tp2.data(), s.data(), t.data(), w2.data(), K, B, NC, 2.f);
  DFL_EXPECT_CLOSE(l2.data(), l1.data(), B, 1e-6, 1e-6, "per-sample rescaled weights");
  DFL_EXPECT_CLOSE(tp2.data(), tp.data(), tp.size(), 1e-7, 1e-6, "per-sample rescaled weights (p_T)");
  // A zero weight removes that teacher for that sample: same as K=2 without it.
  Vec wz = w;
  wz[size_t(2) * B + 0] = 0.f;
  Vec lz(B), l2t(B), tpz(size_t(B) * NC), tp2t(size_t(B) * NC);
  ensemble_kl_forward(lz.data(), sp.data(), tpz.data(), s.data(), t.data(), wz.data(), K, B, NC, 2.f);
  ensemble_kl_forward(l2t.data(), sp.data(), tp2t.data(), s.data(), t.data(), wz.data(), 2, B, NC, 2.f);
  DFL_EXPECT(std::fabs(lz[0] - l2t[0]) < 1e-6f, "zero weight == teacher absent: " << lz[0] << " vs " << l2t[0]);
}

DFL_TEST(kl_zero_when_student_matches_teachers) {
  Rng rng(24);
  const int B = 3, NC = 6;
  const Vec s = randn(size_t(B) * NC, rng, 2.f);
  Vec losses(B), sp(size_t(B) * NC), tp(size_t(B) * NC);
  for (float T : {1.f, 4.f}) {
    // K = 1 with the student's own logits, and K = 3 identical copies.
    Vec t3;
    for (int k = 0; k < 3; ++k) t3.insert(t3.end(), s.begin(), s.end());
    float m = ensemble_kl_forward(losses.data(), sp.data(), tp.data(), s.data(), s.data(), nullptr, 1, B, NC, T);
    DFL_EXPECT(std::fabs(m) < 1e-6f, "KL(student || itself) = " << m);
    m = ensemble_kl_forward(losses.data(), sp.data(), tp.data(), s.data(), t3.data(), nullptr, 3, B, NC, T);
    DFL_EXPECT(std::fabs(m) < 1e-6f, "KL with 3 identical teachers = " << m);
    // A student whose logits are T * log(p_T) of a real mixture reproduces it: KL ~ 0.
    const Vec t = randn(size_t(3) * B * NC, rng, 2.f);
    const Vec w = randu(size_t(3) * B, rng, 0.2f, 1.f);
    ensemble_kl_forward(losses.data(), sp.data(), tp.data(), s.data(), t.data(), w.data(), 3, B, NC, T);
    Vec s2(s.size());
    for (size_t i = 0; i < s2.size(); ++i) s2[i] = T * std::log(tp[i]);
    m = ensemble_kl_forward(losses.data(), sp.data(), tp.data(), s2.data(), t.data(), w.data(), 3, B, NC, T);
    // float logits of the mixture: relative error ~1e-7 each, KL is second order in it.
    DFL_EXPECT(std::fabs(m) < 1e-5f, "KL with the student at the mixture = " << m);
    Vec d(s.size(), 0.f);
    ensemble_kl_backward(d.data(), sp.data(), tp.data(), B, NC, T, 1.f);
    for (float g : d) DFL_EXPECT(std::fabs(g) < 1e-5f, "gradient at the optimum " << g);
  }
}

DFL_TEST(kl_zero_log_zero) {
  // Teacher probability of class 2 underflows to exactly 0 (exp(-1e4)): the term contributes 0,
  // so the loss stays finite and matches the reference.
  const int B = 1, NC = 3;
  const Vec s = {0.5f, -0.2f, 0.1f}, t = {1.f, 0.f, -1e4f};
  Vec losses(B), sp(NC), tp(NC);
  const float m = ensemble_kl_forward(losses.data(), sp.data(), tp.data(), s.data(), t.data(), nullptr, 1, B, NC, 1.f);
  DFL_EXPECT(tp[2] == 0.f, "teacher prob should underflow to 0, got " << tp[2]);
  std::vector<double> p, q;
  const double want = kl_reference(s, t, nullptr, 1, B, NC, 1.0, p, q)[0];
  DFL_EXPECT(std::isfinite(m) && std::fabs(m - want) < 1e-6, "0 log 0: " << m << " vs " << want);
}

DFL_CPU_TEST(kl_errors_throw) {
  const int B = 2, NC = 3;
  const Vec s(size_t(B) * NC, 0.f), t(size_t(2) * B * NC, 0.f);
  Vec l(B), sp(size_t(B) * NC), tp(size_t(B) * NC);
  const Vec zero_sum = {1.f, 0.f, 1.f, 0.f};  // (K=2, B=2): sample 1 has weights 0 + 0
  const Vec negative = {1.f, 1.f, -0.5f, 1.f};
  const Vec ok = {1.f, 1.f, 1.f, 1.f};
  DFL_EXPECT_THROWS(
      cpu::ensemble_kl_forward(l.data(), sp.data(), tp.data(), s.data(), t.data(), zero_sum.data(), 2, B, NC, 1.f),
      "zero weight sum");
  DFL_EXPECT_THROWS(
      cpu::ensemble_kl_forward(l.data(), sp.data(), tp.data(), s.data(), t.data(), negative.data(), 2, B, NC, 1.f),
      "negative weight");
  DFL_EXPECT_THROWS(
      cpu::ensemble_kl_forward(l.data(), sp.data(), tp.data(), s.data(), t.data(), ok.data(), 0, B, NC, 1.f), "K = 0");
  DFL_EXPECT_THROWS(
      cpu::ensemble_kl_forward(l.data(), sp.data(), tp.data(), s.data(), t.data(), ok.data(), 2, B, NC, 0.f), "T = 0");
}

DFL_TEST(loss_thread_determinism) {
  Rng rng(25);
  const int B = 512, NC = 100, K = 3;
  const Vec logits = randn(size_t(B) * NC, rng, 2.f), t = randn(size_t(K) * B * NC, rng, 2.f),
            w = randu(size_t(K) * B, rng, 0.1f, 1.f);
  std::vector<int32_t> y(B);
  for (auto& v : y) v = int32_t(rng.below(NC));
  DFL_EXPECT_THREAD_DETERMINISTIC("losses", [&] {
    Vec l(B), p(size_t(B) * NC), d(size_t(B) * NC, 0.f), kl(B), sp(size_t(B) * NC), tp(size_t(B) * NC);
    const float m1 = cross_entropy_forward(l.data(), p.data(), logits.data(), y.data(), B, NC, 0.1f);
    cross_entropy_backward(d.data(), p.data(), y.data(), B, NC, 0.1f, 1.f / B);
    const float m2 =
        ensemble_kl_forward(kl.data(), sp.data(), tp.data(), logits.data(), t.data(), w.data(), K, B, NC, 4.f);
    ensemble_kl_backward(d.data(), sp.data(), tp.data(), B, NC, 4.f, 0.5f / B);
    Vec all = {m1, m2};
    for (const Vec* v : {&l, &p, &d, &kl, &sp, &tp}) all.insert(all.end(), v->begin(), v->end());
    return all;
  });
}

// ------------------------------------------------------------------------------------------------
// SGD

namespace {
// torch.optim.SGD's _single_tensor_sgd (dampening 0), in double, with weight decay per element
// (mask 0 = a param group with weight_decay 0). Decoupled mode decays the weights first (SGDW).
// The momentum buffer is created as a clone of d_p on the first step, as PyTorch does.
void torch_sgd_reference(std::vector<double>& p, std::vector<double>& buf, bool& have_buf, const Vec& grad,
                         const Vec* mask, const SgdConfig& c) {
  for (size_t i = 0; i < p.size(); ++i) {
    const double wd = double(c.weight_decay) * (mask ? (*mask)[i] : 1.0);
    double d_p = grad[i];
    if (c.decoupled)
      p[i] *= 1.0 - double(c.lr) * wd;
    else if (wd != 0)
      d_p += wd * p[i];
    if (c.momentum != 0) {
      buf[i] = have_buf ? buf[i] * c.momentum + d_p : d_p;
      d_p = c.nesterov ? d_p + c.momentum * buf[i] : buf[i];
    }
    p[i] -= double(c.lr) * d_p;
  }
  have_buf = true;
}
}  // namespace

DFL_TEST(sgd_matches_torch_algorithm_all_modes) {
  const size_t n = 257;
  for (int mode = 0; mode < 10; ++mode) {
    SgdConfig c;
    c.lr = 0.05f;
    c.momentum = mode < 8 ? 0.9f : 0.f;
    c.weight_decay = 0.01f;  // large enough that the decay term is visible at this tolerance
    c.nesterov = (mode & 1) != 0;
    c.decoupled = (mode & 2) != 0;
    const bool masked = (mode & 4) != 0;
    const std::string tag = "nesterov=" + std::to_string(c.nesterov) + " decoupled=" + std::to_string(c.decoupled) +
                            " mask=" + std::to_string(masked) + " momentum=" + std::to_string(c.momentum);
    Rng rng(30 + mode);
    Vec params = randn(n, rng), buf(n, 0.f), mask(n);
    for (auto& m : mask) m = float(rng.below(2));
    std::vector<double> rp(params.begin(), params.end()), rb(n, 0.0);
    bool have = false;
    for (int step = 0; step < 3; ++step) {
      const Vec g = randn(n, rng);
      // momentum == 0 needs no buffer (nullptr allowed).
      sgd_step(params.data(), c.momentum != 0 ? buf.data() : nullptr, g.data(), masked ? mask.data() : nullptr, n, c);
      torch_sgd_reference(rp, rb, have, g, masked ? &mask : nullptr, c);
    }
    const Vec want(rp.begin(), rp.end());
    DFL_EXPECT_CLOSE(params.data(), want.data(), n, 1e-6, 1e-5, "sgd params after 3 steps, " + tag);
    if (c.momentum != 0) {
      const Vec wb(rb.begin(), rb.end());
      DFL_EXPECT_CLOSE(buf.data(), wb.data(), n, 1e-6, 1e-5, "sgd momentum buffer, " + tag);
    }
  }
  // The mask really excludes decay: with zero grads and mask 0, params stay put (no momentum).
  SgdConfig c;
  c.momentum = 0.f;
  c.weight_decay = 0.1f;
  Vec p = {1.f, 2.f}, g = {0.f, 0.f}, mask = {0.f, 1.f};
  sgd_step(p.data(), nullptr, g.data(), mask.data(), 2, c);
  DFL_EXPECT(p[0] == 1.f && std::fabs(p[1] - 2.f * (1.f - 0.1f * 0.1f)) < 1e-7f, "mask: " << p[0] << ", " << p[1]);
  if (on_cpu())
    DFL_EXPECT_THROWS(sgd_step(p.data(), nullptr, g.data(), nullptr, 2, SgdConfig{}), "momentum without a buffer");
}
