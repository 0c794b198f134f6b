// The executors through the seam: inference-only teachers (folded BN, fused activations, shared
// activation slots) against the training model's eval forward, a step that distils from teacher
// objects against the same step given their logits, refused steps (nothing changes), and the
// small step kernels. Run on every backend.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend_ops.h"
#include "core/graph.h"
#include "core/model.h"
#include "core/ops.h"
#include "fixtures.h"
#include "harness.h"

namespace dfl::test {
namespace {

using Vec = std::vector<float>;

NodeSpec node(Op op, std::vector<int> inputs, const char* name = "") {
  NodeSpec n;
  n.op = op;
  n.inputs = std::move(inputs);
  n.name = name;
  return n;
}
NodeSpec conv(int in, int oc, int k, int stride, int pad, const char* name, int groups = 1, bool bias = false) {
  NodeSpec n = node(Op::Conv, {in}, name);
  n.out_channels = oc;
  n.kernel_h = n.kernel_w = k;
  n.stride_h = n.stride_w = stride;
  n.pad_h = n.pad_w = pad;
  n.groups = groups;
  n.bias = bias;
  return n;
}

// A graph that exercises every folding rule: conv->bn->relu (folded + fused), a conv read twice
// (kept), a standalone BN (kept, eval), linear->bn (folded), dropout p > 0 (dropped), relu6, a
// residual add and a concat whose inputs stay live across other nodes.
ModelSpec folding_spec() {
  ModelSpec s;
  s.in_channels = 3;
  s.height = s.width = 8;
  auto& n = s.nodes;
  n.push_back(node(Op::Input, {}));                 // 0
  n.push_back(conv(0, 6, 3, 1, 1, "c1"));           // 1
  n.push_back(node(Op::BatchNorm, {1}, "b1"));      // 2 folded into 1
  n.push_back(node(Op::Relu, {2}));                 // 3 fused into 1
  n.push_back(conv(3, 6, 3, 1, 1, "c2", 1, true));  // 4 read twice: no fold
  n.push_back(node(Op::BatchNorm, {4}, "b2"));      // 5 standalone (its input has 2 readers)
  n.push_back(node(Op::Relu6, {4}));                // 6
  n.push_back(node(Op::Add, {5, 6}));               // 7
  NodeSpec pool = node(Op::MaxPool, {7});
  pool.kernel_h = pool.kernel_w = 2;
  pool.stride_h = pool.stride_w = 2;
  n.push_back(pool);                                // 8
  n.push_back(node(Op::BatchNorm, {8}, "b3"));      // 9 standalone after a pool
  n.push_back(conv(9, 4, 1, 1, 0, "c3"));           // 10
  n.push_back(node(Op::Relu, {10}));                // 11 fused
  n.push_back(conv(9, 4, 3, 1, 1, "dw_in"));        // 12
  n.push_back(conv(12, 4, 3, 1, 1, "dw", 4));       // 13 depthwise
  n.push_back(node(Op::BatchNorm, {13}, "dw_bn"));  // 14 folded
  n.push_back(node(Op::Concat, {11, 14}));          // 15
  n.push_back(node(Op::GlobalAvgPool, {15}));       // 16
  n.push_back(node(Op::Flatten, {16}));             // 17
  NodeSpec drop = node(Op::Dropout, {17});
  drop.p = 0.3f;
  n.push_back(drop);  // 18 dropped
  NodeSpec fc1 = node(Op::Linear, {18}, "fc1");
  fc1.out_features = 7;
  n.push_back(fc1);                                  // 19
  n.push_back(node(Op::BatchNorm, {19}, "fc1_bn"));  // 20 folded into a linear
  n.push_back(node(Op::Relu, {20}));                 // 21 fused
  NodeSpec fc2 = node(Op::Linear, {21}, "fc2");
  fc2.out_features = 5;
  fc2.bias = true;
  n.push_back(fc2);  // 22
  return s;
}

// Random weights and BN statistics far from the defaults, so folding has work to do.
void randomise(Model& m, uint64_t seed) {
  Rng rng(seed);
  Vec p = m.get_params();
  for (const TensorView& t : m.params())
    for (size_t k = 0; k < t.size; ++k)
      p[t.offset + k] = rng.uniform(-0.5f, 0.5f) +
                        (t.kind == TensorKind::Weight && m.plan().nodes[t.node].op() == Op::BatchNorm ? 1.0f : 0.0f);
  m.set_params(p.data(), p.size());
  Vec b = m.get_buffers();
  for (const TensorView& t : m.buffers()) {
    const bool var = t.name.find("running_var") != std::string::npos;
    const bool mean = t.name.find("running_mean") != std::string::npos;
    for (size_t k = 0; k < t.size; ++k)
      b[t.offset + k] = var ? rng.uniform(0.3f, 2.0f) : (mean ? rng.uniform(-0.5f, 0.5f) : 7.f);
  }
  m.set_buffers(b.data(), b.size());
}

int count_op(const Plan& p, Op op) {
  int k = 0;
  for (const PlanNode& n : p.nodes) k += n.op() == op;
  return k;
}

}  // namespace

DFL_TEST(inference_plan_folds_fuses_and_shares_slots) {
  const Plan train = build_plan(folding_spec());
  const InferencePlan ip = build_inference_plan(train);
  const Plan& p = ip.plan;
  DFL_EXPECT(count_op(p, Op::BatchNorm) == 2, "standalone BNs kept: " << count_op(p, Op::BatchNorm));
  DFL_EXPECT(count_op(p, Op::Dropout) == 0, "dropout dropped");
  DFL_EXPECT(count_op(p, Op::Relu) == 0, "every ReLU here fuses into its conv/linear");
  DFL_EXPECT(count_op(p, Op::Relu6) == 1, "relu6 after a conv read twice stays");
  DFL_EXPECT(p.nodes.size() == train.nodes.size() - 7,
             p.nodes.size() << " inference nodes (3 BNs folded, 3 ReLUs fused, 1 dropout gone)");
  int fused = 0, folded = 0;
  for (size_t j = 0; j < p.nodes.size(); ++j) {
    fused += p.nodes[j].spec.fused != Activation::None;
    folded += ip.folded_bn[j] >= 0;
  }
  DFL_EXPECT(fused == 3 && folded == 3, fused << " fused activations, " << folded << " folded BNs");
  DFL_EXPECT(p.num_classes == 5 && p.num_params < train.num_params, "folded parameters " << p.num_params);
  DFL_EXPECT(p.act_per_sample < train.act_per_sample / 2,
             "shared slots: " << p.act_per_sample << " vs " << train.act_per_sample << " floats per sample");
  DFL_EXPECT(p.params[p.nodes[1].bias].name == "c1.bias", "a folded conv carries a bias named after it");
  // Training plan: fused ReLUs and the flatten share their input's activation; gradient slots are
  // shared in backward order.
  size_t all = 0;
  for (const PlanNode& n : train.nodes) all += n.size;
  all -= train.nodes[0].size;
  DFL_EXPECT(train.nodes[3].alias_of == 2 && train.nodes[17].alias_of == 16, "relu into its BN, flatten into gap");
  DFL_EXPECT(train.act_per_sample < all && train.grad_per_sample < all / 2,
             "activations " << train.act_per_sample << ", gradients " << train.grad_per_sample << " of " << all);
}

namespace {
// The two layouts of a block of tensors (TensorView): packed on the host in plan order; on the
// device each at a multiple of kTensorAlignElements, in order, not overlapping, inside the block.
void expect_layouts(const std::vector<TensorView>& ts, size_t packed, size_t device, const std::string& what) {
  size_t host_at = 0, device_end = 0;
  for (const TensorView& t : ts) {
    DFL_EXPECT(t.offset == host_at, what << " " << t.name << ": host offset " << t.offset << ", packed " << host_at);
    DFL_EXPECT(t.device_offset % kTensorAlignElements == 0 && t.device_offset >= device_end,
               what << " " << t.name << ": device offset " << t.device_offset);
    host_at += t.size;
    device_end = t.device_offset + t.size;
  }
  DFL_EXPECT(host_at == packed, what << ": " << packed << " packed floats, tensors hold " << host_at);
  DFL_EXPECT(device_end <= device && device % kTensorAlignElements == 0, what << ": device block " << device);
}
}  // namespace

DFL_CPU_TEST(layout_packs_host_vectors_and_aligns_every_device_tensor) {
  for (const ModelSpec& spec : {folding_spec(), read_model_spec_json(fixture_path("model_step_spec.json"))}) {
    const Plan train = build_plan(spec);
    const InferencePlan infer = build_inference_plan(train);
    for (const Plan* p : {&train, &infer.plan}) {
      expect_layouts(p->params, p->num_params, p->device_param_floats, "params");
      expect_layouts(p->buffers, p->num_buffer_floats, p->device_buffer_floats, "buffers");
      for (const PlanNode& n : p->nodes)
        DFL_EXPECT(n.act_offset % kTensorAlignElements == 0 && n.grad_offset % kTensorAlignElements == 0 &&
                       n.argmax_offset % kTensorAlignElements == 0 && n.mask_offset % kTensorAlignElements == 0 &&
                       n.stat_offset % kTensorAlignElements == 0,
                   "node " << n.spec.name << " offsets " << n.act_offset << " " << n.grad_offset << " "
                           << n.argmax_offset << " " << n.mask_offset << " " << n.stat_offset);
    }
    // Values go through the device block and come back in the packed order.
    Model m(spec, 1, backend_by_name("cpu"));
    Vec v(m.num_params()), b(m.num_buffer_floats());
    for (size_t k = 0; k < v.size(); ++k) v[k] = float(k) + 0.5f;
    for (size_t k = 0; k < b.size(); ++k) b[k] = float(k) * 2.f + 1.f;
    m.set_params(v.data(), v.size());
    m.set_momentum(v.data(), v.size());
    m.set_buffers(b.data(), b.size());
    DFL_EXPECT(m.get_params() == v && m.get_momentum() == v && m.get_buffers() == b, "packed round trip");
  }
}

DFL_TEST(teacher_logits_match_the_unfolded_eval_forward) {
  // Tolerance: folding reorders one multiply per weight and one per bias; relative 1e-5 of the
  // logits' scale covers float32 rounding of those products through a few layers.
  const std::vector<ModelSpec> specs = {folding_spec(), read_model_spec_json(fixture_path("model_step_spec.json"))};
  for (size_t si = 0; si < specs.size(); ++si) {
    Model m(specs[si], 3, backend_ptr());
    randomise(m, 40 + si);
    const int B = 5, NC = m.num_classes();
    Rng rng(9);
    const Vec x = randn(m.plan().input_per_sample() * B, rng);
    Vec want(size_t(B) * NC), got(size_t(B) * NC), again(size_t(B) * NC);
    m.forward_eval_unfolded(x.data(), B, want.data());
    const std::unique_ptr<Teacher> t = m.snapshot();
    t->forward(x.data(), B, got.data());
    double scale = 0;
    for (float v : want) scale = std::max(scale, double(std::fabs(v)));
    DFL_EXPECT_CLOSE(got.data(), want.data(), got.size(), 1e-5 * scale, 1e-5,
                     "teacher vs eval forward, spec " + std::to_string(si));
    // The snapshot is a copy: training the student further does not move the teacher.
    Vec p = m.get_params();
    for (float& v : p) v *= 0.5f;
    m.set_params(p.data(), p.size());
    t->forward(x.data(), B, again.data());
    DFL_EXPECT(std::memcmp(again.data(), got.data(), got.size() * sizeof(float)) == 0,
               "teacher changed with the student");
    // A teacher restored from its own weights computes the same logits.
    Teacher restored(specs[si], backend_ptr());
    const Vec tp = t->get_params(), tb = t->get_buffers();
    restored.set_params(tp.data(), tp.size());
    restored.set_buffers(tb.data(), tb.size());
    restored.forward(x.data(), B, again.data());
    DFL_EXPECT(std::memcmp(again.data(), got.data(), got.size() * sizeof(float)) == 0, "restored teacher differs");
    DFL_EXPECT(t->device_bytes() < m.device_bytes() / 4,
               "teacher holds " << t->device_bytes() << " bytes, student " << m.device_bytes());
  }
}

// The parameter gradients of a training forward of `spec` (B = 3, loss = dot(logits, r)) against
// central differences; conv and linear are linear in each weight, so the differences are exact up
// to rounding.
void expect_parameter_gradients(const ModelSpec& spec, uint64_t seed, const std::string& what) {
  Model m(spec, 5, backend_ptr());
  randomise(m, seed);
  const int B = 3, NC = m.num_classes();
  Rng rng(seed + 1);
  const Vec x = randn(m.plan().input_per_sample() * B, rng), r = randn(size_t(B) * NC, rng);
  Vec p = m.get_params(), logits(size_t(B) * NC);
  auto loss = [&] {
    m.set_params(p.data(), p.size());
    m.forward(x.data(), B, true, logits.data());
    return dot(logits.data(), r.data(), logits.size());
  };
  loss();
  m.backward(r.data());
  const Vec g = m.get_grads();
  DFL_GRADCHECK(what + ": parameter gradients", p, g, loss, 1e-2, 2e-3, 2e-3);
}

// Residual adds write a gradient slot they are the first to reach (a copy) or add to one already
// written: an add reading one node twice, an add reading the image (no gradient), an add whose
// input another add already reached. The model's parameter gradients against central differences.
DFL_TEST(residual_add_gradients_match_finite_differences) {
  ModelSpec s;
  s.in_channels = 3;
  s.height = s.width = 4;
  auto& n = s.nodes;
  n.push_back(node(Op::Input, {}));                 // 0
  n.push_back(conv(0, 3, 3, 1, 1, "c1", 1, true));  // 1
  n.push_back(node(Op::Add, {1, 1}));               // 2 one input twice
  n.push_back(node(Op::Add, {2, 0}));               // 3 the image: no gradient
  n.push_back(conv(3, 3, 3, 1, 1, "c2"));           // 4
  n.push_back(node(Op::Add, {4, 3}));               // 5 adds to 4's slot (6 started it), starts 3's
  n.push_back(node(Op::Add, {5, 4}));               // 6 (backward first) starts 5's slot and 4's
  n.push_back(node(Op::GlobalAvgPool, {6}));        // 7
  n.push_back(node(Op::Flatten, {7}));              // 8
  NodeSpec fc = node(Op::Linear, {8}, "fc");
  fc.out_features = 4;
  fc.bias = true;
  n.push_back(fc);  // 9
  expect_parameter_gradients(s, 51, "residual adds");
}

// Concat and shuffle write a gradient slot they are the first to reach (a split of the gradient, the
// inverse shuffle) or add to one already written: a concat reading one node twice and the image, a
// shuffle whose input an add reached first, and a concat of more than 32 inputs (whose slots the
// executor zeroes instead; one starts past the 32nd); and shuffles fused into the concat before them
// (equal chunks, one per group), whose inputs' slots it writes or adds to. Parameter gradients against
// central differences.
DFL_TEST(concat_and_shuffle_gradients_match_finite_differences) {
  std::vector<ModelSpec> specs(3);
  for (ModelSpec& s : specs) {
    s.in_channels = 3;
    s.height = s.width = 4;
  }
  auto& a = specs[0].nodes;
  a.push_back(node(Op::Input, {}));                 // 0
  a.push_back(conv(0, 4, 3, 1, 1, "c1", 1, true));  // 1
  a.push_back(node(Op::Concat, {1, 1}));            // 2: one input twice (8 channels)
  a.push_back(conv(2, 4, 3, 1, 1, "c2"));           // 3
  a.push_back(node(Op::Concat, {3, 2, 0}));         // 4: starts 3's and 2's slots; the image has none (15)
  NodeSpec sh3 = node(Op::Shuffle, {4});
  sh3.groups = 3;
  a.push_back(sh3);  // 5: starts 4's slot
  NodeSpec sh5 = node(Op::Shuffle, {5});
  sh5.groups = 5;
  a.push_back(sh5);                    // 6: 5's slot was started by the add
  a.push_back(node(Op::Add, {6, 5}));  // 7
  auto& b = specs[1].nodes;
  b.push_back(node(Op::Input, {}));       // 0
  b.push_back(conv(0, 2, 3, 1, 1, "a"));  // 1
  b.push_back(conv(0, 2, 3, 1, 1, "b"));  // 2
  NodeSpec wide = node(Op::Concat, std::vector<int>(33, 1));
  wide.inputs.push_back(2);  // input 33 starts 2's slot
  b.push_back(wide);         // 3
  auto& c = specs[2].nodes;
  c.push_back(node(Op::Input, {}));                 // 0
  c.push_back(conv(0, 4, 3, 1, 1, "c1", 1, true));  // 1
  c.push_back(node(Op::Concat, {1, 1}));            // 2: one input twice; shuffled as it is written
  NodeSpec sh2 = node(Op::Shuffle, {2});
  sh2.groups = 2;
  c.push_back(sh2);                        // 3: fused into 2
  c.push_back(conv(3, 4, 3, 1, 1, "c2"));  // 4
  c.push_back(node(Op::Concat, {4, 1}));   // 5: starts 4's and 1's slots
  NodeSpec sh5b = node(Op::Shuffle, {5});
  sh5b.groups = 2;
  c.push_back(sh5b);  // 6: fused into 5
  for (ModelSpec& s : specs) {
    const int last = int(s.nodes.size()) - 1;
    s.nodes.push_back(node(Op::GlobalAvgPool, {last}));
    s.nodes.push_back(node(Op::Flatten, {last + 1}));
    NodeSpec fc = node(Op::Linear, {last + 2}, "fc");
    fc.out_features = 4;
    fc.bias = true;
    s.nodes.push_back(fc);
  }
  const Plan fused = build_plan(specs[2]);
  DFL_EXPECT(fused.nodes[3].alias_of == 2 && fused.nodes[2].interleave_groups == 2 && fused.nodes[6].alias_of == 5 &&
                 fused.nodes[5].interleave_groups == 2,
             "a shuffle after a concat of one equal chunk per group is fused into it");
  const Plan unfused = build_plan(specs[0]);
  DFL_EXPECT(unfused.nodes[5].alias_of < 0 && unfused.nodes[4].interleave_groups == 0,
             "a concat of unequal chunks keeps its shuffle");
  for (size_t si = 0; si < specs.size(); ++si)
    expect_parameter_gradients(specs[si], 61, "concat/shuffle graph " + std::to_string(si));
}

// Fresh conv weights follow the model's ConvInit at construction and at a reset: torchvision's
// N(0, 2/fan_out) or nn.Conv2d's U(+-1/sqrt(fan_in)); linear layers keep PyTorch's default either way.
DFL_TEST(conv_init_kaiming_normal_or_pytorch_default_at_start_and_reset) {
  const ModelSpec spec = folding_spec();
  for (ConvInit ci : {ConvInit::KaimingNormal, ConvInit::PytorchDefault}) {
    Model m(spec, 7, backend_ptr(), ci);
    for (int pass = 0; pass < 2; ++pass) {
      const Vec p = m.get_params();
      for (const TensorView& t : m.params()) {
        if (t.kind != TensorKind::Weight || m.plan().nodes[t.node].op() != Op::Conv) continue;
        const double fan_in = double(t.shape[1]) * t.shape[2] * t.shape[3],
                     fan_out = double(t.shape[0]) * t.shape[2] * t.shape[3];
        double sum2 = 0, maxabs = 0;
        for (size_t k = 0; k < t.size; ++k) {
          sum2 += double(p[t.offset + k]) * p[t.offset + k];
          maxabs = std::max(maxabs, double(std::fabs(p[t.offset + k])));
        }
        const double var = sum2 / double(t.size);
        // Expected variance: 2/fan_out (normal) or bound^2/3 (uniform). On tensors of 150+ values a
        // sample variance within 50% of it is more than 4 standard errors wide (0.5 vs sqrt(2/150)).
        const double want = ci == ConvInit::KaimingNormal ? 2.0 / fan_out : 1.0 / (3.0 * fan_in);
        if (t.size >= 150)
          DFL_EXPECT(std::fabs(var / want - 1.0) < 0.5,
                     t.name << ": variance " << var << ", want " << want << (pass ? " after a reset" : ""));
        if (ci == ConvInit::PytorchDefault)
          DFL_EXPECT(maxabs <= 1.0 / std::sqrt(fan_in), t.name << ": " << maxabs << " outside the uniform bound");
      }
      std::vector<int> all(m.num_layers());
      for (int l = 0; l < m.num_layers(); ++l) all[l] = l;
      m.reinit_layers(all, 99, false, 0.f, 0.f);  // the second pass checks what a reset drew
    }
  }
}

DFL_TEST(eval_forward_runs_the_folded_copy_and_refolds_after_every_change) {
  Model m(folding_spec(), 3, backend_ptr());
  randomise(m, 60);
  const int B = 4, NC = m.num_classes();
  Rng rng(10);
  const Vec x = randn(m.plan().input_per_sample() * B, rng);
  Vec folded(size_t(B) * NC), unfolded(folded.size()), again(folded.size());
  auto check = [&](const char* after) {
    m.forward(x.data(), B, false, folded.data());
    m.forward_eval_unfolded(x.data(), B, unfolded.data());
    double scale = 0;
    for (float v : unfolded) scale = std::max(scale, double(std::fabs(v)));
    DFL_EXPECT_CLOSE(folded.data(), unfolded.data(), folded.size(), 1e-5 * scale, 1e-5,
                     std::string("eval after ") + after);
  };
  check("construction");
  Vec p = m.get_params();
  for (float& v : p) v *= 0.7f;
  m.set_params(p.data(), p.size());
  check("set_params");
  Vec b = m.get_buffers();
  for (float& v : b) v *= 1.3f;
  m.set_buffers(b.data(), b.size());
  check("set_buffers");
  m.forward(x.data(), B, true, again.data(), 1);  // moves the running statistics
  check("a training forward");
  const std::vector<int32_t> labels = {0, 1, 2, 3};
  m.train_step(x.data(), labels.data(), B, Distillation{}, LossConfig{}, SgdConfig{}, 2);
  check("a training step");
  m.reinit_layers({m.num_layers() - 1}, 5, false, 0.f, 0.f);
  check("a reset");
}

DFL_TEST(step_with_teacher_objects_equals_step_with_their_logits) {
  const ModelSpec spec = read_model_spec_json(fixture_path("model_step_spec.json"));
  const int B = 6, K = 3;
  Rng rng(5);
  const Vec x = randn(size_t(3) * 8 * 8 * B, rng);
  std::vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) labels[b] = int32_t(rng.below(5));
  Model a(spec, 1, backend_ptr()), b(spec, 1, backend_ptr());
  std::vector<std::unique_ptr<Teacher>> teachers;
  Vec logits;
  for (int k = 0; k < K; ++k) {
    Model src(spec, 100 + k, backend_ptr());
    randomise(src, 200 + k);
    teachers.push_back(src.snapshot());
    Vec l(size_t(B) * 5);
    teachers.back()->forward(x.data(), B, l.data());
    logits.insert(logits.end(), l.begin(), l.end());
  }
  LossConfig loss;
  loss.distill_weight = 0.7f;
  loss.temperature = 3.f;
  SgdConfig sgd;
  for (bool confidence : {false, true}) {
    Distillation with_teachers;
    for (auto& t : teachers) with_teachers.teachers.push_back(t.get());
    with_teachers.confidence_weights = confidence;
    Distillation with_logits;
    with_logits.teacher_logits_host = logits.data();
    with_logits.given_k = K;
    Vec w(size_t(K) * B);
    if (confidence) {
      ops::teacher_confidence(w.data(), logits.data(), K, B, 5, loss.temperature);
      with_logits.weights_host = w.data();
    }
    const StepStats sa = a.train_step(x.data(), labels.data(), B, with_teachers, loss, sgd, 11);
    const StepStats sb = b.train_step(x.data(), labels.data(), B, with_logits, loss, sgd, 11);
    DFL_EXPECT(sa.finite && sb.finite && sa.distill_loss > 0, "finite steps with a distillation loss");
    DFL_EXPECT(sa.loss == sb.loss && sa.distill_loss == sb.distill_loss, "losses " << sa.loss << " vs " << sb.loss);
    const Vec pa = a.get_params(), pb = b.get_params();
    DFL_EXPECT(std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)) == 0, "weights after the step differ");
  }
}

