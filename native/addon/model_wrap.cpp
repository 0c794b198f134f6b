// The JavaScript Model class: a handle to a dfl::Model (the student) on a backend. Heavy calls
// (trainStep, forward) run in Napi::AsyncWorker off the event loop and return promises. A model or
// teacher is "busy" while a call runs: any other call on it fails fast instead of racing. Every
// argument is checked here, once; the core below keeps only cheap asserts.
#include <cmath>
#include <memory>

#include "addon/addon.h"
#include "addon/convert.h"
#include "addon/images.h"

namespace dfl::addon {

std::shared_ptr<Backend> backend_arg(const Napi::Env& env, const Napi::Value& device) {
  const std::string name = device.IsUndefined() ? "cpu" : string(device, "device");
  return guarded(env, [&] { return backend_by_name(name); });
}

namespace {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit ModelWrap(const Napi::CallbackInfo& info);

 private:
  Model& model(const Napi::Env& env) const { return ready(env, *h_, "Model"); }
  Napi::Value info_(const Napi::CallbackInfo& info);
  Napi::Value tensors(const Napi::CallbackInfo& info);
  Napi::Value node_shapes(const Napi::CallbackInfo& info);
  Napi::Value get_params(const Napi::CallbackInfo& info);
  Napi::Value set_params(const Napi::CallbackInfo& info);
  Napi::Value get_grads(const Napi::CallbackInfo& info);
  Napi::Value get_buffers(const Napi::CallbackInfo& info);
  Napi::Value set_buffers(const Napi::CallbackInfo& info);
  Napi::Value get_momentum(const Napi::CallbackInfo& info);
  Napi::Value set_momentum(const Napi::CallbackInfo& info);
  Napi::Value reinit_layers(const Napi::CallbackInfo& info);
  Napi::Value snapshot(const Napi::CallbackInfo& info);
  Napi::Value set_profiling(const Napi::CallbackInfo& info);
  Napi::Value set_math(const Napi::CallbackInfo& info);
  Napi::Value math(const Napi::CallbackInfo& info);
  Napi::Value profile(const Napi::CallbackInfo& info);
  Napi::Value forward_sync(const Napi::CallbackInfo& info);
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value forward_images(const Napi::CallbackInfo& info);
  Napi::Value memory_plan(const Napi::CallbackInfo& info);
  Napi::Value train_step(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);

  std::shared_ptr<Handle<Model>> h_ = std::make_shared<Handle<Model>>();
};

// new Model(spec, seed = 0, device = 'cpu', convInit = 'kaiming-normal')
ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  const Napi::Env env = info.Env();
  const ModelSpec spec = model_spec(arg(info, 0));
  const uint64_t s = arg(info, 1).IsUndefined() ? 0 : seed(arg(info, 1), "seed");
  std::shared_ptr<Backend> be = backend_arg(env, arg(info, 2));
  ConvInit conv_init = ConvInit::KaimingNormal;
  if (const Napi::Value ci = arg(info, 3); !ci.IsUndefined()) {
    const std::string name = string(ci, "convInit");
    if (name == "pytorch-default") {
      conv_init = ConvInit::PytorchDefault;
    } else if (name != "kaiming-normal") {
      throw_expected(env, "one of kaiming-normal, pytorch-default", "convInit", ci);
    }
  }
  h_->object = guarded(env, [&] { return std::make_shared<Model>(spec, s, be, conv_init); });
}

Napi::Value ModelWrap::info_(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("numParams", static_cast<double>(m.num_params()));
  o.Set("numBufferFloats", static_cast<double>(m.num_buffer_floats()));
  o.Set("numClasses", m.num_classes());
  o.Set("numLayers", m.num_layers());
  o.Set("macsPerImage", static_cast<double>(m.macs_per_image()));
  o.Set("deviceBytes", static_cast<double>(m.device_bytes()));
  o.Set("device", m.backend().name());
  return o;
}

