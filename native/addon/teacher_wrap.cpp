// The JavaScript Teacher class: an inference-only model (BN folded, no gradients or optimiser
// state) made by Model.snapshot(), or empty from a spec (new Teacher(spec, device)) for weights
// restored from a checkpoint. Its weights are in the folded layout of tensors().
#include "addon/addon.h"
#include "addon/convert.h"
#include "addon/images.h"

namespace dfl::addon {

namespace {

class TeacherWrap : public Napi::ObjectWrap<TeacherWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit TeacherWrap(const Napi::CallbackInfo& info);
  const std::shared_ptr<Handle<Teacher>>& handle() const { return h_; }

 private:
  Teacher& teacher(const Napi::Env& env) const { return ready(env, *h_, "Teacher"); }
  Napi::Value info_(const Napi::CallbackInfo& info);
  Napi::Value tensors(const Napi::CallbackInfo& info);
  Napi::Value get_params(const Napi::CallbackInfo& info);
  Napi::Value set_params(const Napi::CallbackInfo& info);
  Napi::Value get_buffers(const Napi::CallbackInfo& info);
  Napi::Value set_buffers(const Napi::CallbackInfo& info);
  Napi::Value forward_sync(const Napi::CallbackInfo& info);
  Napi::Value set_math(const Napi::CallbackInfo& info);
  Napi::Value math(const Napi::CallbackInfo& info);
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value forward_images(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);

  std::shared_ptr<Handle<Teacher>> h_ = std::make_shared<Handle<Teacher>>();
};

TeacherWrap::TeacherWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TeacherWrap>(info) {
  const Napi::Env env = info.Env();
  const Napi::Value first = arg(info, 0);
  if (first.IsExternal()) {  // from wrap_teacher
    h_->object = *first.As<Napi::External<std::shared_ptr<Teacher>>>().Data();
    return;
  }
  const ModelSpec spec = model_spec(first);
  std::shared_ptr<Backend> be = backend_arg(env, arg(info, 1));
  h_->object = guarded(env, [&] { return std::make_shared<Teacher>(spec, be); });
}

Napi::Value TeacherWrap::info_(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Teacher& t = teacher(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("numParams", static_cast<double>(t.plan().num_params));
  o.Set("numBufferFloats", static_cast<double>(t.plan().num_buffer_floats));
  o.Set("numClasses", t.num_classes());
  o.Set("deviceBytes", static_cast<double>(t.device_bytes()));
  o.Set("device", t.backend().name());
  return o;
}

Napi::Value TeacherWrap::tensors(const Napi::CallbackInfo& info) {
  const Plan& p = teacher(info.Env()).plan();
  return tensor_list(info.Env(), p.params, p.buffers);
}

Napi::Value TeacherWrap::get_params(const Napi::CallbackInfo& info) {
  const std::vector<float> v = teacher(info.Env()).get_params();
  return copy_out(info.Env(), v.data(), v.size());
}
Napi::Value TeacherWrap::get_buffers(const Napi::CallbackInfo& info) {
  const std::vector<float> v = teacher(info.Env()).get_buffers();
  return copy_out(info.Env(), v.data(), v.size());
}
Napi::Value TeacherWrap::set_params(const Napi::CallbackInfo& info) {
  Teacher& t = teacher(info.Env());
  const Napi::Float32Array a = sized_float32_array(arg(info, 0), "params", t.plan().num_params);
  guarded(info.Env(), [&] {
    t.set_params(a.Data(), a.ElementLength());
    return 0;
  });
  return info.Env().Undefined();
}
Napi::Value TeacherWrap::set_buffers(const Napi::CallbackInfo& info) {
  Teacher& t = teacher(info.Env());
  const Napi::Float32Array a = sized_float32_array(arg(info, 0), "buffers", t.plan().num_buffer_floats);
  guarded(info.Env(), [&] {
    t.set_buffers(a.Data(), a.ElementLength());
    return 0;
  });
  return info.Env().Undefined();
}

// forwardSync(x, batch): eval logits (B,NC). For tests and tiny batches.
// setMath({precision, deterministic}) / math(): as Model's (a snapshot starts with its model's mode).
Napi::Value TeacherWrap::set_math(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Teacher& t = teacher(env);
  const MathMode mode = math_mode(arg(info, 0));
  guarded(env, [&] { t.set_math(mode); });
  return env.Undefined();
}
Napi::Value TeacherWrap::math(const Napi::CallbackInfo& info) {
  return math_object(info.Env(), teacher(info.Env()).math());
}

Napi::Value TeacherWrap::forward_sync(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Teacher& t = teacher(env);
  const Napi::Float32Array x = float32_array(arg(info, 0), "x");
  const int B = batch_of(t.plan().spec, x, arg(info, 1));
  return guarded(env, [&] {
    std::vector<float> logits(size_t(B) * t.num_classes());
    t.forward(x.Data(), B, logits.data());
    return copy_out(env, logits.data(), logits.size());
  });
}

// forward(x, batch): Promise<Float32Array> of logits, off the event loop.
Napi::Value TeacherWrap::forward(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Teacher& t = teacher(env);
  const Napi::Float32Array x = float32_array(arg(info, 0), "x");
  const int B = batch_of(t.plan().spec, x, arg(info, 1));
  return ForwardWorker<Teacher>::queue(env, h_, x, B, "this Teacher");
}

// forwardImages(imageBatch): Promise<Float32Array> of logits of a batch made on the device.
Napi::Value TeacherWrap::forward_images(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  teacher(env);
  return ImagesForwardWorker<Teacher>::queue(env, h_, image_batch_arg(env, arg(info, 0)), "this Teacher");
}

Napi::Value TeacherWrap::dispose(const Napi::CallbackInfo& info) {
  h_->object.reset();  // a running worker keeps its own reference
  return info.Env().Undefined();
}
Napi::Value TeacherWrap::disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !h_->object);
}

