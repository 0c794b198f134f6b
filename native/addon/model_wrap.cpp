// The JavaScript Model class: a handle to a dfl::Model. Heavy calls (trainStep, forward) run in
// Napi::AsyncWorker off the event loop and return promises. A model is "busy" while a call runs:
// any other call on it, as student or teacher, fails fast instead of racing; dispose() while busy
// is safe because the worker holds its own reference to the model.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>

#include "addon/addon.h"
#include "addon/convert.h"
#include "core/model.h"

namespace dfl::addon {

namespace {

struct Handle {
  std::shared_ptr<Model> model;
  std::atomic<bool> busy{false};
};

// Marks handles busy for the lifetime of a call; releases on destruction (also on errors).
class BusyGuard {
 public:
  BusyGuard() = default;
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;
  ~BusyGuard() {
    for (auto& h : held_) h->busy.store(false);
  }
  void acquire(const Napi::Env& env, const std::shared_ptr<Handle>& h, const std::string& who) {
    if (!h->model) throw Napi::Error::New(env, "dfl-native: " + who + " was disposed; create a new Model");
    bool expected = false;
    if (!h->busy.compare_exchange_strong(expected, true))
      throw Napi::Error::New(env, "dfl-native: " + who + " is busy with another call (or listed twice); "
                                  "await the previous call before starting the next");
    held_.push_back(h);
  }

 private:
  std::vector<std::shared_ptr<Handle>> held_;
};

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit ModelWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<Handle> handle() const { return h_; }

 private:
  Model& model(const Napi::Env& env) const;  // throws if disposed or busy
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
  Napi::Value forward_sync(const Napi::CallbackInfo& info);
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value train_step(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);

  std::shared_ptr<Handle> h_ = std::make_shared<Handle>();
};

Model& ModelWrap::model(const Napi::Env& env) const {
  if (!h_->model) throw Napi::Error::New(env, "dfl-native: this Model was disposed; create a new Model");
  if (h_->busy.load())
    throw Napi::Error::New(env, "dfl-native: this Model is busy with a trainStep/forward call; await it first");
  return *h_->model;
}

Napi::Float32Array copy_out(const Napi::Env& env, const float* data, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), data, n * sizeof(float));
  return a;
}

// Checks a batch (B,C,H,W) against the model's input and returns B.
int batch_of(const Model& m, const Napi::Float32Array& x, const Napi::Value& b_value) {
  const ModelSpec& s = m.spec();
  const size_t per = static_cast<size_t>(s.in_channels) * s.height * s.width;
  const int B = static_cast<int>(integer(b_value, "batch", 1, 1 << 20));
  if (x.ElementLength() != per * static_cast<size_t>(B))
    throw Napi::RangeError::New(x.Env(), "Expected a Float32Array of length " + std::to_string(per * B) + " (batch " +
                                             std::to_string(B) + " x " + std::to_string(s.in_channels) + "x" +
                                             std::to_string(s.height) + "x" + std::to_string(s.width) +
                                             ") for x but received " + describe(x));
  return B;
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  const Napi::Env env = info.Env();
  guarded(env, [&] {
    const ModelSpec spec = model_spec(arg(info, 0));
    const uint64_t s = arg(info, 1).IsUndefined() ? 0 : seed(arg(info, 1), "seed");
    h_->model = std::make_shared<Model>(spec, s);
    return 0;
  });
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
  return o;
}

Napi::Value ModelWrap::tensors(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  Napi::Array out = Napi::Array::New(env);
  uint32_t k = 0;
  auto push = [&](const TensorView& t) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", t.name);
    Napi::Array shape = Napi::Array::New(env, t.shape.size());
    for (size_t d = 0; d < t.shape.size(); ++d) shape.Set(static_cast<uint32_t>(d), t.shape[d]);
    o.Set("shape", shape);
    o.Set("offset", static_cast<double>(t.offset));
    o.Set("size", static_cast<double>(t.size));
    o.Set("node", t.node);
    o.Set("layer", t.layer);
    o.Set("kind", t.kind == TensorKind::Weight ? "weight" : (t.kind == TensorKind::Bias ? "bias" : "buffer"));
    out.Set(k++, o);
  };
  for (const auto& t : m.params()) push(t);
  for (const auto& t : m.buffers()) push(t);
  return out;
}

