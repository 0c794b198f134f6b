// The executors: a training model (the student) and an inference-only model (a teacher), each
// running a plan (core/graph.h) on a Backend (core/backend.h). They own device memory and compute;
// they never decide when or which (that is src/'s job). Callers reach weights only through copies.
//
// Student memory, all on the backend: one arena [params | grads | momentum] (each
// Plan::device_param_floats long, tensors at their 256-byte aligned device_offset, so zero-grad,
// the SGD step and the checks are single calls over contiguous ranges), BN buffers, and per-batch
// blocks (activations and their gradients, BN statistics, maxpool indices, dropout masks, the loss
// scratch), regrown when the batch grows; the convolution workspace is sized for every batch size
// (docs/native.md, "Device memory"). Host vectors (get_params, ...) are packed (TensorView::offset).
// Teacher memory: the folded weights and the standalone BN buffers, nothing per batch; the student
// lends it activation scratch during a step, a standalone forward takes its own for the call.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/device_images.h"
#include "core/graph.h"

namespace dfl {

struct LossConfig {
  float label_smoothing = 0.f;
  float distill_weight = 0.f;  // alpha
  float temperature = 4.f;
  float ce_weight = 1.f;  // weight of the cross-entropy term (PS-KD: 1 - alpha_t)
};

struct StepStats {
  float loss = 0.f;  // total
  float ce_loss = 0.f;
  float distill_loss = 0.f;  // T^2 KL, before alpha
  float target_loss = 0.f;   // the soft-target term's T^2 KL, before its weight (Distillation::targets)
  int correct = 0;
  float grad_norm = 0.f;
  // The loss, every gradient, the BN statistics and the would-be updated weights and momentum are
  // all finite. When any is not, the step is refused: weights, momentum and BN buffers stay as they
  // were before the step (the caller stops training).
  bool finite = true;
};

class Teacher;

// Device memory a training run will need, in bytes (what Model::memory_plan estimates), and what
// the backend has: checked before training so a run that cannot fit is refused with the sizes
// instead of failing part-way.
struct MemoryPlan {
  double weights = 0;      // parameters, gradients, momentum, BN buffers and statistics
  double activations = 0;  // per-batch blocks: activations, their gradients, masks, indices, loss scratch
  double workspace = 0;    // the largest convolution workspace
  double teachers = 0;     // K teachers' folded weights, their shared activation scratch and logits
  double available = 0;
  std::string available_source;
  double total() const { return weights + activations + workspace + teachers; }
};

// Where a model's time goes, when profiling is on: per plan node, forward and backward summed over
// calls, and the step's other phases. Each timed call is bracketed by backend synchronisation, so
// the figures are right on asynchronous backends too (and profiling costs that).
struct StepProfile {
  std::vector<double> forward_ms, backward_ms;  // per node of the training plan
  double teachers_ms = 0, loss_ms = 0, update_ms = 0, transfer_ms = 0;
  int64_t steps = 0, forwards = 0;
};

// Per-sample soft targets given from the host, apart from the teachers (PS-KD's previous-epoch
// predictions, DLB's last mini-batch's): logits (rows,NC) for the batch's first `rows` samples. The
// step adds weight * T^2 KL(softmax(logits/T) || softmax(student/T)), averaged over those rows.
struct SoftTargets {
  const float* logits_host = nullptr;
  int rows = 0;
  float temperature = 1.f;
  float weight = 0.f;
  bool active() const { return rows > 0 && weight != 0.f; }
};

// What the student distils from in one step. Either teachers (run on the step's batch on the
// device) or their logits given from the host (K,B,NC); per-sample weights (K,B) from the host,
// each teacher's confidence computed on the device, or uniform. Soft targets are a second term.
struct Distillation {
  std::vector<const Teacher*> teachers;
  const float* teacher_logits_host = nullptr;
  int given_k = 0;
  const float* weights_host = nullptr;
  bool confidence_weights = false;
  SoftTargets targets;
  int K() const { return teachers.empty() ? given_k : int(teachers.size()); }
};

// How fresh convolution weights are drawn (at construction and at every reset):
//   KaimingNormal: N(0, 2 / fan_out), torchvision's ResNet/VGG/MobileNet init (the default);
//   PytorchDefault: U(+-1/sqrt(fan_in)), nn.Conv2d's own default (kaiming_uniform with a = sqrt(5)).
enum class ConvInit : uint8_t { KaimingNormal, PytorchDefault };

class Model {
 public:
  Model(const ModelSpec& spec, uint64_t seed, std::shared_ptr<Backend> backend,
        ConvInit conv_init = ConvInit::KaimingNormal);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Plan& plan() const { return plan_; }
  const ModelSpec& spec() const { return plan_.spec; }
  Backend& backend() const { return *backend_; }
  int num_classes() const { return plan_.num_classes; }
  const std::vector<TensorView>& params() const { return plan_.params; }
  const std::vector<TensorView>& buffers() const { return plan_.buffers; }
  size_t num_params() const { return plan_.num_params; }
  size_t num_buffer_floats() const { return plan_.num_buffer_floats; }
  int64_t macs_per_image() const { return plan_.macs_per_image; }
  int num_layers() const { return plan_.num_layers; }
  // Bytes of backend memory this model holds now.
  size_t device_bytes() const;

