// cache/src/policy_factory.cpp — make_policy(name): the one place that maps policy names to
// implementations and validates their parameters. Stateless; thread-safe.
#include <cmath>

#include "moe/cache/profile.h"
#include "policy_impl.h"

namespace moe::cache {

const std::vector<std::string_view>& policy_names() {
  static const std::vector<std::string_view> names = {"lru", "lfu", "lfru", "arc", "static", "belady"};
  return names;
}

std::unique_ptr<Policy> make_policy(std::string_view name, const PolicyParams& params,
                                    CacheStatus* status) {
  auto fail = [&](CacheCode c, std::string msg) -> std::unique_ptr<Policy> {
    if (status) *status = CacheStatus::error(c, std::move(msg));
    return nullptr;
  };
  if (status) *status = CacheStatus::success();
  const bool decayed = name == "lfu" || name == "lfru";
  if (decayed && !(std::isfinite(params.lfu_half_life) && params.lfu_half_life > 0))
    return fail(CacheCode::InvalidArgument,
                "cache policy '" + std::string(name) + "': lfu_half_life must be a positive number of accesses");
  if (name == "lru") return detail::make_lru();
  if (name == "lfu") return detail::make_lfu(params.lfu_half_life);
  if (name == "lfru") {
    if (!(params.lfru_protected_fraction >= 0.0 && params.lfru_protected_fraction <= 1.0))
      return fail(CacheCode::InvalidArgument,
                  "cache policy 'lfru': lfru_protected_fraction must lie in [0, 1]");
    return detail::make_lfru(params.lfu_half_life, params.lfru_protected_fraction);
  }
  if (name == "arc") return detail::make_arc();
  if (name == "static") {
    if (!params.profile)
      return fail(CacheCode::InvalidArgument,
                  "cache policy 'static' needs a usage profile (moe run --save-profile writes one)");
    return detail::make_static(params.profile, params.static_hot_slots);
  }
  if (name == "belady") {
    if (!params.next_use)
      return fail(CacheCode::InvalidArgument,
                  "cache policy 'belady' needs the future access sequence (simulator only)");
    return detail::make_belady(params.next_use);
  }
  std::string known;
  for (auto n : policy_names()) known += (known.empty() ? "" : ", ") + std::string(n);
  return fail(CacheCode::NotFound, "unknown cache policy '" + std::string(name) + "' (known: " + known + ")");
}

}  // namespace moe::cache
