// Whole-array reductions as two row reductions (bodies/launch.h), so the result is the same on
// every run: stage 1, one row per chunk of `chunk` values, each into partials[g]; stage 2, one row
// over the partials into *result. A value type V gives Acc, identity(), combine() and value(i).
#pragma once
#include "cuda/bodies/launch.h"
#include "cuda/bodies/optim.h"

namespace dfl::cuda_bodies {

template <typename V>
struct ChunkReduce {
  using Acc = typename V::Acc;
  using Coef = int;
  static constexpr bool kApply = false;
  V value;
  size_t n, chunk;
  Acc* partials;
  DFL_HOST_DEVICE int rows() const { return int((n + chunk - 1) / chunk); }
  DFL_HOST_DEVICE size_t length(int g) const { return n - size_t(g) * chunk < chunk ? n - size_t(g) * chunk : chunk; }
  DFL_HOST_DEVICE Acc identity() const { return V::identity(); }
  DFL_HOST_DEVICE Acc load(int g, size_t j) const { return value(size_t(g) * chunk + j); }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return V::combine(a, b); }
  DFL_HOST_DEVICE Coef finish(int g, Acc t, bool write) const {
    if (write) partials[g] = t;
    return 0;
  }
  DFL_HOST_DEVICE void apply(int, size_t, Coef) const {}
};

template <typename V>
struct PartialsReduce {
  using Acc = typename V::Acc;
  using Coef = int;
  static constexpr bool kApply = false;
  const Acc* partials;
  int count;
  Acc* result;
  DFL_HOST_DEVICE int rows() const { return 1; }
  DFL_HOST_DEVICE size_t length(int) const { return size_t(count); }
  DFL_HOST_DEVICE Acc identity() const { return V::identity(); }
  DFL_HOST_DEVICE Acc load(int, size_t j) const { return partials[j]; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return V::combine(a, b); }
  DFL_HOST_DEVICE Coef finish(int, Acc t, bool write) const {
    if (write) *result = t;
    return 0;
  }
  DFL_HOST_DEVICE void apply(int, size_t, Coef) const {}
};

// sum of x^2 in double.
struct SquareValue {
  using Acc = double;
  const float* x;
  DFL_HOST_DEVICE static Acc identity() { return 0.0; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return a + b; }
  DFL_HOST_DEVICE Acc operator()(size_t i) const { return double(x[i]) * double(x[i]); }
};

// 1 when every value is finite (AND as min).
struct FiniteValue {
  using Acc = int;
  const float* x;
  DFL_HOST_DEVICE static Acc identity() { return 1; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return a < b ? a : b; }
  DFL_HOST_DEVICE Acc operator()(size_t i) const { return finite(x[i]) ? 1 : 0; }
};

// 1 for a row of logits (NC) whose first maximum is at its label.
struct CorrectValue {
  using Acc = int;
  const float* logits;
  const int32_t* labels;
  int NC;
  DFL_HOST_DEVICE static Acc identity() { return 0; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return a + b; }
  DFL_HOST_DEVICE Acc operator()(size_t b) const {
    const float* row = logits + b * NC;
    int best = 0;
    for (int c = 1; c < NC; ++c)
      if (row[c] > row[best]) best = c;  // std::max_element: first of the largest
    return best == labels[b] ? 1 : 0;
  }
};

// 1 when the SGD update of element i leaves the parameter and its momentum finite.
struct SgdFiniteValue {
  using Acc = int;
  const float* params;
  const float* momentum_buf;
  const float* grads;
  const float* decay_mask;
  SgdConfig cfg;
  DFL_HOST_DEVICE static Acc identity() { return 1; }
  DFL_HOST_DEVICE static Acc combine(Acc a, Acc b) { return a < b ? a : b; }
  DFL_HOST_DEVICE Acc operator()(size_t i) const {
    const kernel_math::SgdUpdate u = kernel_math::sgd_update(params, momentum_buf, grads, decay_mask, i, cfg);
    return finite(u.param) && finite(u.buf) ? 1 : 0;
  }
};

}  // namespace dfl::cuda_bodies