Napi::Function TeacherWrap::define(Napi::Env env) {
  return DefineClass(
      env, "Teacher",
      {InstanceMethod("info", &TeacherWrap::info_), InstanceMethod("tensors", &TeacherWrap::tensors),
       InstanceMethod("getParams", &TeacherWrap::get_params), InstanceMethod("setParams", &TeacherWrap::set_params),
       InstanceMethod("getBuffers", &TeacherWrap::get_buffers), InstanceMethod("setBuffers", &TeacherWrap::set_buffers),
       InstanceMethod("forwardSync", &TeacherWrap::forward_sync), InstanceMethod("setMath", &TeacherWrap::set_math),
       InstanceMethod("math", &TeacherWrap::math), InstanceMethod("forward", &TeacherWrap::forward),
       InstanceMethod("forwardImages", &TeacherWrap::forward_images), InstanceMethod("dispose", &TeacherWrap::dispose),
       InstanceMethod("isDisposed", &TeacherWrap::disposed)});
}

}  // namespace

Napi::Object wrap_teacher(const Napi::Env& env, std::shared_ptr<Teacher> teacher) {
  auto* data = env.GetInstanceData<AddonData>();
  std::shared_ptr<Teacher> holder = std::move(teacher);
  // The External lives only for the constructor call, which copies the pointer out.
  return data->teacher_ctor.New({Napi::External<std::shared_ptr<Teacher>>::New(env, &holder)});
}

std::shared_ptr<Handle<Teacher>> teacher_handle(const Napi::Env& env, const Napi::Value& v, const std::string& name) {
  auto* data = env.GetInstanceData<AddonData>();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(data->teacher_ctor.Value()))
    throw_expected(env, "a Teacher (from model.snapshot())", name, v);
  return TeacherWrap::Unwrap(v.As<Napi::Object>())->handle();
}

Napi::Object init_teacher(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = TeacherWrap::define(env);
  data->teacher_ctor = Napi::Persistent(ctor);
  exports.Set("Teacher", ctor);
  return exports;
}

}  // namespace dfl::addon
