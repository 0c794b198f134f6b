// Fully connected layer via sgemm (PyTorch layout: weight (OUT, IN)).
#include <algorithm>

#include "core/check.h"
#include "core/parallel.h"
#include "cpu/kernels.h"

namespace dfl::cpu {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int IN, int OUT) {
  DFL_CHECK(B > 0 && IN > 0 && OUT > 0, "linear: sizes must be positive (B=", B, " IN=", IN, " OUT=", OUT, ")");
  if (bias) {
    for (int b = 0; b < B; ++b) std::copy(bias, bias + OUT, out + size_t(b) * OUT);
  }
  // out (B, OUT) = inp (B, IN) @ weight^T (IN, OUT) [+ bias already in out]
  sgemm(false, true, B, OUT, IN, 1.0f, inp, IN, weight, IN, bias ? 1.0f : 0.0f, out, OUT);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int IN, int OUT) {
  DFL_CHECK(B > 0 && IN > 0 && OUT > 0, "linear: sizes must be positive (B=", B, " IN=", IN, " OUT=", OUT, ")");
  // dinp (B, IN) += dout (B, OUT) @ weight (OUT, IN)
  if (dinp) sgemm(false, false, B, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, dinp, IN);
  // dweight (OUT, IN) += dout^T (OUT, B) @ inp (B, IN)
  if (dweight) sgemm(true, false, OUT, IN, B, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
  if (dbias) {  // one thread per output feature, samples in order
    parallel_for(OUT, std::max(1, (1 << 14) / B), [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        double sum = 0.0;
        for (int b = 0; b < B; ++b) sum += dout[size_t(b) * OUT + o];
        dbias[o] += float(sum);
      }
    });
  }
}

}  // namespace dfl::cpu
