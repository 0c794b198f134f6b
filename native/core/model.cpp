// The executors: memory on the backend, initialisation, forward/backward by walking the plan
// through the op table, the fused training step, and teachers. No kernel is called directly here:
// every computation is a Backend call.
#include "core/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/ops.h"
#include "core/rng.h"

namespace dfl {

namespace {

// Weight decay applies to every parameter, as torch.optim.SGD's weight_decay does (the kernels take a
// per-element multiplier array where a null one means 1 everywhere; no mask is kept).
constexpr const float* kDecayEverywhere = nullptr;

// Refuses an allocation that cannot fit the backend's memory, with a message saying what to do,
// instead of letting the OS or the driver kill the run half-way through.
void check_memory(const Backend& be, double bytes, const std::string& what, const char* todo) {
  std::string source;
  const double limit = be.available_bytes(&source);
  const double mib = 1024.0 * 1024.0;
  DFL_CHECK(bytes <= limit, "Refusing to allocate ", static_cast<long long>(bytes / mib), " MiB for ", what,
            ": more than the ", static_cast<long long>(limit / mib), " MiB available (", source, "); ", todo,
            " (or raise DFL_MAX_MEMORY_MB)");
}

size_t floats(size_t n) { return n * sizeof(float); }

// The largest convolution workspace any conv node of the plan needs for a batch of B (not
// monotone in B: see Backend::conv2d_workspace_bytes).
size_t workspace_bytes(Backend& be, const Plan& plan, int B, const MathMode& math) {
  size_t ws = 0;
  for (size_t i = 1; i < plan.nodes.size(); ++i) {
    if (plan.nodes[i].op() != Op::Conv) continue;
    Conv2dShape s = plan.conv_shape(int(i), B);
    s.math = math;
    ws = std::max(ws, be.conv2d_workspace_bytes(s));
  }
  return ws;
}

void check_supported(const Backend& be, const MathMode& math) {
  std::string why;
  DFL_CHECK(be.supports(math, &why), "Cannot compute ", math.bf16 ? "in bf16" : "this way", ": ", why,
            math.bf16 ? "; use --precision fp32, or --device cuda on a machine with a GPU" : "");
}

// Times phases of a step for the profile: each lap adds the milliseconds since the last one, after
// the backend has finished what was enqueued. Does nothing when profiling is off.
class PhaseTimer {
 public:
  PhaseTimer(Backend& be, bool on) : be_(be), on_(on) { restart(); }
  void restart() {
    if (!on_) return;
    be_.synchronize();
    t0_ = std::chrono::steady_clock::now();
  }
  // Adds the milliseconds since the last restart to *into and restarts.
  void lap(double* into) {
    if (!on_) return;
    be_.synchronize();
    const auto t = std::chrono::steady_clock::now();
    *into += std::chrono::duration<double, std::milli>(t - t0_).count();
    t0_ = t;
  }