// The soft-target term (PS-KD, DLB) and the cross-entropy weight, against the loss and its gradient
// written out by hand: dlogits = c (softmax(z) - onehot) / B + w T (softmax(z/T) - softmax(t/T)) / R
// on the first R rows, from the logits of the same training forward (last_training_logits).
DFL_TEST(soft_targets_and_ce_weight_match_the_loss_written_out) {
  const ModelSpec spec = read_model_spec_json(fixture_path("model_step_spec.json"));
  const int B = 6, R = 4, NC = 5;
  const float c = 0.3f, w = 0.7f, T = 3.f;
  Rng rng(8);
  const Vec x = randn(size_t(3) * 8 * 8 * B, rng);
  const Vec targets = randn(size_t(R) * NC, rng);
  std::vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) labels[b] = int32_t(rng.below(NC));
  Model a(spec, 1, backend_ptr()), b(spec, 1, backend_ptr());
  randomise(a, 9);
  b.set_params(a.get_params().data(), a.num_params());
  b.set_buffers(a.get_buffers().data(), a.num_buffer_floats());
  LossConfig loss;
  loss.ce_weight = c;
  Distillation d;
  d.targets.logits_host = targets.data();
  d.targets.rows = R;
  d.targets.temperature = T;
  d.targets.weight = w;
  const StepStats st = a.train_step(x.data(), labels.data(), B, d, loss, SgdConfig{}, 13);
  Vec z(size_t(B) * NC), z_step(size_t(B) * NC);
  a.last_training_logits(z_step.data());
  b.forward(x.data(), B, true, z.data(), 13);
  DFL_EXPECT(std::memcmp(z.data(), z_step.data(), z.size() * sizeof(float)) == 0,
             "last_training_logits is the step's forward");
  auto softmax = [&](const float* v, double t, int cls) {
    double m = v[0] / t, s = 0;
    for (int k = 1; k < NC; ++k) m = std::max(m, v[k] / t);
    for (int k = 0; k < NC; ++k) s += std::exp(v[k] / t - m);
    return std::exp(v[cls] / t - m) / s;
  };
  Vec dlogits(size_t(B) * NC, 0.f);
  double ce = 0, kl = 0;
  for (int r = 0; r < B; ++r) {
    const float* zr = z.data() + size_t(r) * NC;
    ce -= std::log(softmax(zr, 1, labels[r])) / B;
    for (int k = 0; k < NC; ++k) {
      dlogits[size_t(r) * NC + k] = float(c * (softmax(zr, 1, k) - (k == labels[r] ? 1.0 : 0.0)) / B);
      if (r >= R) continue;
      const double p = softmax(targets.data() + size_t(r) * NC, T, k), q = softmax(zr, T, k);
      kl += T * T * p * std::log(p / q) / R;
      dlogits[size_t(r) * NC + k] += float(w * T * (q - p) / R);
    }
  }
  DFL_EXPECT(std::abs(st.ce_loss - ce) < 1e-5 && std::abs(st.target_loss - kl) < 1e-5,
             "ce " << st.ce_loss << " vs " << ce << ", target term " << st.target_loss << " vs " << kl);
  DFL_EXPECT(std::abs(st.loss - (c * ce + w * kl)) < 1e-5, "loss " << st.loss << " vs " << c * ce + w * kl);
  b.backward(dlogits.data());
  const Vec ga = a.get_grads(), gb = b.get_grads();
  double worst = 0, scale = 0;
  for (size_t i = 0; i < ga.size(); ++i) {
    worst = std::max(worst, double(std::abs(ga[i] - gb[i])));
    scale = std::max(scale, double(std::abs(gb[i])));
  }
  DFL_EXPECT(scale > 0 && worst <= 1e-5 * scale, "gradients differ by " << worst << " (largest " << scale << ")");
}

