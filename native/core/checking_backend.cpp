// The checking backend (core/checking_backend.h): each call lists the extents it touches, checks
// them, then passes the call on unchanged.
#include "core/checking_backend.h"

#include <cstdio>
#include <initializer_list>

#include "core/check.h"

namespace dfl {

namespace {

constexpr size_t kFloat = sizeof(float);

// Sizes that the extent arithmetic below may use (no division by zero, no negative counts); calls
// with others go to the inner backend unchecked, which refuses them with its own message.
bool sane(const Conv2dShape& s) {
  return s.B > 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.OC > 0 && s.KH > 0 && s.KW > 0 && s.stride_h > 0 &&
         s.stride_w > 0 && s.pad_h >= 0 && s.pad_w >= 0 && s.groups > 0 && s.C % s.groups == 0 && s.OH() > 0 &&
         s.OW() > 0;
}
bool sane(const Pool2dShape& s) {
  return s.B > 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.KH > 0 && s.KW > 0 && s.stride_h > 0 && s.stride_w > 0 &&
         s.pad_h >= 0 && s.pad_w >= 0 && s.OH() > 0 && s.OW() > 0;
}
bool positive(std::initializer_list<int> v) {
  for (int x : v)
    if (x <= 0) return false;
  return true;
}
size_t conv_in(const Conv2dShape& s) { return size_t(s.B) * s.C * s.H * s.W; }
size_t conv_weight(const Conv2dShape& s) { return size_t(s.OC) * (s.C / s.groups) * s.KH * s.KW; }
size_t conv_out(const Conv2dShape& s) { return size_t(s.B) * s.OC * s.OH() * s.OW(); }
size_t pool_in(const Pool2dShape& s) { return size_t(s.B) * s.C * s.H * s.W; }
size_t pool_out(const Pool2dShape& s) { return size_t(s.B) * s.C * s.OH() * s.OW(); }

std::string address(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

}  // namespace

// The extents of one call, checked when it is made (after any violation release() kept).
class CheckingBackend::Call {
 public:
  Call(CheckingBackend& be, const char* name) : be_(be), name_(name) { be_.throw_pending(); }
  // A tensor of n elements of `elem` bytes: 256-byte aligned; nullable ones may be null.
  Call& tensor(const char* arg, const void* p, size_t n, size_t elem = kFloat) {
    return check({arg, p, n * elem, kTensorAlignment, false});
  }
  Call& optional(const char* arg, const void* p, size_t n, size_t elem = kFloat) {
    return check({arg, p, n * elem, kTensorAlignment, true});
  }
  // A one-value result slot, aligned to its own size.
  template <typename T>
  Call& result(const char* arg, const T* p) {
    return check({arg, p, sizeof(T), alignof(T), false});
  }
  // Bytes a memory operation touches (any alignment of its element).
  Call& bytes(const char* arg, const void* p, size_t n, size_t align = 1) { return check({arg, p, n, align, false}); }
  Call& host(const char* arg, const void* p) {
    be_.check_host(name_, arg, p);
    return *this;
  }

