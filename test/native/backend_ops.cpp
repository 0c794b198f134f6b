#include "backend_ops.h"

#include <limits>
#include <numeric>
#include <vector>

#include "core/augment_draws.h"
#include "cpu/kernels.h"
#include "harness.h"

namespace dfl::test::ops {

namespace {

// A device copy of a host array for one kernel call. Null host pointers stay null on the device.
class Dev {
 public:
  enum Mode { In, InOut, Out, OutFloats };
  Dev(const void* host, size_t bytes, Mode mode) : host_(const_cast<void*>(host)), bytes_(bytes), mode_(mode) {
    if (!host) return;
    Backend& be = backend();
    buf_ = DeviceBuffer(backend_ptr(), bytes ? bytes : 1, "test array");
    if (mode == In || mode == InOut) {
      if (bytes) be.upload(buf_.get(), host, bytes);
    } else if (mode == OutFloats) {
      be.fill(buf_.f(), std::numeric_limits<float>::quiet_NaN(), bytes / sizeof(float));
    }
  }
  float* f() const { return buf_.f(); }
  int32_t* i32() const { return buf_.i32(); }
  uint8_t* u8() const { return buf_.u8(); }
  // Copies an output back to its host array.
  void back() {
    if (host_ && mode_ != In && bytes_) backend().download(host_, buf_.get(), bytes_);
  }

 private:
  void* host_;
  size_t bytes_;
  Mode mode_;
  DeviceBuffer buf_;
};

size_t F(size_t n) { return n * sizeof(float); }
Dev in(const float* h, size_t n) { return Dev(h, F(n), Dev::In); }
Dev inout(float* h, size_t n) { return Dev(h, F(n), Dev::InOut); }
Dev out(float* h, size_t n) { return Dev(h, F(n), Dev::OutFloats); }
Dev in_i32(const int32_t* h, size_t n) { return Dev(h, n * sizeof(int32_t), Dev::In); }

size_t conv_in(const Conv2dShape& s) { return size_t(s.B) * s.C * s.H * s.W; }
size_t conv_w(const Conv2dShape& s) { return size_t(s.OC) * (s.C / s.groups) * s.KH * s.KW; }
size_t conv_out(const Conv2dShape& s) { return size_t(s.B) * s.OC * s.OH() * s.OW(); }
size_t pool_in(const Pool2dShape& s) { return size_t(s.B) * s.C * s.H * s.W; }
size_t pool_out(const Pool2dShape& s) { return size_t(s.B) * s.C * s.OH() * s.OW(); }

// A reduction's one-value result in device memory, poisoned first (a kernel that does not write it
// fails its test), read back after the call.
template <typename T>
class Result {
 public:
  Result() : buf_(backend_ptr(), sizeof(T), "test result") {
    const T poison = std::numeric_limits<T>::has_quiet_NaN ? std::numeric_limits<T>::quiet_NaN() : T(-12345);
    backend().upload(buf_.get(), &poison, sizeof(T));
  }
  T* get() const { return static_cast<T*>(buf_.get()); }
  T value() const {
    T v{};
    backend().download(&v, buf_.get(), sizeof(T));
    return v;
  }

 private:
  DeviceBuffer buf_;
};

DeviceBuffer nan_workspace(size_t bytes) {
  DeviceBuffer ws(backend_ptr(), bytes ? bytes : 4, "conv workspace");
  backend().fill(ws.f(), std::numeric_limits<float>::quiet_NaN(), ws.bytes() / sizeof(float));
  return ws;
}

}  // namespace

size_t conv2d_workspace_bytes(const Conv2dShape& s) { return backend().conv2d_workspace_bytes(s); }

void conv2d_forward(float* o, const float* inp, const float* weight, const float* bias, const Conv2dShape& s, float*,
                    Activation act) {
  Dev x = in(inp, conv_in(s)), w = in(weight, conv_w(s)), b = in(bias, size_t(s.OC)), y = out(o, conv_out(s));
  DeviceBuffer ws = nan_workspace(backend().conv2d_workspace_bytes(s));
  backend().conv2d_forward(y.f(), x.f(), w.f(), b.f(), s, ws.get(), ws.bytes(), act);
  y.back();
}

void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, const Conv2dShape& s, float*, bool overwrite_dinp) {
  Dev dx = inout(dinp, conv_in(s)), dw = inout(dweight, conv_w(s)), db = inout(dbias, size_t(s.OC));
  Dev dy = in(dout, conv_out(s)), x = in(inp, conv_in(s)), w = in(weight, conv_w(s));
  DeviceBuffer ws = nan_workspace(backend().conv2d_workspace_bytes(s));
  backend().conv2d_backward(dx.f(), dw.f(), db.f(), dy.f(), x.f(), w.f(), s, ws.get(), ws.bytes(), overwrite_dinp);
  dx.back();
  dw.back();
  db.back();
}

