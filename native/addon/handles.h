// What the Model and Teacher classes share: a handle that a running call marks busy (so no other
// call races it, and dispose() while busy is safe: the worker keeps its own reference), and the
// promise-returning worker that runs heavy calls off the event loop.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/model.h"
#include "core/parallel.h"

namespace dfl::addon {

template <typename T>
struct Handle {
  std::shared_ptr<T> object;
  std::atomic<bool> busy{false};
};

// Marks handles busy for the lifetime of a call; releases them on destruction (also on errors).
class BusyGuard {
 public:
  BusyGuard() = default;
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;
  ~BusyGuard() {
    for (std::atomic<bool>* b : held_) b->store(false);
  }
  // `keep` holds the handle alive as long as the guard.
  template <typename T>
  void acquire(const Napi::Env& env, const std::shared_ptr<Handle<T>>& h, const std::string& who) {
    if (!h->object) throw Napi::Error::New(env, "dfl-native: " + who + " was disposed; create a new one");
    bool expected = false;
    if (!h->busy.compare_exchange_strong(expected, true))
      throw Napi::Error::New(env, "dfl-native: " + who +
                                      " is busy with another call (or listed twice); "
                                      "await the previous call before starting the next");
    held_.push_back(&h->busy);
    keep_.push_back(h);
  }

 private:
  std::vector<std::atomic<bool>*> held_;
  std::vector<std::shared_ptr<void>> keep_;
};

// The object behind a handle for a synchronous call: throws if disposed or busy.
template <typename T>
T& ready(const Napi::Env& env, const Handle<T>& h, const char* who) {
  if (!h.object)
    throw Napi::Error::New(env, std::string("dfl-native: this ") + who + " was disposed; create a new one");
  if (h.busy.load())
    throw Napi::Error::New(
        env, std::string("dfl-native: this ") + who + " is busy with a trainStep/forward call; await it first");
  return *h.object;
}

inline Napi::Float32Array copy_out(const Napi::Env& env, const float* data, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), data, n * sizeof(float));
  return a;
}

// A call that runs run() off the event loop and settles a promise with result() or the error.
// run() executes on the process's one compute thread (core/parallel.h: one OpenMP team), which
// the libuv worker hands it to and waits for; calls from several models take turns there.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  BusyGuard& busy() { return busy_; }
  void Execute() final {
    try {
      run_on_compute_thread([this] { run(); });
    } catch (const std::bad_alloc&) {
      SetError("dfl-native: out of memory; use a smaller batch size or model");
    } catch (const std::exception& e) {
      SetError(std::string("dfl-native: ") + e.what());
    }
  }
  void OnError(const Napi::Error& e) final { deferred_.Reject(e.Value()); }
  void OnOK() final { deferred_.Resolve(result(Env())); }

 protected:
  virtual void run() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;

 private:
  BusyGuard busy_;
  Napi::Promise::Deferred deferred_;
};

// Eval-mode logits of a host batch, for a student or a teacher.
inline void eval_logits(Model& m, const float* x, int B, float* out) { m.forward(x, B, false, out); }
inline void eval_logits(Teacher& t, const float* x, int B, float* out) { t.forward(x, B, out); }

// forward(x, batch) of a Model or Teacher: the logits as a promise, computed off the event loop on a
// copy of x while the object is marked busy.
template <typename T>
class ForwardWorker : public PromiseWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<T> object, const Napi::Float32Array& x, int B)
      : PromiseWorker(env), object_(std::move(object)), x_(x.Data(), x.Data() + x.ElementLength()), B_(B) {}
  static Napi::Promise queue(Napi::Env env, const std::shared_ptr<Handle<T>>& h, const Napi::Float32Array& x, int B,
                             const std::string& who) {
    auto w = std::make_unique<ForwardWorker>(env, h->object, x, B);
    w->busy().acquire(env, h, who);
    Napi::Promise p = w->promise();
    w.release()->Queue();  // the worker deletes itself when done
    return p;
  }

 protected:
  void run() override {
    out_.resize(size_t(B_) * object_->num_classes());
    eval_logits(*object_, x_.data(), B_, out_.data());
  }
  Napi::Value result(Napi::Env env) override { return copy_out(env, out_.data(), out_.size()); }

 private:
  std::shared_ptr<T> object_;
  std::vector<float> x_, out_;
  int B_;
};

}  // namespace dfl::addon
