// runtime/src/sim/device.cpp — device profiles of the simulator: built-ins, '+' composition, JSON
// files. Pure functions over value types (thread-safe).
//
// Built-in figures are effective (measured-typical, not theoretical) rates:
//   link:    PCIe 3.0/4.0/5.0 x16 pinned host->device copies ~12 / 25 / 50 GB/s;
//            NVMe gen3/gen4/gen5 x4 sequential reads ~3.2 / 6.5 / 12 GB/s.
//   compute: decode reads every weight once, so a routed expert costs expert_bytes / memory
//            bandwidth: GPUs of each PCIe era ~700 (RTX 3090 class) / 1000 (RTX 4090 class) /
//            2500 (H100 class) GB/s; CPUs DDR4 dual channel ~38 GB/s, DDR5 dual channel ~65 GB/s.
#include <cmath>
#include <filesystem>

#include "moe/error.h"
#include "moe/sim.h"

namespace moe::sim {

double DeviceProfile::expert_compute_ms(uint64_t expert_bytes) const noexcept {
  if (expert_ms >= 0) return expert_ms;
  return compute_gbps > 0 ? static_cast<double>(expert_bytes) / (compute_gbps * 1e9) * 1e3 : 0.0;
}

double DeviceProfile::transfer_ms(uint64_t bytes) const noexcept {
  return link_latency_us * 1e-3 + static_cast<double>(bytes) / (link_gbps * 1e9) * 1e3;
}

json::Value DeviceProfile::to_json() const {
  json::Value v = json::Value::object();
  v.set("name", name);
  v.set("mode", gpu ? "gpu" : "cpu");
  v.set("link_gbps", link_gbps);
  v.set("link_latency_us", link_latency_us);
  v.set("compute_gbps", compute_gbps);
  v.set("dense_ms_per_layer", dense_ms_per_layer);
  v.set("expert_ms", expert_ms);
  return v;
}

namespace {

struct Builtin {
  std::string_view name;
  void (*apply)(DeviceProfile&);
};

void gpu(DeviceProfile& p, double link, double compute) {
  p.gpu = true;
  p.link_gbps = link;
  p.link_latency_us = 10;
  p.compute_gbps = compute;
  p.dense_ms_per_layer = 0.05;
}
void nvme(DeviceProfile& p, double link) {
  p.gpu = false;
  p.link_gbps = link;
  p.link_latency_us = 20;  // queue-depth-pipelined reads: latency mostly hidden
  p.compute_gbps = 38;
  p.dense_ms_per_layer = 0.3;
}
void cpu_compute(DeviceProfile& p, double compute) {
  if (p.gpu) nvme(p, 6.5);  // alone: an nvme-gen4 link
  p.compute_gbps = compute;
}

const Builtin kBuiltins[] = {
    {"pcie3", [](DeviceProfile& p) { gpu(p, 12, 700); }},
    {"pcie4", [](DeviceProfile& p) { gpu(p, 25, 1000); }},
    {"pcie5", [](DeviceProfile& p) { gpu(p, 50, 2500); }},
    {"nvme-gen3", [](DeviceProfile& p) { nvme(p, 3.2); }},
    {"nvme-gen4", [](DeviceProfile& p) { nvme(p, 6.5); }},
    {"nvme-gen5", [](DeviceProfile& p) { nvme(p, 12); }},
    {"ddr4", [](DeviceProfile& p) { cpu_compute(p, 38); }},
    {"ddr5", [](DeviceProfile& p) { cpu_compute(p, 65); }},
};

const Builtin* find_builtin(std::string_view n) {
  for (const auto& b : kBuiltins)
    if (b.name == n) return &b;
  return nullptr;
}

std::string known_names() {
  std::string s;
  for (const auto& b : kBuiltins) s += (s.empty() ? "" : ", ") + std::string(b.name);
  return s;
}

void check_profile(const DeviceProfile& p, std::string_view source) {
  if (!(p.link_gbps > 0) || !std::isfinite(p.link_gbps))
    fail(ErrorCode::InvalidArgument, "device profile {}: link_gbps must be > 0", source);
  if (!(p.link_latency_us >= 0) || !(p.dense_ms_per_layer >= 0) || !(p.compute_gbps >= 0) ||
      !std::isfinite(p.link_latency_us) || !std::isfinite(p.dense_ms_per_layer) || !std::isfinite(p.compute_gbps))
    fail(ErrorCode::InvalidArgument, "device profile {}: latency, compute and dense times must be >= 0", source);
  if (p.expert_ms < 0 && p.compute_gbps <= 0)
    fail(ErrorCode::InvalidArgument, "device profile {}: give compute_gbps > 0 or expert_ms >= 0", source);
}

}  // namespace

const std::vector<std::string_view>& device_profile_names() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> v;
    for (const auto& b : kBuiltins) v.push_back(b.name);
    return v;
  }();
  return names;
}

DeviceProfile device_profile_from_json(const json::Value& v, std::string_view source) {
  if (!v.is_object()) fail(ErrorCode::Corrupt, "device profile {}: expected a JSON object", source);
  DeviceProfile p;
  if (const json::Value* b = v.get("base")) {
    if (!b->is_string()) fail(ErrorCode::Corrupt, "device profile {}: \"base\" must be a string", source);
    p = device_profile(b->as_string());
  }
  p.name = std::string(source);
  for (const auto& [key, val] : v.members()) {
    if (key == "base") continue;
    if (key == "name") {
      if (!val.is_string()) fail(ErrorCode::Corrupt, "device profile {}: \"name\" must be a string", source);
      p.name = val.as_string();
    } else if (key == "mode") {
      if (!val.is_string() || (val.as_string() != "gpu" && val.as_string() != "cpu"))
        fail(ErrorCode::Corrupt, "device profile {}: \"mode\" must be \"gpu\" or \"cpu\"", source);
      p.gpu = val.as_string() == "gpu";
    } else {
      double* field = key == "link_gbps"            ? &p.link_gbps
                      : key == "link_latency_us"    ? &p.link_latency_us
                      : key == "compute_gbps"       ? &p.compute_gbps
                      : key == "dense_ms_per_layer" ? &p.dense_ms_per_layer
                      : key == "expert_ms"          ? &p.expert_ms
                                                    : nullptr;
      if (!field) fail(ErrorCode::Corrupt, "device profile {}: unknown key \"{}\"", source, key);
      if (!val.is_number()) fail(ErrorCode::Corrupt, "device profile {}: \"{}\" must be a number", source, key);
      *field = val.as_number();
    }
  }
  check_profile(p, source);
  return p;
}

DeviceProfile device_profile(std::string_view spec) {
  if (spec.empty()) fail(ErrorCode::InvalidArgument, "device profile: empty name");
  if (!find_builtin(spec.substr(0, spec.find('+'))) &&
      (spec.ends_with(".json") || std::filesystem::exists(std::filesystem::path(std::string(spec))))) {
    const std::string path(spec);
    return device_profile_from_json(json::parse_file(path), path);
  }
  DeviceProfile p;
  std::string_view rest = spec;
  while (true) {
    const size_t c = rest.find('+');
    const std::string_view n = rest.substr(0, c);
    const Builtin* b = find_builtin(n);
    if (!b)
      fail(ErrorCode::InvalidArgument, "device profile: unknown name '{}' (built-ins: {}; or a JSON file)", n,
           known_names());
    b->apply(p);
    if (c == std::string_view::npos) break;
    rest.remove_prefix(c + 1);
  }
  p.name = std::string(spec);
  check_profile(p, spec);
  return p;
}

}  // namespace moe::sim
