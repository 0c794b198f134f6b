// The graph plan: a model spec validated and laid out, with no device and no memory. It says which
// op each node runs, its per-sample output shape, where its activation lives (a per-sample float
// offset: the block for a batch of B is B times larger), which parameters and buffers it owns, and
// which parametric layer (the unit of reset) it belongs to. Executors (core/model.h) run a plan on
// a Backend; the ops themselves are defined once, in core/ops.cpp.
//
// Alignment: every offset of the layout (parameters, buffers and BN statistics; per-sample
// activation, gradient, index and mask slots) is a multiple of kTensorAlignElements (core/shapes.h),
// so each tensor a kernel receives is 256-byte aligned for any batch size.
//
// Graph: node 0 is the input (B, in_channels, height, width). Every other node has one output and
// reads the outputs of earlier nodes (`inputs`). The last node's output is the logits (B, NC, 1, 1).
// Ops and their attributes (see src/models/spec.ts):
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
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/shapes.h"

namespace dfl {

enum class Op : uint8_t {
  Input,
  Conv,
  BatchNorm,
  Linear,
  Relu,
  Relu6,
  Add,
  Concat,
  Flatten,
  Dropout,
  MaxPool,
  AvgPool,
  GlobalAvgPool,
  Split,
  Shuffle,
};

struct NodeSpec {
  Op op = Op::Input;
  std::string name;         // parameter prefix, e.g. "features.0"
  std::vector<int> inputs;  // indices of earlier nodes
  int out_channels = 0;
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int groups = 1;
  bool bias = false;
  int out_features = 0;
  float eps = 1e-5f;
  float momentum = 0.1f;
  float p = 0.f;           // dropout probability
  std::vector<int> sizes;  // split
  int index = 0;           // split
  // Set only by inference folding (never in a user's spec): the activation a conv/linear applies.
  Activation fused = Activation::None;
};

struct ModelSpec {
  int in_channels = 3, height = 32, width = 32;
  std::vector<NodeSpec> nodes;  // nodes[0].op == Op::Input
};

enum class TensorKind { Weight, Bias, Buffer };

// A named tensor of the plan, in two layouts. offset: where it sits in the packed host vectors
// (get_params, set_params, checkpoints: tensors back to back, in plan order, num_params long).
// device_offset: where it sits in the device block (params, grads and momentum alike; or the
// buffer block), a multiple of kTensorAlignElements; the padding between tensors stays zero.
struct TensorView {
  std::string name;
  std::vector<int> shape;
  size_t offset = 0;
  size_t size = 0;
  int node = 0;    // owning node
  int layer = -1;  // parametric layer index (conv/linear with its following BN)
  TensorKind kind = TensorKind::Weight;
  size_t device_offset = 0;
};

struct PlanNode {
  NodeSpec spec;
  std::array<int, 3> shape{};  // per-sample output (C, H, W)
  size_t size = 0;             // C*H*W
  size_t act_offset = 0;       // per-sample floats into the activation block
  size_t grad_offset = 0;      // per-sample floats into the activation-gradient block (training)
  // Inputs whose gradient slot this node's backward is the first to write: zeroed just before it
  // (unless the op overwrites fresh slots, see OpDef). Bit k of inputs_starting: spec.inputs[k]'s
  // slot is one of them (set for the first listing of an input given twice).
  std::vector<int> grads_start;
  uint32_t inputs_starting = 0;
  // >= 0: this node's output IS that node's output buffer (a ReLU fused into its producer, a
  // flatten, a dropout that drops nothing): its forward does nothing.
  int alias_of = -1;
  // A node fused into its producer (a ReLU/ReLU6, or a channel shuffle after a concat) also shares
  // its producer's gradient slot and has no backward of its own: the producer's backward applies
  // the activation's mask to that gradient first, or reads it in shuffled order.
  bool fused_into_input = false;
  // Concat: > 0 when a channel shuffle of this many groups is fused into it (its inputs are that many
  // chunks of C / groups channels): the output is written shuffled, input k's channel j at channel
  // j * groups + k (ShuffleNet's concat + shuffle: one copy instead of two, one buffer fewer).
  int interleave_groups = 0;
  int layer = -1;                                                 // parametric layer, or -1
  int weight = -1, bias = -1;                                     // indices into Plan::params, or -1
  int running_mean = -1, running_var = -1, batches_tracked = -1;  // indices into Plan::buffers
  size_t stat_offset = 0;    // BN: save_mean (C), then save_invstd align_elements(C) later, in the stats block
  size_t argmax_offset = 0;  // maxpool: per-sample int32s into the argmax block
  size_t mask_offset = 0;    // dropout: per-sample floats into the mask block
  Op op() const { return spec.op; }
  int C() const { return shape[0]; }
  int H() const { return shape[1]; }
  int W() const { return shape[2]; }
};

struct Plan {
  ModelSpec spec;
  std::vector<PlanNode> nodes;
  std::vector<TensorView> params, buffers;
  size_t num_params = 0, num_buffer_floats = 0;  // packed (host) lengths: the sums of the tensors' sizes
  // Lengths of the device blocks (TensorView::device_offset), multiples of kTensorAlignElements.
  size_t device_param_floats = 0, device_buffer_floats = 0;
  size_t act_per_sample = 0;  // activation floats per sample (node 0 is the caller's input)
  // Activation-gradient floats per sample. Gradient slots are shared: a node's gradient lives from
  // the backward of its last reader to its own backward, so only a few are live at once.
  size_t grad_per_sample = 0;
  size_t argmax_per_sample = 0, mask_per_sample = 0, stat_floats = 0;
  int num_classes = 0;
  int num_layers = 0;          // parametric layers (reset granularity)
  int64_t macs_per_image = 0;  // convs and linears; FLOPs = 2 * MACs
  size_t input_per_sample() const { return size_t(spec.in_channels) * spec.height * spec.width; }
  // The conv shape of node i for a batch of B.
  Conv2dShape conv_shape(int i, int B) const;
  Pool2dShape pool_shape(int i, int B) const;
};

// Validates the spec (every message names the node) and lays it out. Activations get one slot each
// (training keeps them all for backward), except that a ReLU/ReLU6 which is the only reader of a
// conv, BN, linear or add is fused into it, and flattens and p = 0 dropouts are aliases: those
// nodes share their input's slot.
Plan build_plan(const ModelSpec& spec);

// The inference form of a training plan, for teachers: each BatchNorm that directly follows a
// conv/linear (its only reader) is folded into it, a ReLU/ReLU6 that is the only reader of a
// conv/linear is fused into it, dropout is dropped, and activations share slots once their readers
// are done. `source` maps each inference node to the training-plan node whose parameters it
// carries, `folded_bn` to the training BN folded into it (-1 for none).
struct InferencePlan {
  Plan plan;
  std::vector<int> source;
  std::vector<int> folded_bn;
};
InferencePlan build_inference_plan(const Plan& training);

}  // namespace dfl