Napi::Value ModelWrap::tensors(const Napi::CallbackInfo& info) {
  const Model& m = model(info.Env());
  return tensor_list(info.Env(), m.params(), m.buffers());
}

Napi::Value ModelWrap::node_shapes(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  Napi::Array out = Napi::Array::New(env);
  for (size_t i = 0; i < m.plan().nodes.size(); ++i) {
    const auto& s = m.plan().nodes[i].shape;
    Napi::Array a = Napi::Array::New(env, 3);
    for (uint32_t d = 0; d < 3; ++d) a.Set(d, s[d]);
    out.Set(static_cast<uint32_t>(i), a);
  }
  return out;
}

Napi::Value ModelWrap::get_params(const Napi::CallbackInfo& info) {
  const std::vector<float> v = model(info.Env()).get_params();
  return copy_out(info.Env(), v.data(), v.size());
}
Napi::Value ModelWrap::get_grads(const Napi::CallbackInfo& info) {
  const std::vector<float> v = model(info.Env()).get_grads();
  return copy_out(info.Env(), v.data(), v.size());
}
Napi::Value ModelWrap::get_momentum(const Napi::CallbackInfo& info) {
  const std::vector<float> v = model(info.Env()).get_momentum();
  return copy_out(info.Env(), v.data(), v.size());
}
Napi::Value ModelWrap::get_buffers(const Napi::CallbackInfo& info) {
  const std::vector<float> v = model(info.Env()).get_buffers();
  return copy_out(info.Env(), v.data(), v.size());
}
Napi::Value ModelWrap::set_params(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  const Napi::Float32Array a = sized_float32_array(arg(info, 0), "params", m.num_params());
  guarded(info.Env(), [&] {
    m.set_params(a.Data(), a.ElementLength());
    return 0;
  });
  return info.Env().Undefined();
}
Napi::Value ModelWrap::set_momentum(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  const Napi::Float32Array a = sized_float32_array(arg(info, 0), "momentum", m.num_params());
  guarded(info.Env(), [&] {
    m.set_momentum(a.Data(), a.ElementLength());
    return 0;
  });
  return info.Env().Undefined();
}
Napi::Value ModelWrap::set_buffers(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  const Napi::Float32Array a = sized_float32_array(arg(info, 0), "buffers", m.num_buffer_floats());
  guarded(info.Env(), [&] {
    m.set_buffers(a.Data(), a.ElementLength());
    return 0;
  });
  return info.Env().Undefined();
}

// reinitLayers(layers: number[], seed, mode: 'reinit' | 'shrink-perturb', shrink?, perturb?)
Napi::Value ModelWrap::reinit_layers(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const Napi::Value lv = arg(info, 0);
  if (!lv.IsArray()) throw_expected(env, "an array of layer indices", "layers", lv);
  const Napi::Array la = lv.As<Napi::Array>();
  std::vector<int> layers;
  for (uint32_t i = 0; i < la.Length(); ++i)
    layers.push_back(static_cast<int>(integer(la.Get(i), "layers[" + std::to_string(i) + "]", 0, m.num_layers() - 1)));
  const uint64_t s = seed(arg(info, 1), "seed");
  const std::string mode = string(arg(info, 2), "mode");
  if (mode != "reinit" && mode != "shrink-perturb")
    throw_expected(env, "'reinit' or 'shrink-perturb'", "mode", arg(info, 2));
  float shrink = 0.f, perturb = 0.f;
  if (mode == "shrink-perturb") {
    shrink = static_cast<float>(number(arg(info, 3), "shrink"));
    perturb = static_cast<float>(number(arg(info, 4), "perturb"));
  }
  guarded(env, [&] {
    m.reinit_layers(layers, s, mode == "shrink-perturb", shrink, perturb);
    return 0;
  });
  return env.Undefined();
}

// snapshot(): a Teacher holding the current weights (BN folded), copied on the device.
Napi::Value ModelWrap::snapshot(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  std::shared_ptr<Teacher> t = guarded(env, [&] { return std::shared_ptr<Teacher>(m.snapshot()); });
  return wrap_teacher(env, std::move(t));
}

