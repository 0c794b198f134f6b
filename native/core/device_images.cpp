#include "core/device_images.h"

#include <string>

#include "core/check.h"

namespace dfl {

DeviceImages::DeviceImages(std::shared_ptr<Backend> backend, const uint8_t* images_host, int N, int C, int H, int W)
    : backend_(std::move(backend)), n_(N), c_(C), h_(H), w_(W), data_(backend_) {
  DFL_CHECK(N > 0 && C > 0 && H > 0 && W > 0, "DeviceImages: sizes must be positive (N=", N, " C=", C, " H=", H,
            " W=", W, ")");
  const size_t bytes = size_t(N) * image_bytes();
  std::string source;
  const double limit = backend_->available_bytes(&source), mib = 1024.0 * 1024.0;
  DFL_CHECK(double(bytes) <= limit, "Refusing to upload ", long(bytes / mib), " MiB of images to the ",
            backend_->name(), " device: more than the ", long(limit / mib), " MiB available (", source, ")");
  data_.reserve(bytes, "resident images");
  backend_->upload(data_.get(), images_host, bytes);
}

void make_batch(const ImageBatch& b, const ModelSpec& spec, Backend& be, DeviceBuffer& u8, float* x) {
  DFL_CHECK(b.images && b.indices_host && b.mean_host && b.std_host,
            "make_batch: images, indices, mean and std are required");
  const DeviceImages& im = *b.images;
  DFL_CHECK(&im.backend() == &be, "the images live on the ", im.backend().name(), " device but the model on ",
            be.name());
  DFL_CHECK(im.channels() == spec.in_channels && im.height() == spec.height && im.width() == spec.width,
            "the images are ", im.channels(), "x", im.height(), "x", im.width(), " but the model takes ",
            spec.in_channels, "x", spec.height, "x", spec.width);
  DFL_CHECK(b.B > 0, "make_batch: batch size must be positive, got ", b.B);
  for (int k = 0; k < b.B; ++k)
    DFL_CHECK(b.indices_host[k] >= 0 && b.indices_host[k] < im.count(), "image index ", b.indices_host[k],
              " at batch position ", k, " is outside [0, ", im.count(), ")");
  u8.reserve(size_t(b.B) * im.image_bytes(), "image batch");
  be.gather_images(u8.u8(), im.data(), b.indices_host, b.B, im.image_bytes());
  if (b.draws_host)
    be.augment_batch(x, u8.u8(), b.B, im.channels(), im.height(), im.width(), b.pad, b.draws_host, b.mean_host,
                     b.std_host);
  else
    be.normalize_batch(x, u8.u8(), b.B, im.channels(), im.height(), im.width(), b.mean_host, b.std_host);
}

}  // namespace dfl