 private:
  Call& check(const Extent& e) {
    be_.check_extent(name_, e);
    return *this;
  }
  CheckingBackend& be_;
  const char* name_;
};

CheckingBackend::CheckingBackend(std::shared_ptr<Backend> inner, Options options)
    : inner_(std::move(inner)), options_(options), name_("checking:" + inner_->name()) {}

std::string CheckingBackend::description() const {
  return "every call checked (allocations, 256-byte alignment, workspaces) over " + inner_->name() + ": " +
         inner_->description();
}

size_t CheckingBackend::live_allocations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_.size();
}

std::pair<uintptr_t, size_t> CheckingBackend::allocation_of(const void* p) const {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = live_.upper_bound(a);
  if (it == live_.begin()) return {0, 0};
  --it;
  // An allocation of 0 bytes holds no address (a pointer one past an allocation is not inside it).
  if (a >= it->first && a < it->first + it->second) return *it;
  return {0, 0};
}

void CheckingBackend::check_extent(const char* call, const Extent& e) const {
  if (!e.p) {
    DFL_CHECK(e.nullable || e.bytes == 0, "checking backend: ", call, ": ", e.name, " is null but the call uses ",
              e.bytes, " bytes of it");
    return;
  }
  if (e.bytes == 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(e.p);
  std::pair<uintptr_t, size_t> in;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in = allocation_of(e.p);
  }
  const auto [start, size] = in;
  DFL_CHECK(size > 0, "checking backend: ", call, ": ", e.name, " (", address(e.p), ", ", e.bytes,
            " bytes) lies outside every live allocation made through this backend (host memory, released, or "
            "another backend's)");
  DFL_CHECK(a + e.bytes <= start + size, "checking backend: ", call, ": ", e.name, " (", address(e.p), ", ", e.bytes,
            " bytes) runs ", a + e.bytes - (start + size), " bytes past the end of its allocation (", size,
            " bytes at ", address(reinterpret_cast<const void*>(start)), ")");
  DFL_CHECK(a % e.align == 0, "checking backend: ", call, ": ", e.name, " (", address(e.p), ") is not aligned to ",
            e.align, " bytes (it is ", a % e.align, " bytes past a multiple)");
}

void CheckingBackend::check_host(const char* call, const char* name, const void* p) const {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  DFL_CHECK(allocation_of(p).second == 0, "checking backend: ", call, ": ", name, " (", address(p),
            ") must be host memory but lies inside a device allocation");
}

void CheckingBackend::throw_pending() {
  std::string why;
  {
    std::lock_guard<std::mutex> lock(mu_);
    why.swap(pending_);
  }
  if (!why.empty()) throw Error(why);
}

// ---- memory -------------------------------------------------------------------------------------------
void* CheckingBackend::alloc(size_t bytes, const char* what) {
  throw_pending();
  void* p = inner_->alloc(bytes, what);
  if (!p) return p;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a % kTensorAlignment != 0) {
    inner_->release(p);
    fail("checking backend: alloc: the ", inner_->name(), " backend returned ", address(p), " for ", what,
         ", not aligned to ", kTensorAlignment, " bytes");
  }
  std::lock_guard<std::mutex> lock(mu_);
  live_[a] = bytes;
  return p;
}

void CheckingBackend::release(void* ptr) noexcept {
  if (!ptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == live_.end()) {
      if (pending_.empty())
        pending_ = "checking backend: release: " + address(ptr) +
                   " is not the start of a live allocation made through this backend (released twice, or never "
                   "allocated here)";
      return;  // never pass it on: the inner backend would free what it does not own
    }
    live_.erase(it);
  }
  inner_->release(ptr);
}

void CheckingBackend::upload(void* dst, const void* src_host, size_t bytes) {
  Call(*this, "upload").bytes("dst", dst, bytes).host("src_host", src_host);
  inner_->upload(dst, src_host, bytes);
}

void CheckingBackend::download(void* dst_host, const void* src, size_t bytes) {
  Call(*this, "download").bytes("src", src, bytes).host("dst_host", dst_host);
  ++downloads_;
  inner_->download(dst_host, src, bytes);
}

void CheckingBackend::copy(void* dst, const void* src, size_t bytes) {
  Call(*this, "copy").bytes("dst", dst, bytes).bytes("src", src, bytes);
  const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  DFL_CHECK(bytes == 0 || d == s || d + bytes <= s || s + bytes <= d, "checking backend: copy: dst (", address(dst),
            ") and src (", address(src), ") overlap over ", bytes, " bytes");
  inner_->copy(dst, src, bytes);
}

void CheckingBackend::fill(float* dst, float value, size_t n) {
  Call(*this, "fill").bytes("dst", dst, n * kFloat, kFloat);
  inner_->fill(dst, value, n);
}

void CheckingBackend::synchronize() {
  throw_pending();
  inner_->synchronize();
}

