// The op table (see core/ops.h): for each op, its shape inference and checks, forward and backward,
// written once against the Backend interface.
#include "core/ops.h"

#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"

namespace dfl {

namespace {

// ---- shared helpers ---------------------------------------------------------------------------
void infer_same_shape(PlanBuilder& b, int i) {
  const PlanNode& in = b.input(i);
  b.set_shape(i, in.C(), in.H(), in.W());
}

void no_backward(const OpRun&) {}

// Output size of a sliding window; checks that the window fits.
int window_out(PlanBuilder& b, int i, int in, int k, int stride, int pad, const char* what) {
  const int out = (in + 2 * pad - k) / stride + 1;
  DFL_CHECK(in + 2 * pad >= k && out > 0, b.where(i), ": ", what, " ", b.spec(i).kernel_h, "x", b.spec(i).kernel_w,
            " does not fit the ", b.input(i).H(), "x", b.input(i).W(), " input");
  return out;
}

// ---- input --------------------------------------------------------------------------------------
void input_infer(PlanBuilder& b, int) {
  const ModelSpec& s = b.plan().spec;
  b.set_shape(0, s.in_channels, s.height, s.width);
}
void input_forward(const OpRun&) {}

// ---- conv ---------------------------------------------------------------------------------------
void conv_infer(PlanBuilder& b, int i) {
  const NodeSpec& n = b.spec(i);
  const PlanNode& in = b.input(i);
  DFL_CHECK(n.out_channels > 0 && n.kernel_h > 0 && n.kernel_w > 0 && n.stride_h > 0 && n.stride_w > 0 &&
                n.pad_h >= 0 && n.pad_w >= 0 && n.groups > 0,
            b.where(i), ": out_channels, kernel and stride must be positive, pad non-negative");
  DFL_CHECK(in.C() % n.groups == 0 && n.out_channels % n.groups == 0, b.where(i), ": groups ", n.groups,
            " must divide in_channels ", in.C(), " and out_channels ", n.out_channels);
  const int OH = window_out(b, i, in.H(), n.kernel_h, n.stride_h, n.pad_h, "kernel");
  const int OW = window_out(b, i, in.W(), n.kernel_w, n.stride_w, n.pad_w, "kernel");
  b.set_shape(i, n.out_channels, OH, OW);
  b.new_layer(i);
  const int Cg = in.C() / n.groups;
  b.plan().nodes[i].weight = b.add_param(i, "weight", {n.out_channels, Cg, n.kernel_h, n.kernel_w}, TensorKind::Weight);
  if (n.bias) b.plan().nodes[i].bias = b.add_param(i, "bias", {n.out_channels}, TensorKind::Bias);
  b.add_macs(int64_t(n.out_channels) * OH * OW * Cg * n.kernel_h * n.kernel_w);
}
void conv_forward(const OpRun& r) {
  const PlanNode& n = r.node();
  r.be.conv2d_forward(r.out(), r.in(), r.param(n.weight), r.param(n.bias), r.conv_shape(), r.mem.workspace,
                      r.mem.workspace_bytes, n.spec.fused);
}
void conv_backward(const OpRun& r) {
  const PlanNode& n = r.node();
  r.be.conv2d_backward(r.din(), r.grad(n.weight), r.grad(n.bias), r.masked_dout(), r.in(), r.param(n.weight),
                       r.conv_shape(), r.mem.workspace, r.mem.workspace_bytes, r.din_fresh());
}

// ---- batch norm -------------------------------------------------------------------------------
void bn_infer(PlanBuilder& b, int i) {
  const NodeSpec& n = b.spec(i);
  DFL_CHECK(n.eps > 0 && n.momentum >= 0 && n.momentum <= 1, b.where(i), ": eps must be > 0 and momentum in [0,1]");
  infer_same_shape(b, i);
  const Op prev = b.input(i).op();
  // A BN right after a conv/linear belongs to that layer: a reset re-initialises both.
  if (prev == Op::Conv || prev == Op::Linear)
    b.join_layer(i, n.inputs[0]);
  else
    b.new_layer(i);
  const int C = b.input(i).C();
  PlanNode& node = b.plan().nodes[i];
  node.weight = b.add_param(i, "weight", {C}, TensorKind::Weight);
  node.bias = b.add_param(i, "bias", {C}, TensorKind::Bias);
  node.running_mean = b.add_buffer(i, "running_mean", {C});
  node.running_var = b.add_buffer(i, "running_var", {C});
  node.batches_tracked = b.add_buffer(i, "num_batches_tracked", {});
  node.stat_offset = b.add_stats(align_elements(size_t(C)) + size_t(C));
}
// The BN's saved statistics: save_mean (C) at stat_offset, save_invstd (C) at the next aligned offset.
float* bn_save_mean(const OpRun& r) { return r.mem.stats + r.node().stat_offset; }
float* bn_save_invstd(const OpRun& r, int C) { return bn_save_mean(r) + align_elements(size_t(C)); }
void bn_forward(const OpRun& r) {
  const PlanNode& n = r.node();
  const PlanNode& in = r.input_node();
  const int B = r.B, C = in.C(), HW = in.H() * in.W();
  if (r.training) {
    DFL_CHECK(size_t(B) * HW > 1, "Batch norm '", n.spec.name,
              "' needs more than one value per channel in training "
              "(batch size ",
              B, ", spatial ", in.H(), "x", in.W(), "); use a batch size of at least 2");
    r.be.batchnorm2d_forward_train_fused(r.out(), bn_save_mean(r), bn_save_invstd(r, C), r.buffer(n.running_mean),
                                         r.buffer(n.running_var), r.in(), r.param(n.weight), r.param(n.bias), B, C, HW,
                                         n.spec.momentum, n.spec.eps, n.spec.fused);
    r.be.add_scalar(r.buffer(n.batches_tracked), 1.0f, 1);
  } else {
    r.be.batchnorm2d_forward_eval_fused(r.out(), r.in(), r.param(n.weight), r.param(n.bias), r.buffer(n.running_mean),
                                        r.buffer(n.running_var), B, C, HW, n.spec.eps, n.spec.fused);
  }
}
void bn_backward(const OpRun& r) {
  const PlanNode& n = r.node();
  const PlanNode& in = r.input_node();
  const int C = in.C();
  r.be.batchnorm2d_backward_fused(r.din(), r.grad(n.weight), r.grad(n.bias), r.act_grad(r.i), r.out(), r.in(),
                                  r.param(n.weight), bn_save_mean(r), bn_save_invstd(r, C), r.B, C, in.H() * in.W(),
                                  n.spec.fused, r.din_fresh());
}

// ---- linear -------------------------------------------------------------------------------------
void linear_infer(PlanBuilder& b, int i) {
  const NodeSpec& n = b.spec(i);
  DFL_CHECK(n.out_features > 0, b.where(i), ": out_features must be positive");
  const int IN = int(b.input(i).size);
  b.set_shape(i, n.out_features, 1, 1);
  b.new_layer(i);
  b.plan().nodes[i].weight = b.add_param(i, "weight", {n.out_features, IN}, TensorKind::Weight);
  if (n.bias) b.plan().nodes[i].bias = b.add_param(i, "bias", {n.out_features}, TensorKind::Bias);
  b.add_macs(int64_t(IN) * n.out_features);
}
void linear_forward(const OpRun& r) {
  const PlanNode& n = r.node();
  r.be.linear_forward(r.out(), r.in(), r.param(n.weight), r.param(n.bias), r.B, int(r.input_node().size),
                      n.spec.out_features, n.spec.fused, r.math);
}
void linear_backward(const OpRun& r) {
  const PlanNode& n = r.node();
  r.be.linear_backward(r.din(), r.grad(n.weight), r.grad(n.bias), r.masked_dout(), r.in(), r.param(n.weight), r.B,
                       int(r.input_node().size), n.spec.out_features, r.math);
}

// ---- activations, add ---------------------------------------------------------------------------
void relu_forward(const OpRun& r) { r.be.relu_forward(r.out(), r.in(), r.out_count()); }
void relu_backward(const OpRun& r) {
  if (r.din()) r.be.relu_backward(r.din(), r.dout(), r.in(), r.out_count());
}
void relu6_forward(const OpRun& r) { r.be.relu6_forward(r.out(), r.in(), r.out_count()); }
void relu6_backward(const OpRun& r) {
  if (r.din()) r.be.relu6_backward(r.din(), r.dout(), r.in(), r.out_count());
}

void add_infer(PlanBuilder& b, int i) {
  const auto chw = [](const PlanNode& n) {
    return std::to_string(n.shape[0]) + "x" + std::to_string(n.shape[1]) + "x" + std::to_string(n.shape[2]);
  };
  DFL_CHECK(b.input(i, 1).shape == b.input(i, 0).shape, b.where(i), ": add needs equal shapes but its inputs are ",
            chw(b.input(i, 0)), " and ", chw(b.input(i, 1)), " (channels x height x width per sample)");
  infer_same_shape(b, i);
}
void add_forward(const OpRun& r) { r.be.add_forward_fused(r.out(), r.in(0), r.in(1), r.out_count(), r.spec().fused); }
// A fresh input slot takes a copy of the gradient (no zeroing pass, no read of zeros); the others add.
void add_backward(const OpRun& r) {
  const float* d = r.masked_dout();
  float* accumulate[2] = {r.din(0), r.din(1)};
  for (int k = 0; k < 2; ++k)
    if (accumulate[k] && r.din_fresh(k)) {
      r.be.copy(accumulate[k], d, r.out_count() * sizeof(float));
      accumulate[k] = nullptr;
    }
  r.be.add_backward(accumulate[0], accumulate[1], d, r.out_count());
}

// ---- channel plumbing ---------------------------------------------------------------------------
void concat_infer(PlanBuilder& b, int i) {
  const PlanNode& first = b.input(i);
  int total = 0;
  for (size_t k = 0; k < b.spec(i).inputs.size(); ++k) {
    const PlanNode& in = b.input(i, int(k));
    DFL_CHECK(in.H() == first.H() && in.W() == first.W(), b.where(i), ": concat inputs must share height and width");
    total += in.C();
  }
  b.set_shape(i, total, first.H(), first.W());
}
std::vector<int> input_channels(const OpRun& r) {
  std::vector<int> chans;
  for (size_t k = 0; k < r.spec().inputs.size(); ++k) chans.push_back(r.input_node(int(k)).C());
  return chans;
}
void concat_forward(const OpRun& r) {
  std::vector<const float*> srcs;
  for (size_t k = 0; k < r.spec().inputs.size(); ++k) srcs.push_back(r.in(int(k)));
  const int HW = r.node().H() * r.node().W();
  if (const int g = r.node().interleave_groups; g > 0)  // a channel shuffle fused in (see alias_nodes)
    return r.be.interleave_channels_forward(r.out(), srcs.data(), g, r.node().C() / g, r.B, HW);
  const std::vector<int> chans = input_channels(r);
  r.be.concat_channels_forward(r.out(), srcs.data(), chans.data(), int(srcs.size()), r.B, HW);
}
// Fresh input slots get their chunk of the gradient copied (a split of dout), the others add it.
// Copies first: an input listed twice is fresh at its first listing only.
void concat_backward(const OpRun& r) {
  const size_t n = r.spec().inputs.size();
  std::vector<float*> fresh(n, nullptr), accumulate(n, nullptr);
  bool any_fresh = false, any_accumulate = false;
  for (size_t k = 0; k < n; ++k) {
    float* d = r.din(int(k));
    if (!d) continue;
    const bool f = r.din_fresh(int(k));
    (f ? fresh : accumulate)[k] = d;
    (f ? any_fresh : any_accumulate) = true;
  }
  const int HW = r.node().H() * r.node().W();
  if (const int g = r.node().interleave_groups; g > 0) {  // dout is in shuffled order
    if (any_fresh) r.be.interleave_channels_backward(fresh.data(), r.dout(), g, r.node().C() / g, r.B, HW, true);
    if (any_accumulate)
      r.be.interleave_channels_backward(accumulate.data(), r.dout(), g, r.node().C() / g, r.B, HW, false);
    return;
  }
  const std::vector<int> chans = input_channels(r);
  if (any_fresh) r.be.split_channels_forward(fresh.data(), r.dout(), chans.data(), int(n), r.B, HW);
  if (any_accumulate) r.be.concat_channels_backward(accumulate.data(), r.dout(), chans.data(), int(n), r.B, HW);
}

void split_infer(PlanBuilder& b, int i) {
  const NodeSpec& n = b.spec(i);
  DFL_CHECK(!n.sizes.empty() && n.index >= 0 && n.index < int(n.sizes.size()), b.where(i),
            ": split needs sizes and an index into them");
  int total = 0;
  for (int s : n.sizes) {
    DFL_CHECK(s > 0, b.where(i), ": split sizes must be positive");
    total += s;
  }
  const PlanNode& in = b.input(i);
  DFL_CHECK(total == in.C(), b.where(i), ": split sizes sum to ", total, " but the input has ", in.C(), " channels");
  b.set_shape(i, n.sizes[n.index], in.H(), in.W());
}
void split_forward(const OpRun& r) {
  const NodeSpec& n = r.spec();
  std::vector<float*> outs(n.sizes.size(), nullptr);
  outs[n.index] = r.out();
  r.be.split_channels_forward(outs.data(), r.in(), n.sizes.data(), int(n.sizes.size()), r.B,
                              r.node().H() * r.node().W());
}
void split_backward(const OpRun& r) {
  if (!r.din()) return;
  const NodeSpec& n = r.spec();
  std::vector<const float*> douts(n.sizes.size(), nullptr);
  douts[n.index] = r.dout();
  r.be.split_channels_backward(r.din(), douts.data(), n.sizes.data(), int(n.sizes.size()), r.B,
                               r.node().H() * r.node().W(), r.din_fresh());
}

void shuffle_infer(PlanBuilder& b, int i) {
  const int g = b.spec(i).groups, C = b.input(i).C();
  DFL_CHECK(g > 0 && C % g == 0, b.where(i), ": shuffle groups ", g, " must divide the ", C, " channels");
  infer_same_shape(b, i);
}
void shuffle_forward(const OpRun& r) {
  const PlanNode& n = r.node();
  r.be.channel_shuffle_forward(r.out(), r.in(), r.B, n.C(), n.H() * n.W(), n.spec.groups);
}
// A shuffle's backward is the inverse permutation, which is the shuffle with C / groups groups: a
// fresh slot gets it written directly.
void shuffle_backward(const OpRun& r) {
  const PlanNode& n = r.node();
  if (!r.din()) return;
  if (r.din_fresh())
    r.be.channel_shuffle_forward(r.din(), r.dout(), r.B, n.C(), n.H() * n.W(), n.C() / n.spec.groups);
  else
    r.be.channel_shuffle_backward(r.din(), r.dout(), r.B, n.C(), n.H() * n.W(), n.spec.groups);
}

void flatten_infer(PlanBuilder& b, int i) { b.set_shape(i, int(b.input(i).size), 1, 1); }
void copy_forward(const OpRun& r) { r.be.copy(r.out(), r.in(), r.out_count() * sizeof(float)); }
void identity_backward(const OpRun& r) {
  if (r.din()) r.be.accumulate(r.din(), r.dout(), r.out_count());
}

// ---- dropout ------------------------------------------------------------------------------------
void dropout_infer(PlanBuilder& b, int i) {
  const float p = b.spec(i).p;
  DFL_CHECK(p >= 0.f && p < 1.f, b.where(i), ": dropout p must be in [0, 1)");
  infer_same_shape(b, i);
  b.plan().nodes[i].mask_offset = b.add_mask_per_sample(b.plan().nodes[i].size);
}
bool dropout_active(const OpRun& r) { return r.training && r.spec().p > 0.f; }
void dropout_forward(const OpRun& r) {
  if (!dropout_active(r)) return copy_forward(r);
  // Each dropout node draws from its own stream of the step's seed.
  r.be.dropout_forward(r.out(), r.mem.mask + r.node().mask_offset * size_t(r.B), r.in(), r.out_count(), r.spec().p,
                       derive_seed(r.dropout_seed, uint64_t(r.i)));
}
void dropout_backward(const OpRun& r) {
  if (!r.din()) return;
  if (r.spec().p > 0.f) {
    r.be.dropout_backward(r.din(), r.dout(), r.mem.mask + r.node().mask_offset * size_t(r.B), r.out_count());
  } else {
    r.be.accumulate(r.din(), r.dout(), r.out_count());
  }
}

// ---- pooling ------------------------------------------------------------------------------------
void pool_infer(PlanBuilder& b, int i) {
  const NodeSpec& n = b.spec(i);
  DFL_CHECK(n.kernel_h > 0 && n.kernel_w > 0 && n.stride_h > 0 && n.stride_w > 0 && n.pad_h >= 0 && n.pad_w >= 0 &&
                2 * n.pad_h <= n.kernel_h && 2 * n.pad_w <= n.kernel_w,
            b.where(i), ": pool kernel/stride must be positive and pad at most half the kernel");
  const PlanNode& in = b.input(i);
  const int OH = window_out(b, i, in.H(), n.kernel_h, n.stride_h, n.pad_h, "pool window");
  const int OW = window_out(b, i, in.W(), n.kernel_w, n.stride_w, n.pad_w, "pool window");
  b.set_shape(i, in.C(), OH, OW);
}
void maxpool_infer(PlanBuilder& b, int i) {
  pool_infer(b, i);
  b.plan().nodes[i].argmax_offset = b.add_argmax_per_sample(b.plan().nodes[i].size);
}
int32_t* argmax_of(const OpRun& r) {
  return r.mem.argmax ? r.mem.argmax + r.node().argmax_offset * size_t(r.B) : nullptr;
}
void maxpool_forward(const OpRun& r) {
  r.be.maxpool2d_forward(r.out(), argmax_of(r), r.in(), r.plan.pool_shape(r.i, r.B));
}
void maxpool_backward(const OpRun& r) {
  if (r.din()) r.be.maxpool2d_backward(r.din(), r.dout(), argmax_of(r), r.plan.pool_shape(r.i, r.B));
}
void avgpool_forward(const OpRun& r) { r.be.avgpool2d_forward(r.out(), r.in(), r.plan.pool_shape(r.i, r.B)); }
void avgpool_backward(const OpRun& r) {
  if (r.din()) r.be.avgpool2d_backward(r.din(), r.dout(), r.plan.pool_shape(r.i, r.B));
}

void gap_infer(PlanBuilder& b, int i) { b.set_shape(i, b.input(i).C(), 1, 1); }
void gap_forward(const OpRun& r) {
  const PlanNode& in = r.input_node();
  r.be.global_avgpool_forward(r.out(), r.in(), r.B, in.C(), in.H() * in.W());
}
void gap_backward(const OpRun& r) {
  const PlanNode& in = r.input_node();
  if (r.din()) r.be.global_avgpool_backward(r.din(), r.dout(), r.B, in.C(), in.H() * in.W());
}

// ---- the table (indexed by Op) --------------------------------------------------------------------
const OpDef kOps[] = {
    {Op::Input, "input", 0, input_infer, input_forward, no_backward},
    {Op::Conv, "conv", 1, conv_infer, conv_forward, conv_backward, true},
    {Op::BatchNorm, "bn", 1, bn_infer, bn_forward, bn_backward, true},
    {Op::Linear, "linear", 1, linear_infer, linear_forward, linear_backward},
    {Op::Relu, "relu", 1, infer_same_shape, relu_forward, relu_backward},
    {Op::Relu6, "relu6", 1, infer_same_shape, relu6_forward, relu6_backward},
    {Op::Add, "add", 2, add_infer, add_forward, add_backward, true},
    {Op::Concat, "concat", -1, concat_infer, concat_forward, concat_backward, true},
    {Op::Flatten, "flatten", 1, flatten_infer, copy_forward, identity_backward},
    {Op::Dropout, "dropout", 1, dropout_infer, dropout_forward, dropout_backward},
    {Op::MaxPool, "maxpool", 1, maxpool_infer, maxpool_forward, maxpool_backward},
    {Op::AvgPool, "avgpool", 1, pool_infer, avgpool_forward, avgpool_backward},
    {Op::GlobalAvgPool, "gap", 1, gap_infer, gap_forward, gap_backward},
    {Op::Split, "split", 1, split_infer, split_forward, split_backward, true},
    {Op::Shuffle, "shuffle", 1, shuffle_infer, shuffle_forward, shuffle_backward, true},
};
constexpr size_t kNumOps = sizeof(kOps) / sizeof(kOps[0]);

// The table is indexed by the enum value: a wrongly ordered entry fails at the first build.
// Also: an op that overwrites fresh input-gradient slots has at most 32 inputs or a variable count
// (the executor then zeroes the slots of a node with more than 32, see Model::run_backward).
bool table_in_enum_order() {
  for (size_t k = 0; k < kNumOps; ++k)
    if (size_t(kOps[k].op) != k ||
        (kOps[k].overwrites_fresh_input_grad && (kOps[k].inputs == 0 || kOps[k].inputs > 32)))
      return false;
  return true;
}

}  // namespace

const OpDef& op_def(Op op) {
  static const bool ordered = table_in_enum_order();
  DFL_CHECK(ordered,
            "internal: the op table is not in enum order (or an op overwriting fresh slots has more than 32 inputs)");
  DFL_CHECK(size_t(op) < kNumOps, "internal: op ", int(op), " has no table entry");
  return kOps[size_t(op)];
}

bool op_from_name(const std::string& s, Op* op) {
  for (const OpDef& d : kOps)
    if (s == d.name) {
      *op = d.op;
      return true;
    }
  return false;
}

std::string op_names() {
  std::string s;
  for (const OpDef& d : kOps) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

}  // namespace dfl
