// Plan building: spec validation and layout (through the op table's infer functions), and the
// inference rewrite (BN folding, activation fusion, shared activation slots).
#include "core/graph.h"

#include <algorithm>
#include <map>

#include "core/check.h"
#include "core/ops.h"

namespace dfl {

// ---- PlanBuilder ----------------------------------------------------------------------------------
std::string PlanBuilder::where(int i) const {
  const NodeSpec& n = spec(i);
  return "Model spec: node " + std::to_string(i) + " ('" + n.name + "', " + op_def(n.op).name + ")";
}

void PlanBuilder::set_shape(int i, int C, int H, int W) {
  PlanNode& n = plan_.nodes[i];
  n.shape = {C, H, W};
  n.size = size_t(C) * H * W;
}

void PlanBuilder::new_layer(int i) { plan_.nodes[i].layer = plan_.num_layers++; }
void PlanBuilder::join_layer(int i, int j) { plan_.nodes[i].layer = plan_.nodes[j].layer; }

namespace {
size_t numel(const std::vector<int>& shape) {
  size_t n = 1;
  for (int d : shape) n *= size_t(d);
  return n;
}
}  // namespace

// Packed on the host (offset), aligned on the device (device_offset): see TensorView.
int PlanBuilder::add_param(int i, const char* suffix, std::vector<int> shape, TensorKind kind) {
  const size_t size = numel(shape);
  plan_.params.push_back(
      {spec(i).name + "." + suffix, std::move(shape), plan_.num_params, size, i, -1, kind, plan_.device_param_floats});
  plan_.num_params += size;
  plan_.device_param_floats += align_elements(size);
  return int(plan_.params.size() - 1);
}

int PlanBuilder::add_buffer(int i, const char* suffix, std::vector<int> shape) {
  const size_t size = numel(shape);
  plan_.buffers.push_back({spec(i).name + "." + suffix, std::move(shape), plan_.num_buffer_floats, size, i, -1,
                           TensorKind::Buffer, plan_.device_buffer_floats});
  plan_.num_buffer_floats += size;
  plan_.device_buffer_floats += align_elements(size);
  return int(plan_.buffers.size() - 1);
}

namespace {
// Takes n elements at the end of a block of `top` elements, at an aligned offset.
size_t take_aligned(size_t& top, size_t n) {
  const size_t at = top;
  top += align_elements(n);
  return at;
}
}  // namespace

size_t PlanBuilder::add_stats(size_t floats) { return take_aligned(plan_.stat_floats, floats); }
size_t PlanBuilder::add_argmax_per_sample(size_t n) { return take_aligned(plan_.argmax_per_sample, n); }
size_t PlanBuilder::add_mask_per_sample(size_t n) { return take_aligned(plan_.mask_per_sample, n); }

// ---- Plan -----------------------------------------------------------------------------------------
Conv2dShape Plan::conv_shape(int i, int B) const {
  const NodeSpec& n = nodes[i].spec;
  const PlanNode& in = nodes[n.inputs[0]];
  return {B,          in.C(),     in.H(),     in.W(),  n.out_channels, n.kernel_h,
          n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w,        n.groups};
}

Pool2dShape Plan::pool_shape(int i, int B) const {
  const NodeSpec& n = nodes[i].spec;
  const PlanNode& in = nodes[n.inputs[0]];
  return {B, in.C(), in.H(), in.W(), n.kernel_h, n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w};
}

namespace {
// First-fit allocation of per-sample activation slots (in floats, kTensorAlignElements granules).
class SlotAllocator {
 public:
  size_t take(size_t n) {
    n = round_up(n);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < n) continue;
      const size_t at = it->first, left = it->second - n;
      free_.erase(it);
      if (left) free_[at + n] = left;
      return at;
    }
    // Extend the top, reusing a free block that ends there.
    size_t at = top_;
    if (!free_.empty()) {
      auto last = std::prev(free_.end());
      if (last->first + last->second == top_) {
        at = last->first;
        free_.erase(last);
      }
    }
    top_ = at + n;
    return at;
  }
  void give_back(size_t at, size_t n) {
    n = round_up(n);
    auto next = free_.lower_bound(at);
    if (next != free_.end() && at + n == next->first) {  // merge with the block after
      n += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {  // and the block before
      auto prev = std::prev(next);
      if (prev->first + prev->second == at) {
        prev->second += n;
        return;
      }
    }
    free_[at] = n;
  }
  size_t top() const { return top_; }

 private:
  static size_t round_up(size_t n) { return align_elements(n); }
  std::map<size_t, size_t> free_;  // offset -> length
  size_t top_ = 0;
};

// Gradient slots in backward order: node j's gradient is first written by the backward of its last
// reader (which zeroes it first) and last read by j's own backward, after which its slot is free.
// A fused activation has no backward: readers of it write its producer's gradient directly.
void share_gradient_slots(Plan& plan) {
  const int N = int(plan.nodes.size());
  auto owner = [&](int n) { return plan.nodes[n].fused_into_input ? plan.nodes[n].alias_of : n; };
  std::vector<int> last_reader(N, 0);
  for (int i = 1; i < N; ++i) {
    if (plan.nodes[i].fused_into_input) continue;
    for (int in : plan.nodes[i].spec.inputs) last_reader[owner(in)] = std::max(last_reader[owner(in)], i);
  }
  SlotAllocator slots;
  const int last = owner(N - 1);
  plan.nodes[last].grad_offset = slots.take(plan.nodes[last].size);  // the loss writes it
  for (int i = N - 1; i >= 1; --i) {
    PlanNode& n = plan.nodes[i];
    if (n.fused_into_input) continue;
    for (size_t k = 0; k < n.spec.inputs.size(); ++k) {
      const int o = owner(n.spec.inputs[k]);
      if (o == 0 || last_reader[o] != i) continue;
      last_reader[o] = -1;  // an input listed twice starts once
      plan.nodes[o].grad_offset = slots.take(plan.nodes[o].size);
      n.grads_start.push_back(o);
      if (k < 32) n.inputs_starting |= 1u << k;  // nodes of more than 32 inputs are zeroed instead (ops.h)
    }
    slots.give_back(n.grad_offset, n.size);
  }
  for (PlanNode& n : plan.nodes)
    if (n.fused_into_input) n.grad_offset = plan.nodes[n.alias_of].grad_offset;
  plan.grad_per_sample = slots.top();
}

bool activation_fuses_into(Op op) { return op == Op::Conv || op == Op::BatchNorm || op == Op::Linear || op == Op::Add; }

// Whether concat node i joins exactly `groups` inputs of C / groups channels each.
bool concat_of_equal_chunks(const Plan& plan, int i, int groups) {
  const PlanNode& cat = plan.nodes[i];
  if (groups < 2 || int(cat.spec.inputs.size()) != groups || cat.C() % groups != 0) return false;
  for (int in : cat.spec.inputs)
    if (plan.nodes[in].C() != cat.C() / groups) return false;
  return true;
}

// Marks the nodes whose output can share their input's buffer (see build_plan). A fused ReLU's
// producer applies the activation itself (spec.fused); the ReLU's backward still runs, reading the
// activated output, which gives the same mask (y > 0 iff x > 0; 0 < y < 6 iff 0 < x < 6). A channel
// shuffle whose input is a concat of `groups` chunks of C / groups channels (read by nothing else) is
// fused into it: the concat writes its output shuffled (interleave_groups).
void alias_nodes(Plan& plan) {
  const int N = int(plan.nodes.size());
  std::vector<int> readers(N, 0);
  for (const PlanNode& n : plan.nodes)
    for (int in : n.spec.inputs) ++readers[in];
  ++readers[N - 1];
  for (int j = 1; j < N; ++j) {
    PlanNode& n = plan.nodes[j];
    const int i = n.spec.inputs.empty() ? -1 : n.spec.inputs[0];
    if (i <= 0) continue;
    const Op op = n.op();
    PlanNode& src = plan.nodes[i];
    if ((op == Op::Relu || op == Op::Relu6) && readers[i] == 1 && activation_fuses_into(src.op()) &&
        src.spec.fused == Activation::None && src.alias_of < 0) {
      src.spec.fused = op == Op::Relu ? Activation::Relu : Activation::Relu6;
      n.alias_of = i;
      n.fused_into_input = true;
    } else if (op == Op::Shuffle && readers[i] == 1 && src.op() == Op::Concat && src.interleave_groups == 0 &&
               src.alias_of < 0 && concat_of_equal_chunks(plan, i, n.spec.groups)) {
      src.interleave_groups = n.spec.groups;
      n.alias_of = i;
      n.fused_into_input = true;
    } else if (op == Op::Flatten || (op == Op::Dropout && n.spec.p == 0.f)) {
      n.alias_of = src.alias_of >= 0 ? src.alias_of : i;
    }
  }
}
}  // namespace