void linear_forward(float* o, const float* inp, const float* weight, const float* bias, int B, int IN, int OUT,
                    Activation act, const MathMode& math) {
  Dev x = in(inp, size_t(B) * IN), w = in(weight, size_t(OUT) * IN), b = in(bias, size_t(OUT));
  Dev y = out(o, size_t(B) * OUT);
  backend().linear_forward(y.f(), x.f(), w.f(), b.f(), B, IN, OUT, act, math);
  y.back();
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int IN, int OUT, const MathMode& math) {
  Dev dx = inout(dinp, size_t(B) * IN), dw = inout(dweight, size_t(OUT) * IN), db = inout(dbias, size_t(OUT));
  Dev dy = in(dout, size_t(B) * OUT), x = in(inp, size_t(B) * IN), w = in(weight, size_t(OUT) * IN);
  backend().linear_backward(dx.f(), dw.f(), db.f(), dy.f(), x.f(), w.f(), B, IN, OUT, math);
  dx.back();
  dw.back();
  db.back();
}

void batchnorm2d_forward_train(float* o, float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                               const float* inp, const float* gamma, const float* beta, int B, int C, int HW,
                               float momentum, float eps) {
  const size_t n = size_t(B) * C * HW;
  Dev y = out(o, n), sm = out(save_mean, C), si = out(save_invstd, C);
  Dev rm = inout(running_mean, C), rv = inout(running_var, C);
  Dev x = in(inp, n), g = in(gamma, C), b = in(beta, C);
  backend().batchnorm2d_forward_train(y.f(), sm.f(), si.f(), rm.f(), rv.f(), x.f(), g.f(), b.f(), B, C, HW, momentum,
                                      eps);
  for (Dev* d : {&y, &sm, &si, &rm, &rv}) d->back();
}

void batchnorm2d_forward_eval(float* o, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int B, int C, int HW, float eps) {
  const size_t n = size_t(B) * C * HW;
  Dev y = out(o, n), x = in(inp, n), g = in(gamma, C), b = in(beta, C), rm = in(running_mean, C),
      rv = in(running_var, C);
  backend().batchnorm2d_forward_eval(y.f(), x.f(), g.f(), b.f(), rm.f(), rv.f(), B, C, HW, eps);
  y.back();
}

void batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                          const float* gamma, const float* save_mean, const float* save_invstd, int B, int C, int HW) {
  const size_t n = size_t(B) * C * HW;
  Dev dx = inout(dinp, n), dg = inout(dgamma, C), db = inout(dbeta, C);
  Dev dy = in(dout, n), x = in(inp, n), g = in(gamma, C), sm = in(save_mean, C), si = in(save_invstd, C);
  backend().batchnorm2d_backward(dx.f(), dg.f(), db.f(), dy.f(), x.f(), g.f(), sm.f(), si.f(), B, C, HW);
  for (Dev* d : {&dx, &dg, &db}) d->back();
}