  // Seeded initialisation of every parameter (and BN buffers), as PyTorch/torchvision do:
  // conv Kaiming normal (fan_out, relu), linear U(-1/sqrt(in), 1/sqrt(in)) for weight and bias,
  // BN weight 1 bias 0, running mean 0 var 1. Momentum cleared. Values are drawn on the host from
  // per-tensor streams and uploaded, so every backend gets the same weights.
  void init_all(uint64_t seed);
  // Re-initialise the parametric layers listed (layer indices), their BN buffers and their
  // momentum. shrink_perturb: theta <- shrink*theta + perturb*theta_fresh instead of replacing.
  void reinit_layers(const std::vector<int>& layers, uint64_t seed, bool shrink_perturb, float shrink, float perturb);

  // Logits (B,NC) of a host batch x (B,C,H,W). training: batch statistics + running-stat update +
  // dropout drawn from dropout_seed. Eval mode runs an inference copy of the weights (BN folded,
  // activations fused, as a teacher), refolded when the weights have changed since the last call.
  void forward(const float* x_host, int B, bool training, float* logits_host, uint64_t dropout_seed = 0);
  // The eval forward as the training plan defines it (each BN its own op on running statistics):
  // the specification the folded eval path is tested against.
  void forward_eval_unfolded(const float* x_host, int B, float* logits_host);
  // Backward from dlogits (B,NC) of the last training forward: zeroes, then fills the grads.
  void backward(const float* dlogits_host);

  // One whole training step: teachers' logits, forward (training), loss = ce_weight * CE + alpha *
  // T^2 KL(p_T || q) (+ the soft-target term), backward, finiteness checks, SGD. labels must lie in [0, NC) (the addon checks).
  // x_host null: the batch is already on the device (the ImageBatch overload made it).
  StepStats train_step(const float* x_host, const int32_t* labels_host, int B, const Distillation& distill,
                       const LossConfig& loss, const SgdConfig& sgd, uint64_t dropout_seed);
  // The same step on a batch made on the device from resident images (core/device_images.h).
  StepStats train_step(const ImageBatch& batch, const int32_t* labels_host, const Distillation& distill,
                       const LossConfig& loss, const SgdConfig& sgd, uint64_t dropout_seed);
  // Eval-mode logits (B,NC) of a batch made on the device from resident images.
  void forward(const ImageBatch& batch, float* logits_host);
  // The logits (B,NC) of the last training forward (a train_step's, as its loss saw them), while no
  // other forward has run since; for targets made from the student's own predictions (PS-KD, DLB).
  void last_training_logits(float* logits_host) const;

  // What a step of batch B with K teachers needs on this model's backend (see MemoryPlan).
  MemoryPlan memory_plan(int B, int K) const;

  // An inference-only copy of the current weights (BN folded), made on the device.
  std::unique_ptr<Teacher> snapshot() const;

