// runtime/src/engine/gpu_plan.cpp — plan_gpu_memory (moe/engine.h): the CUDA backend's split of its
// device memory, computed on the host so it is tested and printed (`moe inspect --vram`) on machines
// without a GPU; gpu_forward.cpp allocates exactly these sizes. Pure; thread-safe.
#include <fmt/format.h>

#include <algorithm>

#include "gpu_forward.h"
#include "rope_params.h"
#include "moe/engine.h"

namespace moe {

namespace {
constexpr uint64_t kAlign = 256;
uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
double gib(uint64_t b) { return double(b) / (1024.0 * 1024 * 1024); }
}  // namespace

GpuMemoryPlan plan_gpu_memory(const Model& m, const SessionOptions& o, uint32_t n_ctx) {
  const ModelSpec& s = m.spec();
  GpuMemoryPlan p;
  p.budget = o.vram_bytes;
  p.n_ctx = n_ctx ? n_ctx : (o.n_ctx ? o.n_ctx : std::min<uint32_t>(s.n_ctx_train ? s.n_ctx_train : 4096, 4096));
  auto wb = [](const WeightView& w) -> uint64_t { return w ? align_up(w.nbytes) : 0; };
  auto fb = [](const std::vector<float>& v) -> uint64_t { return align_up(v.size() * 4); };
  p.dense = wb(m.tok_embd()) + fb(m.output_norm());
  if (m.output().data != m.tok_embd().data) p.dense += wb(m.output());
  MmapExpertSource probe(m);
  uint64_t max_k = 1;
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    const LayerWeights& L = m.layer(il);
    const LayerSpec& ls = s.layers[il];
    p.dense += fb(L.attn_norm) + fb(L.ffn_norm) + fb(L.bq) + fb(L.bk) + fb(L.bv) + fb(L.q_norm) + fb(L.k_norm);
    p.dense += wb(L.wq) + wb(L.wk) + wb(L.wv) + wb(L.wo) + wb(L.router) + wb(L.gate_sh) + wb(L.up_sh) +
               wb(L.down_sh) + wb(L.shared_gate);
    if (!ls.is_moe) continue;
    max_k = std::max<uint64_t>(max_k, ls.n_expert_used);
    p.n_experts += ls.n_expert;
    const ExpertWeights w = probe.acquire(il, 0);  // a view: touches no expert bytes
    p.slot_bytes = std::max(p.slot_bytes, align_up(align_up(w.gate.nbytes) + align_up(w.up.nbytes) + w.down.nbytes));
  }
  // The RoPE (cos, sin) table: one row of n_rot floats per cache position.
  p.dense += align_up(uint64_t(p.n_ctx) * uint64_t(detail::rope_params_for(s).n_rot) * 4);
  const uint64_t HK = uint64_t(s.n_head_kv) * s.head_dim_k, HV = uint64_t(s.n_head_kv) * s.head_dim_v;
  p.kv = uint64_t(s.n_layer) * p.n_ctx * (HK + HV) * 2;
  p.scratch = detail::gpu_scratch_layout(m, p.n_ctx, o.n_batch).bytes;
  p.min_slots = o.gpu_miss == GpuMissMode::Upload && p.n_experts > 0 ? static_cast<uint32_t>(max_k) : 0;
  p.minimum = p.dense + p.kv + p.scratch + p.min_slots * p.slot_bytes;
  if (p.fits() && p.slot_bytes > 0)
    p.slots = static_cast<uint32_t>(std::min<uint64_t>((p.budget - p.dense - p.kv - p.scratch) / p.slot_bytes,
                                                       p.n_experts));
  return p;
}

