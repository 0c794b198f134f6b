// Per-environment addon state (worker threads each load their own copy of the addon) and the
// registration functions of each file.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "addon/handles.h"
#include "core/backend.h"
#include "core/model.h"

namespace dfl::addon {

struct AddonData {
  Napi::FunctionReference model_ctor;
  Napi::FunctionReference teacher_ctor;
  Napi::FunctionReference images_ctor;
};

Napi::Object init_model(Napi::Env env, Napi::Object exports, AddonData* data);
Napi::Object init_teacher(Napi::Env env, Napi::Object exports, AddonData* data);
Napi::Object init_kernels(Napi::Env env, Napi::Object exports);
Napi::Object init_images(Napi::Env env, Napi::Object exports, AddonData* data);

// The backend named by a `device` argument ('cpu' when undefined); throws a JavaScript error with
// the reason when it is unknown or not usable here.
std::shared_ptr<Backend> backend_arg(const Napi::Env& env, const Napi::Value& device);
// A JavaScript Teacher around a native one (Model.snapshot()).
Napi::Object wrap_teacher(const Napi::Env& env, std::shared_ptr<Teacher> teacher);
// The handle of a JavaScript Teacher, or a TypeError naming `name`.
std::shared_ptr<Handle<Teacher>> teacher_handle(const Napi::Env& env, const Napi::Value& v, const std::string& name);

}  // namespace dfl::addon