Napi::Value ModelWrap::node_shapes(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  Napi::Array out = Napi::Array::New(env);
  for (size_t i = 0; i < m.spec().nodes.size(); ++i) {
    const auto& s = m.node_shape(static_cast<int>(i));
    Napi::Array a = Napi::Array::New(env, 3);
    for (uint32_t d = 0; d < 3; ++d) a.Set(d, s[d]);
    out.Set(static_cast<uint32_t>(i), a);
  }
  return out;
}

Napi::Value ModelWrap::get_params(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  return copy_out(info.Env(), m.param_data(), m.num_params());
}
Napi::Value ModelWrap::get_grads(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  return copy_out(info.Env(), m.grad_data(), m.num_params());
}
Napi::Value ModelWrap::get_momentum(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  return copy_out(info.Env(), m.momentum_data(), m.num_params());
}
Napi::Value ModelWrap::get_buffers(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  return copy_out(info.Env(), m.buffer_data(), m.num_buffer_floats());
}

namespace {
void set_from(const Napi::CallbackInfo& info, const char* name, size_t want, float* dst) {
  const Napi::Float32Array a = float32_array(arg(info, 0), name);
  if (a.ElementLength() != want)
    throw Napi::RangeError::New(info.Env(), "Expected a Float32Array of length " + std::to_string(want) + " for " +
                                                name + " but received " + describe(a));
  if (want) std::memcpy(dst, a.Data(), want * sizeof(float));
}
}  // namespace

Napi::Value ModelWrap::set_params(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  set_from(info, "params", m.num_params(), m.param_data());
  return info.Env().Undefined();
}
Napi::Value ModelWrap::set_momentum(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  set_from(info, "momentum", m.num_params(), m.momentum_data());
  return info.Env().Undefined();
}
Napi::Value ModelWrap::set_buffers(const Napi::CallbackInfo& info) {
  Model& m = model(info.Env());
  set_from(info, "buffers", m.num_buffer_floats(), m.buffer_data());
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
  if (mode != "reinit" && mode != "shrink-perturb") throw_expected(env, "'reinit' or 'shrink-perturb'", "mode", arg(info, 2));
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

// forwardSync(x, batch, training = false): logits (B,NC). For tests and tiny batches.
Napi::Value ModelWrap::forward_sync(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const Napi::Float32Array x = float32_array(arg(info, 0), "x");
  const int B = batch_of(m, x, arg(info, 1));
  const bool training = arg(info, 2).IsUndefined() ? false : boolean(arg(info, 2), "training");
  return guarded(env, [&] {
    const float* logits = m.forward(x.Data(), B, training);
    return copy_out(env, logits, static_cast<size_t>(B) * m.num_classes());
  });
}

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() final {
    try {
      run();
    } catch (const std::bad_alloc&) {
      SetError("dfl-native: out of memory; use a smaller batch size or model");
    } catch (const std::exception& e) {
      SetError(std::string("dfl-native: ") + e.what());
    }
  }
  void OnError(const Napi::Error& e) final { deferred_.Reject(e.Value()); }
  void OnOK() final { deferred_.Resolve(result(Env())); }

 protected:
  virtual void run() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;
  BusyGuard busy_;

 private:
  Napi::Promise::Deferred deferred_;
};

class ForwardWorker : public PromiseWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<Model> m, std::vector<float> x, int B)
      : PromiseWorker(env), m_(std::move(m)), x_(std::move(x)), B_(B) {}
  BusyGuard& busy() { return busy_; }

 protected:
  void run() override {
    const float* logits = m_->forward(x_.data(), B_, false);
    out_.assign(logits, logits + static_cast<size_t>(B_) * m_->num_classes());
  }
  Napi::Value result(Napi::Env env) override { return copy_out(env, out_.data(), out_.size()); }

 private:
  std::shared_ptr<Model> m_;
  std::vector<float> x_, out_;
  int B_;
};

