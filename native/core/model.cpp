// The graph model: shape inference and validation, the arena, initialisation, forward, backward and
// the fused training step. Kernels live in cpu/; this file only wires them.
#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#if !defined(_WIN32)
#include <unistd.h>
#endif

#include "core/check.h"
#include "core/parallel.h"

namespace dfl {

namespace {

// 64-byte aligned float storage (a cache line; AVX-512 loads).
struct AlignedFloats {
  float* ptr = nullptr;
  size_t n = 0;
  AlignedFloats() = default;
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  ~AlignedFloats() { std::free(ptr); }
  void resize_zeroed(size_t count, const char* what) {
    std::free(ptr);
    ptr = nullptr;
    n = 0;
    if (count == 0) return;
    DFL_CHECK(count < (size_t(1) << 40), "Refusing to allocate ", count, " floats for ", what,
              ": the model or batch is too large");
    const size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
    ptr = static_cast<float*>(std::aligned_alloc(64, bytes));
    DFL_CHECK(ptr != nullptr, "Out of memory allocating ", bytes / (1024.0 * 1024.0), " MiB for ",
              what, "; use a smaller batch size or model");
    std::memset(ptr, 0, bytes);
    n = count;
  }
};

// The memory a model may ask for: $DFL_MAX_MEMORY_MB when set (tests, shared machines), else the
// physical memory. Checked before the arena and activations are allocated, so a model or batch that
// cannot fit is refused with a message instead of being killed by the OS half-way through.
double memory_limit_bytes(const char** source) {
  if (const char* e = std::getenv("DFL_MAX_MEMORY_MB")) {
    char* end = nullptr;
    const double mb = std::strtod(e, &end);
    if (end != e && mb > 0) {
      *source = "DFL_MAX_MEMORY_MB";
      return mb * 1024.0 * 1024.0;
    }
  }
#if !defined(_WIN32) && defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) {
    *source = "physical memory";
    return static_cast<double>(pages) * static_cast<double>(page);
  }
#endif
  *source = "no limit known";
  return 1e300;
}

void check_memory(double bytes, const std::string& what, const char* todo) {
  const char* source = "";
  const double limit = memory_limit_bytes(&source);
  const double mib = 1024.0 * 1024.0;
  DFL_CHECK(bytes <= limit, "Refusing to allocate ", static_cast<long long>(bytes / mib), " MiB for ", what,
            ": more than the ", static_cast<long long>(limit / mib), " MiB available (", source, "); ", todo,
            " (or raise DFL_MAX_MEMORY_MB)");
}

enum class Op { Input, Conv, BN, Linear, Relu, Relu6, Add, Concat, Flatten, Dropout, MaxPool, AvgPool, GAP, Split, Shuffle };

Op parse_op(const std::string& s, int i) {
  static const std::pair<const char*, Op> table[] = {
      {"input", Op::Input},     {"conv", Op::Conv},       {"bn", Op::BN},         {"linear", Op::Linear},
      {"relu", Op::Relu},       {"relu6", Op::Relu6},     {"add", Op::Add},       {"concat", Op::Concat},
      {"flatten", Op::Flatten}, {"dropout", Op::Dropout}, {"maxpool", Op::MaxPool}, {"avgpool", Op::AvgPool},
      {"gap", Op::GAP},         {"split", Op::Split},     {"shuffle", Op::Shuffle}};
  for (const auto& [name, op] : table)
    if (s == name) return op;
  fail("Model spec: node ", i, " has unknown op '", s,
       "' (expected one of input, conv, bn, linear, relu, relu6, add, concat, flatten, dropout, "
       "maxpool, avgpool, gap, split, shuffle)");
}

}  // namespace

struct Model::Impl {
  std::vector<Op> ops;
  std::vector<std::vector<int>> shapes;  // per node (C,H,W)
  std::vector<size_t> sizes;             // per node C*H*W
  std::vector<size_t> act_off;           // per node offset (per sample) in the activation block
  size_t act_per_sample = 0;
  std::vector<int> layer_of;             // per node
  std::vector<int> weight_idx, bias_idx; // per node: index into params_ or -1
  std::vector<int> rmean_idx, rvar_idx, nbt_idx;  // per BN node: index into buffers_
  std::vector<size_t> stat_off;          // per BN node: offset into stats (save_mean, save_invstd)
  size_t stat_floats = 0;
  std::vector<size_t> argmax_off;        // per maxpool node, per sample
  size_t argmax_per_sample = 0;

