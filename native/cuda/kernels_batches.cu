// The CUDA backend's batches from uint8 images: augmentation, normalisation, the gather of a resident set (cuda/bodies/augment.h).
#include "cuda/cuda_backend.h"

namespace dfl::cuda {

// ---- batches -------------------------------------------------------------------------------------

void CudaBackend::augment_batch(float* out, const uint8_t* images, int B, int C, int H, int W, int pad,
                                const AugmentDraw* draws_host, const float* mean_host, const float* std_host) {
  auto lock = enter();
  check_batch(B, C, H, W, mean_host, std_host, "augment_batch");
  DFL_CHECK(pad >= 0 && pad <= (1 << 20), "augment_apply: pad must be in [0, 2^20], got ", pad);
  for (int b = 0; b < B; ++b)
    DFL_CHECK(
        draws_host[b].dy >= 0 && draws_host[b].dy <= 2 * pad && draws_host[b].dx >= 0 && draws_host[b].dx <= 2 * pad,
        "augment_apply: crop offsets of image ", b, " outside [0, ", 2 * pad, "]");
  Staged st(*this);
  const auto mean = st.put(mean_host, C), stdv = st.put(std_host, C);
  const auto draws = st.put(draws_host, B);
  st.upload();
  launch_elementwise(stream_, AugmentBatch{out, images, st.at(draws), st.at(mean), st.at(stdv), B, C, H, W, pad});
}

void CudaBackend::normalize_batch(float* out, const uint8_t* images, int B, int C, int H, int W, const float* mean_host,
                                  const float* std_host) {
  auto lock = enter();
  check_batch(B, C, H, W, mean_host, std_host, "normalize_batch");
  Staged st(*this);
  const auto mean = st.put(mean_host, C), stdv = st.put(std_host, C);
  st.upload();
  launch_elementwise(stream_, AugmentBatch{out, images, nullptr, st.at(mean), st.at(stdv), B, C, H, W, 0});
}

void CudaBackend::gather_images(uint8_t* dst, const uint8_t* src, const int32_t* indices_host, int B,
                                size_t image_bytes) {
  auto lock = enter();
  Staged st(*this);
  const auto indices = st.put(indices_host, size_t(B));
  st.upload();
  launch_elementwise(stream_, GatherImages{dst, src, st.at(indices), size_t(B), image_bytes});
}

}  // namespace dfl::cuda