Plan build_plan(const ModelSpec& spec) {
  Plan plan;
  plan.spec = spec;
  const int N = int(spec.nodes.size());
  DFL_CHECK(N >= 2, "Model spec: needs an input node and at least one layer");
  DFL_CHECK(spec.in_channels > 0 && spec.height > 0 && spec.width > 0,
            "Model spec: input shape must be positive, got (", spec.in_channels, ",", spec.height, ",", spec.width,
            ")");
  plan.nodes.resize(N);
  for (int i = 0; i < N; ++i) plan.nodes[i].spec = spec.nodes[i];
  PlanBuilder b(plan);
  for (int i = 0; i < N; ++i) {
    const NodeSpec& n = spec.nodes[i];
    const OpDef& def = op_def(n.op);
    if (i == 0) {
      DFL_CHECK(n.op == Op::Input, "Model spec: node 0 must be the input node");
    } else {
      DFL_CHECK(n.op != Op::Input, b.where(i), ": only node 0 may be the input");
      const bool count_ok = def.inputs < 0 ? !n.inputs.empty() : n.inputs.size() == size_t(def.inputs);
      DFL_CHECK(count_ok, b.where(i), ": expected ",
                def.inputs < 0 ? std::string("at least 1") : std::to_string(def.inputs), " input(s), got ",
                n.inputs.size());
      for (int in : n.inputs)
        DFL_CHECK(in >= 0 && in < i, b.where(i), ": input index ", in, " must refer to an earlier node");
      if (n.op == Op::Conv || n.op == Op::BatchNorm || n.op == Op::Linear)
        DFL_CHECK(!n.name.empty(), b.where(i), ": parametric nodes need a name (parameter prefix)");
    }
    def.infer(b, i);
  }
  // Every node but the last must lead somewhere: an unused node's gradient would never be written
  // (nothing zeroes or fills it) and its layer could not learn; in a spec it is a wiring mistake.
  std::vector<bool> read(N, false);
  for (int i = 1; i < N; ++i)
    for (int in : spec.nodes[i].inputs) read[in] = true;
  for (int i = 0; i + 1 < N; ++i)
    DFL_CHECK(read[i], b.where(i), ": its output is not an input of any later node; every node must lead to the ",
              "last one (the logits): connect it or remove it");
  alias_nodes(plan);
  share_gradient_slots(plan);
  for (int i = 1; i < N; ++i) {  // node 0 reads the caller's input in place
    PlanNode& n = plan.nodes[i];
    if (n.alias_of >= 0) {
      n.act_offset = plan.nodes[n.alias_of].act_offset;
      continue;
    }
    n.act_offset = take_aligned(plan.act_per_sample, n.size);
  }
  const auto& out = plan.nodes[N - 1].shape;
  DFL_CHECK(out[1] == 1 && out[2] == 1, "Model spec: the last node must output (classes,1,1) logits, but it outputs (",
            out[0], ",", out[1], ",", out[2], "); end with gap/flatten + linear");
  plan.num_classes = out[0];
  for (auto& t : plan.params) t.layer = plan.nodes[t.node].layer;
  for (auto& t : plan.buffers) t.layer = plan.nodes[t.node].layer;
  return plan;
}

