#include "fixtures.h"

#include "core/ops.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace dfl::test {

namespace {

[[noreturn]] void error(const std::string& path, const std::string& msg) {
  throw std::runtime_error("fixture " + path + ": " + msg +
                           " (regenerate with /usr/bin/python3 scripts/fixtures/make_fixtures.py)");
}

uint32_t read_u32_le(const unsigned char* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) error(path, "cannot open the file");
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

std::string fixture_path(const std::string& file) { return std::string(DFL_FIXTURE_DIR) + "/" + file; }

Fixture Fixture::open(const std::string& file) {
  Fixture fx;
  fx.load(fixture_path(file));
  return fx;
}

void Fixture::load(const std::string& path) {
  path_ = path;
  tensors_.clear();
  const std::vector<unsigned char> buf = read_file(path);
  size_t pos = 0;
  auto need = [&](size_t n, const std::string& what) {
    if (buf.size() - pos < n)
      error(path, "truncated at byte " + std::to_string(pos) + " reading " + what + " (file has " +
                      std::to_string(buf.size()) + " bytes)");
  };
  auto u32 = [&](const std::string& what) {
    need(4, what);
    const uint32_t v = read_u32_le(buf.data() + pos);
    pos += 4;
    return v;
  };
  need(8, "the magic");
  if (std::memcmp(buf.data(), "DFLFIX1\0", 8) != 0) error(path, "bad magic (not a DFLFIX1 fixture)");
  pos = 8;
  const uint32_t version = u32("the version");
  if (version != 1) error(path, "unsupported version " + std::to_string(version) + " (this reader knows 1)");
  const uint32_t count = u32("the tensor count");
  for (uint32_t t = 0; t < count; ++t) {
    const std::string where = "tensor #" + std::to_string(t);
    const uint32_t name_len = u32(where + " name length");
    need(name_len, where + " name");
    std::string name(reinterpret_cast<const char*>(buf.data() + pos), name_len);
    pos += name_len;
    Tensor ten;
    ten.dtype = u32("tensor '" + name + "' dtype");
    if (ten.dtype > 1) error(path, "tensor '" + name + "' has unknown dtype " + std::to_string(ten.dtype));
    const uint32_t ndim = u32("tensor '" + name + "' ndim");
    if (ndim > 8) error(path, "tensor '" + name + "' has " + std::to_string(ndim) + " dims");
    size_t n = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      const uint32_t dim = u32("tensor '" + name + "' dims");
      ten.dims.push_back(static_cast<int>(dim));
      n *= dim;
    }
    need(n * 4, "tensor '" + name + "' data");
    const unsigned char* p = buf.data() + pos;
    if (ten.dtype == 0) {
      ten.f.resize(n);
      for (size_t k = 0; k < n; ++k) {
        const uint32_t bits = read_u32_le(p + 4 * k);
        std::memcpy(&ten.f[k], &bits, 4);
      }
    } else {
      ten.i.resize(n);
      for (size_t k = 0; k < n; ++k) ten.i[k] = static_cast<int32_t>(read_u32_le(p + 4 * k));
    }
    pos += n * 4;
    if (!tensors_.emplace(name, std::move(ten)).second) error(path, "duplicate tensor '" + name + "'");
  }
  if (pos != buf.size()) error(path, std::to_string(buf.size() - pos) + " trailing bytes after the last tensor");
}

std::vector<std::string> Fixture::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const Fixture::Tensor& Fixture::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) error(path_, "has no tensor '" + name + "'");
  return it->second;
}

const std::vector<float>& Fixture::f(const std::string& name) const {
  const Tensor& t = get(name);
  if (t.dtype != 0) error(path_, "tensor '" + name + "' is int32, not float32");
  return t.f;
}

const std::vector<int32_t>& Fixture::i(const std::string& name) const {
  const Tensor& t = get(name);
  if (t.dtype != 1) error(path_, "tensor '" + name + "' is float32, not int32");
  return t.i;
}

const std::vector<int>& Fixture::dims(const std::string& name) const { return get(name).dims; }

size_t Fixture::numel(const std::string& name) const {
  const Tensor& t = get(name);
  return t.dtype == 0 ? t.f.size() : t.i.size();
}

float Fixture::scalar(const std::string& name) const {
  const Tensor& t = get(name);
  const size_t n = t.dtype == 0 ? t.f.size() : t.i.size();
  if (n != 1) error(path_, "tensor '" + name + "' has " + std::to_string(n) + " elements, expected a scalar");
  return t.dtype == 0 ? t.f[0] : static_cast<float>(t.i[0]);
}

int Fixture::cfg_int(const std::string& key) const {
  const float v = cfg(key);
  if (v != std::floor(v)) error(path_, "cfg." + key + " = " + std::to_string(v) + " is not an integer");
  return static_cast<int>(v);
}