// ---- convolutions and linear layers ---------------------------------------------------------------------
size_t CheckingBackend::conv2d_workspace_bytes(const Conv2dShape& s) {
  throw_pending();
  const size_t need = inner_->conv2d_workspace_bytes(s);
  if (!sane(s)) return need;
  const size_t extra = options_.small_batch_workspace / size_t(s.B);
  return need + (extra + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

void CheckingBackend::conv2d_forward(float* out, const float* inp, const float* weight, const float* bias,
                                     const Conv2dShape& s, void* workspace, size_t workspace_bytes, Activation act) {
  if (sane(s)) {
    Call c(*this, "conv2d_forward");
    check_conv_workspace("checking backend: conv2d_forward", s, conv2d_workspace_bytes(s), workspace, workspace_bytes);
    c.tensor("out", out, conv_out(s))
        .tensor("inp", inp, conv_in(s))
        .tensor("weight", weight, conv_weight(s))
        .optional("bias", bias, size_t(s.OC))
        .optional("workspace", workspace, workspace_bytes, 1);
  }
  inner_->conv2d_forward(out, inp, weight, bias, s, workspace, workspace_bytes, act);
}

void CheckingBackend::conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                      const float* weight, const Conv2dShape& s, void* workspace,
                                      size_t workspace_bytes, bool overwrite_dinp) {
  if (sane(s)) {
    Call c(*this, "conv2d_backward");
    check_conv_workspace("checking backend: conv2d_backward", s, conv2d_workspace_bytes(s), workspace, workspace_bytes);
    c.optional("dinp", dinp, conv_in(s))
        .optional("dweight", dweight, conv_weight(s))
        .optional("dbias", dbias, size_t(s.OC))
        .tensor("dout", dout, conv_out(s))
        .optional("inp", inp, dweight ? conv_in(s) : 0)
        .optional("weight", weight, dinp ? conv_weight(s) : 0)
        .optional("workspace", workspace, workspace_bytes, 1);
  }
  inner_->conv2d_backward(dinp, dweight, dbias, dout, inp, weight, s, workspace, workspace_bytes, overwrite_dinp);
}

void CheckingBackend::linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                                     int IN, int OUT, Activation act, const MathMode& math) {
  if (positive({B, IN, OUT}))
    Call(*this, "linear_forward")
        .tensor("out", out, size_t(B) * OUT)
        .tensor("inp", inp, size_t(B) * IN)
        .tensor("weight", weight, size_t(OUT) * IN)
        .optional("bias", bias, size_t(OUT));
  inner_->linear_forward(out, inp, weight, bias, B, IN, OUT, act, math);
}

void CheckingBackend::linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                      const float* weight, int B, int IN, int OUT, const MathMode& math) {
  if (positive({B, IN, OUT}))
    Call(*this, "linear_backward")
        .optional("dinp", dinp, size_t(B) * IN)
        .optional("dweight", dweight, size_t(OUT) * IN)
        .optional("dbias", dbias, size_t(OUT))
        .tensor("dout", dout, size_t(B) * OUT)
        .optional("inp", inp, dweight ? size_t(B) * IN : 0)
        .optional("weight", weight, dinp ? size_t(OUT) * IN : 0);
  inner_->linear_backward(dinp, dweight, dbias, dout, inp, weight, B, IN, OUT, math);
}

// ---- batch norm -----------------------------------------------------------------------------------------
namespace {
// The extents of the BatchNorm calls (gamma, beta and, in training, the running statistics may be
// null: cpu/kernels.h).
template <typename CallT>
void bn_train_extents(CallT& c, const float* out, const float* save_mean, const float* save_invstd,
                      const float* running_mean, const float* running_var, const float* inp, const float* gamma,
                      const float* beta, int B, int C, int HW) {
  const size_t n = size_t(B) * C * HW;
  c.tensor("out", out, n)
      .tensor("save_mean", save_mean, size_t(C))
      .tensor("save_invstd", save_invstd, size_t(C))
      .optional("running_mean", running_mean, size_t(C))
      .optional("running_var", running_var, size_t(C))
      .tensor("inp", inp, n)
      .optional("gamma", gamma, size_t(C))
      .optional("beta", beta, size_t(C));
}
template <typename CallT>
void bn_eval_extents(CallT& c, const float* out, const float* inp, const float* gamma, const float* beta,
                     const float* running_mean, const float* running_var, int B, int C, int HW) {
  const size_t n = size_t(B) * C * HW;
  c.tensor("out", out, n)
      .tensor("inp", inp, n)
      .optional("gamma", gamma, size_t(C))
      .optional("beta", beta, size_t(C))
      .tensor("running_mean", running_mean, size_t(C))
      .tensor("running_var", running_var, size_t(C));
}
template <typename CallT>
void bn_backward_extents(CallT& c, const float* dinp, const float* dgamma, const float* dbeta, const float* dout,
                         const float* inp, const float* gamma, const float* save_mean, const float* save_invstd, int B,
                         int C, int HW) {
  const size_t n = size_t(B) * C * HW;
  c.optional("dinp", dinp, n)
      .optional("dgamma", dgamma, size_t(C))
      .optional("dbeta", dbeta, size_t(C))
      .tensor("dout", dout, n)
      .tensor("inp", inp, n)
      .optional("gamma", gamma, size_t(C))
      .tensor("save_mean", save_mean, size_t(C))
      .tensor("save_invstd", save_invstd, size_t(C));
}
}  // namespace

