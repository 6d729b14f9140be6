// moe/error.h — the library's two tiers of errors.
// Environment errors (IO, corrupt or unsupported input, memory, impossible budgets) are thrown as
// moe::Error inside the C++ library and become a status code plus message at the C API boundary;
// the library never calls exit() or abort() on input. Programmer errors use MOE_ASSERT (file:line).
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace moe {

enum class ErrorCode : int {
  Ok = 0,
  InvalidArgument = 1,   // a caller passed something impossible (a budget below the minimum, ...)
  Io = 2,                // open/read/write failed
  Corrupt = 3,           // the file is not what it claims (bad magic, truncated, out-of-range)
  Unsupported = 4,       // a well-formed file we cannot run (architecture, tensor type, version)
  OutOfMemory = 5,
  Cancelled = 6,
  Internal = 7,
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string msg) : std::runtime_error(std::move(msg)), code_(code) {}
  ErrorCode code() const noexcept { return code_; }
 private:
  ErrorCode code_;
};

template <typename... Args>
[[noreturn]] inline void fail(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(code, fmt::format(f, std::forward<Args>(args)...));
}

[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const char* msg);

}  // namespace moe

#define MOE_ASSERT(cond, msg) \
  ((cond) ? (void)0 : ::moe::assert_fail(#cond, __FILE__, __LINE__, (msg)))
