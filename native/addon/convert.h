// JavaScript <-> C++ conversions and argument checks for the addon. Every value from JavaScript is
// checked here, at the boundary, with errors in one style:
//   "Expected <what> for <name> but received <value description>".
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/model.h"

namespace dfl::addon {

// Describes a JS value for error messages: "a string", "undefined", "Float64Array(12)", "-3", ...
std::string describe(const Napi::Value& v);
[[noreturn]] void throw_expected(const Napi::Env& env, const std::string& what, const std::string& name,
                                 const Napi::Value& got);

Napi::Value arg(const Napi::CallbackInfo& info, size_t i);
Napi::Float32Array float32_array(const Napi::Value& v, const std::string& name);
Napi::Int32Array int32_array(const Napi::Value& v, const std::string& name);
Napi::Uint8Array uint8_array(const Napi::Value& v, const std::string& name);
double number(const Napi::Value& v, const std::string& name);
// An integer in [lo, hi].
int64_t integer(const Napi::Value& v, const std::string& name, int64_t lo, int64_t hi);
bool boolean(const Napi::Value& v, const std::string& name);
std::string string(const Napi::Value& v, const std::string& name);
// A seed: an integer in [0, 2^53).
uint64_t seed(const Napi::Value& v, const std::string& name);
// The value of key in obj, or undefined.
Napi::Value field(const Napi::Object& obj, const char* key);
Napi::Object object(const Napi::Value& v, const std::string& name);

ModelSpec model_spec(const Napi::Value& v);

// {precision: 'fp32' | 'bf16', deterministic: boolean}, each optional (fp32, true), as a MathMode.
MathMode math_mode(const Napi::Value& v);
Napi::Object math_object(const Napi::Env& env, const MathMode& m);

// A Float32Array of exactly n elements, or a RangeError naming `name`.
Napi::Float32Array sized_float32_array(const Napi::Value& v, const std::string& name, size_t n);
// Checks a batch x (B,C,H,W) against the spec's input and returns B (from b_value).
int batch_of(const ModelSpec& spec, const Napi::Float32Array& x, const Napi::Value& b_value);
// [{name, shape, offset, size, node, layer, kind}] for params then buffers.
Napi::Array tensor_list(const Napi::Env& env, const std::vector<TensorView>& params,
                        const std::vector<TensorView>& buffers);

// Runs f, turning C++ exceptions (dfl::Error, std::bad_alloc, ...) into JavaScript errors.
template <typename F>
auto guarded(const Napi::Env& env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "dfl-native: out of memory; use a smaller batch size or model");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("dfl-native: ") + e.what());
  }
}

}  // namespace dfl::addon
