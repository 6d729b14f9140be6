// moe/cache/status.h — status values returned by cache/ (it never throws moe::Error and never exits,
// so it stays free of the runtime library). The runtime turns a failed CacheStatus into moe::Error.
// Plain value types; thread-safe by construction.
#pragma once
#include <string>

namespace moe::cache {

enum class CacheCode : int {
  Ok = 0,
  InvalidArgument = 1,  // impossible configuration or out-of-range key / size
  Io = 2,               // a profile file could not be opened, read or written
  Corrupt = 3,          // a profile file is malformed (the message names file, line and cause)
  NotFound = 4,         // unknown policy name, or no such entry
};

struct CacheStatus {
  CacheCode code = CacheCode::Ok;
  std::string message;  // empty when ok

  bool ok() const noexcept { return code == CacheCode::Ok; }
  static CacheStatus success() { return {}; }
  static CacheStatus error(CacheCode c, std::string msg) { return CacheStatus{c, std::move(msg)}; }
};

}  // namespace moe::cache