// setProfiling(on): time every node's forward/backward and the step's phases from now on (clears
// what was gathered). Costs a synchronisation per node.
Napi::Value ModelWrap::set_profiling(const Napi::CallbackInfo& info) {
  model(info.Env()).set_profiling(boolean(arg(info, 0), "on"));
  return info.Env().Undefined();
}

// setMath({precision: 'fp32' | 'bf16', deterministic}): how convolutions and linear layers are computed
// from now on (snapshots taken after inherit it); throws when the backend cannot (bf16 on the CPU).
Napi::Value ModelWrap::set_math(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const MathMode mode = math_mode(arg(info, 0));
  guarded(env, [&] { m.set_math(mode); });
  return env.Undefined();
}
Napi::Value ModelWrap::math(const Napi::CallbackInfo& info) {
  return math_object(info.Env(), model(info.Env()).math());
}

// profile(): {steps, forwards, teachersMs, lossMs, updateMs, transferMs, nodes: [{node, forwardMs, backwardMs}]}
Napi::Value ModelWrap::profile(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const StepProfile& p = model(env).profile();
  Napi::Object o = Napi::Object::New(env);
  o.Set("steps", static_cast<double>(p.steps));
  o.Set("forwards", static_cast<double>(p.forwards));
  o.Set("teachersMs", p.teachers_ms);
  o.Set("lossMs", p.loss_ms);
  o.Set("updateMs", p.update_ms);
  o.Set("transferMs", p.transfer_ms);
  Napi::Array nodes = Napi::Array::New(env);
  for (size_t i = 1; i < p.forward_ms.size(); ++i) {
    Napi::Object n = Napi::Object::New(env);
    n.Set("node", static_cast<double>(i));
    n.Set("forwardMs", p.forward_ms[i]);
    n.Set("backwardMs", p.backward_ms[i]);
    nodes.Set(nodes.Length(), n);
  }
  o.Set("nodes", nodes);
  return o;
}

// forwardSync(x, batch, training = false): logits (B,NC). For tests and tiny batches.
Napi::Value ModelWrap::forward_sync(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const Napi::Float32Array x = float32_array(arg(info, 0), "x");
  const int B = batch_of(m.spec(), x, arg(info, 1));
  const bool training = arg(info, 2).IsUndefined() ? false : boolean(arg(info, 2), "training");
  return guarded(env, [&] {
    std::vector<float> logits(size_t(B) * m.num_classes());
    m.forward(x.Data(), B, training, logits.data());
    return copy_out(env, logits.data(), logits.size());
  });
}

// forward(x, batch): Promise<Float32Array> of eval-mode logits, off the event loop.
Napi::Value ModelWrap::forward(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const Napi::Float32Array x = float32_array(arg(info, 0), "x");
  const int B = batch_of(m.spec(), x, arg(info, 1));
  return ForwardWorker<Model>::queue(env, h_, x, B, "this Model");
}

class TrainStepWorker : public PromiseWorker {
 public:
  explicit TrainStepWorker(Napi::Env env) : PromiseWorker(env) {}
  std::shared_ptr<Model> student;
  std::vector<std::shared_ptr<Teacher>> teachers;
  std::vector<float> x, teacher_weights, target_logits;
  HostImageBatch images;  // instead of x: a batch made on the device from resident images
  std::vector<int32_t> labels;
  int B = 0;
  bool confidence_weights = false;
  SoftTargets targets;  // logits_host points into target_logits once queued
  bool want_logits = false;
  LossConfig loss;
  SgdConfig sgd;
  uint64_t dropout_seed = 0;

