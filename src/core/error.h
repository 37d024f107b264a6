// Errors in tachyon are exceptions carrying one line that names what is at fault
// (file, tensor, field or request), so that the CLI can print it and exit non-zero.
#pragma once
#include <stdexcept>
#include <string>
#include <fmt/format.h>

namespace tachyon {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// fail("{}: tensor {} has {} bytes, expected {}", path, name, a, b)
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace tachyon
