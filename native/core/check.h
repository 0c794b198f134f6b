// Error handling for the native core. Every precondition that input from JavaScript could break is
// checked with DFL_CHECK, which throws dfl::Error; the addon turns it into a JavaScript exception.
// Nothing in native/ calls abort() or assert() on user-reachable paths.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dfl {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw Error(os.str());
}

}  // namespace dfl

// DFL_CHECK(cond, "message parts", value, ...): throws dfl::Error with the parts concatenated.
#define DFL_CHECK(cond, ...)               \
  do {                                     \
    if (!(cond)) ::dfl::fail(__VA_ARGS__); \
  } while (0)