DFL_TEST(a_step_whose_update_overflows_is_refused_and_changes_nothing) {
  const ModelSpec spec = read_model_spec_json(fixture_path("model_step_spec.json"));
  Model m(spec, 2, backend_ptr());
  const int B = 4;
  Rng rng(6);
  const Vec x = randn(size_t(3) * 8 * 8 * B, rng);
  const std::vector<int32_t> labels = {0, 1, 2, 3};
  LossConfig loss;
  SgdConfig ok;
  ok.lr = 0.05f;
  m.train_step(x.data(), labels.data(), B, Distillation{}, loss, ok, 1);  // some momentum and BN history
  const Vec p0 = m.get_params(), m0 = m.get_momentum(), b0 = m.get_buffers();
  // Finite loss and gradients, but lr * step overflows float32.
  SgdConfig huge = ok;
  huge.lr = 3e38f;
  const StepStats st = m.train_step(x.data(), labels.data(), B, Distillation{}, loss, huge, 2);
  DFL_EXPECT(std::isfinite(st.loss) && std::isfinite(st.grad_norm), "loss and gradients are finite");
  DFL_EXPECT(!st.finite, "the overflowing update was reported finite");
  const Vec p1 = m.get_params(), m1 = m.get_momentum(), b1 = m.get_buffers();
  DFL_EXPECT(std::memcmp(p0.data(), p1.data(), p0.size() * sizeof(float)) == 0, "parameters changed");
  DFL_EXPECT(std::memcmp(m0.data(), m1.data(), m0.size() * sizeof(float)) == 0, "momentum changed");
  DFL_EXPECT(std::memcmp(b0.data(), b1.data(), b0.size() * sizeof(float)) == 0, "BN buffers changed");
  // And the model still trains normally afterwards.
  DFL_EXPECT(m.train_step(x.data(), labels.data(), B, Distillation{}, loss, ok, 3).finite, "a normal step after");
}