  AlignedFloats params;  // [param | grad | momentum | decay mask], each n_params long
  AlignedFloats buffers;
  AlignedFloats acts, act_grads, stats, workspace, mask;
  std::vector<int32_t> argmax;
  int capacity_b = 0;
  int last_b = 0;
  bool last_training = false;
  bool have_forward = false;
  const float* last_input = nullptr;  // the caller's batch, read in place (node 0)

  // Loss scratch
  std::vector<float> losses, probs, kl_losses, sprobs, tprobs, dlogits;
  std::vector<float> buffers_backup;

  Rng dropout_rng{0};
};

Model::~Model() = default;

Model::Model(const ModelSpec& spec, uint64_t seed) : impl_(std::make_unique<Impl>()), spec_(spec) {
  Impl& m = *impl_;
  const auto& nodes = spec_.nodes;
  const int N = static_cast<int>(nodes.size());
  DFL_CHECK(N >= 2, "Model spec: needs an input node and at least one layer");
  DFL_CHECK(spec_.in_channels > 0 && spec_.height > 0 && spec_.width > 0,
            "Model spec: input shape must be positive, got (", spec_.in_channels, ",", spec_.height,
            ",", spec_.width, ")");
  m.ops.resize(N);
  m.shapes.resize(N);
  m.sizes.resize(N);
  m.act_off.resize(N);
  m.layer_of.assign(N, -1);
  m.weight_idx.assign(N, -1);
  m.bias_idx.assign(N, -1);
  m.rmean_idx.assign(N, -1);
  m.rvar_idx.assign(N, -1);
  m.nbt_idx.assign(N, -1);
  m.stat_off.assign(N, 0);
  m.argmax_off.assign(N, 0);

  auto add_param = [&](int node, const std::string& suffix, std::vector<int> shape, TensorKind kind) {
    size_t size = 1;
    for (int d : shape) size *= static_cast<size_t>(d);
    params_.push_back({nodes[node].name + "." + suffix, std::move(shape), n_params_, size, node, -1, kind});
    n_params_ += size;
    return static_cast<int>(params_.size() - 1);
  };
  auto add_buffer = [&](int node, const std::string& suffix, std::vector<int> shape) {
    size_t size = 1;
    for (int d : shape) size *= static_cast<size_t>(d);
    buffers_.push_back({nodes[node].name + "." + suffix, std::move(shape), n_buffers_, size, node, -1,
                        TensorKind::Buffer});
    n_buffers_ += size;
    return static_cast<int>(buffers_.size() - 1);
  };

  for (int i = 0; i < N; ++i) {
    const NodeSpec& n = nodes[i];
    const Op op = parse_op(n.op, i);
    m.ops[i] = op;
    const std::string where = "Model spec: node " + std::to_string(i) + " ('" + n.name + "', " + n.op + ")";
    if (i == 0) {
      DFL_CHECK(op == Op::Input, "Model spec: node 0 must be the input node");
      m.shapes[0] = {spec_.in_channels, spec_.height, spec_.width};
    } else {
      DFL_CHECK(op != Op::Input, where, ": only node 0 may be the input");
      const size_t want_inputs = (op == Op::Add) ? 2 : (op == Op::Concat ? n.inputs.size() : 1);
      DFL_CHECK(n.inputs.size() == want_inputs && !n.inputs.empty(), where, ": expected ",
                (op == Op::Concat ? std::string("at least 1") : std::to_string(want_inputs)),
                " input(s), got ", n.inputs.size());
      for (int in : n.inputs)
        DFL_CHECK(in >= 0 && in < i, where, ": input index ", in, " must refer to an earlier node");
      if (op == Op::Conv || op == Op::BN || op == Op::Linear)
        DFL_CHECK(!n.name.empty(), where, ": parametric nodes need a name (parameter prefix)");
    }
    if (i == 0) continue;
    const std::vector<int>& in = m.shapes[n.inputs[0]];
    const int C = in[0], H = in[1], W = in[2];
    switch (op) {
      case Op::Conv: {
        DFL_CHECK(n.out_channels > 0 && n.kernel_h > 0 && n.kernel_w > 0 && n.stride_h > 0 &&
                      n.stride_w > 0 && n.pad_h >= 0 && n.pad_w >= 0 && n.groups > 0,
                  where, ": out_channels, kernel and stride must be positive, pad non-negative");
        DFL_CHECK(C % n.groups == 0 && n.out_channels % n.groups == 0, where, ": groups ", n.groups,
                  " must divide in_channels ", C, " and out_channels ", n.out_channels);
        const int OH = (H + 2 * n.pad_h - n.kernel_h) / n.stride_h + 1;
        const int OW = (W + 2 * n.pad_w - n.kernel_w) / n.stride_w + 1;
        DFL_CHECK(H + 2 * n.pad_h >= n.kernel_h && W + 2 * n.pad_w >= n.kernel_w && OH > 0 && OW > 0,
                  where, ": kernel ", n.kernel_h, "x", n.kernel_w, " does not fit the ", H, "x", W, " input");
        m.shapes[i] = {n.out_channels, OH, OW};
        m.layer_of[i] = num_layers_++;
        m.weight_idx[i] = add_param(i, "weight", {n.out_channels, C / n.groups, n.kernel_h, n.kernel_w}, TensorKind::Weight);
        if (n.bias) m.bias_idx[i] = add_param(i, "bias", {n.out_channels}, TensorKind::Bias);
        macs_per_image_ += int64_t(n.out_channels) * OH * OW * (C / n.groups) * n.kernel_h * n.kernel_w;
        break;
      }
      case Op::BN: {
        DFL_CHECK(n.eps > 0 && n.momentum >= 0 && n.momentum <= 1, where, ": eps must be > 0 and momentum in [0,1]");
        m.shapes[i] = in;
        const Op prev = m.ops[n.inputs[0]];
        m.layer_of[i] = (prev == Op::Conv || prev == Op::Linear) ? m.layer_of[n.inputs[0]] : num_layers_++;
        m.weight_idx[i] = add_param(i, "weight", {C}, TensorKind::Weight);
        m.bias_idx[i] = add_param(i, "bias", {C}, TensorKind::Bias);
        m.rmean_idx[i] = add_buffer(i, "running_mean", {C});
        m.rvar_idx[i] = add_buffer(i, "running_var", {C});
        m.nbt_idx[i] = add_buffer(i, "num_batches_tracked", {});
        m.stat_off[i] = m.stat_floats;
        m.stat_floats += 2 * static_cast<size_t>(C);
        break;
      }
      case Op::Linear: {
        DFL_CHECK(n.out_features > 0, where, ": out_features must be positive");
        const int IN = C * H * W;
        m.shapes[i] = {n.out_features, 1, 1};
        m.layer_of[i] = num_layers_++;
        m.weight_idx[i] = add_param(i, "weight", {n.out_features, IN}, TensorKind::Weight);
        if (n.bias) m.bias_idx[i] = add_param(i, "bias", {n.out_features}, TensorKind::Bias);
        macs_per_image_ += int64_t(IN) * n.out_features;
        break;
      }
      case Op::Relu: case Op::Relu6: case Op::Dropout:
        DFL_CHECK(op != Op::Dropout || (n.p >= 0.f && n.p < 1.f), where, ": dropout p must be in [0, 1)");
        m.shapes[i] = in;
        break;
      case Op::Add: {
        DFL_CHECK(m.shapes[n.inputs[1]] == in, where, ": add needs equal shapes");
        m.shapes[i] = in;
        break;
      }
      case Op::Concat: {
        int total = 0;
        for (int j : n.inputs) {
          const auto& s = m.shapes[j];
          DFL_CHECK(s[1] == H && s[2] == W, where, ": concat inputs must share height and width");
          total += s[0];
        }
        m.shapes[i] = {total, H, W};
        break;
      }
      case Op::Flatten:
        m.shapes[i] = {C * H * W, 1, 1};
        break;
      case Op::MaxPool: case Op::AvgPool: {
        DFL_CHECK(n.kernel_h > 0 && n.kernel_w > 0 && n.stride_h > 0 && n.stride_w > 0 && n.pad_h >= 0 &&
                      n.pad_w >= 0 && 2 * n.pad_h <= n.kernel_h && 2 * n.pad_w <= n.kernel_w,
                  where, ": pool kernel/stride must be positive and pad at most half the kernel");
        const int OH = (H + 2 * n.pad_h - n.kernel_h) / n.stride_h + 1;
        const int OW = (W + 2 * n.pad_w - n.kernel_w) / n.stride_w + 1;
        DFL_CHECK(H + 2 * n.pad_h >= n.kernel_h && W + 2 * n.pad_w >= n.kernel_w && OH > 0 && OW > 0,
                  where, ": pool window does not fit the ", H, "x", W, " input");
        m.shapes[i] = {C, OH, OW};
        if (op == Op::MaxPool) {
          m.argmax_off[i] = m.argmax_per_sample;
          m.argmax_per_sample += static_cast<size_t>(C) * OH * OW;
        }
        break;
      }
      case Op::GAP:
        m.shapes[i] = {C, 1, 1};
        break;
      case Op::Split: {
        DFL_CHECK(!n.sizes.empty() && n.index >= 0 && n.index < static_cast<int>(n.sizes.size()), where,
                  ": split needs sizes and an index into them");
        int total = 0;
        for (int s : n.sizes) {
          DFL_CHECK(s > 0, where, ": split sizes must be positive");
          total += s;
        }
        DFL_CHECK(total == C, where, ": split sizes sum to ", total, " but the input has ", C, " channels");
        m.shapes[i] = {n.sizes[n.index], H, W};
        break;
      }
      case Op::Shuffle:
        DFL_CHECK(n.groups > 0 && C % n.groups == 0, where, ": shuffle groups ", n.groups,
                  " must divide the ", C, " channels");
        m.shapes[i] = in;
        break;
      case Op::Input:
        break;
    }
  }
  for (int i = 0; i < N; ++i) {
    const auto& s = m.shapes[i];
    m.sizes[i] = static_cast<size_t>(s[0]) * s[1] * s[2];
    m.act_off[i] = m.act_per_sample;
    if (i > 0) m.act_per_sample += m.sizes[i];  // node 0 reads the caller's input in place
  }
  const auto& out = m.shapes[N - 1];
  DFL_CHECK(out[1] == 1 && out[2] == 1, "Model spec: the last node must output (classes,1,1) logits, "
            "but it outputs (", out[0], ",", out[1], ",", out[2], "); end with gap/flatten + linear");
  num_classes_ = out[0];
  for (auto& p : params_) p.layer = m.layer_of[p.node];
  for (auto& b : buffers_) b.layer = m.layer_of[b.node];

  check_memory(4.0 * (4.0 * static_cast<double>(n_params_) + static_cast<double>(n_buffers_) + static_cast<double>(m.stat_floats)),
               "a model of " + std::to_string(n_params_) + " parameters (weights, gradients, momentum)",
               "use a smaller model or --width");
  m.params.resize_zeroed(4 * n_params_, "parameters, gradients, momentum and decay mask");
  m.buffers.resize_zeroed(n_buffers_, "batch-norm buffers");
  m.stats.resize_zeroed(m.stat_floats, "batch-norm statistics");
  std::fill(decay_mask(), decay_mask() + n_params_, 1.0f);
  init_all(seed);
}