// ------------------------------------------------------------------------------------------------
// A minimal JSON reader for model spec files.
namespace {

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;
  const Json* find(const std::string& key) const {
    for (const auto& kv : obj)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}
  Json parse() {
    Json v = value();
    ws();
    if (p_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& msg) {
    throw std::runtime_error(path_ + ": JSON error at byte " + std::to_string(p_) + ": " + msg);
  }
  void ws() {
    while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) ++p_;
  }
  bool lit(const char* w) {
    const size_t n = std::strlen(w);
    if (s_.compare(p_, n, w) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }
  Json value() {
    ws();
    if (p_ >= s_.size()) fail("unexpected end");
    Json v;
    const char c = s_[p_];
    if (c == '{') {
      v.kind = Json::Object;
      ++p_;
      ws();
      if (p_ < s_.size() && s_[p_] == '}') {
        ++p_;
        return v;
      }
      for (;;) {
        ws();
        if (p_ >= s_.size() || s_[p_] != '"') fail("expected a key string");
        std::string key = string();
        ws();
        if (p_ >= s_.size() || s_[p_] != ':') fail("expected ':'");
        ++p_;
        v.obj.emplace_back(std::move(key), value());
        ws();
        if (p_ < s_.size() && s_[p_] == ',') {
          ++p_;
          continue;
        }
        if (p_ < s_.size() && s_[p_] == '}') {
          ++p_;
          return v;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::Array;
      ++p_;
      ws();
      if (p_ < s_.size() && s_[p_] == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        v.arr.push_back(value());
        ws();
        if (p_ < s_.size() && s_[p_] == ',') {
          ++p_;
          continue;
        }
        if (p_ < s_.size() && s_[p_] == ']') {
          ++p_;
          return v;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Json::String;
      v.str = string();
      return v;
    }
    if (lit("true")) {
      v.kind = Json::Bool;
      v.b = true;
      return v;
    }
    if (lit("false")) {
      v.kind = Json::Bool;
      return v;
    }
    if (lit("null")) return v;
    const char* begin = s_.c_str() + p_;
    char* end = nullptr;
    v.num = std::strtod(begin, &end);
    if (end == begin) fail("unexpected character");
    v.kind = Json::Number;
    p_ += static_cast<size_t>(end - begin);
    return v;
  }
  std::string string() {
    ++p_;  // opening quote
    std::string out;
    while (p_ < s_.size() && s_[p_] != '"') {
      if (s_[p_] == '\\') {
        ++p_;
        if (p_ >= s_.size()) break;
        const char e = s_[p_];
        if (e == 'n')
          out += '\n';
        else if (e == 't')
          out += '\t';
        else if (e == 'u')
          fail("\\u escapes are not supported in spec files");
        else
          out += e;
      } else {
        out += s_[p_];
      }
      ++p_;
    }
    if (p_ >= s_.size()) fail("unterminated string");
    ++p_;
    return out;
  }
  const std::string& s_;
  std::string path_;
  size_t p_ = 0;
};

}  // namespace

ModelSpec read_model_spec_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open model spec " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const Json root = JsonParser(text, path).parse();
  auto bad = [&](const std::string& msg) { throw std::runtime_error(path + ": " + msg); };
  if (root.kind != Json::Object) bad("the spec must be a JSON object");
  auto num = [&](const Json& o, const char* key, double dflt, bool required) {
    const Json* v = o.find(key);
    if (!v) {
      if (required) bad(std::string("missing '") + key + "'");
      return dflt;
    }
    if (v->kind == Json::Bool) return v->b ? 1.0 : 0.0;
    if (v->kind != Json::Number) bad(std::string("'") + key + "' must be a number");
    return v->num;
  };
  auto ints = [&](const Json& o, const char* key) {
    std::vector<int> out;
    const Json* v = o.find(key);
    if (!v) return out;
    if (v->kind != Json::Array) bad(std::string("'") + key + "' must be an array");
    for (const Json& e : v->arr) {
      if (e.kind != Json::Number) bad(std::string("'") + key + "' must hold numbers");
      out.push_back(static_cast<int>(e.num));
    }
    return out;
  };
  ModelSpec spec;
  spec.in_channels = static_cast<int>(num(root, "in_channels", 0, true));
  spec.height = static_cast<int>(num(root, "height", 0, true));
  spec.width = static_cast<int>(num(root, "width", 0, true));
  const Json* nodes = root.find("nodes");
  if (!nodes || nodes->kind != Json::Array) bad("'nodes' must be an array");
  for (const Json& n : nodes->arr) {
    if (n.kind != Json::Object) bad("every node must be an object");
    NodeSpec ns;
    const Json* op = n.find("op");
    if (!op || op->kind != Json::String) bad("every node needs an 'op' string");
    if (!dfl::op_from_name(op->str, &ns.op)) bad("unknown op '" + op->str + "'");
    if (const Json* name = n.find("name")) {
      if (name->kind != Json::String) bad("'name' must be a string");
      ns.name = name->str;
    }
    ns.inputs = ints(n, "inputs");
    ns.out_channels = static_cast<int>(num(n, "out_channels", ns.out_channels, false));
    ns.kernel_h = static_cast<int>(num(n, "kernel_h", ns.kernel_h, false));
    ns.kernel_w = static_cast<int>(num(n, "kernel_w", ns.kernel_w, false));
    ns.stride_h = static_cast<int>(num(n, "stride_h", ns.stride_h, false));
    ns.stride_w = static_cast<int>(num(n, "stride_w", ns.stride_w, false));
    ns.pad_h = static_cast<int>(num(n, "pad_h", ns.pad_h, false));
    ns.pad_w = static_cast<int>(num(n, "pad_w", ns.pad_w, false));
    ns.groups = static_cast<int>(num(n, "groups", ns.groups, false));
    ns.bias = num(n, "bias", ns.bias ? 1 : 0, false) != 0;
    ns.out_features = static_cast<int>(num(n, "out_features", ns.out_features, false));
    ns.eps = static_cast<float>(num(n, "eps", ns.eps, false));
    ns.momentum = static_cast<float>(num(n, "momentum", ns.momentum, false));
    ns.p = static_cast<float>(num(n, "p", ns.p, false));
    ns.sizes = ints(n, "sizes");
    ns.index = static_cast<int>(num(n, "index", ns.index, false));
    spec.nodes.push_back(std::move(ns));
  }
  return spec;
}

}  // namespace dfl::test