 protected:
  void run() override {
    Distillation d;
    for (const auto& t : teachers) d.teachers.push_back(t.get());
    d.weights_host = teacher_weights.empty() ? nullptr : teacher_weights.data();
    d.confidence_weights = confidence_weights;
    d.targets = targets;
    d.targets.logits_host = target_logits.empty() ? nullptr : target_logits.data();
    stats_ = images.images ? student->train_step(images.view(), labels.data(), d, loss, sgd, dropout_seed)
                           : student->train_step(x.data(), labels.data(), B, d, loss, sgd, dropout_seed);
    if (want_logits) {
      logits_.resize(size_t(B) * student->num_classes());
      student->last_training_logits(logits_.data());
    }
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", stats_.loss);
    o.Set("ceLoss", stats_.ce_loss);
    o.Set("distillLoss", stats_.distill_loss);
    o.Set("targetLoss", stats_.target_loss);
    if (want_logits) o.Set("logits", copy_out(env, logits_.data(), logits_.size()));
    o.Set("correct", stats_.correct);
    o.Set("gradNorm", stats_.grad_norm);
    o.Set("finite", stats_.finite);
    return o;
  }

 private:
  StepStats stats_;
  std::vector<float> logits_;
};

// trainStep({x, labels, batch, teachers?, teacherWeights?, confidenceWeights?, lr, momentum,
//            weightDecay, nesterov, decoupled, labelSmoothing, distillWeight, temperature,
//            ceWeight?, targets?: {logits, rows, temperature, weight}, returnLogits?,
//            dropoutSeed}): Promise<stats>. The fields without ? are required. Instead of x and batch, `images` (an image batch, see
// addon/images.h) makes the batch on the device from resident images. returnLogits: stats.logits
// holds the training forward's logits (B,NC).
Napi::Value ModelWrap::train_step(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const Napi::Object o = object(arg(info, 0), "trainStep options");
  const Napi::Value iv = field(o, "images");
  HostImageBatch images;
  Napi::Float32Array x;
  int B = 0;
  if (!iv.IsUndefined() && !iv.IsNull()) {
    images = image_batch_arg(env, iv);
    B = images.B();
  } else {
    x = float32_array(field(o, "x"), "x");
    B = batch_of(m.spec(), x, field(o, "batch"));
  }
  const Napi::Int32Array labels = int32_array(field(o, "labels"), "labels");
  if (labels.ElementLength() != static_cast<size_t>(B))
    throw Napi::RangeError::New(
        env, "Expected an Int32Array of length " + std::to_string(B) + " for labels but received " + describe(labels));
  for (size_t b = 0; b < labels.ElementLength(); ++b)
    if (labels[b] < 0 || labels[b] >= m.num_classes())
      throw Napi::RangeError::New(env, "Expected labels in [0, " + std::to_string(m.num_classes()) + ") but labels[" +
                                           std::to_string(b) + "] is " + std::to_string(labels[b]));
  auto w = std::make_unique<TrainStepWorker>(env);
  w->busy().acquire(env, h_, "this Model");
  const Napi::Value tv = field(o, "teachers");
  if (!tv.IsUndefined() && !tv.IsNull()) {
    if (!tv.IsArray()) throw_expected(env, "an array of Teachers", "teachers", tv);
    const Napi::Array ta = tv.As<Napi::Array>();
    for (uint32_t k = 0; k < ta.Length(); ++k) {
      const std::string name = "teachers[" + std::to_string(k) + "]";
      const std::shared_ptr<Handle<Teacher>> th = teacher_handle(env, ta.Get(k), name);
      w->busy().acquire(env, th, name);
      const Teacher& t = *th->object;
      const ModelSpec& ts = t.plan().spec;
      if (t.num_classes() != m.num_classes() || ts.in_channels != m.spec().in_channels ||
          ts.height != m.spec().height || ts.width != m.spec().width)
        throw Napi::Error::New(env, "dfl-native: " + name + " has a different input or class count than the student");
      if (&t.backend() != &m.backend())
        throw Napi::Error::New(env, "dfl-native: " + name + " lives on the " + t.backend().name() +
                                        " device but the student on " + m.backend().name() +
                                        "; snapshot teachers from the student");
      w->teachers.push_back(th->object);
    }
  }
  const int K = static_cast<int>(w->teachers.size());
  const Napi::Value wv = field(o, "teacherWeights");
  if (!wv.IsUndefined() && !wv.IsNull() && K > 0) {
    const Napi::Float32Array tw = sized_float32_array(wv, "teacherWeights (teachers x batch)", size_t(K) * B);
    w->teacher_weights.assign(tw.Data(), tw.Data() + tw.ElementLength());
    for (int b = 0; b < B; ++b) {
      double sum = 0.0;
      for (int k = 0; k < K; ++k) {
        const float v = w->teacher_weights[static_cast<size_t>(k) * B + b];
        if (!(v >= 0.f) || !std::isfinite(v))
          throw Napi::RangeError::New(env,
                                      "Expected finite non-negative teacherWeights but found " + std::to_string(v));
        sum += v;
      }
      if (!(sum > 0.0))
        throw Napi::RangeError::New(env, "Expected teacherWeights with a positive sum for every sample");
    }
  }
  // Every hyperparameter is given by the caller (the config's defaults live in src/config.ts
  // only): a missing one is a TypeError naming it. Their values were validated there too; what is
  // checked here protects memory (sizes, indices) or keeps the kernels' preconditions.
  auto num = [&](const char* key) { return static_cast<float>(number(field(o, key), key)); };
  auto flag = [&](const char* key) { return boolean(field(o, key), key); };
  // An optional part of a step: absent means not used.
  auto optional_flag = [&](const char* key) {
    const Napi::Value v = field(o, key);
    return v.IsUndefined() ? false : boolean(v, key);
  };
  w->sgd.lr = num("lr");
  w->sgd.momentum = num("momentum");
  w->sgd.weight_decay = num("weightDecay");
  w->sgd.nesterov = flag("nesterov");
  w->sgd.decoupled = flag("decoupled");
  w->loss.label_smoothing = num("labelSmoothing");
  w->loss.distill_weight = num("distillWeight");
  w->loss.temperature = num("temperature");
  // the kernels divide the logits by T (the core asserts T > 0 too, but on the worker thread)
  if (w->loss.temperature <= 0.f) throw Napi::RangeError::New(env, "Expected temperature > 0");
  // ceWeight belongs to the soft targets (PS-KD): absent, the cross-entropy has its plain weight 1
  const Napi::Value cw = field(o, "ceWeight");
  w->loss.ce_weight = cw.IsUndefined() ? 1.f : static_cast<float>(number(cw, "ceWeight"));
  const Napi::Value tgv = field(o, "targets");
  if (!tgv.IsUndefined() && !tgv.IsNull()) {
    const Napi::Object tg = object(tgv, "targets");
    const Napi::Value rv = field(tg, "rows");
    const double rows = number(rv, "targets.rows");
    if (!(rows >= 1 && rows <= B) || rows != std::floor(rows))
      throw Napi::RangeError::New(
          env, "Expected an integer in [1, " + std::to_string(B) + "] for targets.rows but received " + describe(rv));
    w->targets.rows = static_cast<int>(rows);
    const Napi::Float32Array tl = sized_float32_array(field(tg, "logits"), "targets.logits (rows x classes)",
                                                      size_t(w->targets.rows) * m.num_classes());
    for (size_t i = 0; i < tl.ElementLength(); ++i)
      if (!std::isfinite(tl[i]))
        throw Napi::RangeError::New(env, "Expected finite targets.logits but found " + std::to_string(tl[i]));
    w->target_logits.assign(tl.Data(), tl.Data() + tl.ElementLength());
    w->targets.temperature = static_cast<float>(number(field(tg, "temperature"), "targets.temperature"));
    w->targets.weight = static_cast<float>(number(field(tg, "weight"), "targets.weight"));
    if (!(w->targets.temperature > 0.f)) throw Napi::RangeError::New(env, "Expected targets.temperature > 0");
  }
  w->want_logits = optional_flag("returnLogits");
  w->confidence_weights = optional_flag("confidenceWeights") && K > 0;
  if (w->confidence_weights && !w->teacher_weights.empty())
    throw Napi::Error::New(env, "dfl-native: give either teacherWeights or confidenceWeights, not both");
  w->dropout_seed = seed(field(o, "dropoutSeed"), "dropoutSeed");
  w->student = h_->object;
  if (images.images)
    w->images = std::move(images);
  else
    w->x.assign(x.Data(), x.Data() + x.ElementLength());
  w->labels.assign(labels.Data(), labels.Data() + labels.ElementLength());
  w->B = B;
  Napi::Promise p = w->promise();
  w.release()->Queue();
  return p;
}