void CheckingBackend::batchnorm2d_forward_train(float* out, float* save_mean, float* save_invstd, float* running_mean,
                                                float* running_var, const float* inp, const float* gamma,
                                                const float* beta, int B, int C, int HW, float momentum, float eps) {
  if (positive({B, C, HW})) {
    Call c(*this, "batchnorm2d_forward_train");
    bn_train_extents(c, out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW);
  }
  inner_->batchnorm2d_forward_train(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW,
                                    momentum, eps);
}

void CheckingBackend::batchnorm2d_forward_train_fused(float* out, float* save_mean, float* save_invstd,
                                                      float* running_mean, float* running_var, const float* inp,
                                                      const float* gamma, const float* beta, int B, int C, int HW,
                                                      float momentum, float eps, Activation act) {
  if (positive({B, C, HW})) {
    Call c(*this, "batchnorm2d_forward_train_fused");
    bn_train_extents(c, out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B, C, HW);
  }
  inner_->batchnorm2d_forward_train_fused(out, save_mean, save_invstd, running_mean, running_var, inp, gamma, beta, B,
                                          C, HW, momentum, eps, act);
}

void CheckingBackend::batchnorm2d_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                                               const float* running_mean, const float* running_var, int B, int C,
                                               int HW, float eps) {
  if (positive({B, C, HW})) {
    Call c(*this, "batchnorm2d_forward_eval");
    bn_eval_extents(c, out, inp, gamma, beta, running_mean, running_var, B, C, HW);
  }
  inner_->batchnorm2d_forward_eval(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps);
}

void CheckingBackend::batchnorm2d_forward_eval_fused(float* out, const float* inp, const float* gamma,
                                                     const float* beta, const float* running_mean,
                                                     const float* running_var, int B, int C, int HW, float eps,
                                                     Activation act) {
  if (positive({B, C, HW})) {
    Call c(*this, "batchnorm2d_forward_eval_fused");
    bn_eval_extents(c, out, inp, gamma, beta, running_mean, running_var, B, C, HW);
  }
  inner_->batchnorm2d_forward_eval_fused(out, inp, gamma, beta, running_mean, running_var, B, C, HW, eps, act);
}

void CheckingBackend::batchnorm2d_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                                           const float* inp, const float* gamma, const float* save_mean,
                                           const float* save_invstd, int B, int C, int HW) {
  if (positive({B, C, HW})) {
    Call c(*this, "batchnorm2d_backward");
    bn_backward_extents(c, dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW);
  }
  inner_->batchnorm2d_backward(dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW);
}

void CheckingBackend::batchnorm2d_backward_fused(float* dinp, float* dgamma, float* dbeta, float* dout,
                                                 const float* out, const float* inp, const float* gamma,
                                                 const float* save_mean, const float* save_invstd, int B, int C, int HW,
                                                 Activation act, bool overwrite_dinp) {
  if (positive({B, C, HW})) {
    Call c(*this, "batchnorm2d_backward_fused");
    bn_backward_extents(c, dinp, dgamma, dbeta, dout, inp, gamma, save_mean, save_invstd, B, C, HW);
    c.optional("out", out, act == Activation::None ? 0 : size_t(B) * C * HW);
  }
  inner_->batchnorm2d_backward_fused(dinp, dgamma, dbeta, dout, out, inp, gamma, save_mean, save_invstd, B, C, HW, act,
                                     overwrite_dinp);
}

void CheckingBackend::activation_backward_inplace(float* dout, const float* y, size_t n, Activation act) {
  if (act != Activation::None) Call(*this, "activation_backward_inplace").tensor("dout", dout, n).tensor("y", y, n);
  inner_->activation_backward_inplace(dout, y, n, act);
}

