// Expert table: where every routed expert's bytes are in the file, and the model's byte accounting.
// Built once from an immutable GgufFile; the table is immutable afterwards (thread-safe to share).
//
// Layouts understood (ne[0] innermost, as GGUF stores it):
//   stacked    blk.L.ffn_gate_exps.weight [n_embd, n_ff, n_expert]   expert e = slab e of ne[0]*ne[1]
//              blk.L.ffn_up_exps.weight   [n_embd, n_ff, n_expert]
//              blk.L.ffn_down_exps.weight [n_ff, n_embd, n_expert]
//              optional biases blk.L.ffn_{gate,up}_exps.bias [n_ff, n_expert], ffn_down_exps.bias
//              [n_embd, n_expert] (gpt-oss): expert e = row e.
//   fused      blk.L.ffn_gate_up_exps.weight [n_embd, 2*n_ff, n_expert]: rows [0, n_ff) of slab e are
//              the gate, rows [n_ff, 2*n_ff) the up projection (both contiguous).
//   per-expert blk.L.ffn_{gate,up,down}.E.weight (older Mixtral conversions): one tensor per slice.
// Tensors of blocks the spec does not run (blk.L.* with L >= spec.n_layer: glm4moe's NextN layers) are
// neither experts nor dense: skipped_bytes() / skipped_tensor_names().
#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "moe/error.h"
#include "moe/model.h"

namespace moe {
namespace {

struct Ctx {
  const gguf::GgufFile& f;
  const ModelSpec& spec;
  std::vector<std::string>& names;