// forwardImages(imageBatch): Promise<Float32Array> of eval-mode logits of a batch made on the device.
Napi::Value ModelWrap::forward_images(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  model(env);
  return ImagesForwardWorker<Model>::queue(env, h_, image_batch_arg(env, arg(info, 0)), "this Model");
}

// memoryPlan(batch, teachers): bytes a step of that size needs on the model's device, by part, and
// what the device has ({weights, activations, workspace, teachers, total, available, availableSource}).
Napi::Value ModelWrap::memory_plan(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const int B = int(integer(arg(info, 0), "batch", 1, 1 << 20));
  const int K = int(integer(arg(info, 1), "teachers", 0, 1 << 16));
  const MemoryPlan p = guarded(env, [&] { return m.memory_plan(B, K); });
  Napi::Object o = Napi::Object::New(env);
  o.Set("weights", p.weights);
  o.Set("activations", p.activations);
  o.Set("workspace", p.workspace);
  o.Set("teachers", p.teachers);
  o.Set("total", p.total());
  o.Set("available", p.available);
  o.Set("availableSource", p.available_source);
  return o;
}

Napi::Value ModelWrap::dispose(const Napi::CallbackInfo& info) {
  h_->object.reset();  // a running worker keeps its own reference; the memory goes when it finishes
  return info.Env().Undefined();
}