void batchnorm2d_forward_train_fused(float* o, float* save_mean, float* save_invstd, float* running_mean,
                                     float* running_var, const float* inp, const float* gamma, const float* beta, int B,
                                     int C, int HW, float momentum, float eps, Activation act) {
  const size_t n = size_t(B) * C * HW;
  Dev y = out(o, n), sm = out(save_mean, C), si = out(save_invstd, C);
  Dev rm = inout(running_mean, C), rv = inout(running_var, C);
  Dev x = in(inp, n), g = in(gamma, C), b = in(beta, C);
  backend().batchnorm2d_forward_train_fused(y.f(), sm.f(), si.f(), rm.f(), rv.f(), x.f(), g.f(), b.f(), B, C, HW,
                                            momentum, eps, act);
  for (Dev* d : {&y, &sm, &si, &rm, &rv}) d->back();
}

void batchnorm2d_forward_eval_fused(float* o, const float* inp, const float* gamma, const float* beta,
                                    const float* running_mean, const float* running_var, int B, int C, int HW,
                                    float eps, Activation act) {
  const size_t n = size_t(B) * C * HW;
  Dev y = out(o, n), x = in(inp, n), g = in(gamma, C), b = in(beta, C), rm = in(running_mean, C),
      rv = in(running_var, C);
  backend().batchnorm2d_forward_eval_fused(y.f(), x.f(), g.f(), b.f(), rm.f(), rv.f(), B, C, HW, eps, act);
  y.back();
}

void activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) {
  Dev dy = inout(dout, n), o = in(y, n);
  backend().activation_backward_inplace(dy.f(), o.f(), n, act);
  dy.back();
}

void batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout, const float* o, const float* inp,
                                const float* gamma, const float* save_mean, const float* save_invstd, int B, int C,
                                int HW, Activation act, bool overwrite_dinp) {
  const size_t n = size_t(B) * C * HW;
  Dev dx = inout(dinp, n), dg = inout(dgamma, C), db = inout(dbeta, C), dy = inout(dout, n);
  Dev y = in(o, n), x = in(inp, n), g = in(gamma, C), sm = in(save_mean, C), si = in(save_invstd, C);
  backend().batchnorm2d_backward_fused(dx.f(), dg.f(), db.f(), dy.f(), y.f(), x.f(), g.f(), sm.f(), si.f(), B, C, HW,
                                       act, overwrite_dinp);
  for (Dev* d : {&dx, &dg, &db, &dy}) d->back();
}

void fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in, const float* gamma,
                    const float* beta, const float* running_mean, const float* running_var, int OC, size_t per_oc,
                    float eps) {
  const size_t nw = size_t(OC) * per_oc;
  Dev wo = out(w_out, nw), bo = out(b_out, OC), wi = in(w_in, nw), bi = in(b_in, OC), g = in(gamma, OC),
      b = in(beta, OC), rm = in(running_mean, OC), rv = in(running_var, OC);
  backend().fold_batchnorm(wo.f(), bo.f(), wi.f(), bi.f(), g.f(), b.f(), rm.f(), rv.f(), OC, per_oc, eps);
  wo.back();
  bo.back();
}

#define DFL_ELEMENTWISE_FORWARD(name)               \
  void name(float* o, const float* inp, size_t n) { \
    Dev y = out(o, n), x = in(inp, n);              \
    backend().name(y.f(), x.f(), n);                \
    y.back();                                       \
  }
#define DFL_ELEMENTWISE_BACKWARD(name)                                    \
  void name(float* dinp, const float* dout, const float* inp, size_t n) { \
    Dev dx = inout(dinp, n), dy = in(dout, n), x = in(inp, n);            \
    backend().name(dx.f(), dy.f(), x.f(), n);                             \
    dx.back();                                                            \
  }
DFL_ELEMENTWISE_FORWARD(relu_forward)
DFL_ELEMENTWISE_FORWARD(relu6_forward)
DFL_ELEMENTWISE_BACKWARD(relu_backward)
DFL_ELEMENTWISE_BACKWARD(relu6_backward)
#undef DFL_ELEMENTWISE_FORWARD
#undef DFL_ELEMENTWISE_BACKWARD