void CheckingBackend::fold_batchnorm(float* w_out, float* b_out, const float* w_in, const float* b_in,
                                     const float* gamma, const float* beta, const float* running_mean,
                                     const float* running_var, int OC, size_t per_oc, float eps) {
  if (OC > 0) {
    const size_t oc = size_t(OC);
    Call(*this, "fold_batchnorm")
        .tensor("w_out", w_out, oc * per_oc)
        .tensor("b_out", b_out, oc)
        .tensor("w_in", w_in, oc * per_oc)
        .optional("b_in", b_in, oc)
        .tensor("gamma", gamma, oc)
        .tensor("beta", beta, oc)
        .tensor("running_mean", running_mean, oc)
        .tensor("running_var", running_var, oc);
  }
  inner_->fold_batchnorm(w_out, b_out, w_in, b_in, gamma, beta, running_mean, running_var, OC, per_oc, eps);
}

// ---- elementwise ----------------------------------------------------------------------------------------
void CheckingBackend::relu_forward(float* out, const float* inp, size_t n) {
  Call(*this, "relu_forward").tensor("out", out, n).tensor("inp", inp, n);
  inner_->relu_forward(out, inp, n);
}
void CheckingBackend::relu_backward(float* dinp, const float* dout, const float* inp, size_t n) {
  Call(*this, "relu_backward").optional("dinp", dinp, n).tensor("dout", dout, n).tensor("inp", inp, n);
  inner_->relu_backward(dinp, dout, inp, n);
}
void CheckingBackend::relu6_forward(float* out, const float* inp, size_t n) {
  Call(*this, "relu6_forward").tensor("out", out, n).tensor("inp", inp, n);
  inner_->relu6_forward(out, inp, n);
}
void CheckingBackend::relu6_backward(float* dinp, const float* dout, const float* inp, size_t n) {
  Call(*this, "relu6_backward").optional("dinp", dinp, n).tensor("dout", dout, n).tensor("inp", inp, n);
  inner_->relu6_backward(dinp, dout, inp, n);
}
void CheckingBackend::add_forward(float* out, const float* a, const float* b, size_t n) {
  Call(*this, "add_forward").tensor("out", out, n).tensor("a", a, n).tensor("b", b, n);
  inner_->add_forward(out, a, b, n);
}
void CheckingBackend::add_forward_fused(float* out, const float* a, const float* b, size_t n, Activation act) {
  Call(*this, "add_forward_fused").tensor("out", out, n).tensor("a", a, n).tensor("b", b, n);
  inner_->add_forward_fused(out, a, b, n, act);
}
void CheckingBackend::add_backward(float* da, float* db, const float* dout, size_t n) {
  Call(*this, "add_backward").optional("da", da, n).optional("db", db, n).tensor("dout", dout, n);
  inner_->add_backward(da, db, dout, n);
}
void CheckingBackend::accumulate(float* dst, const float* src, size_t n) {
  Call(*this, "accumulate").tensor("dst", dst, n).tensor("src", src, n);
  inner_->accumulate(dst, src, n);
}
void CheckingBackend::add_scalar(float* x, float v, size_t n) {
  Call(*this, "add_scalar").tensor("x", x, n);
  inner_->add_scalar(x, v, n);
}

// ---- pooling --------------------------------------------------------------------------------------------
void CheckingBackend::maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dShape& s) {
  if (sane(s))
    Call(*this, "maxpool2d_forward")
        .tensor("out", out, pool_out(s))
        .optional("argmax", argmax, pool_out(s), sizeof(int32_t))
        .tensor("inp", inp, pool_in(s));
  inner_->maxpool2d_forward(out, argmax, inp, s);
}
void CheckingBackend::maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dShape& s) {
  if (sane(s))
    Call(*this, "maxpool2d_backward")
        .optional("dinp", dinp, pool_in(s))
        .tensor("dout", dout, pool_out(s))
        .tensor("argmax", argmax, pool_out(s), sizeof(int32_t));
  inner_->maxpool2d_backward(dinp, dout, argmax, s);
}
void CheckingBackend::avgpool2d_forward(float* out, const float* inp, const Pool2dShape& s) {
  if (sane(s)) Call(*this, "avgpool2d_forward").tensor("out", out, pool_out(s)).tensor("inp", inp, pool_in(s));
  inner_->avgpool2d_forward(out, inp, s);
}
void CheckingBackend::avgpool2d_backward(float* dinp, const float* dout, const Pool2dShape& s) {
  if (sane(s)) Call(*this, "avgpool2d_backward").optional("dinp", dinp, pool_in(s)).tensor("dout", dout, pool_out(s));
  inner_->avgpool2d_backward(dinp, dout, s);
}
void CheckingBackend::global_avgpool_forward(float* out, const float* inp, int B, int C, int HW) {
  if (positive({B, C, HW}))
    Call(*this, "global_avgpool_forward").tensor("out", out, size_t(B) * C).tensor("inp", inp, size_t(B) * C * HW);
  inner_->global_avgpool_forward(out, inp, B, C, HW);
}
void CheckingBackend::global_avgpool_backward(float* dinp, const float* dout, int B, int C, int HW) {
  if (positive({B, C, HW}))
    Call(*this, "global_avgpool_backward")
        .optional("dinp", dinp, size_t(B) * C * HW)
        .tensor("dout", dout, size_t(B) * C);
  inner_->global_avgpool_backward(dinp, dout, B, C, HW);
}

