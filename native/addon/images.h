// Resident image sets in JavaScript: the DeviceImages class (a dfl::DeviceImages on a backend,
// uploaded once) and the image-batch argument of trainStep / forwardImages, read into a plain
// struct that owns its copies (workers run after the call returns).
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "addon/handles.h"
#include "core/device_images.h"

namespace dfl::addon {

// {images: DeviceImages, indices: Int32Array, mean, std: Float32Array (C), augment?: {pad, flip,
// seed}}: the augmentation draws are made here on the host (dfl::augment_draws from Rng(seed), the
// same draws as augmentBatch), so the device batch equals the host-prepared one.
struct HostImageBatch {
  std::shared_ptr<DeviceImages> images;
  std::vector<int32_t> indices;
  std::vector<AugmentDraw> draws;  // empty: normalise only
  int pad = 0;
  std::vector<float> mean, stdv;
  int B() const { return int(indices.size()); }
  ImageBatch view() const {
    return {images.get(), indices.data(), B(), draws.empty() ? nullptr : draws.data(), pad, mean.data(), stdv.data()};
  }
};
HostImageBatch image_batch_arg(const Napi::Env& env, const Napi::Value& v);

// forwardImages(batch) of a Model or Teacher: eval-mode logits as a promise, off the event loop.
template <typename T>
class ImagesForwardWorker : public PromiseWorker {
 public:
  ImagesForwardWorker(Napi::Env env, std::shared_ptr<T> object, HostImageBatch batch)
      : PromiseWorker(env), object_(std::move(object)), batch_(std::move(batch)) {}
  static Napi::Promise queue(Napi::Env env, const std::shared_ptr<Handle<T>>& h, HostImageBatch batch,
                             const std::string& who) {
    auto w = std::make_unique<ImagesForwardWorker>(env, h->object, std::move(batch));
    w->busy().acquire(env, h, who);
    Napi::Promise p = w->promise();
    w.release()->Queue();
    return p;
  }

 protected:
  void run() override {
    out_.resize(size_t(batch_.B()) * object_->num_classes());
    object_->forward(batch_.view(), out_.data());
  }
  Napi::Value result(Napi::Env env) override { return copy_out(env, out_.data(), out_.size()); }

 private:
  std::shared_ptr<T> object_;
  HostImageBatch batch_;
  std::vector<float> out_;
};

}  // namespace dfl::addon
