#include "addon/convert.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "core/ops.h"

namespace dfl::addon {

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return std::string("boolean ") + (v.As<Napi::Boolean>().Value() ? "true" : "false");
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    std::string s = std::isnan(d) ? "NaN" : (std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : "");
    if (s.empty()) {
      std::ostringstream os;
      os.precision(12);
      os << d;
      s = os.str();
    }
    return "number " + s;
  }
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.size() > 40) s = s.substr(0, 40) + "...";
    return "string '" + s + "'";
  }
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array",    "Uint8Array",    "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array",  "Int32Array",    "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    const auto t = v.As<Napi::TypedArray>();
    const int type = static_cast<int>(t.TypedArrayType());
    const char* name = (type >= 0 && type < 11) ? names[type] : "TypedArray";
    return std::string(name) + " of length " + std::to_string(t.ElementLength());
  }
  if (v.IsArray()) return "an array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsFunction()) return "a function";
  if (v.IsObject()) return "an object";
  return "a value of another type";
}

void throw_expected(const Napi::Env& env, const std::string& what, const std::string& name, const Napi::Value& got) {
  throw Napi::TypeError::New(env, "Expected " + what + " for " + name + " but received " + describe(got));
}

Napi::Value arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

namespace {
template <typename T>
T typed(const Napi::Value& v, napi_typedarray_type type, const char* what, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) throw_expected(v.Env(), what, name, v);
  return v.As<T>();
}
}  // namespace

Napi::Float32Array float32_array(const Napi::Value& v, const std::string& name) {
  return typed<Napi::Float32Array>(v, napi_float32_array, "a Float32Array", name);
}
Napi::Int32Array int32_array(const Napi::Value& v, const std::string& name) {
  return typed<Napi::Int32Array>(v, napi_int32_array, "an Int32Array", name);
}
Napi::Uint8Array uint8_array(const Napi::Value& v, const std::string& name) {
  return typed<Napi::Uint8Array>(v, napi_uint8_array, "a Uint8Array", name);
}

double number(const Napi::Value& v, const std::string& name) {
  if (!v.IsNumber()) throw_expected(v.Env(), "a finite number", name, v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw_expected(v.Env(), "a finite number", name, v);
  return d;
}

int64_t integer(const Napi::Value& v, const std::string& name, int64_t lo, int64_t hi) {
  const std::string what = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (!v.IsNumber()) throw_expected(v.Env(), what, name, v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < double(lo) || d > double(hi))
    throw_expected(v.Env(), what, name, v);
  return static_cast<int64_t>(d);
}

bool boolean(const Napi::Value& v, const std::string& name) {
  if (!v.IsBoolean()) throw_expected(v.Env(), "a boolean", name, v);
  return v.As<Napi::Boolean>().Value();
}

std::string string(const Napi::Value& v, const std::string& name) {
  if (!v.IsString()) throw_expected(v.Env(), "a string", name, v);
  return v.As<Napi::String>().Utf8Value();
}

uint64_t seed(const Napi::Value& v, const std::string& name) {
  return static_cast<uint64_t>(integer(v, name, 0, (int64_t(1) << 53) - 1));
}

Napi::Value field(const Napi::Object& obj, const char* key) { return obj.Get(key); }

Napi::Object object(const Napi::Value& v, const std::string& name) {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray() || v.IsFunction()) throw_expected(v.Env(), "an object", name, v);
  return v.As<Napi::Object>();
}