  std::vector<float> get_params() const;
  void set_params(const float* data, size_t n);
  std::vector<float> get_grads() const;
  std::vector<float> get_momentum() const;
  void set_momentum(const float* data, size_t n);
  std::vector<float> get_buffers() const;
  void set_buffers(const float* data, size_t n);

  // How convolutions and linear layers are computed from now on (MathMode; float32 and deterministic
  // by default), here and in snapshots taken after; throws when the backend does not support it.
  void set_math(const MathMode& math);
  const MathMode& math() const { return math_; }

  // Profiling (see StepProfile); turning it on clears what was gathered.
  void set_profiling(bool on);
  const StepProfile& profile() const { return profile_; }

  // Per-sample output shape (C,H,W) of node i, and its parametric layer (or -1).
  std::vector<int> node_shape(int i) const;
  int node_layer(int i) const;

 private:
  struct Memory;
  void ensure_batch(int B);
  void run_forward(int B, bool training, uint64_t dropout_seed);
  void run_backward(int B);
  float* param_data() const;
  float* grad_data() const;
  float* momentum_data() const;
  void fold_into(Teacher& t) const;
  void eval_batch_on_device(int B, float* logits_host);
  void teacher_forward(const Teacher& t, const float* x, int B, float* logits);

  Plan plan_;
  std::shared_ptr<Backend> backend_;
  std::unique_ptr<Memory> mem_;
  int capacity_b_ = 0;
  // The convolution workspace each batch size needs with math_ (Backend::conv2d_workspace_bytes).
  std::map<int, size_t> workspace_by_batch_;
  int last_b_ = 0;
  bool have_training_forward_ = false;
  bool profiling_ = false;
  StepProfile profile_;
  // The eval-mode copy, valid while eval_version_ == weights_version_ (bumped by everything that
  // changes parameters or BN statistics).
  uint64_t weights_version_ = 1, eval_version_ = 0;
  ConvInit conv_init_ = ConvInit::KaimingNormal;
  MathMode math_{};
  std::unique_ptr<Teacher> eval_copy_;
};

class Teacher {
 public:
  // Zero weights in the inference layout of `spec` (restore them with set_params/set_buffers).
  Teacher(const ModelSpec& spec, std::shared_ptr<Backend> backend);
  ~Teacher();
  Teacher(const Teacher&) = delete;
  Teacher& operator=(const Teacher&) = delete;

  const Plan& plan() const { return ip_.plan; }
  int num_classes() const { return ip_.plan.num_classes; }
  Backend& backend() const { return *backend_; }
  size_t device_bytes() const;

  // Eval-mode logits (B,NC) of a host batch.
  void forward(const float* x_host, int B, float* logits_host) const;
  // Eval-mode logits of a batch made on the device from resident images.
  void forward(const ImageBatch& batch, float* logits_host) const;
  // Eval-mode logits of a device batch into device memory; scratch grows to what the batch needs.
  void forward_device(const float* x, int B, float* logits, DeviceBuffer& scratch) const;
  // The same in caller-provided memory: activations (scratch_needs(B).act_bytes) and the
  // convolution workspace (workspace_bytes of it, at least scratch_needs(B).workspace_bytes).
  struct Scratch {
    size_t act_bytes, workspace_bytes;
  };
  Scratch scratch_needs(int B) const;
  void forward_device(const float* x, int B, float* logits, float* acts, void* workspace, size_t workspace_bytes) const;

  // How its forwards are computed (a snapshot starts with its model's); throws when unsupported.
  void set_math(const MathMode& math);
  const MathMode& math() const { return math_; }

  // The folded weights (plan().params layout) and standalone BN buffers.
  std::vector<float> get_params() const;
  void set_params(const float* data, size_t n);
  std::vector<float> get_buffers() const;
  void set_buffers(const float* data, size_t n);

 private:
  friend class Model;
  InferencePlan ip_;
  std::shared_ptr<Backend> backend_;
  DeviceBuffer params_, buffers_;
  MathMode math_{};
};

}  // namespace dfl