namespace detail {

GpuScratchLayout gpu_scratch_layout(const Model& m, uint32_t n_ctx, uint32_t n_batch) {
  const ModelSpec& s = m.spec();
  uint64_t max_ff = 0, max_e = 1, max_k = 1, max_w = 0, max_cols = 1;
  auto track = [&](const WeightView& w) {
    if (!w) return;
    max_w = std::max<uint64_t>(max_w, uint64_t(w.rows) * uint64_t(w.cols));
    max_cols = std::max<uint64_t>(max_cols, uint64_t(w.cols));
  };
  MmapExpertSource probe(m);
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    const LayerSpec& ls = s.layers[il];
    const LayerWeights& L = m.layer(il);
    max_ff = std::max<uint64_t>({max_ff, ls.n_ff_expert, L.n_ff_sh});
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.router, &L.gate_sh, &L.up_sh, &L.down_sh,
                                &L.shared_gate})
      track(*w);
    if (!ls.is_moe) continue;
    max_e = std::max<uint64_t>(max_e, ls.n_expert);
    max_k = std::max<uint64_t>(max_k, ls.n_expert_used);
    const ExpertWeights w = probe.acquire(il, 0);  // a view: touches no expert bytes
    track(w.gate);
    track(w.up);
    track(w.down);
  }
  using L = GpuScratchLayout;
  L l;
  const uint64_t B = L::kTokens, T = std::max<uint64_t>(B, n_batch), E = s.n_embd,
                 HQ = uint64_t(s.n_head) * s.head_dim_k, HK = uint64_t(s.n_head_kv) * s.head_dim_k,
                 HV = uint64_t(s.n_head_kv) * s.head_dim_v, HO = uint64_t(s.n_head) * s.head_dim_v;
  l.batch = T;
  // GEMM tiles: a whole matrix when it is at most 4M floats (16 MiB), else as many rows as fit.
  l.workspace_floats = T > B ? std::max<uint64_t>(std::min<uint64_t>(max_w, uint64_t(4) << 20), max_cols) : 0;
  // Decode attention: about 32 cached positions per block at a full cache (up to 32 blocks per head).
  l.attn_split = static_cast<int>(std::clamp<uint64_t>(n_ctx / 32, 1, 32));
  uint64_t n[L::kParts] = {};
  n[L::X] = n[L::Xn] = n[L::Tmp] = n[L::Moe] = T * E;
  n[L::Q] = T * HQ;
  n[L::K] = T * HK;
  n[L::V] = T * HV;
  n[L::Att] = T * HO;
  n[L::RouterLogits] = T * max_e;
  n[L::Weights] = T * max_k;
  n[L::G] = n[L::U] = T * max_k * max_ff;
  n[L::ExpertOut] = T * max_k * E;
  n[L::Gathered] = T > B ? T * max_k * E : 0;
  n[L::SharedGate] = n[L::Ones] = n[L::SharedWeight] = T;
  n[L::Logits] = B * uint64_t(s.n_vocab);
  n[L::Partials] = B * uint64_t(s.n_head) * uint64_t(l.attn_split) * (HO / std::max<uint64_t>(s.n_head, 1) + 2);
  n[L::Workspace] = l.workspace_floats;
  uint64_t floats = 0;
  for (int i = 0; i < L::kParts; ++i) {
    l.floats[i] = floats;
    floats += (n[i] + 63) / 64 * 64;
  }
  l.ids = align_up(floats * 4);
  l.tokens = l.ids + align_up(T * max_k * 4);
  l.perm = l.tokens + align_up(T * 4 * 3);
  l.pred = l.perm + align_up(T * max_k * 4 * 2);
  l.ptrs = l.pred + align_up(B * max_k * 4 * 2);
  l.bytes = l.ptrs + align_up(uint64_t(s.n_layer) * B * max_k * 8);
  return l;
}

}  // namespace detail

std::string GpuMemoryPlan::to_text() const {
  return fmt::format("vram {:.2f} GiB = dense {:.2f} GiB + KV {:.2f} GiB ({} positions) + scratch {:.3f} GiB + {} "
                     "expert slots x {:.2f} MiB ({:.2f} GiB; {} of {} experts{})",
                     gib(budget), gib(dense), gib(kv), n_ctx, gib(scratch), slots, slot_bytes / 1048576.0,
                     gib(uint64_t(slots) * slot_bytes), slots, n_experts, all_resident() ? ", all resident" : "");
}

}  // namespace moe