float* Model::param_data() { return impl_->params.ptr; }
float* Model::grad_data() { return impl_->params.ptr + n_params_; }
float* Model::momentum_data() { return impl_->params.ptr + 2 * n_params_; }
float* Model::decay_mask() { return impl_->params.ptr + 3 * n_params_; }
float* Model::buffer_data() { return impl_->buffers.ptr; }
const std::vector<int>& Model::node_shape(int i) const {
  DFL_CHECK(i >= 0 && i < static_cast<int>(impl_->shapes.size()), "node index ", i, " out of range");
  return impl_->shapes[i];
}
int Model::node_layer(int i) const {
  DFL_CHECK(i >= 0 && i < static_cast<int>(impl_->layer_of.size()), "node index ", i, " out of range");
  return impl_->layer_of[i];
}
void Model::set_dropout_seed(uint64_t seed) { impl_->dropout_rng.reseed(seed); }

namespace {
// Fresh values for parameter tensor `t` from its own stream (seed, tensor index), so re-initialising
// one layer never depends on the others. fan_in is the linear layer's input width.
void fresh_values(float* dst, const TensorView& t, const std::string& op, int fan_in, uint64_t seed,
                  size_t tensor_index) {
  Rng rng(derive_seed(seed, tensor_index));
  if (op == "bn") {
    std::fill(dst, dst + t.size, t.kind == TensorKind::Weight ? 1.0f : 0.0f);
  } else if (op == "conv") {
    if (t.kind == TensorKind::Weight) {
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

void Model::init_all(uint64_t seed) {
  std::vector<int> all(num_layers_);
  for (int l = 0; l < num_layers_; ++l) all[l] = l;
  reinit_layers(all, seed, false, 0.f, 0.f);
}

void Model::reinit_layers(const std::vector<int>& layers, uint64_t seed, bool shrink_perturb, float shrink,
                          float perturb) {
  for (int l : layers)
    DFL_CHECK(l >= 0 && l < num_layers_, "reinit: layer ", l, " out of range [0, ", num_layers_, ")");
  auto chosen = [&](int layer) { return std::find(layers.begin(), layers.end(), layer) != layers.end(); };
  // Linear bias bound uses the weight's fan-in: find it per node.
  std::vector<int> fan_in(spec_.nodes.size(), 1);
  for (const auto& t : params_)
    if (t.kind == TensorKind::Weight && spec_.nodes[t.node].op == "linear") fan_in[t.node] = t.shape[1];
  std::vector<float> fresh;
  for (size_t ti = 0; ti < params_.size(); ++ti) {
    const TensorView& t = params_[ti];
    if (!chosen(t.layer)) continue;
    fresh.resize(t.size);
    fresh_values(fresh.data(), t, spec_.nodes[t.node].op, fan_in[t.node], seed, ti);
    float* p = param_data() + t.offset;
    if (shrink_perturb) {
      for (size_t k = 0; k < t.size; ++k) p[k] = shrink * p[k] + perturb * fresh[k];
    } else {
      std::copy(fresh.begin(), fresh.end(), p);
    }
    std::fill(momentum_data() + t.offset, momentum_data() + t.offset + t.size, 0.0f);
    std::fill(grad_data() + t.offset, grad_data() + t.offset + t.size, 0.0f);
  }
  for (const TensorView& b : buffers_) {
    if (!chosen(b.layer) || shrink_perturb) continue;  // shrink-perturb keeps the running statistics
    const bool is_var = b.name.size() >= 11 && b.name.compare(b.name.size() - 11, 11, "running_var") == 0;
    std::fill(buffer_data() + b.offset, buffer_data() + b.offset + b.size, is_var ? 1.0f : 0.0f);
  }
}

const float* Model::forward(const float* x, int B, bool training) {
  Impl& m = *impl_;
  DFL_CHECK(B > 0, "forward: batch size must be positive, got ", B);
  if (B > m.capacity_b) {
    size_t ws = 0;
    const auto& nodes = spec_.nodes;
    for (size_t i = 1; i < nodes.size(); ++i) {
      if (m.ops[i] != Op::Conv) continue;
      const auto& in = m.shapes[nodes[i].inputs[0]];
      const NodeSpec& n = nodes[i];
      cpu::Conv2dShape s{B, in[0], in[1], in[2], n.out_channels, n.kernel_h, n.kernel_w,
                         n.stride_h, n.stride_w, n.pad_h, n.pad_w, n.groups};
      ws = std::max(ws, cpu::conv2d_workspace_floats(s));
    }
    // activations + their gradients + dropout masks + maxpool indices + workspace, next to the arena
    const double per = static_cast<double>(m.act_per_sample);
    check_memory(4.0 * (3.0 * per * B + static_cast<double>(m.argmax_per_sample) * B + static_cast<double>(ws) +
                        4.0 * static_cast<double>(n_params_) + static_cast<double>(n_buffers_)),
                 "a batch of " + std::to_string(B) + " through a model of " + std::to_string(n_params_) +
                     " parameters (activations, their gradients and the weights)",
                 "use a smaller --batch-size, --image-size, --width or model");
    m.acts.resize_zeroed(m.act_per_sample * B, "activations");
    m.act_grads.resize_zeroed(0, "activation gradients");  // regrown on the next backward
    m.mask.resize_zeroed(m.act_per_sample * B, "dropout masks");
    m.argmax.assign(m.argmax_per_sample * B, 0);
    m.workspace.resize_zeroed(ws, "convolution workspace");
    m.capacity_b = B;
  }
  const auto& nodes = spec_.nodes;
  const int N = static_cast<int>(nodes.size());
  auto out_of = [&](int i) -> float* { return i == 0 ? const_cast<float*>(x) : m.acts.ptr + m.act_off[i] * B; };
  for (int i = 1; i < N; ++i) {
    const NodeSpec& n = nodes[i];
    const auto& ins = m.shapes[n.inputs[0]];
    const int C = ins[0], H = ins[1], W = ins[2], HW = H * W;
    const float* in = out_of(n.inputs[0]);
    float* out = out_of(i);
    const size_t count = m.sizes[i] * B;
    switch (m.ops[i]) {
      case Op::Conv: {
        cpu::Conv2dShape s{B, C, H, W, n.out_channels, n.kernel_h, n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w, n.groups};
        const float* bias = m.bias_idx[i] >= 0 ? param_data() + params_[m.bias_idx[i]].offset : nullptr;
        cpu::conv2d_forward(out, in, param_data() + params_[m.weight_idx[i]].offset, bias, s, m.workspace.ptr);
        break;
      }
      case Op::BN: {
        const float* gamma = param_data() + params_[m.weight_idx[i]].offset;
        const float* beta = param_data() + params_[m.bias_idx[i]].offset;
        float* rmean = buffer_data() + buffers_[m.rmean_idx[i]].offset;
        float* rvar = buffer_data() + buffers_[m.rvar_idx[i]].offset;
        if (training) {
          DFL_CHECK(B * HW > 1, "Batch norm '", n.name, "' needs more than one value per channel in training "
                    "(batch size ", B, ", spatial ", H, "x", W, "); use a batch size of at least 2");
          float* st = m.stats.ptr + m.stat_off[i];
          cpu::batchnorm2d_forward_train(out, st, st + C, rmean, rvar, in, gamma, beta, B, C, HW, n.momentum, n.eps);
          buffer_data()[buffers_[m.nbt_idx[i]].offset] += 1.0f;
        } else {
          cpu::batchnorm2d_forward_eval(out, in, gamma, beta, rmean, rvar, B, C, HW, n.eps);
        }
        break;
      }
      case Op::Linear: {
        const float* bias = m.bias_idx[i] >= 0 ? param_data() + params_[m.bias_idx[i]].offset : nullptr;
        cpu::linear_forward(out, in, param_data() + params_[m.weight_idx[i]].offset, bias, B, C * HW, n.out_features);
        break;
      }
      case Op::Relu: cpu::relu_forward(out, in, count); break;
      case Op::Relu6: cpu::relu6_forward(out, in, count); break;
      case Op::Add: cpu::add_forward(out, in, out_of(n.inputs[1]), count); break;
      case Op::Concat: {
        std::vector<const float*> srcs;
        std::vector<int> chans;
        for (int j : n.inputs) {
          srcs.push_back(out_of(j));
          chans.push_back(m.shapes[j][0]);
        }
        cpu::concat_channels_forward(out, srcs.data(), chans.data(), static_cast<int>(srcs.size()), B, HW);
        break;
      }
      case Op::Flatten: std::memcpy(out, in, count * sizeof(float)); break;
      case Op::Dropout:
        if (training && n.p > 0.f) {
          cpu::dropout_forward(out, m.mask.ptr + m.act_off[i] * B, in, count, n.p, m.dropout_rng);
        } else {
          std::memcpy(out, in, count * sizeof(float));
        }
        break;
      case Op::MaxPool: {
        cpu::Pool2dShape s{B, C, H, W, n.kernel_h, n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w};
        cpu::maxpool2d_forward(out, m.argmax.data() + m.argmax_off[i] * B, in, s);
        break;
      }
      case Op::AvgPool: {
        cpu::Pool2dShape s{B, C, H, W, n.kernel_h, n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w};
        cpu::avgpool2d_forward(out, in, s);
        break;
      }
      case Op::GAP: cpu::global_avgpool_forward(out, in, B, C, HW); break;
      case Op::Split: {
        std::vector<float*> outs(n.sizes.size(), nullptr);
        outs[n.index] = out;
        cpu::split_channels_forward(outs.data(), in, n.sizes.data(), static_cast<int>(n.sizes.size()), B, HW);
        break;
      }
      case Op::Shuffle: cpu::channel_shuffle_forward(out, in, B, C, HW, n.groups); break;
      case Op::Input: break;
    }
  }
  m.last_b = B;
  m.last_input = x;
  m.last_training = training;
  m.have_forward = true;
  return out_of(N - 1);
}

void Model::backward(const float* dlogits) {
  Impl& m = *impl_;
  DFL_CHECK(m.have_forward && m.last_training, "backward needs a training forward first");
  const int B = m.last_b;
  if (m.act_grads.n < m.act_per_sample * static_cast<size_t>(m.capacity_b))
    m.act_grads.resize_zeroed(m.act_per_sample * m.capacity_b, "activation gradients");
  std::memset(m.act_grads.ptr, 0, m.act_per_sample * B * sizeof(float));
  std::memset(grad_data(), 0, n_params_ * sizeof(float));
  const auto& nodes = spec_.nodes;
  const int N = static_cast<int>(nodes.size());
  auto out_of = [&](int i) -> const float* { return i == 0 ? m.last_input : m.acts.ptr + m.act_off[i] * B; };
  // Node 0's gradient is never needed: it maps to nullptr so kernels skip dinp.
  auto grad_of = [&](int i) -> float* { return i == 0 ? nullptr : m.act_grads.ptr + m.act_off[i] * B; };
  std::memcpy(grad_of(N - 1), dlogits, m.sizes[N - 1] * B * sizeof(float));
  for (int i = N - 1; i >= 1; --i) {
    const NodeSpec& n = nodes[i];
    const auto& ins = m.shapes[n.inputs[0]];
    const int C = ins[0], H = ins[1], W = ins[2], HW = H * W;
    const float* in = out_of(n.inputs[0]);
    float* din = grad_of(n.inputs[0]);
    const float* dout = grad_of(i);
    const size_t count = m.sizes[i] * B;
    switch (m.ops[i]) {
      case Op::Conv: {
        cpu::Conv2dShape s{B, C, H, W, n.out_channels, n.kernel_h, n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w, n.groups};
        float* dbias = m.bias_idx[i] >= 0 ? grad_data() + params_[m.bias_idx[i]].offset : nullptr;
        cpu::conv2d_backward(din, grad_data() + params_[m.weight_idx[i]].offset, dbias, dout, in,
                             param_data() + params_[m.weight_idx[i]].offset, s, m.workspace.ptr);
        break;
      }
      case Op::BN: {
        const float* st = m.stats.ptr + m.stat_off[i];
        cpu::batchnorm2d_backward(din, grad_data() + params_[m.weight_idx[i]].offset,
                                  grad_data() + params_[m.bias_idx[i]].offset, dout, in,
                                  param_data() + params_[m.weight_idx[i]].offset, st, st + C, B, C, HW);
        break;
      }
      case Op::Linear: {
        float* dbias = m.bias_idx[i] >= 0 ? grad_data() + params_[m.bias_idx[i]].offset : nullptr;
        cpu::linear_backward(din, grad_data() + params_[m.weight_idx[i]].offset, dbias, dout, in,
                             param_data() + params_[m.weight_idx[i]].offset, B, C * HW, n.out_features);
        break;
      }
      case Op::Relu: if (din) cpu::relu_backward(din, dout, in, count); break;
      case Op::Relu6: if (din) cpu::relu6_backward(din, dout, in, count); break;
      case Op::Add: cpu::add_backward(din, grad_of(n.inputs[1]), dout, count); break;
      case Op::Concat: {
        std::vector<float*> dsts;
        std::vector<int> chans;
        for (int j : n.inputs) {
          dsts.push_back(grad_of(j));
          chans.push_back(m.shapes[j][0]);
        }
        cpu::concat_channels_backward(dsts.data(), dout, chans.data(), static_cast<int>(dsts.size()), B, HW);
        break;
      }
      case Op::Flatten:
        if (din) for (size_t k = 0; k < count; ++k) din[k] += dout[k];
        break;
      case Op::Dropout:
        if (!din) break;
        if (n.p > 0.f) {
          cpu::dropout_backward(din, dout, m.mask.ptr + m.act_off[i] * B, count);
        } else {
          for (size_t k = 0; k < count; ++k) din[k] += dout[k];
        }
        break;
      case Op::MaxPool: {
        if (!din) break;
        cpu::Pool2dShape s{B, C, H, W, n.kernel_h, n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w};
        cpu::maxpool2d_backward(din, dout, m.argmax.data() + m.argmax_off[i] * B, s);
        break;
      }
      case Op::AvgPool: {
        if (!din) break;
        cpu::Pool2dShape s{B, C, H, W, n.kernel_h, n.kernel_w, n.stride_h, n.stride_w, n.pad_h, n.pad_w};
        cpu::avgpool2d_backward(din, dout, s);
        break;
      }
      case Op::GAP: if (din) cpu::global_avgpool_backward(din, dout, B, C, HW); break;
      case Op::Split: {
        if (!din) break;
        std::vector<const float*> douts(n.sizes.size(), nullptr);
        douts[n.index] = dout;
        cpu::split_channels_backward(din, douts.data(), n.sizes.data(), static_cast<int>(n.sizes.size()), B, HW);
        break;
      }
      case Op::Shuffle: if (din) cpu::channel_shuffle_backward(din, dout, B, C, HW, n.groups); break;
      case Op::Input: break;
    }
  }
}

StepStats Model::train_step(const float* x, const int32_t* labels, int B, const float* teacher_logits,
                            const float* teacher_weights, int K, const LossConfig& loss,
                            const cpu::SgdConfig& sgd) {
  Impl& m = *impl_;
  DFL_CHECK(K >= 0, "train_step: teacher count must be >= 0");
  DFL_CHECK(K == 0 || teacher_logits != nullptr, "train_step: ", K, " teachers but no teacher logits");
  DFL_CHECK(loss.temperature > 0.f, "train_step: temperature must be > 0");
  const int NC = num_classes_;
  for (int b = 0; b < B; ++b)
    DFL_CHECK(labels[b] >= 0 && labels[b] < NC, "train_step: label ", labels[b], " at batch position ", b,
              " is outside [0, ", NC, ")");
  // BN running statistics change in the forward pass: keep a copy so a non-finite step can be undone.
  m.buffers_backup.assign(buffer_data(), buffer_data() + n_buffers_);
  const float* logits = forward(x, B, true);
  const size_t BN = static_cast<size_t>(B) * NC;
  m.losses.resize(B);
  m.probs.resize(BN);
  m.dlogits.assign(BN, 0.0f);
  StepStats st;
  st.ce_loss = cpu::cross_entropy_forward(m.losses.data(), m.probs.data(), logits, labels, B, NC, loss.label_smoothing);
  cpu::cross_entropy_backward(m.dlogits.data(), m.probs.data(), labels, B, NC, loss.label_smoothing, 1.0f / B);
  const bool distill = K > 0 && loss.distill_weight != 0.f;
  if (distill) {
    m.kl_losses.resize(B);
    m.sprobs.resize(BN);
    m.tprobs.resize(BN);
    st.distill_loss = cpu::ensemble_kl_forward(m.kl_losses.data(), m.sprobs.data(), m.tprobs.data(), logits,
                                               teacher_logits, teacher_weights, K, B, NC, loss.temperature);
    cpu::ensemble_kl_backward(m.dlogits.data(), m.sprobs.data(), m.tprobs.data(), B, NC, loss.temperature,
                              loss.distill_weight / B);
  }
  st.loss = st.ce_loss + (distill ? loss.distill_weight * st.distill_loss : 0.f);
  for (int b = 0; b < B; ++b) {
    const float* row = logits + static_cast<size_t>(b) * NC;
    st.correct += static_cast<int>(std::max_element(row, row + NC) - row) == labels[b];
  }
  backward(m.dlogits.data());
  double sq = 0.0;
  const float* g = grad_data();
  for (size_t k = 0; k < n_params_; ++k) sq += double(g[k]) * g[k];
  st.grad_norm = static_cast<float>(std::sqrt(sq));
  bool buffers_finite = true;
  for (size_t k = 0; k < n_buffers_; ++k) buffers_finite = buffers_finite && std::isfinite(buffer_data()[k]);
  st.finite = std::isfinite(st.loss) && std::isfinite(sq) && buffers_finite;
  // A non-finite step must not touch the model: the caller stops with the last good state.
  if (st.finite) {
    cpu::sgd_step(param_data(), momentum_data(), grad_data(), decay_mask(), n_params_, sgd);
    for (size_t k = 0; k < n_params_ && st.finite; ++k) st.finite = std::isfinite(param_data()[k]);
  } else {
    std::copy(m.buffers_backup.begin(), m.buffers_backup.end(), buffer_data());
  }
  return st;
}

std::vector<float> Model::get_params() const {
  return std::vector<float>(impl_->params.ptr, impl_->params.ptr + n_params_);
}
void Model::set_params(const float* data, size_t n) {
  DFL_CHECK(n == n_params_, "set_params: expected ", n_params_, " floats, got ", n);
  std::memcpy(param_data(), data, n * sizeof(float));
}
std::vector<float> Model::get_momentum() const {
  return std::vector<float>(impl_->params.ptr + 2 * n_params_, impl_->params.ptr + 3 * n_params_);
}
void Model::set_momentum(const float* data, size_t n) {
  DFL_CHECK(n == n_params_, "set_momentum: expected ", n_params_, " floats, got ", n);
  std::memcpy(momentum_data(), data, n * sizeof(float));
}
std::vector<float> Model::get_buffers() const {
  return std::vector<float>(impl_->buffers.ptr, impl_->buffers.ptr + n_buffers_);
}
void Model::set_buffers(const float* data, size_t n) {
  DFL_CHECK(n == n_buffers_, "set_buffers: expected ", n_buffers_, " floats, got ", n);
  if (n) std::memcpy(buffer_data(), data, n * sizeof(float));
}

}  // namespace dfl
