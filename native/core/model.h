// A conv-net as a graph of nodes over one parameter arena. The model owns memory and computes;
// it never decides when or which (that is src/'s job).
//
// Graph: node 0 is the input (B, in_channels, height, width). Every other node has one output
// tensor and reads the outputs of earlier nodes (`inputs`). The last node's output is the logits
// (B, num_classes). Ops and their attributes (see ModelSpec / src/models/spec.ts):
//   conv      out_channels kernel stride pad groups bias     params: weight (OC,C/g,KH,KW), bias (OC)?
//   bn        eps momentum                                   params: weight, bias (C);
//                                                            buffers: running_mean, running_var,
//                                                                     num_batches_tracked
//   linear    out_features bias                              params: weight (OUT,IN), bias (OUT)?
//   relu, relu6, add (2 inputs), concat (n inputs), flatten, dropout (p)
//   maxpool / avgpool  kernel stride pad;  gap (global average pool -> (B,C,1,1))
//   split     sizes index  (channel slice `index` of a split into `sizes`)
//   shuffle   groups       (channel shuffle)
// Parameter names: "<node.name>.<weight|bias|running_mean|...>", PyTorch state_dict style.
//
// Arena: one float allocation holds [params | grads | momentum | decay mask], so zero-grad, the
// SGD step and a reset are single loops over contiguous ranges; BN buffers sit in a second small
// block; activations (and their gradients) in a third, regrown when the batch size grows.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "cpu/kernels.h"

namespace dfl {

struct NodeSpec {
  std::string op;
  std::string name;          // parameter prefix, e.g. "features.0"
  std::vector<int> inputs;   // indices of earlier nodes
  int out_channels = 0;
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int groups = 1;
  bool bias = false;
  int out_features = 0;
  float eps = 1e-5f;
  float momentum = 0.1f;
  float p = 0.f;             // dropout probability
  std::vector<int> sizes;    // split
  int index = 0;             // split
};

struct ModelSpec {
  int in_channels = 3, height = 32, width = 32;
  std::vector<NodeSpec> nodes;  // nodes[0].op == "input"
};

enum class TensorKind { Weight, Bias, Buffer };

// A named view into the arena. For params, offset indexes the param/grad/momentum blocks; for
// buffers, the buffer block.
struct TensorView {
  std::string name;
  std::vector<int> shape;
  size_t offset = 0;
  size_t size = 0;
  int node = 0;               // owning node
  int layer = -1;             // parametric layer index (conv/linear with its following BN)
  TensorKind kind = TensorKind::Weight;
};

struct LossConfig {
  float label_smoothing = 0.f;
  float distill_weight = 0.f;   // alpha
  float temperature = 4.f;
};

struct StepStats {
  float loss = 0.f;          // total
  float ce_loss = 0.f;
  float distill_loss = 0.f;  // T^2 KL, before alpha
  int correct = 0;
  float grad_norm = 0.f;
  // Loss, gradients, BN statistics and updated weights all finite. When the loss, a gradient or a BN
  // statistic is not, the step is undone (no update); the caller stops training either way.
  bool finite = true;
};

class Model {
 public:
  explicit Model(const ModelSpec& spec, uint64_t seed);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelSpec& spec() const { return spec_; }
  int num_classes() const { return num_classes_; }
  const std::vector<TensorView>& params() const { return params_; }
  const std::vector<TensorView>& buffers() const { return buffers_; }
  size_t num_params() const { return n_params_; }
  size_t num_buffer_floats() const { return n_buffers_; }
  // Multiply-accumulates of one forward pass of one image (convs and linears; FLOPs = 2 * MACs).
  int64_t macs_per_image() const { return macs_per_image_; }
  int num_layers() const { return num_layers_; }  // parametric layers (reset granularity)

  float* param_data();
  float* grad_data();
  float* momentum_data();
  float* buffer_data();
  float* decay_mask();  // weight-decay multiplier per parameter (1 by default, as PyTorch's SGD)

  // Seeded initialisation of every parameter (and BN buffers), as PyTorch/torchvision do:
  // conv Kaiming normal (fan_out, relu), linear U(-1/sqrt(in), 1/sqrt(in)) for weight and bias,
  // BN weight 1 bias 0, running mean 0 var 1. Momentum cleared.
  void init_all(uint64_t seed);
  // Re-initialise the parametric layers listed (layer indices), their BN buffers and their
  // momentum. shrink_perturb: theta <- shrink*theta + perturb*theta_fresh instead of replacing.
  void reinit_layers(const std::vector<int>& layers, uint64_t seed, bool shrink_perturb,
                     float shrink, float perturb);

  // Forward of a float batch x (B,C,H,W). training: batch statistics + running-stat update +
  // dropout. Returns the logits (B,NC), valid until the next call.
  const float* forward(const float* x, int B, bool training);
  // Backward from dlogits (B,NC) of the last training forward: zeroes, then fills the grads.
  void backward(const float* dlogits);

  // One whole training step: forward (training), loss = CE + alpha * T^2 KL(p_T || q) with the
  // teachers' logits (K,B,NC, may be null when K == 0), backward, non-finite check, SGD.
  // teacher_weights (K,B) or null for uniform.
  StepStats train_step(const float* x, const int32_t* labels, int B, const float* teacher_logits,
                       const float* teacher_weights, int K, const LossConfig& loss,
                       const cpu::SgdConfig& sgd);

  // Copies of the arena for checkpoints, teachers and tests.
  std::vector<float> get_params() const;
  void set_params(const float* data, size_t n);
  std::vector<float> get_buffers() const;
  void set_buffers(const float* data, size_t n);
  std::vector<float> get_momentum() const;
  void set_momentum(const float* data, size_t n);

  // Dropout masks are drawn from an Rng reseeded by the caller before each training forward, so a
  // run's randomness is a pure function of (seed, epoch, step) and a resume needs no RNG state.
  void set_dropout_seed(uint64_t seed);

  // Per-sample output shape (C,H,W) of node i (after construction).
  const std::vector<int>& node_shape(int i) const;
  // Parametric layer index of node i, or -1 (conv/linear, and a BN directly after one, share it).
  int node_layer(int i) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ModelSpec spec_;
  std::vector<TensorView> params_, buffers_;
  size_t n_params_ = 0, n_buffers_ = 0;
  int num_classes_ = 0;
  int num_layers_ = 0;
  int64_t macs_per_image_ = 0;
  friend struct ModelAccess;
};

}  // namespace dfl
