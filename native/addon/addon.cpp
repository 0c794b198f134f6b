// Module registration only; the work lives in model_wrap.cpp (the Model class), teacher_wrap.cpp
// (the Teacher class), kernels_wrap.cpp (batch preparation, runtime information) and
// images_wrap.cpp (DeviceImages, resident image sets).
#include "addon/addon.h"
#include "core/parallel.h"

namespace dfl::addon {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Every parallel loop, whichever thread calls it, runs on the one compute thread (parallel.h).
  route_parallel_work_to_compute_thread();
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  init_model(env, exports, data);
  init_teacher(env, exports, data);
  init_kernels(env, exports);
  init_images(env, exports, data);
  return exports;
}

}  // namespace dfl::addon

static Napi::Object InitDflNative(Napi::Env env, Napi::Object exports) { return dfl::addon::Init(env, exports); }
NODE_API_MODULE(dfl_native, InitDflNative)