DFL_TEST(sgd_step_stays_finite_predicts_the_step) {
  Rng rng(21);
  const size_t n = 3000;
  Vec p = randn(n, rng), buf = randn(n, rng), g = randn(n, rng);
  SgdConfig cfg;
  for (float lr : {0.1f, 1e30f, 3e38f}) {
    for (bool nesterov : {true, false}) {
      cfg.lr = lr;
      cfg.nesterov = nesterov;
      const bool predicted = ops::sgd_step_stays_finite(p.data(), buf.data(), g.data(), nullptr, n, cfg);
      Vec p2 = p, b2 = buf;
      ops::sgd_step(p2.data(), b2.data(), g.data(), nullptr, n, cfg);
      bool finite = true;
      for (size_t i = 0; i < n; ++i) finite = finite && std::isfinite(p2[i]) && std::isfinite(b2[i]);
      DFL_EXPECT(predicted == finite, "lr " << lr << ": predicted " << predicted << ", step gave " << finite);
    }
  }
  g[17] = std::numeric_limits<float>::infinity();
  cfg.lr = 0.1f;
  DFL_EXPECT(!ops::sgd_step_stays_finite(p.data(), buf.data(), g.data(), nullptr, n, cfg), "an infinite gradient");
}

DFL_TEST(fold_batchnorm_matches_reference) {
  Rng rng(31);
  const int OC = 5;
  const size_t per = 7;
  const Vec w = randn(OC * per, rng), b = randn(OC, rng), g = randn(OC, rng), be = randn(OC, rng),
            mean = randn(OC, rng), var = randu(OC, rng, 0.1f, 3.f);
  Vec wo(OC * per), bo(OC), bo_nobias(OC), want_w(OC * per), want_b(OC), want_nb(OC);
  const float eps = 1e-3f;
  for (int oc = 0; oc < OC; ++oc) {
    const double s = double(g[oc]) / std::sqrt(double(var[oc]) + eps);
    for (size_t k = 0; k < per; ++k) want_w[oc * per + k] = float(w[oc * per + k] * s);
    want_b[oc] = float((double(b[oc]) - mean[oc]) * s + be[oc]);
    want_nb[oc] = float(-double(mean[oc]) * s + be[oc]);
  }
  ops::fold_batchnorm(wo.data(), bo.data(), w.data(), b.data(), g.data(), be.data(), mean.data(), var.data(), OC, per,
                      eps);
  DFL_EXPECT_CLOSE(wo.data(), want_w.data(), wo.size(), 1e-6, 1e-6, "folded weight");
  DFL_EXPECT_CLOSE(bo.data(), want_b.data(), bo.size(), 1e-6, 1e-6, "folded bias");
  ops::fold_batchnorm(wo.data(), bo_nobias.data(), w.data(), nullptr, g.data(), be.data(), mean.data(), var.data(), OC,
                      per, eps);
  DFL_EXPECT_CLOSE(bo_nobias.data(), want_nb.data(), bo.size(), 1e-6, 1e-6, "folded bias without a conv bias");
}