// ---- inference ------------------------------------------------------------------------------------
namespace {

void share_activation_slots(Plan& plan) {
  const int N = int(plan.nodes.size());
  // A buffer belongs to the node that writes it (an alias's owner); it lives until the last
  // reader of any node that shares it.
  auto owner = [&](int i) { return plan.nodes[i].alias_of >= 0 ? plan.nodes[i].alias_of : i; };
  std::vector<int> last_use(N, 0);
  for (int i = 1; i < N; ++i)
    for (int in : plan.nodes[i].spec.inputs) last_use[owner(in)] = std::max(last_use[owner(in)], i);
  last_use[owner(N - 1)] = N;  // the logits outlive the pass
  SlotAllocator slots;
  for (int i = 1; i < N; ++i) {
    PlanNode& n = plan.nodes[i];
    if (n.alias_of >= 0) {
      n.act_offset = plan.nodes[n.alias_of].act_offset;
    } else {
      n.act_offset = slots.take(n.size);  // before freeing: never aliases an input
    }
    for (int in : n.spec.inputs) {
      const int o = owner(in);
      if (o == 0 || last_use[o] != i) continue;
      last_use[o] = -1;  // an input listed twice is freed once
      slots.give_back(plan.nodes[o].act_offset, plan.nodes[o].size);
    }
  }
  plan.act_per_sample = slots.top();
}

bool is_conv_or_linear(Op op) { return op == Op::Conv || op == Op::Linear; }

}  // namespace