void add_forward(float* o, const float* a, const float* b, size_t n) {
  Dev y = out(o, n), x1 = in(a, n), x2 = in(b, n);
  backend().add_forward(y.f(), x1.f(), x2.f(), n);
  y.back();
}
void add_forward_fused(float* o, const float* a, const float* b, size_t n, Activation act) {
  Dev y = out(o, n), x1 = in(a, n), x2 = in(b, n);
  backend().add_forward_fused(y.f(), x1.f(), x2.f(), n, act);
  y.back();
}
void add_backward(float* da, float* db, const float* dout, size_t n) {
  Dev d1 = inout(da, n), d2 = inout(db, n), dy = in(dout, n);
  backend().add_backward(d1.f(), d2.f(), dy.f(), n);
  d1.back();
  d2.back();
}
void accumulate(float* dst, const float* src, size_t n) {
  Dev d = inout(dst, n), s = in(src, n);
  backend().accumulate(d.f(), s.f(), n);
  d.back();
}

void maxpool2d_forward(float* o, int32_t* argmax, const float* inp, const Pool2dShape& s) {
  Dev y = out(o, pool_out(s)), am(argmax, pool_out(s) * sizeof(int32_t), Dev::Out), x = in(inp, pool_in(s));
  backend().maxpool2d_forward(y.f(), am.i32(), x.f(), s);
  y.back();
  am.back();
}
void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) {
  Dev dx = inout(dinp, pool_in(s)), dy = in(dout, pool_out(s)), am = in_i32(argmax, pool_out(s));
  backend().maxpool2d_backward(dx.f(), dy.f(), am.i32(), s);
  dx.back();
}
void avgpool2d_forward(float* o, const float* inp, const Pool2dShape& s) {
  Dev y = out(o, pool_out(s)), x = in(inp, pool_in(s));
  backend().avgpool2d_forward(y.f(), x.f(), s);
  y.back();
}
void avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) {
  Dev dx = inout(dinp, pool_in(s)), dy = in(dout, pool_out(s));
  backend().avgpool2d_backward(dx.f(), dy.f(), s);
  dx.back();
}
void global_avgpool_forward(float* o, const float* inp, int B, int C, int HW) {
  Dev y = out(o, size_t(B) * C), x = in(inp, size_t(B) * C * HW);
  backend().global_avgpool_forward(y.f(), x.f(), B, C, HW);
  y.back();
}
void global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) {
  Dev dx = inout(dinp, size_t(B) * C * HW), dy = in(dout, size_t(B) * C);
  backend().global_avgpool_backward(dx.f(), dy.f(), B, C, HW);
  dx.back();
}

namespace {
int total(const int* channels, int n) { return std::accumulate(channels, channels + n, 0); }
}  // namespace