 private:
  Backend& be_;
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

// Runs every node's forward; node_ms (per node) is filled when profiling.
void run_plan_forward(Backend& be, const Plan& plan, const ExecMemory& mem, int B, bool training, uint64_t seed,
                      const MathMode& math, double* node_ms = nullptr) {
  PhaseTimer timer(be, node_ms != nullptr);
  for (int i = 1; i < int(plan.nodes.size()); ++i) {
    if (plan.nodes[i].alias_of >= 0) continue;  // its producer wrote its output
    op_def(plan.nodes[i].op()).forward(OpRun{be, plan, mem, i, B, training, seed, 0, math});
    timer.lap(node_ms ? node_ms + i : nullptr);
  }
}

// Fresh values for parameter tensor `t` from its own stream (seed, tensor index), so re-initialising
// one layer never depends on the others. fan_in is the linear layer's input width.
void fresh_values(float* dst, const TensorView& t, Op op, int fan_in, uint64_t seed, size_t tensor_index,
                  ConvInit conv_init) {
  Rng rng(derive_seed(seed, tensor_index));
  if (op == Op::BatchNorm) {
    std::fill(dst, dst + t.size, t.kind == TensorKind::Weight ? 1.0f : 0.0f);
  } else if (op == Op::Conv) {
    if (t.kind == TensorKind::Weight && conv_init == ConvInit::PytorchDefault) {
      // nn.Conv2d's default: kaiming_uniform(a = sqrt(5)) = U(+-1/sqrt(fan_in)), fan_in = C/groups*KH*KW.
      const double fan_in_conv = double(t.shape[1]) * t.shape[2] * t.shape[3];
      const float bound = static_cast<float>(1.0 / std::sqrt(fan_in_conv));
      for (size_t k = 0; k < t.size; ++k) dst[k] = rng.uniform(-bound, bound);
    } else if (t.kind == TensorKind::Weight) {
      // Kaiming normal, mode fan_out, relu gain (torchvision's ResNet/VGG/MobileNet init).
      const double fan_out = double(t.shape[0]) * t.shape[2] * t.shape[3];
      const float stdv = static_cast<float>(std::sqrt(2.0 / fan_out));
      for (size_t k = 0; k < t.size; ++k) dst[k] = rng.normal() * stdv;
    } else {
      std::fill(dst, dst + t.size, 0.0f);
    }
  } else {
    // Linear: PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    const float bound = static_cast<float>(1.0 / std::sqrt(double(fan_in)));
    for (size_t k = 0; k < t.size; ++k) dst[k] = rng.uniform(-bound, bound);
  }
}

}  // namespace

// What a training step reads back: the loss sums, the counters and the finiteness checks, each
// reduced on the device into this block, then downloaded in one copy (one synchronisation per step).
namespace {
struct StepReadback {
  double ce_sum, distill_sum, target_sum, grad_squares;
  int32_t correct, buffers_finite, update_finite, unused;
};
}  // namespace

// ---- student memory ---------------------------------------------------------------------------------
struct Model::Memory {
  explicit Memory(const std::shared_ptr<Backend>& be)
      : arena(be),
        buffers(be),
        buffers_backup(be),
        stats(be),
        acts(be),
        act_grads(be),
        argmax(be),
        mask(be),
        workspace(be),
        x(be),
        labels(be),
        losses(be),
        probs(be),
        kl_losses(be),
        student_probs(be),
        teacher_probs(be),
        teacher_logits(be),
        teacher_weights(be),
        teacher_scratch(be),
        target_logits(be),
        batch_u8(be),
        readback(be) {}
  DeviceBuffer arena;  // [params | grads | momentum]
  DeviceBuffer buffers, buffers_backup, stats;
  DeviceBuffer acts, act_grads, argmax, mask, workspace;
  DeviceBuffer x, labels;
  DeviceBuffer losses, probs, kl_losses, student_probs, teacher_probs;
  DeviceBuffer teacher_logits, teacher_weights, teacher_scratch;
  DeviceBuffer target_logits;  // the soft targets' logits (rows, NC)
  DeviceBuffer batch_u8;       // a batch's images gathered from DeviceImages
  DeviceBuffer readback;       // a StepReadback
  // Where a StepReadback member lives on the device.
  template <typename T>
  T* slot(size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(readback.get()) + offset);
  }
  size_t bytes() const {
    size_t n = 0;
    for (const DeviceBuffer* b : {&arena,
                                  &buffers,
                                  &buffers_backup,
                                  &stats,
                                  &acts,
                                  &act_grads,
                                  &argmax,
                                  &mask,
                                  &workspace,
                                  &x,
                                  &labels,
                                  &losses,
                                  &probs,
                                  &kl_losses,
                                  &student_probs,
                                  &teacher_probs,
                                  &teacher_logits,
                                  &teacher_weights,
                                  &teacher_scratch,
                                  &target_logits,
                                  &batch_u8,
                                  &readback})
      n += b->bytes();
    return n;
  }
};

Model::Model(const ModelSpec& spec, uint64_t seed, std::shared_ptr<Backend> backend, ConvInit conv_init)
    : plan_(build_plan(spec)),
      backend_(std::move(backend)),
      mem_(std::make_unique<Memory>(backend_)),
      conv_init_(conv_init) {
  const double n = double(plan_.device_param_floats);
  check_memory(*backend_, 4.0 * (3.0 * n + double(plan_.device_buffer_floats) + double(plan_.stat_floats)),
               "a model of " + std::to_string(plan_.num_params) + " parameters (weights, gradients, momentum)",
               "use a smaller model or --width");
  mem_->arena.reserve(floats(3 * plan_.device_param_floats), "parameters, gradients and momentum");
  mem_->buffers.reserve(floats(plan_.device_buffer_floats), "batch-norm buffers");
  mem_->buffers_backup.reserve(floats(plan_.device_buffer_floats), "batch-norm buffer backup");
  mem_->stats.reserve(floats(plan_.stat_floats), "batch-norm statistics");
  mem_->readback.reserve(sizeof(StepReadback), "step results");
  set_profiling(false);
  init_all(seed);
}

Model::~Model() = default;

float* Model::param_data() const { return mem_->arena.f(); }
// The arena's sections are device_param_floats long (a multiple of kTensorAlignElements): each starts aligned.
float* Model::grad_data() const { return mem_->arena.f() + plan_.device_param_floats; }
float* Model::momentum_data() const { return mem_->arena.f() + 2 * plan_.device_param_floats; }
size_t Model::device_bytes() const { return mem_->bytes(); }

std::vector<int> Model::node_shape(int i) const {
  DFL_CHECK(i >= 0 && i < int(plan_.nodes.size()), "node index ", i, " out of range");
  const auto& s = plan_.nodes[i].shape;
  return {s[0], s[1], s[2]};
}
int Model::node_layer(int i) const {
  DFL_CHECK(i >= 0 && i < int(plan_.nodes.size()), "node index ", i, " out of range");
  return plan_.nodes[i].layer;
}

// ---- initialisation and reset -----------------------------------------------------------------------
void Model::init_all(uint64_t seed) {
  std::vector<int> all(plan_.num_layers);
  for (int l = 0; l < plan_.num_layers; ++l) all[l] = l;
  reinit_layers(all, seed, false, 0.f, 0.f);
}

void Model::reinit_layers(const std::vector<int>& layers, uint64_t seed, bool shrink_perturb, float shrink,
                          float perturb) {
  for (int l : layers)
    DFL_CHECK(l >= 0 && l < plan_.num_layers, "reinit: layer ", l, " out of range [0, ", plan_.num_layers, ")");
  auto chosen = [&](int layer) { return std::find(layers.begin(), layers.end(), layer) != layers.end(); };
  Backend& be = *backend_;
  ++weights_version_;
  std::vector<float> fresh, current;
  for (size_t ti = 0; ti < plan_.params.size(); ++ti) {
    const TensorView& t = plan_.params[ti];
    if (!chosen(t.layer)) continue;
    const PlanNode& node = plan_.nodes[t.node];
    // Linear bias bound uses the weight's fan-in.
    const int fan_in = node.op() == Op::Linear ? plan_.params[node.weight].shape[1] : 1;
    fresh.resize(t.size);
    fresh_values(fresh.data(), t, node.op(), fan_in, seed, ti, conv_init_);
    float* p = param_data() + t.device_offset;
    if (shrink_perturb) {
      current.resize(t.size);
      be.download(current.data(), p, floats(t.size));
      for (size_t k = 0; k < t.size; ++k) fresh[k] = shrink * current[k] + perturb * fresh[k];
    }
    be.upload(p, fresh.data(), floats(t.size));
    be.fill(momentum_data() + t.device_offset, 0.0f, t.size);
    be.fill(grad_data() + t.device_offset, 0.0f, t.size);
  }
  for (const TensorView& b : plan_.buffers) {
    if (!chosen(b.layer) || shrink_perturb) continue;  // shrink-perturb keeps the running statistics
    const bool is_var = b.name.size() >= 11 && b.name.compare(b.name.size() - 11, 11, "running_var") == 0;
    be.fill(mem_->buffers.f() + b.device_offset, is_var ? 1.0f : 0.0f, b.size);
  }
}

// ---- forward / backward -------------------------------------------------------------------------------
// The per-batch blocks grow with the largest batch seen; the convolution workspace is checked for
// every batch size (cuDNN's plans are per batch, and a smaller batch may need more).
void Model::ensure_batch(int B) {
  DFL_CHECK(B > 0, "forward: batch size must be positive, got ", B);
  Backend& be = *backend_;
  Memory& m = *mem_;
  auto known = workspace_by_batch_.find(B);
  const size_t ws = known != workspace_by_batch_.end()
                        ? known->second
                        : (workspace_by_batch_[B] = workspace_bytes(be, plan_, B, math_));
  if (B > capacity_b_) {
    // activations + their gradients + dropout masks + maxpool indices + workspace, next to the arena
    const double per = double(plan_.act_per_sample + plan_.grad_per_sample), nb = double(B);
    check_memory(be,
                 4.0 * (per * nb + double(plan_.mask_per_sample) * nb + double(plan_.argmax_per_sample) * nb +
                        4.0 * double(plan_.device_param_floats) + double(plan_.device_buffer_floats)) +
                     double(ws),
                 "a batch of " + std::to_string(B) + " through a model of " + std::to_string(plan_.num_params) +
                     " parameters (activations, their gradients and the weights)",
                 "use a smaller --batch-size, --image-size, --width or model");
    const size_t b = size_t(B), nc = size_t(plan_.num_classes);
    m.acts.reserve(floats(plan_.act_per_sample * b), "activations");
    m.act_grads.reset();  // regrown on the next backward
    m.mask.reserve(floats(plan_.mask_per_sample * b), "dropout masks");
    m.argmax.reserve(sizeof(int32_t) * plan_.argmax_per_sample * b, "max-pool indices");
    m.x.reserve(floats(plan_.input_per_sample() * b), "input batch");
    m.labels.reserve(sizeof(int32_t) * b, "labels");
    m.losses.reserve(floats(b), "loss scratch");
    m.kl_losses.reserve(floats(b), "loss scratch");
    m.probs.reserve(floats(b * nc), "loss scratch");
    m.student_probs.reserve(floats(b * nc), "loss scratch");
    m.teacher_probs.reserve(floats(b * nc), "loss scratch");
    capacity_b_ = B;
  }
  if (ws > m.workspace.bytes()) {
    check_memory(be, double(ws - m.workspace.bytes()),
                 "a convolution workspace of " + std::to_string(ws) + " bytes for a batch of " + std::to_string(B),
                 "use a smaller --batch-size, --image-size, --width or model");
    m.workspace.reserve(ws, "convolution workspace");
  }
}

void Model::run_forward(int B, bool training, uint64_t dropout_seed) {
  Memory& m = *mem_;
  const ExecMemory mem{m.x.f(),     m.acts.f(),        m.act_grads.f(),    param_data(),
                       grad_data(), m.buffers.f(),     m.stats.f(),        m.argmax.i32(),
                       m.mask.f(),  m.workspace.get(), m.workspace.bytes()};
  run_plan_forward(*backend_, plan_, mem, B, training, dropout_seed, math_,
                   profiling_ ? profile_.forward_ms.data() : nullptr);
  profile_.forwards += profiling_;
  last_b_ = B;
  have_training_forward_ = training;
}

void Model::forward_eval_unfolded(const float* x_host, int B, float* logits_host) {
  ensure_batch(B);
  backend_->upload(mem_->x.get(), x_host, floats(plan_.input_per_sample() * size_t(B)));
  run_forward(B, false, 0);
  const PlanNode& last = plan_.nodes.back();
  backend_->download(logits_host, mem_->acts.f() + last.act_offset * size_t(B), floats(last.size * size_t(B)));
}

void Model::forward(const float* x_host, int B, bool training, float* logits_host, uint64_t dropout_seed) {
  ensure_batch(B);
  backend_->upload(mem_->x.get(), x_host, floats(plan_.input_per_sample() * size_t(B)));
  if (!training) return eval_batch_on_device(B, logits_host);
  const PlanNode& last = plan_.nodes.back();
  run_forward(B, true, dropout_seed);
  ++weights_version_;  // BN running statistics moved
  backend_->download(logits_host, mem_->acts.f() + last.act_offset * size_t(B), floats(last.size * size_t(B)));
}

// A teacher's (or the eval copy's) forward of a device batch. It runs in the student's activation
// block and convolution workspace when they are large enough: both are idle until the student's
// next training forward, which rewrites its activations, and an inference plan keeps fewer
// activations than training (same convolutions, same workspace). That saves a second set of both in
// a DFL step (vgg16 x1: ~100 MB). Otherwise (a bigger batch than trained with) in its own scratch.
void Model::teacher_forward(const Teacher& t, const float* x, int B, float* logits) {
  Memory& m = *mem_;
  const Teacher::Scratch need = t.scratch_needs(B);
  if (m.acts.bytes() >= need.act_bytes && m.workspace.bytes() >= need.workspace_bytes) {
    have_training_forward_ = false;
    t.forward_device(x, B, logits, m.acts.f(), m.workspace.get(), m.workspace.bytes());
  } else {
    t.forward_device(x, B, logits, m.teacher_scratch);
  }
}

// Eval logits of the batch in mem_->x by the inference copy, refolded if the weights changed.
void Model::eval_batch_on_device(int B, float* logits_host) {
  if (!eval_copy_) eval_copy_ = std::make_unique<Teacher>(plan_.spec, backend_);
  eval_copy_->math_ = math_;
  if (eval_version_ != weights_version_) {
    fold_into(*eval_copy_);
    eval_version_ = weights_version_;
  }
  // The logits land in the loss's probability scratch (B x classes), which eval does not use.
  const PlanNode& last = plan_.nodes.back();
  float* logits = mem_->probs.f();
  teacher_forward(*eval_copy_, mem_->x.f(), B, logits);
  have_training_forward_ = false;
  backend_->download(logits_host, logits, floats(last.size * size_t(B)));
}

// Runs backward from the logits' gradient, which the caller has written into its slot; each other
// activation-gradient slot is zeroed by the first backward that writes it.
void Model::run_backward(int B) {
  Memory& m = *mem_;
  const ExecMemory mem{m.x.f(),     m.acts.f(),        m.act_grads.f(),    param_data(),
                       grad_data(), m.buffers.f(),     m.stats.f(),        m.argmax.i32(),
                       m.mask.f(),  m.workspace.get(), m.workspace.bytes()};
  Backend& be = *backend_;
  PhaseTimer timer(be, profiling_);
  for (int i = int(plan_.nodes.size()) - 1; i >= 1; --i) {
    if (plan_.nodes[i].fused_into_input) continue;  // its producer's backward applies the mask
    const OpDef& def = op_def(plan_.nodes[i].op());
    // An op that is the first writer of an input's gradient may write it directly.
    const bool can_overwrite = def.overwrites_fresh_input_grad && plan_.nodes[i].spec.inputs.size() <= 32;
    const uint32_t fresh = can_overwrite ? plan_.nodes[i].inputs_starting : 0u;
    const OpRun run{be, plan_, mem, i, B, true, 0, fresh, math_};
    if (!fresh)
      for (int j : plan_.nodes[i].grads_start) be.fill(run.act_grad(j), 0.0f, plan_.nodes[j].size * size_t(B));
    def.backward(run);
    timer.lap(profiling_ ? &profile_.backward_ms[i] : nullptr);
  }
}

void Model::set_profiling(bool on) {
  profiling_ = on;
  profile_ = StepProfile{};
  profile_.forward_ms.assign(plan_.nodes.size(), 0.0);
  profile_.backward_ms.assign(plan_.nodes.size(), 0.0);
}

namespace {
// Parameter gradients and the logits' gradient slot zeroed (run_backward zeroes the other slots as
// they start); returns the logits' gradient slot.
float* zero_gradients(Backend& be, DeviceBuffer& act_grads, const Plan& plan, int capacity_b, int B, float* grads) {
  act_grads.reserve(floats(plan.grad_per_sample * size_t(capacity_b)), "activation gradients");
  float* dlogits = act_grads.f() + plan.nodes.back().grad_offset * size_t(B);
  be.fill(dlogits, 0.0f, plan.nodes.back().size * size_t(B));
  be.fill(grads, 0.0f, plan.device_param_floats);
  return dlogits;
}
}  // namespace

void Model::backward(const float* dlogits_host) {
  DFL_CHECK(have_training_forward_, "backward needs a training forward first");
  const int B = last_b_;
  float* dl = zero_gradients(*backend_, mem_->act_grads, plan_, capacity_b_, B, grad_data());
  backend_->upload(dl, dlogits_host, floats(size_t(B) * plan_.num_classes));
  run_backward(B);
}

// ---- the training step ---------------------------------------------------------------------------------
StepStats Model::train_step(const float* x_host, const int32_t* labels_host, int B, const Distillation& distill,
                            const LossConfig& loss, const SgdConfig& sgd, uint64_t dropout_seed) {
  const int K = distill.K();
  DFL_CHECK(K >= 0, "train_step: teacher count must be >= 0");
  DFL_CHECK(distill.teachers.size() > 0 || K == 0 || distill.teacher_logits_host, "train_step: ", K,
            " teachers but no teacher logits");
  DFL_CHECK(loss.temperature > 0.f, "train_step: temperature must be > 0");
  const SoftTargets& targets = distill.targets;
  DFL_CHECK(!targets.active() || (targets.logits_host && targets.rows <= B && targets.temperature > 0.f),
            "train_step: soft targets need logits for at most ", B, " rows and a temperature > 0");
  Backend& be = *backend_;
  Memory& m = *mem_;
  const int NC = plan_.num_classes;
  const size_t BNC = size_t(B) * NC;
  ensure_batch(B);
  PhaseTimer timer(be, profiling_);
  if (x_host) be.upload(m.x.get(), x_host, floats(plan_.input_per_sample() * size_t(B)));  // null: made on the device
  be.upload(m.labels.get(), labels_host, sizeof(int32_t) * size_t(B));
  if (targets.active()) {
    m.target_logits.reserve(floats(size_t(targets.rows) * NC), "soft targets");
    be.upload(m.target_logits.get(), targets.logits_host, floats(size_t(targets.rows) * NC));
  }
  timer.lap(&profile_.transfer_ms);

  // The teachers' logits (K,B,NC) and per-sample weights (K,B), on the device.
  const bool distilling = K > 0 && loss.distill_weight != 0.f;
  const float* weights = nullptr;
  if (distilling) {
    m.teacher_logits.reserve(floats(size_t(K) * BNC), "teacher logits");
    m.teacher_weights.reserve(floats(size_t(K) * B), "teacher weights");
    float* tl = m.teacher_logits.f();
    if (!distill.teachers.empty()) {
      for (int k = 0; k < K; ++k) {
        DFL_CHECK(distill.teachers[k]->num_classes() == NC, "train_step: teacher ", k, " has another class count");
        teacher_forward(*distill.teachers[k], m.x.f(), B, tl + size_t(k) * BNC);
      }
    } else {
      be.upload(tl, distill.teacher_logits_host, floats(size_t(K) * BNC));
    }
    if (distill.confidence_weights) {
      be.teacher_confidence(m.teacher_weights.f(), tl, K, B, NC, loss.temperature);
      weights = m.teacher_weights.f();
    } else if (distill.weights_host) {
      be.upload(m.teacher_weights.get(), distill.weights_host, floats(size_t(K) * B));
      weights = m.teacher_weights.f();
    }
  }

  timer.lap(&profile_.teachers_ms);

  // BN running statistics change in the forward pass: keep a copy so a refused step can be undone.
  be.copy(m.buffers_backup.get(), m.buffers.get(), floats(plan_.device_buffer_floats));
  run_forward(B, true, dropout_seed);
  timer.restart();
  const float* logits = m.acts.f() + plan_.nodes.back().act_offset * size_t(B);
  float* dlogits = zero_gradients(be, m.act_grads, plan_, capacity_b_, B, grad_data());
  be.cross_entropy_forward(m.losses.f(), m.probs.f(), logits, m.labels.i32(), B, NC, loss.label_smoothing,
                           m.slot<double>(offsetof(StepReadback, ce_sum)));
  be.cross_entropy_backward(dlogits, m.probs.f(), m.labels.i32(), B, NC, loss.label_smoothing, loss.ce_weight / B);
  if (distilling) {
    be.ensemble_kl_forward(m.kl_losses.f(), m.student_probs.f(), m.teacher_probs.f(), logits, m.teacher_logits.f(),
                           weights, K, B, NC, loss.temperature, m.slot<double>(offsetof(StepReadback, distill_sum)));
    be.ensemble_kl_backward(dlogits, m.student_probs.f(), m.teacher_probs.f(), B, NC, loss.temperature,
                            loss.distill_weight / B);
  }
  if (targets.active()) {
    // The same KL as one teacher given from the host, over the first rows (the scratch is free again).
    const int R = targets.rows;
    be.ensemble_kl_forward(m.kl_losses.f(), m.student_probs.f(), m.teacher_probs.f(), logits, m.target_logits.f(),
                           nullptr, 1, R, NC, targets.temperature, m.slot<double>(offsetof(StepReadback, target_sum)));
    be.ensemble_kl_backward(dlogits, m.student_probs.f(), m.teacher_probs.f(), R, NC, targets.temperature,
                            targets.weight / R);
  }
  be.count_correct(logits, m.labels.i32(), B, NC, m.slot<int32_t>(offsetof(StepReadback, correct)));
  timer.lap(&profile_.loss_ms);
  run_backward(B);
  timer.restart();

  // Over whole device blocks: the padding between tensors is zero and stays zero (an SGD step of 0).
  const size_t np = plan_.device_param_floats;
  be.sum_squares(grad_data(), np, m.slot<double>(offsetof(StepReadback, grad_squares)));
  be.all_finite(m.buffers.f(), plan_.device_buffer_floats, m.slot<int32_t>(offsetof(StepReadback, buffers_finite)));
  be.sgd_step_stays_finite(param_data(), momentum_data(), grad_data(), kDecayEverywhere, np, sgd,
                           m.slot<int32_t>(offsetof(StepReadback, update_finite)));
  // The step's one read-back: whether to update waits for it.
  StepReadback r{};
  be.download(&r, m.readback.get(), sizeof r);
  StepStats st;
  st.ce_loss = float(r.ce_sum / B);  // the batch means, as the loss kernels define them
  st.distill_loss = distilling ? float(r.distill_sum / B) : 0.f;
  st.loss = loss.ce_weight * st.ce_loss + (distilling ? loss.distill_weight * st.distill_loss : 0.f);
  if (targets.active()) {
    st.target_loss = float(r.target_sum / targets.rows);
    st.loss += targets.weight * st.target_loss;
  }
  st.correct = r.correct;
  st.grad_norm = static_cast<float>(std::sqrt(r.grad_squares));
  st.finite = std::isfinite(st.loss) && std::isfinite(r.grad_squares) && r.buffers_finite == 1 && r.update_finite == 1;
  // A refused step must not touch the model: the caller stops with the last good state.
  if (st.finite) {
    be.sgd_step(param_data(), momentum_data(), grad_data(), kDecayEverywhere, np, sgd);
  } else {
    be.copy(m.buffers.get(), m.buffers_backup.get(), floats(plan_.device_buffer_floats));
  }
  timer.lap(&profile_.update_ms);
  profile_.steps += profiling_;
  ++weights_version_;
  return st;
}

StepStats Model::train_step(const ImageBatch& batch, const int32_t* labels_host, const Distillation& distill,
                            const LossConfig& loss, const SgdConfig& sgd, uint64_t dropout_seed) {
  ensure_batch(batch.B);
  make_batch(batch, plan_.spec, *backend_, mem_->batch_u8, mem_->x.f());
  return train_step(nullptr, labels_host, batch.B, distill, loss, sgd, dropout_seed);
}

void Model::last_training_logits(float* logits_host) const {
  DFL_CHECK(have_training_forward_, "last_training_logits: another forward ran since the last training forward");
  const PlanNode& last = plan_.nodes.back();
  backend_->download(logits_host, mem_->acts.f() + last.act_offset * size_t(last_b_),
                     floats(last.size * size_t(last_b_)));
}

void Model::forward(const ImageBatch& batch, float* logits_host) {
  ensure_batch(batch.B);
  make_batch(batch, plan_.spec, *backend_, mem_->batch_u8, mem_->x.f());
  eval_batch_on_device(batch.B, logits_host);
}

MemoryPlan Model::memory_plan(int B, int K) const {
  DFL_CHECK(B > 0 && K >= 0, "memory_plan: batch must be positive and teachers >= 0");
  Backend& be = *backend_;
  const Plan& p = plan_;
  const double b = double(B), f = sizeof(float), nc = double(p.num_classes);
  MemoryPlan m;
  m.weights = f * (3.0 * double(p.device_param_floats) + 2.0 * double(p.device_buffer_floats) + double(p.stat_floats));
  // Activations and their gradients (shared slots: grad_per_sample, as ensure_batch/backward allocate).
  m.activations = f * b *
                      (double(p.act_per_sample + p.grad_per_sample) + double(p.mask_per_sample) +
                       double(p.input_per_sample()) + 1.0 /* labels */ + 2.0 + 3.0 * nc) +
                  sizeof(int32_t) * b * double(p.argmax_per_sample) + b * double(p.input_per_sample()) /* uint8 */;
  m.workspace = double(workspace_bytes(be, p, B, math_));
  if (K > 0) {
    const InferencePlan ip = build_inference_plan(p);
    m.teachers = f * (double(K) * double(ip.plan.device_param_floats + ip.plan.device_buffer_floats) +
                      double(K) * b * (nc + 1.0));
    // Their activations and workspace: in the student's when those are large enough (teacher_forward).
    const size_t teacher_ws = workspace_bytes(be, ip.plan, B, math_);
    if (ip.plan.act_per_sample > p.act_per_sample || teacher_ws > workspace_bytes(be, p, B, math_))
      m.teachers += f * b * double(ip.plan.act_per_sample) + double(teacher_ws);
  }
  m.available = be.available_bytes(&m.available_source) + double(device_bytes());
  return m;
}

// ---- copies ---------------------------------------------------------------------------------------------
namespace {
// A block of tensors in its two layouts (TensorView): packed on the host, aligned on the device.
struct Layout {
  const std::vector<TensorView>& tensors;
  size_t packed, device;
};
Layout param_layout(const Plan& p) { return {p.params, p.num_params, p.device_param_floats}; }
Layout buffer_layout(const Plan& p) { return {p.buffers, p.num_buffer_floats, p.device_buffer_floats}; }

// One download of the device block, packed on the host.
std::vector<float> download_packed(Backend& be, const float* src, const Layout& l) {
  std::vector<float> block(l.device), v(l.packed);
  if (l.device) be.download(block.data(), src, floats(l.device));
  for (const TensorView& t : l.tensors) std::copy_n(block.data() + t.device_offset, t.size, v.data() + t.offset);
  return v;
}
// Packed host values spread into a device block (zero padding), one upload.
void upload_packed(Backend& be, float* dst, const float* src, size_t n, const Layout& l, const char* what) {
  DFL_CHECK(n == l.packed, what, ": expected ", l.packed, " floats, got ", n);
  std::vector<float> block(l.device, 0.0f);
  for (const TensorView& t : l.tensors) std::copy_n(src + t.offset, t.size, block.data() + t.device_offset);
  if (l.device) be.upload(dst, block.data(), floats(l.device));
}
}  // namespace

std::vector<float> Model::get_params() const { return download_packed(*backend_, param_data(), param_layout(plan_)); }
std::vector<float> Model::get_grads() const { return download_packed(*backend_, grad_data(), param_layout(plan_)); }
std::vector<float> Model::get_momentum() const {
  return download_packed(*backend_, momentum_data(), param_layout(plan_));
}
std::vector<float> Model::get_buffers() const {
  return download_packed(*backend_, mem_->buffers.f(), buffer_layout(plan_));
}
void Model::set_params(const float* data, size_t n) {
  ++weights_version_;
  upload_packed(*backend_, param_data(), data, n, param_layout(plan_), "set_params");
}
void Model::set_momentum(const float* data, size_t n) {
  upload_packed(*backend_, momentum_data(), data, n, param_layout(plan_), "set_momentum");
}
void Model::set_buffers(const float* data, size_t n) {
  ++weights_version_;
  upload_packed(*backend_, mem_->buffers.f(), data, n, buffer_layout(plan_), "set_buffers");
}

// ---- teachers -------------------------------------------------------------------------------------------
Teacher::Teacher(const ModelSpec& spec, std::shared_ptr<Backend> backend)
    : ip_(build_inference_plan(build_plan(spec))),
      backend_(std::move(backend)),
      params_(backend_, floats(ip_.plan.device_param_floats), "teacher weights"),
      buffers_(backend_, floats(ip_.plan.device_buffer_floats), "teacher batch-norm buffers") {}

Teacher::~Teacher() = default;

void Teacher::set_math(const MathMode& math) {
  check_supported(*backend_, math);
  math_ = math;
}

void Model::set_math(const MathMode& math) {
  check_supported(*backend_, math);
  math_ = math;
  workspace_by_batch_.clear();  // the convolution workspace is sized again for the new mode on the next batch
}

size_t Teacher::device_bytes() const { return params_.bytes() + buffers_.bytes(); }

std::unique_ptr<Teacher> Model::snapshot() const {
  auto t = std::make_unique<Teacher>(plan_.spec, backend_);
  t->math_ = math_;
  fold_into(*t);
  return t;
}

// Refolds the current weights into a teacher of this model's spec and backend (no allocation).
void Model::fold_into(Teacher& teacher) const {
  Teacher* t = &teacher;
  Backend& be = *backend_;
  const Plan& tp = t->ip_.plan;
  const float* src_p = param_data();
  const float* src_b = mem_->buffers.f();
  float* dst_p = t->params_.f();
  float* dst_b = t->buffers_.f();
  auto copy_param = [&](int dst, int src) {
    if (dst >= 0)
      be.copy(dst_p + tp.params[dst].device_offset, src_p + plan_.params[src].device_offset,
              floats(tp.params[dst].size));
  };
  auto copy_buffer = [&](int dst, int src) {
    be.copy(dst_b + tp.buffers[dst].device_offset, src_b + plan_.buffers[src].device_offset,
            floats(tp.buffers[dst].size));
  };
  for (size_t j = 1; j < tp.nodes.size(); ++j) {
    const PlanNode& tn = tp.nodes[j];
    const PlanNode& sn = plan_.nodes[t->ip_.source[j]];
    const int bn_node = t->ip_.folded_bn[j];
    if (bn_node >= 0) {
      const PlanNode& bn = plan_.nodes[bn_node];
      const TensorView& w = tp.params[tn.weight];
      const int OC = w.shape[0];
      auto param = [&](int i) { return src_p + plan_.params[i].device_offset; };
      auto buffer = [&](int i) { return src_b + plan_.buffers[i].device_offset; };
      be.fold_batchnorm(dst_p + w.device_offset, dst_p + tp.params[tn.bias].device_offset, param(sn.weight),
                        sn.bias >= 0 ? param(sn.bias) : nullptr, param(bn.weight), param(bn.bias),
                        buffer(bn.running_mean), buffer(bn.running_var), OC, w.size / size_t(OC), bn.spec.eps);
      continue;
    }
    if (tn.weight >= 0) copy_param(tn.weight, sn.weight);
    if (tn.bias >= 0) copy_param(tn.bias, sn.bias);
    if (tn.running_mean >= 0) {
      copy_buffer(tn.running_mean, sn.running_mean);
      copy_buffer(tn.running_var, sn.running_var);
      copy_buffer(tn.batches_tracked, sn.batches_tracked);
    }
  }
}

Teacher::Scratch Teacher::scratch_needs(int B) const {
  return {floats(ip_.plan.act_per_sample * size_t(B)), workspace_bytes(*backend_, ip_.plan, B, math_)};
}

void Teacher::forward_device(const float* x, int B, float* logits, DeviceBuffer& scratch) const {
  const Scratch need = scratch_needs(B);
  const size_t act_bytes = (need.act_bytes + 255) / 256 * 256;
  if (act_bytes + need.workspace_bytes > scratch.bytes())
    check_memory(*backend_, double(act_bytes + need.workspace_bytes),
                 "a teacher's activations for a batch of " + std::to_string(B), "use a smaller --batch-size or model");
  scratch.reserve(act_bytes + need.workspace_bytes, "teacher activations");
  forward_device(x, B, logits, scratch.f(), static_cast<char*>(scratch.get()) + act_bytes, scratch.bytes() - act_bytes);
}

void Teacher::forward_device(const float* x, int B, float* logits, float* acts, void* workspace,
                             size_t workspace_bytes) const {
  Backend& be = *backend_;
  const Plan& p = ip_.plan;
  const ExecMemory mem{x,       acts,    nullptr, params_.f(), nullptr,        buffers_.f(),
                       nullptr, nullptr, nullptr, workspace,   workspace_bytes};
  run_plan_forward(be, p, mem, B, false, 0, math_);
  const PlanNode& last = p.nodes.back();
  be.copy(logits, acts + last.act_offset * size_t(B), floats(last.size * size_t(B)));
}

void Teacher::forward(const float* x_host, int B, float* logits_host) const {
  DFL_CHECK(B > 0, "forward: batch size must be positive, got ", B);
  const size_t in = ip_.plan.input_per_sample() * size_t(B), out = size_t(B) * ip_.plan.num_classes;
  DeviceBuffer x(backend_, floats(in), "input batch"), logits(backend_, floats(out), "logits"), scratch(backend_);
  backend_->upload(x.get(), x_host, floats(in));
  forward_device(x.f(), B, logits.f(), scratch);
  backend_->download(logits_host, logits.f(), floats(out));
}

void Teacher::forward(const ImageBatch& batch, float* logits_host) const {
  DFL_CHECK(batch.B > 0, "forward: batch size must be positive, got ", batch.B);
  const size_t in = ip_.plan.input_per_sample() * size_t(batch.B), out = size_t(batch.B) * ip_.plan.num_classes;
  DeviceBuffer x(backend_, floats(in), "input batch"), logits(backend_, floats(out), "logits"), scratch(backend_),
      u8(backend_);
  make_batch(batch, ip_.plan.spec, *backend_, u8, x.f());
  forward_device(x.f(), batch.B, logits.f(), scratch);
  backend_->download(logits_host, logits.f(), floats(out));
}

std::vector<float> Teacher::get_params() const {
  return download_packed(*backend_, params_.f(), param_layout(ip_.plan));
}
std::vector<float> Teacher::get_buffers() const {
  return download_packed(*backend_, buffers_.f(), buffer_layout(ip_.plan));
}
void Teacher::set_params(const float* data, size_t n) {
  upload_packed(*backend_, params_.f(), data, n, param_layout(ip_.plan), "teacher set_params");
}
void Teacher::set_buffers(const float* data, size_t n) {
  upload_packed(*backend_, buffers_.f(), data, n, buffer_layout(ip_.plan), "teacher set_buffers");
}

}  // namespace dfl
