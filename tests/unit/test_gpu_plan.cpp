// tests/unit/test_gpu_plan.cpp — plan_gpu_memory (moe/engine.h), the CUDA backend's split of --vram,
// runs on every machine (no GPU needed): the pieces add up, the minimum is the threshold of fits(),
// slots grow with the budget and stop at the model's expert count, and the CPU-miss mode needs no slot.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "moe/engine.h"
#include "test_engine_models.h"

using namespace moe;

TEST_CASE("plan_gpu_memory splits the budget") {
  std::filesystem::create_directories(MOE_TEST_TMP);
  const std::string path = std::string(MOE_TEST_TMP) + "/gpu_plan.gguf";
  test::TinyModel tm;
  tm.arch = "qwen2moe";
  tm.wtype = TensorType::Q8_0;
  test::write_tiny_model(tm, path);
  auto m = Model::load(path);
  SessionOptions o;
  o.vram_bytes = 1;
  const GpuMemoryPlan p0 = plan_gpu_memory(*m, o, 128);
  CHECK_FALSE(p0.fits());
  CHECK(p0.slots == 0);
  CHECK(p0.n_experts == tm.n_layer * tm.n_expert);
  CHECK(p0.min_slots == tm.n_used);
  CHECK(p0.kv == uint64_t(tm.n_layer) * 128 * 2 * tm.n_head_kv * tm.head_dim * 2);
  CHECK(p0.dense >= m->experts().dense_bytes() - 4096);  // every non-expert tensor (plus alignment)
  CHECK(p0.slot_bytes >= m->experts().max_expert_bytes());
  CHECK(p0.minimum == p0.dense + p0.kv + p0.scratch + p0.min_slots * p0.slot_bytes);

  o.vram_bytes = p0.minimum - 1;
  CHECK_FALSE(plan_gpu_memory(*m, o, 128).fits());
  o.vram_bytes = p0.minimum;
  GpuMemoryPlan p = plan_gpu_memory(*m, o, 128);
  CHECK(p.fits());
  CHECK(p.slots == tm.n_used);
  uint32_t prev = p.slots;
  for (uint64_t extra = 1; extra < 64; extra += 7) {
    o.vram_bytes = p0.minimum + extra * p0.slot_bytes;
    p = plan_gpu_memory(*m, o, 128);
    CHECK(p.slots >= prev);
    CHECK(p.dense + p.kv + p.scratch + uint64_t(p.slots) * p.slot_bytes <= p.budget);
    CHECK(p.slots <= p.n_experts);
    prev = p.slots;
  }
  CHECK(p.all_resident());
  // The CPU-miss mode runs with no slot at all.
  o.gpu_miss = GpuMissMode::Cpu;
  o.vram_bytes = p0.dense + p0.kv + p0.scratch;
  p = plan_gpu_memory(*m, o, 128);
  CHECK(p.fits());
  CHECK(p.slots == 0);
  CHECK(p.min_slots == 0);
  CHECK_FALSE(p.to_text().empty());
}