  const gguf::TensorInfo* find(const std::string& n) const { return f.find_tensor(n); }
  const gguf::TensorInfo& need(const std::string& n) const {
    const auto* t = f.find_tensor(n);
    if (!t) fail(ErrorCode::Corrupt, "{}: missing tensor '{}'", f.path(), n);
    return *t;
  }
  void shape(const gguf::TensorInfo& t, uint64_t a, uint64_t b, uint64_t c) const {
    if (t.ne[0] != a || t.ne[1] != b || t.ne[2] != c || t.ne[3] != 1)
      fail(ErrorCode::Corrupt, "{}: tensor '{}' has shape [{}, {}, {}, {}], expected [{}, {}, {}]", f.path(), t.name,
           t.ne[0], t.ne[1], t.ne[2], t.ne[3], a, b, c);
  }
  // Slice of `rows` rows starting at row `row0` of the tensor (rows of ne[0] elements).
  Slice rows(const gguf::TensorInfo& t, uint64_t row0, uint64_t n_rows) const {
    const uint64_t rb = t.row_bytes();
    Slice s;
    s.offset = t.offset + row0 * rb;
    s.nbytes = n_rows * rb;
    s.type = t.type;
    MOE_ASSERT(s.offset + s.nbytes <= t.offset + t.nbytes, "expert slice inside its tensor");
    return s;
  }
};

}  // namespace

ExpertTable ExpertTable::build(const gguf::GgufFile& f, const ModelSpec& spec) {
  ExpertTable tab;
  tab.n_layer_ = spec.n_layer;
  tab.n_expert_ = 0;
  for (const auto& L : spec.layers) tab.n_expert_ = std::max(tab.n_expert_, L.n_expert);
  tab.e_.resize(size_t(tab.n_layer_) * tab.n_expert_);
  tab.moe_layer_.assign(tab.n_layer_, false);
  MOE_ASSERT(spec.layers.size() == spec.n_layer, "spec.layers has one entry per layer");
  Ctx c{f, spec, tab.expert_tensors_};
  const uint64_t E_ = spec.n_embd;

  for (uint32_t il = 0; il < spec.n_layer; ++il) {
    const LayerSpec& L = spec.layers[il];
    if (!L.is_moe) continue;
    tab.moe_layer_[il] = true;
    const uint64_t ff = L.n_ff_expert, ne = L.n_expert;
    ExpertSlices* row = &tab.e_[size_t(il) * tab.n_expert_];
    auto name = [&](const char* what) { return fmt::format("blk.{}.{}", il, what); };

    const auto* gate_up = c.find(name("ffn_gate_up_exps.weight"));
    const auto* gate = c.find(name("ffn_gate_exps.weight"));
    const auto* down = c.find(name("ffn_down_exps.weight"));
    if (gate_up || gate || down) {
      const auto& d = c.need(name("ffn_down_exps.weight"));
      c.shape(d, ff, E_, ne);
      c.names.push_back(d.name);
      if (gate_up) {
        c.shape(*gate_up, E_, 2 * ff, ne);
        c.names.push_back(gate_up->name);
      } else {
        const auto& g = c.need(name("ffn_gate_exps.weight"));
        const auto& u = c.need(name("ffn_up_exps.weight"));
        c.shape(g, E_, ff, ne);
        c.shape(u, E_, ff, ne);
        c.names.push_back(g.name);
        c.names.push_back(u.name);
      }
      const auto* gb = c.find(name("ffn_gate_exps.bias"));
      const auto* ub = c.find(name("ffn_up_exps.bias"));
      const auto* db = c.find(name("ffn_down_exps.bias"));
      if (gb) c.shape(*gb, ff, ne, 1), c.names.push_back(gb->name);
      if (ub) c.shape(*ub, ff, ne, 1), c.names.push_back(ub->name);
      if (db) c.shape(*db, E_, ne, 1), c.names.push_back(db->name);
      for (uint64_t e = 0; e < ne; ++e) {
        ExpertSlices& x = row[e];
        if (gate_up) {
          x.gate = c.rows(*gate_up, e * 2 * ff, ff);
          x.up = c.rows(*gate_up, e * 2 * ff + ff, ff);
        } else {
          x.gate = c.rows(*gate, e * ff, ff);
          x.up = c.rows(*c.find(name("ffn_up_exps.weight")), e * ff, ff);
        }
        x.down = c.rows(d, e * E_, E_);
        if (gb) x.gate_bias = c.rows(*gb, e, 1);
        if (ub) x.up_bias = c.rows(*ub, e, 1);
        if (db) x.down_bias = c.rows(*db, e, 1);
      }
    } else {
      // Per-expert tensors (older Mixtral conversions).
      for (uint64_t e = 0; e < ne; ++e) {
        const auto& g = c.need(fmt::format("blk.{}.ffn_gate.{}.weight", il, e));
        const auto& u = c.need(fmt::format("blk.{}.ffn_up.{}.weight", il, e));
        const auto& d = c.need(fmt::format("blk.{}.ffn_down.{}.weight", il, e));
        c.shape(g, E_, ff, 1);
        c.shape(u, E_, ff, 1);
        c.shape(d, ff, E_, 1);
        row[e].gate = c.rows(g, 0, ff);
        row[e].up = c.rows(u, 0, ff);
        row[e].down = c.rows(d, 0, E_);
        c.names.push_back(g.name);
        c.names.push_back(u.name);
        c.names.push_back(d.name);
      }
    }
    for (uint64_t e = 0; e < ne; ++e) {
      const uint64_t b = row[e].bytes();
      tab.total_bytes_ += b;
      tab.max_bytes_ = std::max(tab.max_bytes_, b);
    }
  }

  // Tensors of layers the spec does not run (blk.L.* with L >= n_layer: glm4moe's NextN layers).
  auto skipped_layer = [&](const std::string& n) {
    if (n.rfind("blk.", 0) != 0) return false;
    uint64_t il = 0;
    size_t i = 4;
    for (; i < n.size() && n[i] >= '0' && n[i] <= '9' && il <= UINT32_MAX; ++i) il = il * 10 + uint64_t(n[i] - '0');
    return i > 4 && i < n.size() && n[i] == '.' && il >= spec.n_layer;
  };
  uint64_t all = 0, in_experts = 0;
  std::unordered_set<std::string> expert_set(tab.expert_tensors_.begin(), tab.expert_tensors_.end());
  for (const auto& t : f.tensors()) {
    all += t.nbytes;
    if (expert_set.count(t.name)) {
      in_experts += t.nbytes;
    } else if (skipped_layer(t.name)) {
      tab.skipped_bytes_ += t.nbytes;
      tab.skipped_tensors_.push_back(t.name);
    }
  }
  MOE_ASSERT(in_experts == tab.total_bytes_, "expert slices partition the expert tensors");
  tab.dense_bytes_ = all - in_experts - tab.skipped_bytes_;
  return tab;
}

const ExpertSlices* ExpertTable::at(uint32_t layer, uint32_t expert) const noexcept {
  if (layer >= n_layer_ || expert >= n_expert_ || !moe_layer_[layer]) return nullptr;
  return &e_[size_t(layer) * n_expert_ + expert];
}

ModelBytes model_bytes(const gguf::GgufFile& f, const ModelSpec& spec, const ExpertTable& t) {
  ModelBytes b;
  b.file = f.file_size();
  for (const auto& ti : f.tensors()) b.tensors += ti.nbytes;
  b.dense = t.dense_bytes();
  b.experts = t.total_bytes();
  b.skipped = t.skipped_bytes();
  b.per_expert = t.max_expert_bytes();
  b.active_per_token = b.dense;
  for (uint32_t il = 0; il < spec.n_layer; ++il) {
    if (!t.is_moe_layer(il)) continue;
    const ExpertSlices* e = t.at(il, 0);
    b.active_per_token += uint64_t(spec.layers[il].n_expert_used) * (e ? e->bytes() : 0);
  }
  return b;
}

}  // namespace moe
