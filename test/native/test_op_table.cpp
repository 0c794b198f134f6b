// The op table (native/core/backend_kernels.def) and the per-backend suite stay in step: this file
// does not compile unless every kernel row has a host wrapper in backend_ops.h (so a new row cannot
// land untested), and it runs the wrappers that no other test file reaches: the fused forms and the
// image gather, each against the plain reference kernels of cpu/kernels.h.
#include <cstring>
#include <type_traits>
#include <vector>

#include "backend_ops.h"
#include "cpu/kernels.h"
#include "harness.h"

using namespace dfl;
using dfl::test::randn;

namespace {

// A compile error naming ops::<name> means a kernel row lacks its wrapper in backend_ops.h.
#define DFL_REQUIRE_WRAPPER(name) \
  static_assert(std::is_function_v<std::remove_pointer_t<decltype(&dfl::test::ops::name)>>, #name);
#define DFL_KERNEL(name, params, args) DFL_REQUIRE_WRAPPER(name)
#define DFL_KERNEL_OWN(ret, name, params, args) DFL_REQUIRE_WRAPPER(name)
#define DFL_KERNEL_FUSED(name, params, args) DFL_REQUIRE_WRAPPER(name)
#include "core/backend_kernels.def"
#undef DFL_REQUIRE_WRAPPER

const Activation kActivations[] = {Activation::None, Activation::Relu, Activation::Relu6};

void reference_activate(std::vector<float>& x, Activation act) {
  if (act == Activation::Relu) cpu::relu_forward(x.data(), x.data(), x.size());
  if (act == Activation::Relu6) cpu::relu6_forward(x.data(), x.data(), x.size());
}

}  // namespace

DFL_TEST(bn_fused_forwards_equal_plain_forward_then_activation) {
  Rng rng(41);
  const int B = 3, C = 5, HW = 7;
  const size_t n = size_t(B) * C * HW;
  const std::vector<float> x = randn(n, rng, 3.f), gamma = randn(C, rng), beta = randn(C, rng);
  std::vector<float> var = randn(C, rng);
  for (float& v : var) v = v * v + 0.5f;
  const std::vector<float> mean = randn(C, rng);
  for (Activation act : kActivations) {
    std::vector<float> want(n), want_sm(C), want_si(C), want_rm = mean, want_rv = var;
    cpu::batchnorm2d_forward_train(want.data(), want_sm.data(), want_si.data(), want_rm.data(), want_rv.data(),
                                   x.data(), gamma.data(), beta.data(), B, C, HW, 0.1f, 1e-5f);
    reference_activate(want, act);
    std::vector<float> got(n), sm(C), si(C), rm = mean, rv = var;
    test::ops::batchnorm2d_forward_train_fused(got.data(), sm.data(), si.data(), rm.data(), rv.data(), x.data(),
                                               gamma.data(), beta.data(), B, C, HW, 0.1f, 1e-5f, act);
    DFL_EXPECT_CLOSE(got.data(), want.data(), n, 1e-5, 1e-5, "train fused out");
    DFL_EXPECT_CLOSE(rm.data(), want_rm.data(), size_t(C), 1e-6, 1e-6, "running mean");
    DFL_EXPECT_CLOSE(rv.data(), want_rv.data(), size_t(C), 1e-6, 1e-6, "running var");
    DFL_EXPECT_CLOSE(si.data(), want_si.data(), size_t(C), 1e-6, 1e-5, "save_invstd");

    std::vector<float> want_eval(n), got_eval(n);
    cpu::batchnorm2d_forward_eval(want_eval.data(), x.data(), gamma.data(), beta.data(), mean.data(), var.data(), B, C,
                                  HW, 1e-5f);
    reference_activate(want_eval, act);
    test::ops::batchnorm2d_forward_eval_fused(got_eval.data(), x.data(), gamma.data(), beta.data(), mean.data(),
                                              var.data(), B, C, HW, 1e-5f, act);
    DFL_EXPECT_CLOSE(got_eval.data(), want_eval.data(), n, 1e-5, 1e-5, "eval fused out");
  }
}

DFL_TEST(add_fused_and_activation_backward_inplace_match_the_plain_kernels) {
  Rng rng(42);
  const size_t n = 1000;
  std::vector<float> a = randn(n, rng, 4.f), b = randn(n, rng, 4.f), dout = randn(n, rng);
  a[0] = 3.f, b[0] = 3.f;   // 6: ReLU6's upper kink
  a[1] = -1.f, b[1] = 1.f;  // 0: the lower kink
  for (Activation act : kActivations) {
    std::vector<float> want(n), got(n);
    cpu::add_forward(want.data(), a.data(), b.data(), n);
    reference_activate(want, act);
    test::ops::add_forward_fused(got.data(), a.data(), b.data(), n, act);
    DFL_EXPECT_CLOSE(got.data(), want.data(), n, 0, 0, "add fused");

    std::vector<float> masked = dout, want_masked(n, 0.f);
    if (act == Activation::None) want_masked = dout;
    if (act == Activation::Relu) cpu::relu_backward(want_masked.data(), dout.data(), want.data(), n);
    if (act == Activation::Relu6) cpu::relu6_backward(want_masked.data(), dout.data(), want.data(), n);
    test::ops::activation_backward_inplace(masked.data(), want.data(), n, act);
    DFL_EXPECT_CLOSE(masked.data(), want_masked.data(), n, 0, 0, "activation backward in place");
  }
}

DFL_TEST(gather_images_copies_the_indexed_images_in_order) {
  const size_t N = 9, image_bytes = 3 * 4 * 5;
  std::vector<uint8_t> set(N * image_bytes);
  for (size_t i = 0; i < set.size(); ++i) set[i] = uint8_t((i * 37 + 11) % 251);
  const std::vector<int32_t> indices = {4, 0, 8, 4, 7};
  const int B = int(indices.size());
  std::vector<uint8_t> got(size_t(B) * image_bytes, 0);
  test::ops::gather_images(got.data(), set.data(), N, indices.data(), B, image_bytes);
  for (int k = 0; k < B; ++k)
    DFL_EXPECT(std::memcmp(got.data() + size_t(k) * image_bytes, set.data() + size_t(indices[k]) * image_bytes,
                           image_bytes) == 0,
               "batch image " << k << " should be set image " << indices[k]);
}
