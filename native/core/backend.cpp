// The backend registry: the CPU backend is always there; the others are listed with the reason they
// cannot be used.
#include <mutex>

#include "core/backend.h"
#include "core/check.h"

namespace dfl {

namespace {

std::shared_ptr<Backend> cpu_instance() {
  static std::once_flag once;
  static std::shared_ptr<Backend> cpu;
  std::call_once(once, [] { cpu = make_cpu_backend(); });
  return cpu;
}

}  // namespace

std::vector<BackendStatus> backend_statuses() {
  std::vector<BackendStatus> out;
  out.push_back({"cpu", true, true, cpu_instance()->description()});
  out.push_back({"cuda", false, false, "not compiled in (this build has the CPU backend only)"});
  return out;
}

std::shared_ptr<Backend> backend_by_name(const std::string& name) {
  if (name == "cpu") return cpu_instance();
  for (const BackendStatus& s : backend_statuses())
    if (s.name == name) fail("The ", name, " backend is not usable: ", s.detail);
  fail("Unknown backend '", name, "' (expected cpu or cuda)");
}

}  // namespace dfl
