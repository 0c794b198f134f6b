// The tolerances docs/native.md ("Numerics") states for a backend's kernels against the CPU
// reference kernels on the same inputs, |got - want| <= tol + tol * |want|. One place, used by the
// tests that check the statement: test_cuda_bodies.cpp (the CUDA bodies on the host) and
// test_backend_numerics.cpp (every backend's kernels, on the GPU when there is one).
// Everything else is bitwise: the same operations in the same order, each rounded as IEEE says
// (libdfl_cuda.so is compiled with -fmad=false and IEEE division and square root: native/cuda/cuda.cmake).
#pragma once

namespace dfl::test::numerics {

// Sums taken in another order (batch-norm statistics, bias gradients), and exp/log from another
// maths library (the GPU's libdevice next to glibc: the loss kernels and the teachers' confidence),
// each computed in double and rounded once to float.
constexpr double kReordered = 1e-6;
// Batch norm's outputs and gradients: kReordered in the statistics, scaled by (x - mean) * invstd.
constexpr double kBatchNorm = 1e-5;
// A whole-array sum of squares in double (the gradient norm), in another order.
constexpr double kSumOfSquares = 1e-12;

}  // namespace dfl::test::numerics
