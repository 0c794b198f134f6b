// Per-environment addon state (worker threads each load their own copy of the addon).
#pragma once
#include <napi.h>

namespace dfl::addon {

struct AddonData {
  Napi::FunctionReference model_ctor;
};

Napi::Object init_model(Napi::Env env, Napi::Object exports, AddonData* data);
Napi::Object init_kernels(Napi::Env env, Napi::Object exports);

}  // namespace dfl::addon