DFL_TEST(teacher_confidence_is_the_max_softmax) {
  Rng rng(41);
  const int K = 2, B = 3, NC = 4;
  const float T = 2.5f;
  const Vec z = randn(size_t(K) * B * NC, rng, 3.f);
  Vec w(size_t(K) * B);
  ops::teacher_confidence(w.data(), z.data(), K, B, NC, T);
  for (int r = 0; r < K * B; ++r) {
    double mx = -1e300, sum = 0;
    for (int c = 0; c < NC; ++c) mx = std::max(mx, double(z[r * NC + c]) / T);
    for (int c = 0; c < NC; ++c) sum += std::exp(double(z[r * NC + c]) / T - mx);
    DFL_EXPECT(std::fabs(w[r] - 1.0 / sum) < 1e-6, "row " << r << ": " << w[r] << " vs " << 1.0 / sum);
  }
}

DFL_TEST(step_helpers_reduce_count_and_accumulate) {
  Vec x = {1.f, -2.f, 3.f, 0.5f};
  DFL_EXPECT(ops::sum_squares(x.data(), x.size()) == 14.25, "sum of squares");
  DFL_EXPECT(ops::all_finite(x.data(), x.size()), "finite");
  x[2] = std::numeric_limits<float>::quiet_NaN();
  DFL_EXPECT(!ops::all_finite(x.data(), x.size()), "NaN is not finite");
  x[2] = -std::numeric_limits<float>::infinity();
  DFL_EXPECT(!ops::all_finite(x.data(), x.size()), "-inf is not finite");
  // Ties go to the first maximum, as argmax does.
  const Vec logits = {0.f, 2.f, 2.f, /**/ 5.f, 1.f, 0.f, /**/ 1.f, 1.f, 3.f};
  const std::vector<int32_t> labels = {1, 0, 1};
  DFL_EXPECT(ops::count_correct(logits.data(), labels.data(), 3, 3) == 2, "two rows correct");
  Vec acc = {1.f, 2.f}, src = {0.5f, -4.f};
  ops::accumulate(acc.data(), src.data(), 2);
  DFL_EXPECT(acc[0] == 1.5f && acc[1] == -2.f, "accumulate");
  ops::add_scalar(acc.data(), 1.f, 2);
  DFL_EXPECT(acc[0] == 2.5f && acc[1] == -1.f, "add_scalar");
}

DFL_TEST(op_table_names_round_trip_and_unknown_ops_fail) {
  Op op;
  for (const char* name : {"input", "conv", "bn", "linear", "relu", "relu6", "add", "concat", "flatten", "dropout",
                           "maxpool", "avgpool", "gap", "split", "shuffle"}) {
    DFL_EXPECT(op_from_name(name, &op), name);
    DFL_EXPECT(std::string(op_def(op).name) == name, name << " -> " << op_def(op).name);
  }
  DFL_EXPECT(!op_from_name("batchnorm", &op), "unknown op accepted");
}

}  // namespace dfl::test