ModelSpec model_spec(const Napi::Value& v) {
  const Napi::Env env = v.Env();
  const Napi::Object o = object(v, "spec");
  ModelSpec spec;
  constexpr int64_t kMaxDim = 1 << 20;
  spec.in_channels = static_cast<int>(integer(field(o, "in_channels"), "spec.in_channels", 1, 4096));
  spec.height = static_cast<int>(integer(field(o, "height"), "spec.height", 1, 16384));
  spec.width = static_cast<int>(integer(field(o, "width"), "spec.width", 1, 16384));
  const Napi::Value nodes_v = field(o, "nodes");
  if (!nodes_v.IsArray()) throw_expected(env, "an array of nodes", "spec.nodes", nodes_v);
  const Napi::Array nodes = nodes_v.As<Napi::Array>();
  if (nodes.Length() > 100000) throw_expected(env, "at most 100000 nodes", "spec.nodes", nodes_v);
  for (uint32_t i = 0; i < nodes.Length(); ++i) {
    const std::string where = "spec.nodes[" + std::to_string(i) + "]";
    const Napi::Object n = object(nodes.Get(i), where);
    NodeSpec ns;
    const Napi::Value op = field(n, "op");
    if (!op_from_name(string(op, where + ".op"), &ns.op))
      throw_expected(env, "one of " + op_names(), where + ".op", op);
    const Napi::Value name = field(n, "name");
    if (!name.IsUndefined()) ns.name = string(name, where + ".name");
    const Napi::Value inputs = field(n, "inputs");
    if (!inputs.IsUndefined()) {
      if (!inputs.IsArray()) throw_expected(env, "an array of node indices", where + ".inputs", inputs);
      const Napi::Array a = inputs.As<Napi::Array>();
      for (uint32_t k = 0; k < a.Length(); ++k)
        ns.inputs.push_back(static_cast<int>(integer(a.Get(k), where + ".inputs[" + std::to_string(k) + "]", 0, i)));
    }
    auto opt_int = [&](const char* key, int& dst, int64_t lo, int64_t hi) {
      const Napi::Value val = field(n, key);
      if (!val.IsUndefined()) dst = static_cast<int>(integer(val, where + "." + key, lo, hi));
    };
    auto opt_float = [&](const char* key, float& dst) {
      const Napi::Value val = field(n, key);
      if (!val.IsUndefined()) dst = static_cast<float>(number(val, where + "." + key));
    };
    opt_int("out_channels", ns.out_channels, 1, kMaxDim);
    opt_int("kernel_h", ns.kernel_h, 1, 1024);
    opt_int("kernel_w", ns.kernel_w, 1, 1024);
    opt_int("stride_h", ns.stride_h, 1, 1024);
    opt_int("stride_w", ns.stride_w, 1, 1024);
    opt_int("pad_h", ns.pad_h, 0, 1024);
    opt_int("pad_w", ns.pad_w, 0, 1024);
    opt_int("groups", ns.groups, 1, kMaxDim);
    opt_int("out_features", ns.out_features, 1, kMaxDim);
    opt_int("index", ns.index, 0, 1024);
    opt_float("eps", ns.eps);
    opt_float("momentum", ns.momentum);
    opt_float("p", ns.p);
    const Napi::Value bias = field(n, "bias");
    if (!bias.IsUndefined()) ns.bias = boolean(bias, where + ".bias");
    const Napi::Value sizes = field(n, "sizes");
    if (!sizes.IsUndefined()) {
      if (!sizes.IsArray()) throw_expected(env, "an array of channel counts", where + ".sizes", sizes);
      const Napi::Array a = sizes.As<Napi::Array>();
      if (a.Length() > 1024) throw_expected(env, "at most 1024 sizes", where + ".sizes", sizes);
      for (uint32_t k = 0; k < a.Length(); ++k)
        ns.sizes.push_back(
            static_cast<int>(integer(a.Get(k), where + ".sizes[" + std::to_string(k) + "]", 1, kMaxDim)));
    }
    spec.nodes.push_back(std::move(ns));
  }
  return spec;
}

Napi::Float32Array sized_float32_array(const Napi::Value& v, const std::string& name, size_t n) {
  const Napi::Float32Array a = float32_array(v, name);
  if (a.ElementLength() != n)
    throw Napi::RangeError::New(v.Env(), "Expected a Float32Array of length " + std::to_string(n) + " for " + name +
                                             " but received " + describe(a));
  return a;
}

int batch_of(const ModelSpec& s, const Napi::Float32Array& x, const Napi::Value& b_value) {
  const size_t per = static_cast<size_t>(s.in_channels) * s.height * s.width;
  const int B = static_cast<int>(integer(b_value, "batch", 1, 1 << 20));
  if (x.ElementLength() != per * static_cast<size_t>(B))
    throw Napi::RangeError::New(x.Env(), "Expected a Float32Array of length " + std::to_string(per * B) + " (batch " +
                                             std::to_string(B) + " x " + std::to_string(s.in_channels) + "x" +
                                             std::to_string(s.height) + "x" + std::to_string(s.width) +
                                             ") for x but received " + describe(x));
  return B;
}

Napi::Array tensor_list(const Napi::Env& env, const std::vector<TensorView>& params,
                        const std::vector<TensorView>& buffers) {
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
  for (const auto& t : params) push(t);
  for (const auto& t : buffers) push(t);
  return out;
}

MathMode math_mode(const Napi::Value& v) {
  const Napi::Object o = object(v, "math");
  MathMode m;
  if (const Napi::Value p = field(o, "precision"); !p.IsUndefined()) {
    const std::string name = string(p, "math.precision");
    if (name != "fp32" && name != "bf16") throw_expected(v.Env(), "one of fp32, bf16", "math.precision", p);
    m.bf16 = name == "bf16";
  }
  if (const Napi::Value d = field(o, "deterministic"); !d.IsUndefined())
    m.nondeterministic = !boolean(d, "math.deterministic");
  return m;
}

Napi::Object math_object(const Napi::Env& env, const MathMode& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("precision", m.bf16 ? "bf16" : "fp32");
  o.Set("deterministic", !m.nondeterministic);
  return o;
}

}  // namespace dfl::addon
