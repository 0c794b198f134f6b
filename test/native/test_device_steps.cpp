// Whole DFL steps from resident images (core/device_images.h) on the backend under test, against the
// same steps on the CPU backend: batches gathered, cropped, flipped and normalised on the device,
// up to K = 3 teachers (snapshots taken along the way, confidence-weighted), a reset of the head
// between steps, label smoothing and dropout, on a graph with every op (the fixture model). On the
// CPU backend the two runs must agree exactly; on another within float tolerance (cuDNN, cuBLAS
// and the reductions sum in other orders): losses 1e-4 relative, weights 1e-4 + 1e-3 relative.
#include <memory>
#include <vector>

#include "core/augment_draws.h"
#include "core/device_images.h"
#include "core/model.h"
#include "core/rng.h"
#include "cpu/kernels.h"
#include "fixtures.h"
#include "harness.h"

namespace dfl::test {
namespace {

struct Run {
  std::unique_ptr<Model> model;
  std::unique_ptr<DeviceImages> images;
  std::vector<std::unique_ptr<Teacher>> teachers;
};

}  // namespace

DFL_TEST(dfl_steps_from_resident_images_match_the_cpu_backend) {
  const ModelSpec spec = read_model_spec_json(fixture_path("model_step_spec.json"));
  const int N = 24, B = 8, C = spec.in_channels, H = spec.height, W = spec.width;
  std::vector<uint8_t> pixels(size_t(N) * C * H * W);
  Rng rng(5);
  for (auto& p : pixels) p = uint8_t(rng.below(256));
  Run ref, dev;
  for (Run* r : {&ref, &dev}) {
    std::shared_ptr<Backend> be = r == &ref ? backend_by_name("cpu") : backend_ptr();
    r->model = std::make_unique<Model>(spec, 11, be);
    r->images = std::make_unique<DeviceImages>(be, pixels.data(), N, C, H, W);
  }
  const int NC = ref.model->num_classes();
  const std::vector<float> mean(size_t(C), 0.45f), stdv(size_t(C), 0.22f);
  LossConfig loss;
  loss.label_smoothing = 0.1f;
  loss.distill_weight = 1.f;
  loss.temperature = 4.f;
  const SgdConfig sgd{0.05f, 0.9f, 5e-4f, true, false};
  const bool exact = on_cpu();
  const double rtol = exact ? 0.0 : 1e-4;

  for (int step = 0; step < 7; ++step) {
    if (step == 1 || step == 2 || step == 4)
      for (Run* r : {&ref, &dev}) r->teachers.push_back(r->model->snapshot());
    if (step == 3)
      for (Run* r : {&ref, &dev}) r->model->reinit_layers({r->model->num_layers() - 1}, 99, false, 0.f, 0.f);
    std::vector<int32_t> indices(B), labels(B);
    for (int k = 0; k < B; ++k) {
      indices[k] = (step * 5 + k * 7) % N;
      labels[k] = indices[k] % NC;
    }
    std::vector<AugmentDraw> draws(B);
    Rng draw_rng(uint64_t(step) + 100);
    augment_draws(draws.data(), B, 2, true, draw_rng);
    StepStats st[2];
    for (Run* r : {&ref, &dev}) {
      Distillation d;
      for (auto& t : r->teachers) d.teachers.push_back(t.get());
      d.confidence_weights = true;
      const ImageBatch batch{r->images.get(), indices.data(), B, draws.data(), 2, mean.data(), stdv.data()};
      st[r == &dev] = r->model->train_step(batch, labels.data(), d, loss, sgd, uint64_t(step) * 31 + 7);
    }
    DFL_EXPECT(st[1].finite, "step " << step << " finite");
    DFL_EXPECT_CLOSE(&st[1].loss, &st[0].loss, 1, rtol, rtol, "step " + std::to_string(step) + " loss");
    DFL_EXPECT_CLOSE(&st[1].distill_loss, &st[0].distill_loss, 1, rtol, rtol,
                     "step " + std::to_string(step) + " distill loss");
    DFL_EXPECT_CLOSE(&st[1].grad_norm, &st[0].grad_norm, 1, exact ? 0.0 : 1e-4, exact ? 0.0 : 1e-3,
                     "step " + std::to_string(step) + " gradient norm");
  }
  const std::vector<float> p0 = ref.model->get_params(), p1 = dev.model->get_params();
  DFL_EXPECT_CLOSE(p1.data(), p0.data(), p0.size(), exact ? 0.0 : 1e-4, exact ? 0.0 : 1e-3, "weights after 7 steps");
  const std::vector<float> b0 = ref.model->get_buffers(), b1 = dev.model->get_buffers();
  DFL_EXPECT_CLOSE(b1.data(), b0.data(), b0.size(), exact ? 0.0 : 1e-4, exact ? 0.0 : 1e-3, "BN buffers after 7 steps");

  // Evaluation from resident images: the student and a teacher.
  std::vector<int32_t> all(N);
  for (int k = 0; k < N; ++k) all[k] = k;
  std::vector<float> l0(size_t(N) * NC), l1(l0.size()), t0(l0.size()), t1(l0.size());
  ref.model->forward(ImageBatch{ref.images.get(), all.data(), N, nullptr, 0, mean.data(), stdv.data()}, l0.data());
  dev.model->forward(ImageBatch{dev.images.get(), all.data(), N, nullptr, 0, mean.data(), stdv.data()}, l1.data());
  DFL_EXPECT_CLOSE(l1.data(), l0.data(), l0.size(), exact ? 0.0 : 1e-4, exact ? 0.0 : 1e-3, "eval logits");
  ref.teachers[0]->forward(ImageBatch{ref.images.get(), all.data(), N, nullptr, 0, mean.data(), stdv.data()},
                           t0.data());
  dev.teachers[0]->forward(ImageBatch{dev.images.get(), all.data(), N, nullptr, 0, mean.data(), stdv.data()},
                           t1.data());
  DFL_EXPECT_CLOSE(t1.data(), t0.data(), t0.size(), exact ? 0.0 : 1e-4, exact ? 0.0 : 1e-3, "teacher logits");
}

DFL_TEST(resident_image_batch_equals_the_host_batch) {
  const int N = 5, B = 4, C = 3, H = 6, W = 7, pad = 2;
  std::vector<uint8_t> pixels(size_t(N) * C * H * W);
  Rng rng(9);
  for (auto& p : pixels) p = uint8_t(rng.below(256));
  DeviceImages images(backend_ptr(), pixels.data(), N, C, H, W);
  const int32_t indices[B] = {4, 0, 2, 4};
  const float mean[C] = {0.4f, 0.5f, 0.6f}, stdv[C] = {0.2f, 0.3f, 0.25f};
  std::vector<AugmentDraw> draws(B);
  augment_draws(draws.data(), B, pad, true, rng);
  ModelSpec spec;
  spec.in_channels = C;
  spec.height = H;
  spec.width = W;
  const size_t n = size_t(B) * C * H * W;
  DeviceBuffer u8(backend_ptr()), x(backend_ptr(), n * sizeof(float), "batch");
  std::vector<uint8_t> host(n);
  for (int k = 0; k < B; ++k)
    std::copy(pixels.begin() + long(indices[k]) * C * H * W, pixels.begin() + long(indices[k] + 1) * C * H * W,
              host.begin() + long(k) * C * H * W);
  for (bool augment : {true, false}) {
    make_batch(ImageBatch{&images, indices, B, augment ? draws.data() : nullptr, pad, mean, stdv}, spec, backend(), u8,
               x.f());
    std::vector<float> got(n), want(n);
    backend().download(got.data(), x.get(), n * sizeof(float));
    if (augment)
      cpu::augment_apply(want.data(), host.data(), B, C, H, W, pad, draws.data(), mean, stdv);
    else
      cpu::normalize_batch(want.data(), host.data(), B, C, H, W, mean, stdv);
    DFL_EXPECT_CLOSE(got.data(), want.data(), n, 0.0, 0.0, augment ? "augmented batch" : "normalised batch");
  }
  const int32_t bad[1] = {N};
  DFL_EXPECT_THROWS(make_batch(ImageBatch{&images, bad, 1, nullptr, 0, mean, stdv}, spec, backend(), u8, x.f()),
                    "index out of range");
}

}  // namespace dfl::test
