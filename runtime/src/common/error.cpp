// Programmer-error reporting for MOE_ASSERT (input errors never reach here: they are moe::Error).
#include "moe/error.h"

#include <cstdio>
#include <cstdlib>

namespace moe {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "moe: internal error at %s:%d: %s (%s)\n", file, line, msg, expr);
  std::abort();
}
}  // namespace moe