void concat_channels_forward(float* o, const float* const* inputs, const int* channels, int n, int B, int HW) {
  std::vector<Dev> xs;
  std::vector<const float*> ptrs;
  for (int k = 0; k < n; ++k) {
    xs.push_back(in(inputs[k], size_t(B) * channels[k] * HW));
    ptrs.push_back(xs.back().f());
  }
  Dev y = out(o, size_t(B) * total(channels, n) * HW);
  backend().concat_channels_forward(y.f(), ptrs.data(), channels, n, B, HW);
  y.back();
}
void concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n, int B, int HW) {
  std::vector<Dev> dxs;
  std::vector<float*> ptrs;
  for (int k = 0; k < n; ++k) {
    dxs.push_back(inout(dinputs[k], size_t(B) * channels[k] * HW));
    ptrs.push_back(dxs.back().f());
  }
  Dev dy = in(dout, size_t(B) * total(channels, n) * HW);
  backend().concat_channels_backward(ptrs.data(), dy.f(), channels, n, B, HW);
  for (Dev& d : dxs) d.back();
}
void split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B, int HW) {
  std::vector<Dev> ys;
  std::vector<float*> ptrs;
  for (int k = 0; k < n; ++k) {
    ys.push_back(out(outputs[k], size_t(B) * channels[k] * HW));
    ptrs.push_back(ys.back().f());
  }
  Dev x = in(inp, size_t(B) * total(channels, n) * HW);
  backend().split_channels_forward(ptrs.data(), x.f(), channels, n, B, HW);
  for (Dev& y : ys) y.back();
}
void split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n, int B, int HW,
                             bool overwrite) {
  std::vector<Dev> dys;
  std::vector<const float*> ptrs;
  for (int k = 0; k < n; ++k) {
    dys.push_back(in(doutputs[k], size_t(B) * channels[k] * HW));
    ptrs.push_back(dys.back().f());
  }
  Dev dx = inout(dinp, size_t(B) * total(channels, n) * HW);
  backend().split_channels_backward(dx.f(), ptrs.data(), channels, n, B, HW, overwrite);
  dx.back();
}
void interleave_channels_forward(float* o, const float* const* inputs, int n, int cpg, int B, int HW) {
  std::vector<Dev> xs;
  std::vector<const float*> ptrs;
  for (int k = 0; k < n; ++k) {
    xs.push_back(in(inputs[k], size_t(B) * cpg * HW));
    ptrs.push_back(xs.back().f());
  }
  Dev y = out(o, size_t(B) * n * cpg * HW);
  backend().interleave_channels_forward(y.f(), ptrs.data(), n, cpg, B, HW);
  y.back();
}
void interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B, int HW,
                                  bool overwrite) {
  std::vector<Dev> dxs;
  std::vector<float*> ptrs;
  for (int k = 0; k < n; ++k) {
    dxs.push_back(inout(dinputs[k], size_t(B) * cpg * HW));
    ptrs.push_back(dxs.back().f());
  }
  Dev dy = in(dout, size_t(B) * n * cpg * HW);
  backend().interleave_channels_backward(ptrs.data(), dy.f(), n, cpg, B, HW, overwrite);
  for (Dev& d : dxs) d.back();
}
void channel_shuffle_forward(float* o, const float* inp, int B, int C, int HW, int groups) {
  Dev y = out(o, size_t(B) * C * HW), x = in(inp, size_t(B) * C * HW);
  backend().channel_shuffle_forward(y.f(), x.f(), B, C, HW, groups);
  y.back();
}
void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) {
  Dev dx = inout(dinp, size_t(B) * C * HW), dy = in(dout, size_t(B) * C * HW);
  backend().channel_shuffle_backward(dx.f(), dy.f(), B, C, HW, groups);
  dx.back();
}

void dropout_forward(float* o, float* mask, const float* inp, size_t n, float p, uint64_t seed) {
  Dev y = out(o, n), m = out(mask, n), x = in(inp, n);
  backend().dropout_forward(y.f(), m.f(), x.f(), n, p, seed);
  y.back();
  m.back();
}
void dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) {
  Dev dx = inout(dinp, n), dy = in(dout, n), m = in(mask, n);
  backend().dropout_backward(dx.f(), dy.f(), m.f(), n);
  dx.back();
}

float cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int B, int NC,
                            float label_smoothing) {
  const size_t bn = size_t(B) * NC;
  Dev l = out(losses, B), p = out(probs, bn), z = in(logits, bn), t = in_i32(targets, B);
  Result<double> sum;
  backend().cross_entropy_forward(l.f(), p.f(), z.f(), t.i32(), B, NC, label_smoothing, sum.get());
  l.back();
  p.back();
  return float(sum.value() / B);
}
void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                            float label_smoothing, float scale) {
  const size_t bn = size_t(B) * NC;
  Dev dz = inout(dlogits, bn), p = in(probs, bn), t = in_i32(targets, B);
  backend().cross_entropy_backward(dz.f(), p.f(), t.i32(), B, NC, label_smoothing, scale);
  dz.back();
}
float ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs, const float* student_logits,
                          const float* teacher_logits, const float* weights, int K, int B, int NC, float T) {
  const size_t bn = size_t(B) * NC;
  Dev l = out(losses, B), q = out(student_probs, bn), pt = out(teacher_probs, bn), zs = in(student_logits, bn),
      zt = in(teacher_logits, size_t(K) * bn), w = in(weights, size_t(K) * B);
  Result<double> sum;
  backend().ensemble_kl_forward(l.f(), q.f(), pt.f(), zs.f(), zt.f(), w.f(), K, B, NC, T, sum.get());
  for (Dev* d : {&l, &q, &pt}) d->back();
  return float(sum.value() / B);
}
void ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs, int B, int NC,
                          float T, float scale) {
  const size_t bn = size_t(B) * NC;
  Dev dz = inout(dlogits, bn), q = in(student_probs, bn), pt = in(teacher_probs, bn);
  backend().ensemble_kl_backward(dz.f(), q.f(), pt.f(), B, NC, T, scale);
  dz.back();
}
void teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) {
  Dev w = out(weights, size_t(K) * B), z = in(teacher_logits, size_t(K) * B * NC);
  backend().teacher_confidence(w.f(), z.f(), K, B, NC, T);
  w.back();
}

void sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask, size_t n,
              const SgdConfig& cfg) {
  Dev p = inout(params, n), m = inout(momentum_buf, n), g = in(grads, n), mask = in(decay_mask, n);
  backend().sgd_step(p.f(), m.f(), g.f(), mask.f(), n, cfg);
  p.back();
  m.back();
}
bool sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads, const float* decay_mask,
                           size_t n, const SgdConfig& cfg) {
  Dev p = in(params, n), m = in(momentum_buf, n), g = in(grads, n), mask = in(decay_mask, n);
  Result<int32_t> finite;
  backend().sgd_step_stays_finite(p.f(), m.f(), g.f(), mask.f(), n, cfg, finite.get());
  const int32_t v = finite.value();
  DFL_EXPECT(v == 0 || v == 1, "sgd_step_stays_finite wrote " << v);
  return v == 1;
}

void augment_batch(float* o, const uint8_t* inp, int B, int C, int H, int W, int pad, bool flip, const float* mean,
                   const float* std, Rng& rng) {
  std::vector<AugmentDraw> draws(static_cast<size_t>(B));
  augment_draws(draws.data(), B, pad, flip, rng);
  const size_t n = size_t(B) * C * H * W;
  Dev y = out(o, n), x(inp, n, Dev::In);
  backend().augment_batch(y.f(), x.u8(), B, C, H, W, pad, draws.data(), mean, std);
  y.back();
}
void normalize_batch(float* o, const uint8_t* inp, int B, int C, int H, int W, const float* mean, const float* std) {
  const size_t n = size_t(B) * C * H * W;
  Dev y = out(o, n), x(inp, n, Dev::In);
  backend().normalize_batch(y.f(), x.u8(), B, C, H, W, mean, std);
  y.back();
}

void gather_images(uint8_t* dst, const uint8_t* src, size_t N, const int32_t* indices, int B, size_t image_bytes) {
  Dev set(src, N * image_bytes, Dev::In), batch(dst, size_t(B) * image_bytes, Dev::Out);
  backend().gather_images(batch.u8(), set.u8(), indices, B, image_bytes);
  batch.back();
}

double sum_squares(const float* x, size_t n) {
  Dev d = in(x, n);
  Result<double> sq;
  backend().sum_squares(d.f(), n, sq.get());
  return sq.value();
}
bool all_finite(const float* x, size_t n) {
  Dev d = in(x, n);
  Result<int32_t> finite;
  backend().all_finite(d.f(), n, finite.get());
  const int32_t v = finite.value();
  DFL_EXPECT(v == 0 || v == 1, "all_finite wrote " << v);
  return v == 1;
}
int count_correct(const float* logits, const int32_t* labels, int B, int NC) {
  Dev z = in(logits, size_t(B) * NC), y = in_i32(labels, B);
  Result<int32_t> correct;
  backend().count_correct(z.f(), y.i32(), B, NC, correct.get());
  return correct.value();
}
void add_scalar(float* x, float v, size_t n) {
  Dev d = inout(x, n);
  backend().add_scalar(d.f(), v, n);
  d.back();
}

}  // namespace dfl::test::ops