// ---- channel plumbing -----------------------------------------------------------------------------------
namespace {
// The channel total of n chunks, or 0 when the sizes are not checkable (the inner backend refuses them).
size_t channel_total(const int* channels, int n) {
  if (!channels || n <= 0) return 0;
  size_t total = 0;
  for (int k = 0; k < n; ++k) {
    if (channels[k] <= 0) return 0;
    total += size_t(channels[k]);
  }
  return total;
}
}  // namespace

void CheckingBackend::concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n, int B,
                                              int HW) {
  const size_t total = channel_total(channels, n);
  if (total && positive({B, HW})) {
    Call c(*this, "concat_channels_forward");
    c.host("inputs_host", inputs).host("channels_host", channels).tensor("out", out, size_t(B) * total * HW);
    for (int k = 0; k < n; ++k) c.tensor("inputs_host[k]", inputs[k], size_t(B) * channels[k] * HW);
  }
  inner_->concat_channels_forward(out, inputs, channels, n, B, HW);
}
void CheckingBackend::concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n,
                                               int B, int HW) {
  const size_t total = channel_total(channels, n);
  if (total && positive({B, HW})) {
    Call c(*this, "concat_channels_backward");
    c.host("dinputs_host", dinputs).host("channels_host", channels).tensor("dout", dout, size_t(B) * total * HW);
    for (int k = 0; k < n; ++k) c.optional("dinputs_host[k]", dinputs[k], size_t(B) * channels[k] * HW);
  }
  inner_->concat_channels_backward(dinputs, dout, channels, n, B, HW);
}
void CheckingBackend::split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B,
                                             int HW) {
  const size_t total = channel_total(channels, n);
  if (total && positive({B, HW})) {
    Call c(*this, "split_channels_forward");
    c.host("outputs_host", outputs).host("channels_host", channels).tensor("inp", inp, size_t(B) * total * HW);
    for (int k = 0; k < n; ++k) c.optional("outputs_host[k]", outputs[k], size_t(B) * channels[k] * HW);
  }
  inner_->split_channels_forward(outputs, inp, channels, n, B, HW);
}
void CheckingBackend::split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n,
                                              int B, int HW, bool overwrite) {
  const size_t total = channel_total(channels, n);
  if (total && positive({B, HW})) {
    Call c(*this, "split_channels_backward");
    c.host("doutputs_host", doutputs).host("channels_host", channels).optional("dinp", dinp, size_t(B) * total * HW);
    for (int k = 0; k < n; ++k) c.optional("doutputs_host[k]", doutputs[k], size_t(B) * channels[k] * HW);
  }
  inner_->split_channels_backward(dinp, doutputs, channels, n, B, HW, overwrite);
}
void CheckingBackend::interleave_channels_forward(float* out, const float* const* inputs, int n, int cpg, int B,
                                                  int HW) {
  if (positive({n, cpg, B, HW})) {
    Call c(*this, "interleave_channels_forward");
    c.host("inputs_host", inputs).tensor("out", out, size_t(B) * n * cpg * HW);
    for (int k = 0; k < n; ++k) c.tensor("inputs_host[k]", inputs[k], size_t(B) * cpg * HW);
  }
  inner_->interleave_channels_forward(out, inputs, n, cpg, B, HW);
}
void CheckingBackend::interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B,
                                                   int HW, bool overwrite) {
  if (positive({n, cpg, B, HW})) {
    Call c(*this, "interleave_channels_backward");
    c.host("dinputs_host", dinputs).tensor("dout", dout, size_t(B) * n * cpg * HW);
    for (int k = 0; k < n; ++k) c.optional("dinputs_host[k]", dinputs[k], size_t(B) * cpg * HW);
  }
  inner_->interleave_channels_backward(dinputs, dout, n, cpg, B, HW, overwrite);
}
void CheckingBackend::channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups) {
  if (positive({B, C, HW}))
    Call(*this, "channel_shuffle_forward")
        .tensor("out", out, size_t(B) * C * HW)
        .tensor("inp", inp, size_t(B) * C * HW);
  inner_->channel_shuffle_forward(out, inp, B, C, HW, groups);
}
void CheckingBackend::channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) {
  if (positive({B, C, HW}))
    Call(*this, "channel_shuffle_backward")
        .optional("dinp", dinp, size_t(B) * C * HW)
        .tensor("dout", dout, size_t(B) * C * HW);
  inner_->channel_shuffle_backward(dinp, dout, B, C, HW, groups);
}

