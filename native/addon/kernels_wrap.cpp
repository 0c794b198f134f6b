// Batch preparation (augmentation, normalisation) and runtime information for JavaScript.
#include <cmath>
#include <memory>
#include <vector>

#include "addon/addon.h"
#include "addon/convert.h"
#include "core/augment_draws.h"
#include "core/backend.h"
#include "core/cpu_features.h"
#include "core/parallel.h"

#ifndef DFL_BUILD_SYSTEM
#define DFL_BUILD_SYSTEM "unknown"
#endif

namespace dfl::addon {

namespace {

// The CPU backend: its device memory is host memory, so JavaScript's arrays go to its kernels as they are.
Backend& host_backend() {
  static const std::shared_ptr<Backend> cpu = backend_by_name("cpu");
  return *cpu;
}

struct BatchArgs {
  float* out;
  const uint8_t* images;
  int B, C, H, W;
  const float* mean;
  const float* stdev;
};

// (out, images, B, C, H, W, ..., mean, std) with every length checked.
BatchArgs batch_args(const Napi::CallbackInfo& info, size_t mean_at) {
  const Napi::Env env = info.Env();
  Napi::Float32Array out = float32_array(arg(info, 0), "out");
  const Napi::Uint8Array images = uint8_array(arg(info, 1), "images");
  const int B = static_cast<int>(integer(arg(info, 2), "batch", 1, 1 << 20));
  const int C = static_cast<int>(integer(arg(info, 3), "channels", 1, 4096));
  const int H = static_cast<int>(integer(arg(info, 4), "height", 1, 16384));
  const int W = static_cast<int>(integer(arg(info, 5), "width", 1, 16384));
  const size_t n = static_cast<size_t>(B) * C * H * W;
  if (images.ElementLength() < n)
    throw Napi::RangeError::New(env, "Expected a Uint8Array of at least " + std::to_string(n) +
                                         " bytes for images but received " + describe(images));
  if (out.ElementLength() < n)
    throw Napi::RangeError::New(env, "Expected a Float32Array of at least " + std::to_string(n) +
                                         " floats for out but received " + describe(out));
  const Napi::Float32Array mean = float32_array(arg(info, mean_at), "mean");
  const Napi::Float32Array stdv = float32_array(arg(info, mean_at + 1), "std");
  if (mean.ElementLength() != static_cast<size_t>(C) || stdv.ElementLength() != static_cast<size_t>(C))
    throw Napi::RangeError::New(env, "Expected mean and std of length " + std::to_string(C) + " (one per channel)");
  for (int c = 0; c < C; ++c)
    if (!(stdv[c] > 0.f) || !std::isfinite(stdv[c]) || !std::isfinite(mean[c]))
      throw Napi::RangeError::New(env, "Expected finite mean and positive finite std for every channel but channel " +
                                           std::to_string(c) + " has mean " + std::to_string(mean[c]) + " and std " +
                                           std::to_string(stdv[c]) +
                                           " (give --mean and --std, one value per channel, std > 0)");
  return {out.Data(), images.Data(), B, C, H, W, mean.Data(), stdv.Data()};
}

// augmentBatch(out, images, B, C, H, W, pad, flip, mean, std, seed)
Napi::Value augment_batch(const Napi::CallbackInfo& info) {
  const BatchArgs a = batch_args(info, 8);
  const int pad = static_cast<int>(integer(arg(info, 6), "pad", 0, 1024));
  const bool flip = boolean(arg(info, 7), "flip");
  Rng rng(seed(arg(info, 10), "seed"));
  guarded(info.Env(), [&] {
    std::vector<AugmentDraw> draws(static_cast<size_t>(a.B));
    augment_draws(draws.data(), a.B, pad, flip, rng);
    host_backend().augment_batch(a.out, a.images, a.B, a.C, a.H, a.W, pad, draws.data(), a.mean, a.stdev);
    return 0;
  });
  return info.Env().Undefined();
}

// normalizeBatch(out, images, B, C, H, W, mean, std)
Napi::Value normalize_batch(const Napi::CallbackInfo& info) {
  const BatchArgs a = batch_args(info, 6);
  guarded(info.Env(), [&] {
    host_backend().normalize_batch(a.out, a.images, a.B, a.C, a.H, a.W, a.mean, a.stdev);
    return 0;
  });
  return info.Env().Undefined();
}

Napi::Value set_threads(const Napi::CallbackInfo& info) {
  set_num_threads(static_cast<int>(integer(arg(info, 0), "threads", 0, 1024)));
  return info.Env().Undefined();
}

Napi::Value get_threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), num_threads()); }

Napi::Value runtime_info(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  // Every backend this build knows of, whether usable here, and the reason when not.
  Napi::Array compiled = Napi::Array::New(env), usable = Napi::Array::New(env), all = Napi::Array::New(env);
  std::string cuda_status = "unknown";
  for (const BackendStatus& b : backend_statuses()) {
    if (b.compiled) compiled.Set(compiled.Length(), b.name);
    if (b.usable) usable.Set(usable.Length(), b.name);
    Napi::Object e = Napi::Object::New(env);
    e.Set("name", b.name);
    e.Set("compiled", b.compiled);
    e.Set("usable", b.usable);
    e.Set("detail", b.detail);
    e.Set("libraries", b.libraries);
    all.Set(all.Length(), e);
    if (b.name == "cuda") cuda_status = b.usable ? "usable: " + b.detail : b.detail;
  }
  o.Set("compiledBackends", compiled);
  o.Set("usableBackends", usable);
  o.Set("backends", all);
  o.Set("cudaStatus", cuda_status);
  Napi::Array feats = Napi::Array::New(env);
  uint32_t k = 0;
  for (const auto& f : cpu_feature_names()) feats.Set(k++, f);
  o.Set("cpuFeatures", feats);
  o.Set("gemmKernel", gemm_kernel_name());
  // Which SIMD path each kernel family runs (the CPU's best, capped by DFL_SIMD) and the cap asked.
  Napi::Object paths = Napi::Object::New(env);
  for (const auto& [family, path] : simd_paths()) paths.Set(family, path);
  o.Set("simdPaths", paths);
  o.Set("simdLevel", simd_level_label(simd_level()));
  o.Set("simdRequest", simd_request());
  o.Set("hardwareThreads", hardware_threads());
  o.Set("threads", num_threads());
  o.Set("openmp", openmp_enabled());
  o.Set("buildSystem", DFL_BUILD_SYSTEM);
  return o;
}

}  // namespace

Napi::Object init_kernels(Napi::Env env, Napi::Object exports) {
  exports.Set("augmentBatch", Napi::Function::New(env, augment_batch, "augmentBatch"));
  exports.Set("normalizeBatch", Napi::Function::New(env, normalize_batch, "normalizeBatch"));
  exports.Set("setThreads", Napi::Function::New(env, set_threads, "setThreads"));
  exports.Set("getThreads", Napi::Function::New(env, get_threads, "getThreads"));
  exports.Set("runtimeInfo", Napi::Function::New(env, runtime_info, "runtimeInfo"));
  return exports;
}

}  // namespace dfl::addon
