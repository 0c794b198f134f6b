// A set of uint8 images resident on a backend, uploaded once per run, from which training steps and
// evaluation make their batches on the device: per step only the indices, the augmentation draws
// and the labels travel (a float batch from the host is 4 bytes per pixel each step).
#pragma once
#include <cstdint>
#include <memory>

#include "core/backend.h"
#include "core/graph.h"

namespace dfl {

class DeviceImages {
 public:
  // images_host (N, C, H, W) uint8, copied to the device.
  DeviceImages(std::shared_ptr<Backend> backend, const uint8_t* images_host, int N, int C, int H, int W);
  int count() const { return n_; }
  int channels() const { return c_; }
  int height() const { return h_; }
  int width() const { return w_; }
  size_t image_bytes() const { return size_t(c_) * h_ * w_; }
  size_t device_bytes() const { return data_.bytes(); }
  const uint8_t* data() const { return data_.u8(); }
  Backend& backend() const { return *backend_; }

 private:
  std::shared_ptr<Backend> backend_;
  int n_, c_, h_, w_;
  DeviceBuffer data_;
};

// A batch taken from DeviceImages: the images at indices_host (B of them), augmented with one draw
// each (core/augment_draws.h order and rule) or, with draws_host null, only normalised.
struct ImageBatch {
  const DeviceImages* images = nullptr;
  const int32_t* indices_host = nullptr;
  int B = 0;
  const AugmentDraw* draws_host = nullptr;
  int pad = 0;
  const float* mean_host = nullptr;  // (C)
  const float* std_host = nullptr;   // (C)
};

// Checks the batch against the model's input, gathers its images into u8 (grown as needed) and
// writes the float batch (B, C, H, W) into x, all on the batch's backend.
void make_batch(const ImageBatch& batch, const ModelSpec& spec, Backend& be, DeviceBuffer& u8, float* x);

}  // namespace dfl