InferencePlan build_inference_plan(const Plan& training) {
  const ModelSpec& spec = training.spec;
  const int N = int(spec.nodes.size());
  std::vector<int> readers(N, 0);
  for (const NodeSpec& n : spec.nodes)
    for (int in : n.inputs) ++readers[in];
  ++readers[N - 1];  // the caller reads the logits

  ModelSpec out;
  out.in_channels = spec.in_channels;
  out.height = spec.height;
  out.width = spec.width;
  std::vector<int> remap(N, -1);       // training node -> inference node holding its value
  std::vector<int> source, folded_bn;  // per inference node
  std::vector<int> value_readers;      // per inference node: readers of the value it now holds
  auto fusable = [&](int t) {          // inference node t may absorb the single reader of its value
    return is_conv_or_linear(out.nodes[t].op) && out.nodes[t].fused == Activation::None && value_readers[t] == 1;
  };
  for (int i = 0; i < N; ++i) {
    const NodeSpec& n = spec.nodes[i];
    const int t = n.inputs.empty() ? -1 : remap[n.inputs[0]];
    if (n.op == Op::Dropout) {  // identity in eval mode
      remap[i] = t;
      value_readers[t] += readers[i] - 1;
      continue;
    }
    if (n.op == Op::BatchNorm && fusable(t) && folded_bn[t] < 0) {
      out.nodes[t].bias = true;
      folded_bn[t] = i;
      remap[i] = t;
      value_readers[t] = readers[i];
      continue;
    }
    if ((n.op == Op::Relu || n.op == Op::Relu6) && fusable(t)) {
      out.nodes[t].fused = n.op == Op::Relu ? Activation::Relu : Activation::Relu6;
      remap[i] = t;
      value_readers[t] = readers[i];
      continue;
    }
    NodeSpec copy = n;
    for (int& in : copy.inputs) in = remap[in];
    out.nodes.push_back(std::move(copy));
    remap[i] = int(out.nodes.size()) - 1;
    source.push_back(i);
    folded_bn.push_back(-1);
    value_readers.push_back(readers[i]);
  }
  InferencePlan ip{build_plan(out), std::move(source), std::move(folded_bn)};
  share_activation_slots(ip.plan);
  return ip;
}

}  // namespace dfl
