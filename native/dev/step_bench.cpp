// A Node-free timing of whole training steps on a backend (the GPU machine has no Node.js):
//   dfl_step_bench --spec FILE.json [--backend cuda] [--batch 128] [--steps 20] [--teachers 3]
//                  [--precision fp32|bf16] [--nondeterministic 1]
// times, after warm-up steps, a plain training step (forward, CE, backward, SGD), a DFL step (the
// same plus K teachers' forwards and the confidence-weighted ensemble KL) and an eval forward, on a
// batch made on the device from resident uint8 images (as the trainer does on a GPU). Each step
// reads its loss back, so a step's time includes everything the GPU did for it. Prints one JSON line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cpu_features.h"
#include "core/model.h"
#include "core/rng.h"
#include "fixtures.h"

using namespace dfl;

namespace {

const char* flag(int argc, char** argv, const char* name, const char* dflt) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == name) return argv[i + 1];
  return dflt;
}

template <typename F>
double ms_per_call(int calls, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) f(i);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / calls;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string spec_path = flag(argc, argv, "--spec", "");
    if (spec_path.empty()) {
      std::fprintf(stderr,
                   "usage: dfl_step_bench --spec FILE.json [--backend cuda] [--batch 128] [--steps 20] [--teachers 3] "
                   "[--precision fp32|bf16] [--nondeterministic 1]\n");
      return 2;
    }
    const std::string backend_name = flag(argc, argv, "--backend", "cuda");
    const int B = std::atoi(flag(argc, argv, "--batch", "128"));
    const int steps = std::atoi(flag(argc, argv, "--steps", "20"));
    const int K = std::atoi(flag(argc, argv, "--teachers", "3"));
    const std::string precision = flag(argc, argv, "--precision", "fp32");
    if (precision != "fp32" && precision != "bf16") {
      std::fprintf(stderr, "dfl_step_bench: --precision must be fp32 or bf16, got %s\n", precision.c_str());
      return 2;
    }
    MathMode math;
    math.bf16 = precision == "bf16";
    math.nondeterministic = std::string(flag(argc, argv, "--nondeterministic", "0")) == "1";
    const ModelSpec spec = test::read_model_spec_json(spec_path);
    std::shared_ptr<Backend> be = backend_by_name(backend_name);

    Model model(spec, 1, be);
    model.set_math(math);  // the teachers below are snapshots: they compute the same way
    const int C = spec.in_channels, H = spec.height, W = spec.width, NC = model.num_classes();
    const int N = 4 * B;  // a small resident set; every step takes a different slice
    std::vector<uint8_t> pixels(size_t(N) * C * H * W);
    Rng rng(7);
    for (auto& p : pixels) p = uint8_t(rng.below(256));
    DeviceImages images(be, pixels.data(), N, C, H, W);
    std::vector<int32_t> labels(static_cast<size_t>(N));
    for (int i = 0; i < N; ++i) labels[i] = i % NC;
    const std::vector<float> mean(size_t(C), 0.5f), stdv(size_t(C), 0.25f);
    std::vector<AugmentDraw> draws(static_cast<size_t>(B));
    std::vector<int32_t> indices(static_cast<size_t>(B));
    auto batch_for = [&](int step) {
      for (int k = 0; k < B; ++k) indices[k] = (step * B + k) % N;
      Rng r(uint64_t(step) + 1);
      for (auto& d : draws) d = {int32_t(r.below(9)), int32_t(r.below(9)), int32_t(r.below(2))};
      return ImageBatch{&images, indices.data(), B, draws.data(), 4, mean.data(), stdv.data()};
    };
    auto labels_for = [&](int step) { return labels.data() + (size_t(step) * B) % size_t(N - B + 1); };
    const SgdConfig sgd{0.01f, 0.9f, 5e-4f, true, false};
    LossConfig plain;
    LossConfig dfl_loss;
    dfl_loss.distill_weight = 1.f;
    dfl_loss.temperature = 4.f;

    const Distillation none;
    auto train = [&](int i) { model.train_step(batch_for(i), labels_for(i), none, plain, sgd, uint64_t(i)); };
    for (int i = 0; i < 3; ++i) train(i);
    const double train_ms = ms_per_call(steps, train);

    std::vector<std::unique_ptr<Teacher>> teachers;
    Distillation distill;
    for (int k = 0; k < K; ++k) {
      teachers.push_back(model.snapshot());
      distill.teachers.push_back(teachers.back().get());
    }
    distill.confidence_weights = true;
    auto dfl_step = [&](int i) { model.train_step(batch_for(i), labels_for(i), distill, dfl_loss, sgd, uint64_t(i)); };
    for (int i = 0; i < 2; ++i) dfl_step(i);
    const double dfl_ms = K > 0 ? ms_per_call(steps, dfl_step) : 0.0;

    std::vector<float> logits(size_t(B) * NC);
    auto eval = [&](int i) {
      ImageBatch b = batch_for(i);
      b.draws_host = nullptr;
      model.forward(b, logits.data());
    };
    eval(0);
    const double eval_ms = ms_per_call(steps, eval);

    std::printf(
        "{\"spec\": \"%s\", \"backend\": \"%s\", \"precision\": \"%s\", \"deterministic\": %s, \"batch\": %d, "
        "\"teachers\": %d, \"params\": %zu, \"train_ms\": %.3f, \"dfl_ms\": %.3f, \"eval_ms\": %.3f, "
        "\"device_mib\": %.1f, \"simd\": \"%s\"}\n",
        spec_path.c_str(), backend_name.c_str(), precision.c_str(), math.nondeterministic ? "false" : "true", B, K,
        model.num_params(), train_ms, dfl_ms, eval_ms, double(model.device_bytes()) / (1024.0 * 1024.0),
        simd_paths_summary().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dfl_step_bench: %s\n", e.what());
    return 1;
  }
}