// forward(x, batch): Promise<Float32Array> of eval-mode logits, off the event loop.
Napi::Value ModelWrap::forward(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const Napi::Float32Array x = float32_array(arg(info, 0), "x");
  const int B = batch_of(m, x, arg(info, 1));
  auto* w = new ForwardWorker(env, h_->model, std::vector<float>(x.Data(), x.Data() + x.ElementLength()), B);
  try {
    w->busy().acquire(env, h_, "this Model");
  } catch (...) {
    delete w;
    throw;
  }
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

class TrainStepWorker : public PromiseWorker {
 public:
  TrainStepWorker(Napi::Env env) : PromiseWorker(env) {}
  BusyGuard& busy() { return busy_; }
  std::shared_ptr<Model> student;
  std::vector<std::shared_ptr<Model>> teachers;
  std::vector<float> x, teacher_weights;
  std::vector<int32_t> labels;
  int B = 0;
  LossConfig loss;
  cpu::SgdConfig sgd;
  uint64_t dropout_seed = 0;
  bool confidence_weights = false;

 protected:
  void run() override {
    const int K = static_cast<int>(teachers.size());
    const int NC = student->num_classes();
    const size_t BN = static_cast<size_t>(B) * NC;
    teacher_logits_.resize(BN * K);
    for (int k = 0; k < K; ++k) {
      const float* t = teachers[k]->forward(x.data(), B, false);
      std::memcpy(teacher_logits_.data() + BN * k, t, BN * sizeof(float));
    }
    if (confidence_weights && K > 0) {
      // w[k,b] = max_c softmax(z_kb / T): each teacher counts by how sure it is on this sample.
      teacher_weights.resize(static_cast<size_t>(K) * B);
      for (int k = 0; k < K; ++k)
        for (int b = 0; b < B; ++b) {
          const float* z = teacher_logits_.data() + BN * k + static_cast<size_t>(b) * NC;
          const float zmax = *std::max_element(z, z + NC);
          double sum = 0.0;
          for (int c = 0; c < NC; ++c) sum += std::exp(double(z[c] - zmax) / loss.temperature);
          teacher_weights[static_cast<size_t>(k) * B + b] = static_cast<float>(1.0 / sum);
        }
    }
    student->set_dropout_seed(dropout_seed);
    stats_ = student->train_step(x.data(), labels.data(), B, K ? teacher_logits_.data() : nullptr,
                                 teacher_weights.empty() ? nullptr : teacher_weights.data(), K, loss, sgd);
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", stats_.loss);
    o.Set("ceLoss", stats_.ce_loss);
    o.Set("distillLoss", stats_.distill_loss);
    o.Set("correct", stats_.correct);
    o.Set("gradNorm", stats_.grad_norm);
    o.Set("finite", stats_.finite);
    return o;
  }

 private:
  std::vector<float> teacher_logits_;
  StepStats stats_;
};

// trainStep({x, labels, batch, teachers?, teacherWeights?, lr, momentum, weightDecay, nesterov,
//            decoupled, labelSmoothing, distillWeight, temperature, dropoutSeed}): Promise<stats>
Napi::Value ModelWrap::train_step(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Model& m = model(env);
  const Napi::Object o = object(arg(info, 0), "trainStep options");
  const Napi::Float32Array x = float32_array(field(o, "x"), "x");
  const int B = batch_of(m, x, field(o, "batch"));
  const Napi::Int32Array labels = int32_array(field(o, "labels"), "labels");
  if (labels.ElementLength() != static_cast<size_t>(B))
    throw Napi::RangeError::New(env, "Expected an Int32Array of length " + std::to_string(B) +
                                         " for labels but received " + describe(labels));
  for (size_t b = 0; b < labels.ElementLength(); ++b)
    if (labels[b] < 0 || labels[b] >= m.num_classes())
      throw Napi::RangeError::New(env, "Expected labels in [0, " + std::to_string(m.num_classes()) +
                                           ") but labels[" + std::to_string(b) + "] is " + std::to_string(labels[b]));
  auto* w = new TrainStepWorker(env);
  std::unique_ptr<TrainStepWorker> owner(w);  // until queued
  w->busy().acquire(env, h_, "this Model");
  const Napi::Value tv = field(o, "teachers");
  if (!tv.IsUndefined() && !tv.IsNull()) {
    if (!tv.IsArray()) throw_expected(env, "an array of Models", "teachers", tv);
    const Napi::Array ta = tv.As<Napi::Array>();
    auto* data = env.GetInstanceData<AddonData>();
    for (uint32_t k = 0; k < ta.Length(); ++k) {
      const std::string name = "teachers[" + std::to_string(k) + "]";
      const Napi::Value t = ta.Get(k);
      if (!t.IsObject() || !t.As<Napi::Object>().InstanceOf(data->model_ctor.Value()))
        throw_expected(env, "a Model", name, t);
      ModelWrap* tw = ModelWrap::Unwrap(t.As<Napi::Object>());
      w->busy().acquire(env, tw->handle(), name);
      const std::shared_ptr<Model>& tm = tw->handle()->model;
      const ModelSpec& ts = tm->spec();
      if (tm->num_classes() != m.num_classes() || ts.in_channels != m.spec().in_channels ||
          ts.height != m.spec().height || ts.width != m.spec().width)
        throw Napi::Error::New(env, "dfl-native: " + name + " has a different input or class count than the student");
      w->teachers.push_back(tm);
    }
  }
  const int K = static_cast<int>(w->teachers.size());
  const Napi::Value wv = field(o, "teacherWeights");
  if (!wv.IsUndefined() && !wv.IsNull() && K > 0) {
    const Napi::Float32Array tw = float32_array(wv, "teacherWeights");
    if (tw.ElementLength() != static_cast<size_t>(K) * B)
      throw Napi::RangeError::New(env, "Expected a Float32Array of length " + std::to_string(K * B) +
                                           " (teachers x batch) for teacherWeights but received " + describe(tw));
    w->teacher_weights.assign(tw.Data(), tw.Data() + tw.ElementLength());
    for (int b = 0; b < B; ++b) {
      double sum = 0.0;
      for (int k = 0; k < K; ++k) {
        const float v = w->teacher_weights[static_cast<size_t>(k) * B + b];
        if (!(v >= 0.f) || !std::isfinite(v))
          throw Napi::RangeError::New(env, "Expected finite non-negative teacherWeights but found " + std::to_string(v));
        sum += v;
      }
      if (!(sum > 0.0)) throw Napi::RangeError::New(env, "Expected teacherWeights with a positive sum for every sample");
    }
  }
  auto num = [&](const char* key, double dflt) {
    const Napi::Value v = field(o, key);
    return v.IsUndefined() ? dflt : number(v, key);
  };
  auto flag = [&](const char* key, bool dflt) {
    const Napi::Value v = field(o, key);
    return v.IsUndefined() ? dflt : boolean(v, key);
  };
  w->sgd.lr = static_cast<float>(num("lr", 0.1));
  w->sgd.momentum = static_cast<float>(num("momentum", 0.9));
  w->sgd.weight_decay = static_cast<float>(num("weightDecay", 5e-4));
  w->sgd.nesterov = flag("nesterov", true);
  w->sgd.decoupled = flag("decoupled", false);
  w->loss.label_smoothing = static_cast<float>(num("labelSmoothing", 0.0));
  w->loss.distill_weight = static_cast<float>(num("distillWeight", 1.0));
  w->loss.temperature = static_cast<float>(num("temperature", 4.0));
  if (w->loss.temperature <= 0.f) throw Napi::RangeError::New(env, "Expected temperature > 0");
  if (w->loss.label_smoothing < 0.f || w->loss.label_smoothing >= 1.f)
    throw Napi::RangeError::New(env, "Expected labelSmoothing in [0, 1)");
  w->confidence_weights = flag("confidenceWeights", false);
  if (w->confidence_weights && !w->teacher_weights.empty())
    throw Napi::Error::New(env, "dfl-native: give either teacherWeights or confidenceWeights, not both");
  const Napi::Value ds = field(o, "dropoutSeed");
  w->dropout_seed = ds.IsUndefined() ? 0 : seed(ds, "dropoutSeed");
  w->student = h_->model;
  w->x.assign(x.Data(), x.Data() + x.ElementLength());
  w->labels.assign(labels.Data(), labels.Data() + labels.ElementLength());
  w->B = B;
  Napi::Promise p = w->promise();
  owner.release()->Queue();
  return p;
}

Napi::Value ModelWrap::dispose(const Napi::CallbackInfo& info) {
  // A running worker keeps its own shared_ptr; the memory goes when it finishes.
  h_->model.reset();
  return info.Env().Undefined();
}

Napi::Value ModelWrap::disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !h_->model);
}

Napi::Function ModelWrap::define(Napi::Env env) {
  return DefineClass(env, "Model",
                     {InstanceMethod("info", &ModelWrap::info_), InstanceMethod("tensors", &ModelWrap::tensors),
                      InstanceMethod("nodeShapes", &ModelWrap::node_shapes),
                      InstanceMethod("getParams", &ModelWrap::get_params),
                      InstanceMethod("setParams", &ModelWrap::set_params),
                      InstanceMethod("getGrads", &ModelWrap::get_grads),
                      InstanceMethod("getBuffers", &ModelWrap::get_buffers),
                      InstanceMethod("setBuffers", &ModelWrap::set_buffers),
                      InstanceMethod("getMomentum", &ModelWrap::get_momentum),
                      InstanceMethod("setMomentum", &ModelWrap::set_momentum),
                      InstanceMethod("reinitLayers", &ModelWrap::reinit_layers),
                      InstanceMethod("forwardSync", &ModelWrap::forward_sync),
                      InstanceMethod("forward", &ModelWrap::forward),
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