// ---- dropout --------------------------------------------------------------------------------------------
void CheckingBackend::dropout_forward(float* out, float* mask, const float* inp, size_t n, float p, uint64_t seed) {
  Call(*this, "dropout_forward").tensor("out", out, n).tensor("mask", mask, n).tensor("inp", inp, n);
  inner_->dropout_forward(out, mask, inp, n, p, seed);
}
void CheckingBackend::dropout_backward(float* dinp, const float* dout, const float* mask, size_t n) {
  Call(*this, "dropout_backward").optional("dinp", dinp, n).tensor("dout", dout, n).tensor("mask", mask, n);
  inner_->dropout_backward(dinp, dout, mask, n);
}

// ---- losses ---------------------------------------------------------------------------------------------
void CheckingBackend::cross_entropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets,
                                            int B, int NC, float label_smoothing, double* loss_sum) {
  if (positive({B, NC}))
    Call(*this, "cross_entropy_forward")
        .tensor("losses", losses, size_t(B))
        .tensor("probs", probs, size_t(B) * NC)
        .tensor("logits", logits, size_t(B) * NC)
        .tensor("targets", targets, size_t(B), sizeof(int32_t))
        .result("loss_sum", loss_sum);
  inner_->cross_entropy_forward(losses, probs, logits, targets, B, NC, label_smoothing, loss_sum);
}
void CheckingBackend::cross_entropy_backward(float* dlogits, const float* probs, const int32_t* targets, int B, int NC,
                                             float label_smoothing, float scale) {
  if (positive({B, NC}))
    Call(*this, "cross_entropy_backward")
        .tensor("dlogits", dlogits, size_t(B) * NC)
        .tensor("probs", probs, size_t(B) * NC)
        .tensor("targets", targets, size_t(B), sizeof(int32_t));
  inner_->cross_entropy_backward(dlogits, probs, targets, B, NC, label_smoothing, scale);
}
void CheckingBackend::ensemble_kl_forward(float* losses, float* student_probs, float* teacher_probs,
                                          const float* student_logits, const float* teacher_logits,
                                          const float* weights, int K, int B, int NC, float T, double* loss_sum) {
  if (positive({K, B, NC}))
    Call(*this, "ensemble_kl_forward")
        .tensor("losses", losses, size_t(B))
        .tensor("student_probs", student_probs, size_t(B) * NC)
        .tensor("teacher_probs", teacher_probs, size_t(B) * NC)
        .tensor("student_logits", student_logits, size_t(B) * NC)
        .tensor("teacher_logits", teacher_logits, size_t(K) * B * NC)
        .optional("weights", weights, size_t(K) * B)
        .result("loss_sum", loss_sum);
  inner_->ensemble_kl_forward(losses, student_probs, teacher_probs, student_logits, teacher_logits, weights, K, B, NC,
                              T, loss_sum);
}
void CheckingBackend::ensemble_kl_backward(float* dlogits, const float* student_probs, const float* teacher_probs,
                                           int B, int NC, float T, float scale) {
  if (positive({B, NC}))
    Call(*this, "ensemble_kl_backward")
        .tensor("dlogits", dlogits, size_t(B) * NC)
        .tensor("student_probs", student_probs, size_t(B) * NC)
        .tensor("teacher_probs", teacher_probs, size_t(B) * NC);
  inner_->ensemble_kl_backward(dlogits, student_probs, teacher_probs, B, NC, T, scale);
}
void CheckingBackend::teacher_confidence(float* weights, const float* teacher_logits, int K, int B, int NC, float T) {
  if (positive({K, B, NC}))
    Call(*this, "teacher_confidence")
        .tensor("weights", weights, size_t(K) * B)
        .tensor("teacher_logits", teacher_logits, size_t(K) * B * NC);
  inner_->teacher_confidence(weights, teacher_logits, K, B, NC, T);
}

