// Reader for the PyTorch golden fixtures in test/fixtures/ (written by scripts/fixtures/make_fixtures.py).
//
// Format (DFLFIX version 1, little-endian): magic "DFLFIX1\0" (8 bytes); uint32 version = 1;
// uint32 tensor count; per tensor: uint32 name length, name bytes (UTF-8), uint32 dtype
// (0 = float32, 1 = int32), uint32 ndim, ndim x uint32 dims, raw data (C order). Scalars such as
// configuration values are 1-element float32 tensors named "cfg.<what>".
//
// Usage:
//   Fixture fx = Fixture::open("conv2d_basic.bin");        // relative to DFL_FIXTURE_DIR
//   const std::vector<float>& x = fx.f("inp");  int stride = fx.cfg_int("stride_h");
// Every error (missing file, bad magic, truncated data, unknown tensor, wrong dtype) throws
// std::runtime_error naming the file and the tensor.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/model.h"

#ifndef DFL_FIXTURE_DIR
#define DFL_FIXTURE_DIR "test/fixtures"
#endif

namespace dfl::test {

class Fixture {
 public:
  Fixture() = default;
  // Opens DFL_FIXTURE_DIR/<file>.
  static Fixture open(const std::string& file);
  // Loads a fixture from a path (replacing any loaded content).
  void load(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const;

  const std::vector<float>& f(const std::string& name) const;    // a float32 tensor
  const std::vector<int32_t>& i(const std::string& name) const;  // an int32 tensor
  const std::vector<int>& dims(const std::string& name) const;
  size_t numel(const std::string& name) const;
  // A one-element tensor's value (float32, or int32 converted).
  float scalar(const std::string& name) const;
  // "cfg.<key>" shortcuts.
  float cfg(const std::string& key) const { return scalar("cfg." + key); }
  int cfg_int(const std::string& key) const;

 private:
  struct Tensor {
    uint32_t dtype = 0;
    std::vector<int> dims;
    std::vector<float> f;
    std::vector<int32_t> i;
  };
  const Tensor& get(const std::string& name) const;
  std::string path_;
  std::map<std::string, Tensor> tensors_;
};

// Reads a model spec JSON file ({"in_channels","height","width","nodes":[...]}, the format of
// src/models/spec.ts) into a ModelSpec. A small JSON reader: enough for spec files, with errors that
// name the file and position.
ModelSpec read_model_spec_json(const std::string& path);

// Path of a file in the fixture directory.
std::string fixture_path(const std::string& file);

}  // namespace dfl::test
