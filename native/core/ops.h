// The op table: one entry per graph op, holding everything the core knows about that op: its
// name, its input count, shape inference (with the spec checks and its parameters), forward and
// backward on a Backend. Plan building and both executors dispatch through it; no other file
// switches on the op. The entries are defined in core/ops.cpp.
#pragma once
#include <cstdint>
#include <string>

#include "core/backend.h"
#include "core/graph.h"

namespace dfl {

// Device memory of one execution of a plan for a batch of B, and what forward/backward of one node
// needs from it. Built by the executors; the op functions read pointers only through it.
struct ExecMemory {
  const float* input = nullptr;  // node 0's output: the batch (B, C, H, W)
  float* acts = nullptr;         // Plan::act_per_sample * B
  float* act_grads = nullptr;    // Plan::grad_per_sample * B (PlanNode::grad_offset); null in inference
  float* params = nullptr;       // Plan::device_param_floats (TensorView::device_offset)
  float* grads = nullptr;        // the same layout; null in inference
  float* buffers = nullptr;      // Plan::device_buffer_floats
  float* stats = nullptr;        // Plan::stat_floats; null in inference
  int32_t* argmax = nullptr;     // Plan::argmax_per_sample * B; null in inference
  float* mask = nullptr;         // Plan::mask_per_sample * B; null in inference
  void* workspace = nullptr;     // convolution workspace of workspace_bytes (at least what this batch's convs need)
  size_t workspace_bytes = 0;
};

struct OpRun {
  Backend& be;
  const Plan& plan;
  const ExecMemory& mem;
  int i;  // the node
  int B;
  bool training;
  uint64_t dropout_seed;  // per step; each dropout node derives its own stream from it
  // Backward, ops whose OpDef says overwrites_fresh_input_grad: bit k set when input k's gradient
  // slot has not been written this step (nor zeroed), so the backward must write, not add.
  uint32_t fresh_inputs = 0;
  MathMode math{};  // how convolutions and linear layers may be computed (Model::set_math)

  const PlanNode& node() const { return plan.nodes[i]; }
  const NodeSpec& spec() const { return plan.nodes[i].spec; }
  const PlanNode& input_node(int k = 0) const { return plan.nodes[spec().inputs[k]]; }
  size_t out_count() const { return node().size * size_t(B); }
  const float* in(int k = 0) const { return act(spec().inputs[k]); }
  float* out() const { return act(i); }
  // Gradient of input k; null for the image (node 0), which needs none.
  float* din(int k = 0) const { return act_grad(spec().inputs[k]); }
  const float* dout() const { return act_grad(i); }
  bool din_fresh(int k = 0) const { return k < 32 && ((fresh_inputs >> k) & 1u); }  // 32+: never fresh
  // The conv node's shape for this batch, computed as `math` says.
  Conv2dShape conv_shape() const {
    Conv2dShape s = plan.conv_shape(i, B);
    s.math = math;
    return s;
  }
  // This node's gradient with a fused activation's mask applied (in place: the slot is this node's).
  float* masked_dout() const {
    float* d = act_grad(i);
    be.activation_backward_inplace(d, out(), out_count(), spec().fused);
    return d;
  }
  float* param(int idx) const { return idx < 0 ? nullptr : mem.params + plan.params[idx].device_offset; }
  float* grad(int idx) const { return idx < 0 ? nullptr : mem.grads + plan.params[idx].device_offset; }
  float* buffer(int idx) const { return idx < 0 ? nullptr : mem.buffers + plan.buffers[idx].device_offset; }

  float* act(int node) const {
    return node == 0 ? const_cast<float*>(mem.input) : mem.acts + plan.nodes[node].act_offset * size_t(B);
  }
  float* act_grad(int node) const {
    return node == 0 || !mem.act_grads ? nullptr : mem.act_grads + plan.nodes[node].grad_offset * size_t(B);
  }
};

class PlanBuilder;

struct OpDef {
  Op op;
  const char* name;  // as in a JSON spec
  int inputs;        // exact input count, or -1 for "one or more"
  // Output shape, parameters/buffers/scratch of node i; throws dfl::Error naming the node.
  void (*infer)(PlanBuilder& b, int i);
  void (*forward)(const OpRun& r);
  // Accumulates into the input gradients (r.din may be null) and parameter gradients.
  void (*backward)(const OpRun& r);
  // Ops whose backward writes (not adds to) every input-gradient slot that is fresh, so the executor
  // does not zero those slots first: the backward must write each input k with r.din_fresh(k) set.
  // For ops of at most 32 inputs, or a variable count: a node with more than 32 (the bits of
  // PlanNode::inputs_starting) gets its slots zeroed and no fresh bits.
  bool overwrites_fresh_input_grad = false;
};

const OpDef& op_def(Op op);
// The op named s in a JSON spec; false when there is none.
bool op_from_name(const std::string& s, Op* op);
// "input, conv, bn, ..." for messages.
std::string op_names();

// What infer functions use to describe their node (implemented in core/graph.cpp).
class PlanBuilder {
 public:
  explicit PlanBuilder(Plan& plan) : plan_(plan) {}
  Plan& plan() { return plan_; }
  const NodeSpec& spec(int i) const { return plan_.nodes[i].spec; }
  const PlanNode& input(int i, int k = 0) const { return plan_.nodes[plan_.nodes[i].spec.inputs[k]]; }
  // "Model spec: node 3 ('features.0', conv)" for messages.
  std::string where(int i) const;
  void set_shape(int i, int C, int H, int W);
  // A new parametric layer for node i (conv, linear, or a BN that follows neither).
  void new_layer(int i);
  // Node i joins the layer of node j.
  void join_layer(int i, int j);
  int add_param(int i, const char* suffix, std::vector<int> shape, TensorKind kind);
  int add_buffer(int i, const char* suffix, std::vector<int> shape);
  size_t add_stats(size_t floats);
  size_t add_argmax_per_sample(size_t n);
  size_t add_mask_per_sample(size_t n);
  void add_macs(int64_t macs) { plan_.macs_per_image += macs; }

 private:
  Plan& plan_;
};

}  // namespace dfl
