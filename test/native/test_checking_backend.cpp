// The checking backend (core/checking_backend.h): that it refuses what it promises to refuse (a
// short workspace, a misaligned pointer, memory it did not allocate), and that whole training runs
// through it pass: batches of 128, then 80, then 7 (a smaller batch asks for more workspace there,
// as cuDNN's per-batch plans may), with a teacher, evaluation and resident images, one read-back per
// step, results identical to the same run without it, and every allocation released afterwards.
// npm test also runs the whole per-backend suite through it (dfl_native_tests --backend checking:cpu).
#include <memory>
#include <string>
#include <vector>

#include "core/augment_draws.h"
#include "core/checking_backend.h"
#include "core/device_images.h"
#include "core/model.h"
#include "cpu/kernels.h"
#include "fixtures.h"
#include "harness.h"

namespace dfl::test {
namespace {

// Runs stmt, which must throw dfl::Error with `part` in its message.
template <typename F>
void expect_refused(F&& stmt, const std::string& part, const char* what, int line) {
  try {
    stmt();
  } catch (const Error& e) {
    if (std::string(e.what()).find(part) == std::string::npos)
      fail_at(__FILE__, line, std::string(what) + ": refused, but the message lacks '" + part + "': " + e.what());
    return;
  }
  fail_at(__FILE__, line, std::string(what) + ": expected the checking backend to refuse it");
}
#define EXPECT_REFUSED(stmt, part, what) expect_refused([&] { stmt; }, (part), (what), __LINE__)

const Conv2dShape kConv{2, 16, 8, 8, 8, 3, 3, 1, 1, 1, 1, 1};

struct ConvArrays {
  DeviceBuffer x, w, y;
  explicit ConvArrays(const std::shared_ptr<Backend>& be)
      : x(be, sizeof(float) * 2 * 16 * 8 * 8, "x"),
        w(be, sizeof(float) * 8 * 16 * 9, "w"),
        y(be, sizeof(float) * 2 * 8 * 8 * 8, "y") {}
};

}  // namespace

DFL_CPU_TEST(checking_backend_refuses_an_undersized_workspace) {
  auto chk = std::make_shared<CheckingBackend>(backend_by_name("cpu"));
  ConvArrays a(chk);
  const size_t need = chk->conv2d_workspace_bytes(kConv);
  DFL_EXPECT(need > chk->inner().conv2d_workspace_bytes(kConv),
             "it asks for more than the CPU needs, more for a small batch");
  DeviceBuffer short_ws(chk, need - 256, "workspace"), ws(chk, need, "workspace");
  EXPECT_REFUSED(chk->conv2d_forward(a.y.f(), a.x.f(), a.w.f(), nullptr, kConv, short_ws.get(), short_ws.bytes(),
                                     Activation::None),
                 "expected a workspace of at least", "a workspace 256 bytes short");
  EXPECT_REFUSED(chk->conv2d_backward(nullptr, a.w.f(), nullptr, a.y.f(), a.x.f(), a.w.f(), kConv, short_ws.get(),
                                      short_ws.bytes(), false),
                 "expected a workspace of at least", "a short workspace in backward");
  // A size claimed beyond the workspace's allocation.
  EXPECT_REFUSED(chk->conv2d_forward(a.y.f(), a.x.f(), a.w.f(), nullptr, kConv, short_ws.get(), need, Activation::None),
                 "past the end of its allocation", "a workspace claimed larger than it is");
  chk->conv2d_forward(a.y.f(), a.x.f(), a.w.f(), nullptr, kConv, ws.get(), ws.bytes(), Activation::None);

  // The backends themselves refuse a short workspace too (not only the wrapper).
  auto cpu = backend_by_name("cpu");
  const size_t cpu_need = cpu->conv2d_workspace_bytes(kConv);
  DFL_EXPECT(cpu_need > 0, "this shape needs a CPU workspace");
  EXPECT_REFUSED(
      cpu->conv2d_forward(a.y.f(), a.x.f(), a.w.f(), nullptr, kConv, ws.get(), cpu_need - 4, Activation::None),
      "expected a workspace of at least", "the cpu backend, 4 bytes short");
  EXPECT_REFUSED(cpu->conv2d_backward(nullptr, a.w.f(), nullptr, a.y.f(), a.x.f(), a.w.f(), kConv, nullptr, 0, false),
                 "expected a workspace of at least", "the cpu backend, no workspace");
}

DFL_CPU_TEST(checking_backend_refuses_a_misaligned_pointer) {
  auto chk = std::make_shared<CheckingBackend>(backend_by_name("cpu"));
  DeviceBuffer a(chk, sizeof(float) * 512, "a"), b(chk, sizeof(float) * 512, "b");
  chk->relu_forward(a.f(), b.f(), 256);
  chk->relu_forward(a.f() + 64, b.f() + 128, 256);  // 256-byte steps stay aligned
  EXPECT_REFUSED(chk->relu_forward(a.f() + 1, b.f(), 256), "is not aligned to 256 bytes", "out 4 bytes off");
  EXPECT_REFUSED(chk->sgd_step(a.f(), b.f() + 2, a.f() + 128, nullptr, 16, SgdConfig{}), "momentum_buf",
                 "a momentum tensor 8 bytes off");
  EXPECT_REFUSED(chk->sum_squares(a.f(), 16, reinterpret_cast<double*>(b.f() + 1)), "is not aligned to 8 bytes",
                 "a double result slot at 4 bytes");
  // Memory operations may start anywhere inside an allocation.
  chk->fill(a.f() + 1, 2.f, 3);
  chk->copy(a.f() + 5, b.f() + 3, 8);
}

DFL_CPU_TEST(checking_backend_refuses_memory_it_did_not_allocate) {
  auto chk = std::make_shared<CheckingBackend>(backend_by_name("cpu"));
  DeviceBuffer a(chk, sizeof(float) * 64, "a"), b(chk, sizeof(float) * 64, "b");
  std::vector<float> host(64, 1.f);
  EXPECT_REFUSED(chk->relu_forward(a.f(), host.data(), 64), "outside every live allocation", "a host array as input");
  EXPECT_REFUSED(chk->relu_forward(a.f(), b.f(), 65), "past the end of its allocation", "one float past the end");
  EXPECT_REFUSED(chk->copy(a.f(), a.f() + 4, 32), "overlap", "overlapping copy");
  EXPECT_REFUSED(chk->upload(a.get(), b.get(), 16), "must be host memory", "an upload from device memory");
  float* gone = static_cast<float*>(chk->alloc(256, "released"));
  chk->release(gone);
  EXPECT_REFUSED(chk->fill(gone, 0.f, 4), "outside every live allocation", "a released pointer");
  // Memory of another backend instance is not this one's.
  DeviceBuffer other(backend_by_name("cpu"), 256, "another backend's");
  EXPECT_REFUSED(chk->fill(other.f(), 0.f, 4), "outside every live allocation", "another backend's memory");
  // A bad release cannot throw (noexcept): the next call reports it, and the pointer is not freed.
  chk->release(host.data());
  EXPECT_REFUSED(chk->synchronize(), "is not the start of a live allocation", "a release of host memory");
  chk->synchronize();  // reported once
}

DFL_TEST(training_at_batches_128_80_7_through_the_checking_backend) {
  // The wrapper over the backend under test asks for 16 MiB / B of extra workspace per convolution:
  // for this model that is more at 80 than at 128, and more again at 7.
  CheckingBackend::Options opts;
  opts.small_batch_workspace = size_t(16) << 20;
  auto chk = std::make_shared<CheckingBackend>(backend_ptr(), opts);
  const ModelSpec spec = read_model_spec_json(fixture_path("model_step_spec.json"));
  const int N = 128, C = spec.in_channels, H = spec.height, W = spec.width;
  std::vector<uint8_t> pixels(size_t(N) * C * H * W);
  Rng rng(17);
  for (auto& p : pixels) p = uint8_t(rng.below(256));
  const std::vector<float> mean(size_t(C), 0.45f), stdv(size_t(C), 0.22f);
  LossConfig loss;
  loss.label_smoothing = 0.1f;
  loss.distill_weight = 0.5f;
  const SgdConfig sgd{0.05f, 0.9f, 5e-4f, true, false};
  std::vector<StepStats> stats[2];
  std::vector<float> params[2], logits[2];
  {
    std::shared_ptr<Backend> backends[2] = {backend_ptr(), chk};
    for (int run = 0; run < 2; ++run) {
      Backend& be = *backends[run];
      Model model(spec, 3, backends[run]);
      DeviceImages images(backends[run], pixels.data(), N, C, H, W);
      std::unique_ptr<Teacher> teacher;
      int step = 0;
      for (int B : {128, 80, 7, 128, 7}) {
        std::vector<int32_t> indices(static_cast<size_t>(B)), labels(static_cast<size_t>(B));
        for (int k = 0; k < B; ++k) {
          indices[size_t(k)] = (k * 37 + step * 11) % N;
          labels[size_t(k)] = indices[size_t(k)] % model.num_classes();
        }
        std::vector<AugmentDraw> draws(static_cast<size_t>(B));
        Rng draw_rng(uint64_t(step) + 5);
        augment_draws(draws.data(), B, 1, true, draw_rng);
        Distillation d;
        if (teacher) d.teachers.push_back(teacher.get());
        const ImageBatch batch{&images, indices.data(), B, draws.data(), 1, mean.data(), stdv.data()};
        const uint64_t before = run == 1 ? chk->downloads() : 0;
        stats[run].push_back(model.train_step(batch, labels.data(), d, loss, sgd, uint64_t(step)));
        if (run == 1)
          DFL_EXPECT(chk->downloads() - before == 1,
                     "a step at batch " << B << " read back " << chk->downloads() - before << " times");
        if (step == 0) teacher = model.snapshot();
        std::vector<float> l(size_t(B) * model.num_classes());
        model.forward(ImageBatch{&images, indices.data(), B, nullptr, 0, mean.data(), stdv.data()}, l.data());
        logits[run].insert(logits[run].end(), l.begin(), l.end());
        ++step;
      }
      // A host batch at a batch size not seen yet.
      const int B = 5;
      std::vector<float> x(size_t(B) * C * H * W);
      Rng x_rng(23);
      for (auto& v : x) v = x_rng.normal();
      const std::vector<int32_t> labels = {0, 1, 2, 3, 4};
      const uint64_t before = run == 1 ? chk->downloads() : 0;
      stats[run].push_back(model.train_step(x.data(), labels.data(), B, Distillation{}, loss, sgd, 9));
      if (run == 1) DFL_EXPECT(chk->downloads() - before == 1, "a host-batch step reads back once");
      params[run] = model.get_params();
      be.synchronize();
    }
  }
  DFL_EXPECT(chk->live_allocations() == 0, chk->live_allocations() << " allocations left after the run");
  // The wrapper only checks: the same run without it gives the same numbers.
  for (size_t k = 0; k < stats[0].size(); ++k) {
    DFL_EXPECT(stats[1][k].finite, "step " << k << " finite");
    DFL_EXPECT(stats[1][k].loss == stats[0][k].loss && stats[1][k].grad_norm == stats[0][k].grad_norm &&
                   stats[1][k].correct == stats[0][k].correct,
               "step " << k << ": loss " << stats[1][k].loss << " vs " << stats[0][k].loss);
  }
  DFL_EXPECT_CLOSE(params[1].data(), params[0].data(), params[0].size(), 0.0, 0.0, "weights after the run");
  DFL_EXPECT_CLOSE(logits[1].data(), logits[0].data(), logits[0].size(), 0.0, 0.0, "eval logits");
}

}  // namespace dfl::test
