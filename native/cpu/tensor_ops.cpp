// Channel plumbing: concat / split along C and channel shuffle. Pure copies (forward) and
// accumulations (backward); parallel over samples or (b, c) planes, each element written once.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "core/kernel_math.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

namespace {

// Validates the chunk list and returns the total channel count.
int total_channels(const int* channels, int n, int B, int HW, const char* who) {
  DFL_CHECK(n >= 1 && B > 0 && HW > 0, who, ": needs n >= 1 chunks and positive B, HW");
  int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    DFL_CHECK(channels[i] > 0, who, ": chunk ", i, " has ", channels[i], " channels");
    total += channels[i];
  }
  DFL_CHECK(total <= INT32_MAX, who, ": too many channels");
  return int(total);
}

int64_t sample_grain(int64_t floats_per_sample) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, floats_per_sample));
}

// For each sample b and chunk i: fn(offset of chunk i inside the big tensor's sample b, chunk
// i's own sample offset, chunk length in floats, i).
template <typename F>
void for_chunks(const int* channels, int n, int B, int HW, int total, F&& fn) {
  parallel_for(B, sample_grain(int64_t(total) * HW), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      size_t off = size_t(b) * total * HW;
      for (int i = 0; i < n; ++i) {
        const size_t len = size_t(channels[i]) * HW;
        fn(off, size_t(b) * len, len, i);
        off += len;
      }
    }
  });
}

}  // namespace

void concat_channels_forward(float* out, const float* const* inputs, const int* channels, int n, int B, int HW) {
  const int total = total_channels(channels, n, B, HW, "concat_channels_forward");
  for_chunks(channels, n, B, HW, total, [&](size_t big, size_t small, size_t len, int i) {
    std::memcpy(out + big, inputs[i] + small, len * sizeof(float));
  });
}

void concat_channels_backward(float* const* dinputs, const float* dout, const int* channels, int n, int B, int HW) {
  const int total = total_channels(channels, n, B, HW, "concat_channels_backward");
  for_chunks(channels, n, B, HW, total, [&](size_t big, size_t small, size_t len, int i) {
    float* d = dinputs[i];
    if (!d) return;
    d += small;
    const float* g = dout + big;
    for (size_t k = 0; k < len; ++k) d[k] += g[k];
  });
}

void split_channels_forward(float* const* outputs, const float* inp, const int* channels, int n, int B, int HW) {
  const int total = total_channels(channels, n, B, HW, "split_channels_forward");
  for_chunks(channels, n, B, HW, total, [&](size_t big, size_t small, size_t len, int i) {
    if (outputs[i]) std::memcpy(outputs[i] + small, inp + big, len * sizeof(float));
  });
}

void split_channels_backward(float* dinp, const float* const* doutputs, const int* channels, int n, int B, int HW,
                             bool overwrite) {
  const int total = total_channels(channels, n, B, HW, "split_channels_backward");
  if (!dinp) return;
  for_chunks(channels, n, B, HW, total, [&](size_t big, size_t small, size_t len, int i) {
    const float* g = doutputs[i];
    float* d = dinp + big;
    if (overwrite) {  // a chunk without gradient contributes zeros
      if (g)
        std::memcpy(d, g + small, len * sizeof(float));
      else
        std::memset(d, 0, len * sizeof(float));
      return;
    }
    if (!g) return;  // that chunk had no gradient: contributes nothing
    g += small;
    for (size_t k = 0; k < len; ++k) d[k] += g[k];
  });
}

namespace {
void check_interleave(int n, int cpg, int B, int HW, const char* who) {
  DFL_CHECK(n > 0 && cpg > 0 && B > 0 && HW > 0, who, ": sizes must be positive (n=", n, ", channels per input=", cpg,
            ", B=", B, ", HW=", HW, ")");
}
}  // namespace

// One (sample, channel j) row per task: the n inputs' planes j, side by side in the output.
void interleave_channels_forward(float* out, const float* const* inputs, int n, int cpg, int B, int HW) {
  check_interleave(n, cpg, B, HW, "interleave_channels_forward");
  parallel_for(int64_t(B) * cpg, std::max<int64_t>(1, 16384 / (int64_t(n) * HW)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int k = 0; k < n; ++k) std::memcpy(out + (r * n + k) * HW, inputs[k] + r * HW, size_t(HW) * sizeof(float));
  });
}

void interleave_channels_backward(float* const* dinputs, const float* dout, int n, int cpg, int B, int HW,
                                  bool overwrite) {
  check_interleave(n, cpg, B, HW, "interleave_channels_backward");
  parallel_for(int64_t(B) * cpg, std::max<int64_t>(1, 16384 / (int64_t(n) * HW)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int k = 0; k < n; ++k) {
        if (!dinputs[k]) continue;
        const float* g = dout + (r * n + k) * HW;
        float* d = dinputs[k] + r * HW;
        if (overwrite)
          std::memcpy(d, g, size_t(HW) * sizeof(float));
        else
          for (int i = 0; i < HW; ++i) d[i] += g[i];
      }
  });
}

void channel_shuffle_forward(float* out, const float* inp, int B, int C, int HW, int groups) {
  kernel_math::check_channel_shuffle(B, C, HW, groups, "channel_shuffle_forward");
  const int cpg = C / groups;
  // One output plane per task: out channel oc = j*groups + g reads inp channel g*cpg + j.
  parallel_for(int64_t(B) * C, std::max<int64_t>(1, 16384 / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / C;
      const int oc = int(p % C), j = oc / groups, g = oc % groups;
      std::memcpy(out + p * HW, inp + (b * C + int64_t(g) * cpg + j) * HW, size_t(HW) * sizeof(float));
    }
  });
}

void channel_shuffle_backward(float* dinp, const float* dout, int B, int C, int HW, int groups) {
  kernel_math::check_channel_shuffle(B, C, HW, groups, "channel_shuffle_backward");
  if (!dinp) return;
  const int cpg = C / groups;
  // One input-gradient plane per task: inp channel ic = g*cpg + j receives out channel j*groups + g.
  parallel_for(int64_t(B) * C, std::max<int64_t>(1, 16384 / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / C;
      const int ic = int(p % C), g = ic / cpg, j = ic % cpg;
      const float* src = dout + (b * C + int64_t(j) * groups + g) * HW;
      float* dst = dinp + p * HW;
      for (int k = 0; k < HW; ++k) dst[k] += src[k];
    }
  });
}

}  // namespace dfl::cpu