// ---- optimiser ------------------------------------------------------------------------------------------
void CheckingBackend::sgd_step(float* params, float* momentum_buf, const float* grads, const float* decay_mask,
                               size_t n, const SgdConfig& cfg) {
  Call(*this, "sgd_step")
      .tensor("params", params, n)
      .optional("momentum_buf", momentum_buf, n)
      .tensor("grads", grads, n)
      .optional("decay_mask", decay_mask, n);
  inner_->sgd_step(params, momentum_buf, grads, decay_mask, n, cfg);
}
void CheckingBackend::sgd_step_stays_finite(const float* params, const float* momentum_buf, const float* grads,
                                            const float* decay_mask, size_t n, const SgdConfig& cfg, int32_t* finite) {
  Call(*this, "sgd_step_stays_finite")
      .tensor("params", params, n)
      .optional("momentum_buf", momentum_buf, n)
      .tensor("grads", grads, n)
      .optional("decay_mask", decay_mask, n)
      .result("finite", finite);
  inner_->sgd_step_stays_finite(params, momentum_buf, grads, decay_mask, n, cfg, finite);
}

// ---- batches --------------------------------------------------------------------------------------------
void CheckingBackend::augment_batch(float* out, const uint8_t* images, int B, int C, int H, int W, int pad,
                                    const AugmentDraw* draws_host, const float* mean_host, const float* std_host) {
  if (positive({B, C, H, W})) {
    const size_t n = size_t(B) * C * H * W;
    Call(*this, "augment_batch")
        .tensor("out", out, n)
        .tensor("images", images, n, 1)
        .host("draws_host", draws_host)
        .host("mean_host", mean_host)
        .host("std_host", std_host);
  }
  inner_->augment_batch(out, images, B, C, H, W, pad, draws_host, mean_host, std_host);
}
void CheckingBackend::normalize_batch(float* out, const uint8_t* images, int B, int C, int H, int W,
                                      const float* mean_host, const float* std_host) {
  if (positive({B, C, H, W})) {
    const size_t n = size_t(B) * C * H * W;
    Call(*this, "normalize_batch")
        .tensor("out", out, n)
        .tensor("images", images, n, 1)
        .host("mean_host", mean_host)
        .host("std_host", std_host);
  }
  inner_->normalize_batch(out, images, B, C, H, W, mean_host, std_host);
}
void CheckingBackend::gather_images(uint8_t* dst, const uint8_t* src, const int32_t* indices_host, int B,
                                    size_t image_bytes) {
  if (B > 0 && indices_host) {
    Call c(*this, "gather_images");
    c.host("indices_host", indices_host).tensor("dst", dst, size_t(B) * image_bytes, 1);
    for (int k = 0; k < B; ++k) {
      DFL_CHECK(indices_host[k] >= 0, "checking backend: gather_images: index ", indices_host[k], " at ", k,
                " is negative");
      c.bytes("src image", src + size_t(indices_host[k]) * image_bytes, image_bytes);
    }
  }
  inner_->gather_images(dst, src, indices_host, B, image_bytes);
}

// ---- reductions -----------------------------------------------------------------------------------------
void CheckingBackend::sum_squares(const float* x, size_t n, double* out) {
  Call(*this, "sum_squares").tensor("x", x, n).result("out", out);
  inner_->sum_squares(x, n, out);
}
void CheckingBackend::all_finite(const float* x, size_t n, int32_t* out) {
  Call(*this, "all_finite").tensor("x", x, n).result("out", out);
  inner_->all_finite(x, n, out);
}
void CheckingBackend::count_correct(const float* logits, const int32_t* labels, int B, int NC, int32_t* out) {
  if (positive({B, NC}))
    Call(*this, "count_correct")
        .tensor("logits", logits, size_t(B) * NC)
        .tensor("labels", labels, size_t(B), sizeof(int32_t))
        .result("out", out);
  inner_->count_correct(logits, labels, B, NC, out);
}

}  // namespace dfl