Napi::Value ModelWrap::disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !h_->object); }

Napi::Function ModelWrap::define(Napi::Env env) {
  return DefineClass(env, "Model",
                     {InstanceMethod("info", &ModelWrap::info_),
                      InstanceMethod("tensors", &ModelWrap::tensors),
                      InstanceMethod("nodeShapes", &ModelWrap::node_shapes),
                      InstanceMethod("getParams", &ModelWrap::get_params),
                      InstanceMethod("setParams", &ModelWrap::set_params),
                      InstanceMethod("getGrads", &ModelWrap::get_grads),
                      InstanceMethod("getBuffers", &ModelWrap::get_buffers),
                      InstanceMethod("setBuffers", &ModelWrap::set_buffers),
                      InstanceMethod("getMomentum", &ModelWrap::get_momentum),
                      InstanceMethod("setMomentum", &ModelWrap::set_momentum),
                      InstanceMethod("reinitLayers", &ModelWrap::reinit_layers),
                      InstanceMethod("snapshot", &ModelWrap::snapshot),
                      InstanceMethod("setProfiling", &ModelWrap::set_profiling),
                      InstanceMethod("setMath", &ModelWrap::set_math),
                      InstanceMethod("math", &ModelWrap::math),
                      InstanceMethod("profile", &ModelWrap::profile),
                      InstanceMethod("forwardSync", &ModelWrap::forward_sync),
                      InstanceMethod("forward", &ModelWrap::forward),
                      InstanceMethod("forwardImages", &ModelWrap::forward_images),
                      InstanceMethod("memoryPlan", &ModelWrap::memory_plan),
                      InstanceMethod("trainStep", &ModelWrap::train_step),
                      InstanceMethod("dispose", &ModelWrap::dispose),
                      InstanceMethod("isDisposed", &ModelWrap::disposed)});
}

}  // namespace

Napi::Object init_model(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = ModelWrap::define(env);
  data->model_ctor = Napi::Persistent(ctor);
  exports.Set("Model", ctor);
  return exports;
}

}  // namespace dfl::addon
