// The JavaScript DeviceImages class: new DeviceImages(images: Uint8Array, count, channels, height,
// width, device = 'cpu'), the images copied to the device once; and the image-batch argument.
#include <cmath>

#include "addon/addon.h"
#include "addon/convert.h"
#include "addon/images.h"
#include "core/augment_draws.h"

namespace dfl::addon {

namespace {

class DeviceImagesWrap : public Napi::ObjectWrap<DeviceImagesWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(
        env, "DeviceImages",
        {InstanceMethod("info", &DeviceImagesWrap::info_), InstanceMethod("dispose", &DeviceImagesWrap::dispose),
         InstanceMethod("isDisposed", &DeviceImagesWrap::disposed)});
  }
  explicit DeviceImagesWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceImagesWrap>(info) {
    const Napi::Env env = info.Env();
    const Napi::Uint8Array a = uint8_array(arg(info, 0), "images");
    const int N = int(integer(arg(info, 1), "count", 1, INT32_MAX));
    const int C = int(integer(arg(info, 2), "channels", 1, 4096));
    const int H = int(integer(arg(info, 3), "height", 1, 16384));
    const int W = int(integer(arg(info, 4), "width", 1, 16384));
    const size_t n = size_t(N) * C * H * W;
    if (a.ElementLength() != n)
      throw Napi::RangeError::New(env, "Expected a Uint8Array of " + std::to_string(n) + " bytes (" +
                                           std::to_string(N) + " images) for images but received " + describe(a));
    std::shared_ptr<Backend> be = backend_arg(env, arg(info, 5));
    images_ = guarded(env, [&] { return std::make_shared<DeviceImages>(be, a.Data(), N, C, H, W); });
  }
  const std::shared_ptr<DeviceImages>& images(const Napi::Env& env) const {
    if (!images_) throw Napi::Error::New(env, "dfl-native: these DeviceImages were disposed");
    return images_;
  }

 private:
  Napi::Value info_(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    const DeviceImages& im = *images(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("count", im.count());
    o.Set("channels", im.channels());
    o.Set("height", im.height());
    o.Set("width", im.width());
    o.Set("deviceBytes", double(im.device_bytes()));
    o.Set("device", im.backend().name());
    return o;
  }
  // Running workers keep their own reference: the memory goes when the last one finishes.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    images_.reset();
    return info.Env().Undefined();
  }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !images_); }
  std::shared_ptr<DeviceImages> images_;
};

}  // namespace

HostImageBatch image_batch_arg(const Napi::Env& env, const Napi::Value& v) {
  const Napi::Object o = object(v, "image batch");
  const Napi::Value iv = field(o, "images");
  const Napi::FunctionReference& ctor = env.GetInstanceData<AddonData>()->images_ctor;
  if (!iv.IsObject() || !iv.As<Napi::Object>().InstanceOf(ctor.Value()))
    throw_expected(env, "a DeviceImages", "images", iv);
  HostImageBatch b;
  b.images = DeviceImagesWrap::Unwrap(iv.As<Napi::Object>())->images(env);
  const Napi::Int32Array idx = int32_array(field(o, "indices"), "indices");
  if (idx.ElementLength() == 0) throw Napi::RangeError::New(env, "Expected at least one index in indices");
  b.indices.assign(idx.Data(), idx.Data() + idx.ElementLength());
  for (size_t k = 0; k < b.indices.size(); ++k)
    if (b.indices[k] < 0 || b.indices[k] >= b.images->count())
      throw Napi::RangeError::New(env, "Expected indices in [0, " + std::to_string(b.images->count()) +
                                           ") but indices[" + std::to_string(k) + "] is " +
                                           std::to_string(b.indices[k]));
  const int C = b.images->channels();
  const Napi::Float32Array mean = sized_float32_array(field(o, "mean"), "mean", size_t(C));
  const Napi::Float32Array stdv = sized_float32_array(field(o, "std"), "std", size_t(C));
  for (int c = 0; c < C; ++c)
    if (!std::isfinite(mean[c]) || !(stdv[c] > 0.f) || !std::isfinite(stdv[c]))
      throw Napi::RangeError::New(env, "Expected finite mean and positive finite std for every channel but channel " +
                                           std::to_string(c) + " has mean " + std::to_string(mean[c]) + " and std " +
                                           std::to_string(stdv[c]) +
                                           " (give --mean and --std, one value per channel, std > 0)");
  b.mean.assign(mean.Data(), mean.Data() + C);
  b.stdv.assign(stdv.Data(), stdv.Data() + C);
  const Napi::Value av = field(o, "augment");
  if (!av.IsUndefined() && !av.IsNull()) {
    const Napi::Object a = object(av, "augment");
    b.pad = int(integer(field(a, "pad"), "augment.pad", 0, 1024));
    const bool flip = boolean(field(a, "flip"), "augment.flip");
    Rng rng(seed(field(a, "seed"), "augment.seed"));
    b.draws.resize(b.indices.size());
    guarded(env, [&] {
      augment_draws(b.draws.data(), b.B(), b.pad, flip, rng);
      return 0;
    });
  }
  return b;
}

Napi::Object init_images(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function f = DeviceImagesWrap::define(env);
  data->images_ctor = Napi::Persistent(f);
  exports.Set("DeviceImages", f);
  return exports;
}

}  // namespace dfl::addon
