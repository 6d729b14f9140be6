// runtime/src/engine/gpu_forward.cpp — the CUDA backend of Session (see gpu_forward.h for the
// contract). The layer loop mirrors session.cpp step for step, calling the kernels/cuda launchers
// (each the twin of the CPU op session.cpp calls) on one compute stream; expert uploads run on a
// copy stream ordered by events. Thread-safety: one Session thread.
//
// Per MoE layer and chunk of tokens the router runs on the GPU, its ids and weights come back to the
// host (the only synchronisation of the layer), the host looks each chosen expert up in the VRAM
// tier (moe::cache::ResidencyManager), uploads or CPU-computes the misses, writes the chunk's table
// of expert base pointers (one per (token, k) job) and launches the expert matvecs that read it.
// Slot reuse is safe by events: a slot's upload waits for the last kernel that read its previous
// expert (slot_free_), and a kernel reading a slot waits for its upload (slot_ready_).
//
// When every expert is resident, a decode step (one token) needs nothing from the host between its
// first kernel and its logits: positions and key counts are read from device memory, the expert
// matvecs index the device slot table with the router's device ids, and the shared-expert gate is a
// device sigmoid. That step is captured once as a CUDA graph and replayed for every later token
// (SessionOptions::cuda_graph); the captured kernels are the ones the uncaptured path launches, so the
// logits are the same bits either way.
#include "gpu_forward.h"

#include <cstdio>

#if defined(MOE_HAVE_CUDA)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/act.cuh"
#include "cuda/attention.cuh"
#include "cuda/backend.h"
#include "cuda/common.cuh"
#include "cuda/embed.cuh"
#include "cuda/gemm.cuh"
#include "cuda/dequant.cuh"
#include "cuda/matvec.cuh"
#include "cuda/norm.cuh"
#include "cuda/rope.cuh"
#include "cuda/router.cuh"
#include "moe/cache/residency.h"
#include "moe/error.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/ops.h"
#include "moe/kernels/thread_pool.h"
#include "rope_params.h"
#endif

namespace moe::detail {

#if !defined(MOE_HAVE_CUDA)

std::unique_ptr<GpuForward> make_gpu_forward(const Model&, ExpertSource&, const SessionOptions& o, uint32_t,
                                             kernels::ThreadPool*) {
  if (!o.quiet_backend) std::fprintf(stderr, "moe: built without CUDA; --vram ignored, running on the CPU\n");
  return nullptr;
}

#else

namespace {

namespace ops = kernels::ops;
using cache::ExpertKey;

constexpr size_t kAlign = 256;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
double gib(uint64_t b) { return double(b) / (1024.0 * 1024 * 1024); }

// One device matrix (a dense weight uploaded as stored).
struct DevW {
  const void* p = nullptr;
  TensorType type = TensorType::F32;
  int64_t rows = 0, cols = 0;
  size_t stride = 0;
  explicit operator bool() const noexcept { return p != nullptr; }
};

struct DevLayer {
  const float *attn_norm = nullptr, *ffn_norm = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr;
  DevW wq, wk, wv, wo, router, gate_sh, up_sh, down_sh, shared_gate;
  uint16_t *kc = nullptr, *vc = nullptr;
  // Routed experts: a slot holds gate | up | down at these offsets.
  size_t off_up = 0, off_down = 0, expert_bytes = 0;
  TensorType t_gate = TensorType::F32, t_up = TensorType::F32, t_down = TensorType::F32;
  size_t s_gate = 0, s_up = 0, s_down = 0;  // row strides
};

// Events are created once; a slot's events stay valid for the backend's life.
struct Event {
  cudaEvent_t e = nullptr;
  bool used = false;
};

class CudaForward final : public GpuForward {
 public:
  CudaForward(const Model& m, ExpertSource& src, const SessionOptions& o, uint32_t n_ctx, kernels::ThreadPool* pool)
      : m_(m), src_(src), o_(o), n_ctx_(n_ctx), pool_(pool) {
    const ModelSpec& s = m.spec();
    MOE_CUDA_CHECK(cudaSetDevice(o.gpu_device));
    cudaDeviceProp prop{};
    MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, o.gpu_device));
    device_name_ = prop.name;
    size_t free_b = 0, total_b = 0;
    MOE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (o.vram_bytes > free_b)
      fail(ErrorCode::InvalidArgument, "--vram {:.2f} GiB is more than the {:.2f} GiB free on {} (of {:.2f} GiB)",
           gib(o.vram_bytes), gib(free_b), device_name_, gib(total_b));
    for (uint32_t il = 0; il < s.n_layer; ++il)
      if (s.layers[il].is_moe && (s.layers[il].n_expert_used == 0 || s.layers[il].n_expert_used > 64))
        fail(ErrorCode::Unsupported, "cuda backend: layer {} uses {} experts per token (1..64 supported)", il,
             s.layers[il].n_expert_used);
    if (s.kv_lora_rank > 0 || s.q_lora_rank > 0)
      fail(ErrorCode::Unsupported, "cuda backend: multi-head latent attention ({}) is not supported on the GPU; "
           "run without --vram", s.arch_name);
    if (s.gating.has_bias || s.gating.n_group > 1 || s.layer_norm || s.attn_out_bias || s.fused_qkv ||
        s.embedding_scale != 0.0f || s.residual_scale != 0.0f || s.logit_scale != 0.0f || s.moe_parallel_dense ||
        s.attn_softcap != 0.0f || s.attn_post_norm || s.ffn_post_norm || s.logit_mul != 0.0f ||
        s.final_softcap != 0.0f || s.norm_bias || s.output_bias || s.rope_factors || s.rope_freqs ||
        s.rope_attn_factor != 1.0f)
      fail(ErrorCode::Unsupported, "cuda backend: architecture '{}' (biased or group-limited expert selection, "
           "LayerNorm, norm or output biases, LongRoPE, fused qkv or multipliers) is not supported on the GPU; run it "
           "on the CPU (no --vram)",
           s.arch_name);
    // gpt-oss (attention sinks, sliding-window layers, router and per-expert biases, clamped SwiGLU) runs on
    // the CPU backend only: the kernels here implement none of these.
    bool expert_bias = false;
    for (uint32_t il = 0; il < s.n_layer; ++il)
      if (const ExpertSlices* es = m.experts().at(il, 0))
        expert_bias = expert_bias || es->gate_bias.nbytes || es->up_bias.nbytes || es->down_bias.nbytes;
    if (s.attn_sinks || s.n_swa || s.gating.router_bias || s.ffn_act == FfnAct::SwigluOai || expert_bias ||
        s.ffn_norm_post_attention)
      fail(ErrorCode::Unsupported, "cuda backend: architecture '{}' (attention sinks, sliding window, biased router "
           "or experts, clamped SwiGLU) is not supported on the GPU; run it on the CPU (no --vram)", s.arch_name);
    // llama4 (chunked attention, NoPE layers with temperature tuning, weightless q/k norm, expert weights
    // applied to the expert input, interleaved dense layers): CPU backend only.
    if (s.n_chunk || s.no_rope_layer_step || s.attn_temp_scale != 0.0f || s.qk_l2_norm || s.gating.weight_before_ffn)
      fail(ErrorCode::Unsupported, "cuda backend: architecture '{}' (chunked attention, NoPE layers, expert weights "
           "before the FFN) is not supported on the GPU; run it on the CPU (no --vram)", s.arch_name);
    if (s.n_embd % 32 != 0) fail(ErrorCode::Unsupported, "cuda backend: n_embd {} is not a multiple of 32", s.n_embd);

    E_ = s.n_embd;
    HQ_ = size_t(s.n_head) * s.head_dim_k;
    HK_ = size_t(s.n_head_kv) * s.head_dim_k;
    HV_ = size_t(s.n_head_kv) * s.head_dim_v;
    HO_ = size_t(s.n_head) * s.head_dim_v;
    for (uint32_t il = 0; il < s.n_layer; ++il) {
      const LayerSpec& ls = s.layers[il];
      max_ff_ = std::max<size_t>({max_ff_, ls.n_ff_expert, m.layer(il).n_ff_sh});
      if (ls.is_moe) {
        max_e_ = std::max<size_t>(max_e_, ls.n_expert);
        max_k_ = std::max<size_t>(max_k_, ls.n_expert_used);
      }
    }

    // ---- the plan: dense weights, KV cache, scratch, then expert slots ----
    MmapExpertSource probe(m);
    layers_.resize(s.n_layer);
    uint64_t slot_bytes = 0;
    for (uint32_t il = 0; il < s.n_layer; ++il) {
      if (s.layers[il].is_moe) {
        const ExpertWeights w = probe.acquire(il, 0);
        DevLayer& D = layers_[il];
        D.t_gate = w.gate.type;
        D.t_up = w.up.type;
        D.t_down = w.down.type;
        D.s_gate = *row_bytes(w.gate.type, w.gate.cols);
        D.s_up = *row_bytes(w.up.type, w.up.cols);
        D.s_down = *row_bytes(w.down.type, w.down.cols);
        D.off_up = align_up(w.gate.nbytes);
        D.off_down = D.off_up + align_up(w.up.nbytes);
        D.expert_bytes = D.off_down + w.down.nbytes;
        slot_bytes = std::max<uint64_t>(slot_bytes, align_up(D.expert_bytes));
        for (const WeightView* v : {&w.gate, &w.up, &w.down})
          if (!cuda::matvec_supported(v->type))
            fail(ErrorCode::Unsupported, "cuda backend: expert tensors of type {} are not supported",
                 traits(v->type).name);
      }
    }
    static_assert(GpuScratchLayout::kTokens == cuda::kMatvecMaxBatch);
    const size_t B = cuda::kMatvecMaxBatch;
    const GpuScratchLayout lay = gpu_scratch_layout(m, n_ctx_, o.n_batch);
    T_ = lay.batch;
    ws_floats_ = lay.workspace_floats;
    attn_split_ = lay.attn_split;
    const GpuMemoryPlan plan = plan_gpu_memory(m, o, n_ctx_);
    MOE_ASSERT(plan.slot_bytes == slot_bytes, "cuda backend: plan_gpu_memory disagrees with the slot layout");
    if (!plan.fits())
      fail(ErrorCode::InvalidArgument,
           "--vram {:.3f} GiB is too small for {}: dense weights {:.3f} GiB + KV cache {:.3f} GiB ({} positions) + "
           "scratch {:.3f} GiB{} need at least {:.3f} GiB",
           gib(o.vram_bytes), m.file().path(), gib(plan.dense), gib(plan.kv), n_ctx_, gib(plan.scratch),
           plan.min_slots ? fmt::format(" + {} expert slots {:.3f} GiB (or --gpu-misses cpu)", plan.min_slots,
                                        gib(uint64_t(plan.min_slots) * slot_bytes))
                          : std::string(),
           gib(plan.minimum));
    const uint64_t dense = plan.dense;
    dense_bytes_ = plan.dense;
    kv_bytes_ = plan.kv;
    slot_bytes_ = slot_bytes;
    n_slots_ = plan.slots;
    all_resident_ = plan.all_resident();
    const uint64_t kv = plan.kv;

    // ---- allocate and upload ----
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&cs_, cudaStreamNonBlocking));
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&xs_, cudaStreamNonBlocking));
    MOE_CUDA_CHECK(cudaMalloc(&dense_mem_, std::max<uint64_t>(dense, 1)));
    char* cur = static_cast<char*>(dense_mem_);
    auto put = [&](const void* host, size_t n) -> const void* {
      if (n == 0) return nullptr;
      MOE_CUDA_CHECK(cudaMemcpy(cur, host, n, cudaMemcpyHostToDevice));
      const void* p = cur;
      cur += align_up(n);
      return p;
    };
    auto putw = [&](const WeightView& w) {
      DevW d;
      if (!w) return d;
      if (!cuda::matvec_supported(w.type))
        fail(ErrorCode::Unsupported, "cuda backend: tensors of type {} are not supported", traits(w.type).name);
      d.p = put(w.data, w.nbytes);
      d.type = w.type;
      d.rows = w.rows;
      d.cols = w.cols;
      d.stride = *row_bytes(w.type, w.cols);
      return d;
    };
    auto putf = [&](const std::vector<float>& v) { return static_cast<const float*>(put(v.data(), v.size() * 4)); };
    tok_embd_ = putw(m.tok_embd());
    output_ = m.output().data == m.tok_embd().data ? tok_embd_ : putw(m.output());
    out_norm_ = putf(m.output_norm());
    rope_ = rope_params_for(s);
    if (rope_.n_rot > 0) rope_table_ = putf(cuda::rope_table_host(rope_, static_cast<int>(n_ctx_)));
    MOE_CUDA_CHECK(cudaMalloc(&kv_mem_, std::max<uint64_t>(kv, 1)));
    for (uint32_t il = 0; il < s.n_layer; ++il) {
      const LayerWeights& L = m.layer(il);
      DevLayer& D = layers_[il];
      D.attn_norm = putf(L.attn_norm);
      D.ffn_norm = putf(L.ffn_norm);
      D.bq = putf(L.bq);
      D.bk = putf(L.bk);
      D.bv = putf(L.bv);
      D.q_norm = putf(L.q_norm);
      D.k_norm = putf(L.k_norm);
      D.wq = putw(L.wq);
      D.wk = putw(L.wk);
      D.wv = putw(L.wv);
      D.wo = putw(L.wo);
      D.router = putw(L.router);
      D.gate_sh = putw(L.gate_sh);
      D.up_sh = putw(L.up_sh);
      D.down_sh = putw(L.down_sh);
      D.shared_gate = putw(L.shared_gate);
      D.kc = static_cast<uint16_t*>(kv_mem_) + size_t(il) * n_ctx_ * (HK_ + HV_);
      D.vc = D.kc + size_t(n_ctx_) * HK_;
    }
    MOE_CUDA_CHECK(cudaMalloc(&scratch_mem_, lay.bytes));
    using L = GpuScratchLayout;
    float* f = static_cast<float*>(scratch_mem_);
    x_ = f + lay.floats[L::X], xn_ = f + lay.floats[L::Xn], q_ = f + lay.floats[L::Q], k_ = f + lay.floats[L::K];
    v_ = f + lay.floats[L::V], att_ = f + lay.floats[L::Att], tmp_ = f + lay.floats[L::Tmp];
    moe_ = f + lay.floats[L::Moe], rl_ = f + lay.floats[L::RouterLogits], w_ = f + lay.floats[L::Weights];
    g_ = f + lay.floats[L::G], u_ = f + lay.floats[L::U], e_ = f + lay.floats[L::ExpertOut];
    sg_ = f + lay.floats[L::SharedGate], ones_ = f + lay.floats[L::Ones], wsh_ = f + lay.floats[L::SharedWeight];
    logits_ = f + lay.floats[L::Logits], part_ = f + lay.floats[L::Partials];
    xg_ = f + lay.floats[L::Gathered], ws_ = f + lay.floats[L::Workspace];
    char* base = static_cast<char*>(scratch_mem_);
    ids_ = reinterpret_cast<int32_t*>(base + lay.ids);
    pos_ = reinterpret_cast<int32_t*>(base + lay.tokens);
    tok_ = pos_ + T_;
    nkv_ = pos_ + 2 * T_;
    perm_ = reinterpret_cast<int32_t*>(base + lay.perm);
    pids_ = reinterpret_cast<int32_t*>(base + lay.pred);
    pw_ = reinterpret_cast<float*>(pids_ + B * max_k_);
    next_moe_.assign(s.n_layer, UINT32_MAX);
    for (uint32_t il = s.n_layer, nx = UINT32_MAX; il-- > 0;) {
      next_moe_[il] = nx;
      if (s.layers[il].is_moe) nx = il;
    }
    ptrs_ = reinterpret_cast<const void**>(base + lay.ptrs);
    const std::vector<float> ones(T_, 1.0f);
    MOE_CUDA_CHECK(cudaMemcpy(ones_, ones.data(), T_ * 4, cudaMemcpyHostToDevice));
    if (n_slots_ > 0) MOE_CUDA_CHECK(cudaMalloc(&slots_mem_, n_slots_ * slot_bytes_));
    slot_ready_.resize(n_slots_);
    slot_free_.resize(n_slots_);
    for (uint64_t i = 0; i < n_slots_; ++i) {
      MOE_CUDA_CHECK(cudaEventCreateWithFlags(&slot_ready_[i].e, cudaEventDisableTiming));
      MOE_CUDA_CHECK(cudaEventCreateWithFlags(&slot_free_[i].e, cudaEventDisableTiming));
    }
    // Pinned host buffers: routing results, the chunk's pointer tables, CPU expert outputs, staging.
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_ids_), T_ * max_k_ * 4, cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_w_), T_ * max_k_ * 4, cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_in_), T_ * 4 * 3, cudaHostAllocDefault));
    std::memset(h_in_, 0, T_ * 4 * 3);
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_perm_), T_ * max_k_ * 4 * 2, cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_pids_), B * max_k_ * 4, cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_logits_), size_t(s.n_vocab) * 4, cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_ptrs_), size_t(s.n_layer) * B * max_k_ * 8,
                                 cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_xn_), T_ * E_ * 4, cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_e_), T_ * max_k_ * E_ * 4, cudaHostAllocDefault));
    for (auto& st : staging_) {
      MOE_CUDA_CHECK(cudaHostAlloc(&st.p, std::max<uint64_t>(slot_bytes_, 1), cudaHostAllocDefault));
      MOE_CUDA_CHECK(cudaEventCreateWithFlags(&st.ev.e, cudaEventDisableTiming));
    }
    MOE_CUDA_CHECK(cudaEventCreate(&up_t0_));
    MOE_CUDA_CHECK(cudaEventCreate(&up_t1_));
    h_gu_.resize(max_ff_ * 2);
    // Prefill batches above kB tokens run GEMMs over dequantized tiles when every weight type has a GPU decoder.
    batch_ok_ = T_ > B;
    for (uint32_t il = 0; il < s.n_layer && batch_ok_; ++il) {
      const DevLayer& D = layers_[il];
      for (const DevW* w : {&D.wq, &D.wk, &D.wv, &D.wo, &D.router, &D.gate_sh, &D.up_sh, &D.down_sh, &D.shared_gate})
        if (*w && !cuda::dequantize_supported(w->type)) batch_ok_ = false;
      if (s.layers[il].is_moe)
        for (TensorType t : {D.t_gate, D.t_up, D.t_down})
          if (!cuda::dequantize_supported(t)) batch_ok_ = false;
    }
    if (batch_ok_) blas_ = std::make_unique<cuda::Blas>();

    if (n_slots_ > 0) {
      cache::TierConfig tc;
      tc.name = "vram";
      tc.budget_bytes = n_slots_ * slot_bytes_;
      tc.slot_bytes = slot_bytes_;
      tc.n_layer = s.n_layer;
      tc.n_expert = static_cast<uint32_t>(max_e_);
      // With pre-gated prefetch, a guess must survive the guesses queued after it until its layer runs:
      // evicting prefetched-unused entries first would make each prefetch evict the one before it.
      tc.prefetched_unused_first = !o.gpu_prefetch;
      tc.moe_layers.resize(s.n_layer);
      for (uint32_t il = 0; il < s.n_layer; ++il) tc.moe_layers[il] = s.layers[il].is_moe;
      cache::CacheStatus cst{};
      vram_ = cache::ResidencyManager::create(tc, o.vram_policy, cache::PolicyParams{}, &cst);
      if (!vram_)
        fail(ErrorCode::InvalidArgument, "cuda backend: VRAM tier with policy '{}' cannot be created",
             o.vram_policy);
    }
    // Tokens per chunk: in upload mode every distinct expert of a chunk must fit in VRAM at once.
    chunk_ = B;
    if (o.gpu_miss == GpuMissMode::Upload && max_k_ > 0)
      chunk_ = std::clamp<size_t>(n_slots_ / max_k_, 1, B);
    // The pinned DRAM tier: when experts are read from the memory map, page-lock the mapping so an
    // upload is one asynchronous DMA from the page cache (no staging copy on the CPU thread).
    if (dynamic_cast<MmapExpertSource*>(&src) != nullptr && n_slots_ > 0) {
      const auto b = m.file().bytes();
      const cudaError_t r = cudaHostRegister(const_cast<uint8_t*>(b.data()), b.size(),
                                             cudaHostRegisterReadOnly | cudaHostRegisterPortable);
      if (r == cudaSuccess) {
        registered_ = const_cast<uint8_t*>(b.data());
        host_pinned_ = true;
      } else if (r == cudaErrorHostMemoryAlreadyRegistered) {
        (void)cudaGetLastError();
        host_pinned_ = true;  // another session of this model registered it
      } else {
        (void)cudaGetLastError();
        if (!o.quiet_backend)
          std::fprintf(stderr, "moe: could not page-lock %s for DMA (%s); uploads go through a staging buffer\n",
                       m.file().path().c_str(), cudaGetErrorString(r));
      }
    }
    if (all_resident_) preload();
    use_graph_ = all_resident_ && o.cuda_graph;
    if (!all_resident_ && o.gpu_miss == GpuMissMode::Auto) calibrate_auto();
    // One-time costs at load rather than in the first prompt: cuBLAS initialisation and its first kernels'
    // loading (a GEMM over scratch, result unused) and the decode graph's capture and instantiation.
    if (batch_ok_) warm_up_gemm();
    if (use_graph_) capture_graph();
  }

  // Every routed expert fits: upload them all once and keep a device-side table (layer, expert) ->
  // slot address that the expert matvecs index with the router's device ids, so a decode step never
  // waits for the host (no routing round trip).
  void preload() {
    const ModelSpec& s = m_.spec();
    std::vector<const void*> table(size_t(s.n_layer) * max_e_, nullptr);
    SessionStats st;
    for (uint32_t il = 0; il < s.n_layer; ++il) {
      if (!s.layers[il].is_moe) continue;
      for (uint32_t e = 0; e < s.layers[il].n_expert; ++e) {
        const ExpertKey key{il, e};
        cache::Reservation r = vram_->BeginFetch(key, cache::FetchKind::Prefetch, false, 0);
        if (r.status != cache::ReserveStatus::Reserved)
          fail(ErrorCode::Internal, "cuda backend: preloading expert {}/{}: {}", il, e,
               cache::reserve_status_name(r.status));
        upload(il, e, r.slot, st);
        vram_->CompleteFetch(key);
        table[size_t(il) * max_e_ + e] = static_cast<const char*>(slots_mem_) + size_t(r.slot) * slot_bytes_;
      }
    }
    h_table_ = table;
    MOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d_table_), table.size() * sizeof(void*)));
    MOE_CUDA_CHECK(cudaMemcpy(d_table_, table.data(), table.size() * sizeof(void*), cudaMemcpyHostToDevice));
    MOE_CUDA_CHECK(cudaStreamSynchronize(xs_));
    preload_bytes_ = st.vram_upload_bytes;
    const size_t n = size_t(s.n_layer) * kB * max_k_;
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_ids_all_), n * 4, cudaHostAllocDefault));
    MOE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_w_all_), n * 4, cudaHostAllocDefault));
  }

  ~CudaForward() override {
    cudaDeviceSynchronize();
    vram_.reset();
    for (auto& v : {&slot_ready_, &slot_free_})
      for (auto& e : *v) cudaEventDestroy(e.e);
    for (auto& st : staging_) {
      cudaFreeHost(st.p);
      cudaEventDestroy(st.ev.e);
    }
    cudaEventDestroy(up_t0_);
    cudaEventDestroy(up_t1_);
    if (registered_) cudaHostUnregister(registered_);
    if (gexec_) cudaGraphExecDestroy(gexec_);
    if (graph_) cudaGraphDestroy(graph_);
    cudaFree(d_table_);
    cudaFreeHost(h_ids_all_);
    cudaFreeHost(h_w_all_);
    blas_.reset();
    for (void* p : {(void*)h_ids_, (void*)h_w_, (void*)h_in_, (void*)h_logits_, (void*)h_ptrs_, (void*)h_xn_,
                    (void*)h_e_, (void*)h_perm_, (void*)h_pids_})
      cudaFreeHost(p);
    cudaFree(slots_mem_);
    cudaFree(scratch_mem_);
    cudaFree(kv_mem_);
    cudaFree(dense_mem_);
    cudaStreamDestroy(cs_);
    cudaStreamDestroy(xs_);
  }

  std::string describe() const override {
    return fmt::format(
        "cuda: {} | vram {:.2f} GiB: dense {:.2f} GiB, KV {:.2f} GiB, {} expert slots of {:.1f} MiB ({:.2f} GiB, "
        "policy {}) | host copy {} | misses: {} | decode graph {}",
        device_name_, gib(o_.vram_bytes), gib(dense_bytes_), gib(kv_bytes_), n_slots_, slot_bytes_ / 1048576.0,
        gib(n_slots_ * slot_bytes_), all_resident_ ? "all resident" : vram_ ? vram_->policy_name() : "none",
        host_pinned_ ? "page-locked" : "staged",
        o_.gpu_miss == GpuMissMode::Upload ? "uploaded"
        : o_.gpu_miss == GpuMissMode::Cpu  ? "computed on the CPU"
                                           : "split between the CPU and uploads",
        use_graph_ ? "on" : "off");
  }

  void forward(const int32_t* tokens, uint32_t n, uint32_t pos, float* logits, float* all_logits, SessionStats& st,
               int32_t* last_e, float* last_w, size_t kk) override {
    const ModelSpec& s = m_.spec();
    // Batches above gpu_gemm_min_tokens (and kB) go through the GEMM path whole (up to T_): each expert is read,
    // and uploaded on a miss, once per batch. Smaller ones run as matvec chunks of up to kB tokens. The choice
    // never depends on the budget, so every budget computes the same bits (upload mode).
    const bool gemm = batch_ok_ && n > kB && n > o_.gpu_gemm_min_tokens;
    const size_t step = gemm ? T_ : chunk_;
    for (uint32_t off = 0; off < n; off += step) {
      const uint32_t nt = static_cast<uint32_t>(std::min<size_t>(step, n - off));
      chunk(tokens + off, nt, pos + off, all_logits ? all_logits + size_t(off) * s.n_vocab : nullptr, st, last_e,
            last_w, kk, off + nt == n ? logits : nullptr);
    }
    // Prefetch hits are counted by the tier when a lookup first uses a prefetched entry: add the ones since the
    // last call, once per forward (the tier's stats() builds a per-layer table: not a per-layer cost).
    if (o_.gpu_prefetch && vram_) {
      const uint64_t hits = vram_->stats().total().prefetch_hits;
      st.vram_prefetch_hits += hits - prefetch_hits_seen_;
      prefetch_hits_seen_ = hits;
    }
  }

 private:
  struct Staging {
    void* p = nullptr;
    Event ev;
  };

  void chunk(const int32_t* tokens, uint32_t nt, uint32_t p0, float* all_logits, SessionStats& st, int32_t* last_e,
             float* last_w, size_t kk, float* logits) {
    const ModelSpec& s = m_.spec();
    // The previous chunk's host buffers may still feed copies: wait for the stream first.
    MOE_CUDA_CHECK(cudaStreamSynchronize(cs_));
    for (uint32_t t = 0; t < nt; ++t) {
      h_in_[t] = static_cast<int32_t>(p0 + t);
      h_in_[T_ + t] = tokens[t];
      h_in_[2 * T_ + t] = static_cast<int32_t>(p0 + t + 1);
    }
    MOE_CUDA_CHECK(cudaMemcpyAsync(pos_, h_in_, (2 * T_ + nt) * 4, cudaMemcpyHostToDevice, cs_));
    if (use_graph_ && nt == 1 && logits && !all_logits) {
      decode_graph(p0, st);
    } else {
      enqueue(nt, p0, all_logits, logits != nullptr, st, last_e, last_w, kk);
    }
    const size_t V = s.n_vocab;
    MOE_CUDA_CHECK(cudaStreamSynchronize(cs_));
    if (all_logits) {
      if (logits) std::memcpy(logits, all_logits + (nt - 1) * V, V * 4);
    } else if (logits) {
      std::memcpy(logits, h_logits_, V * 4);
    }
    // The matvec path keeps the routing of a resident chunk on the device; the batch path copied it already.
    if (all_resident_ && logits && nt <= kB) {  // the stream is synchronised: the routing copies have landed
      for (uint32_t il = 0; il < s.n_layer; ++il) {
        const uint32_t k = s.layers[il].n_expert_used;
        if (!s.layers[il].is_moe) continue;
        std::copy_n(h_ids_all_ + size_t(il) * kB * max_k_ + size_t(nt - 1) * k, k, last_e + il * kk);
        std::copy_n(h_w_all_ + size_t(il) * kB * max_k_ + size_t(nt - 1) * k, k, last_w + il * kk);
      }
    }
  }

  // cuBLAS picks a kernel per shape and loads each on first use (tens of ms for the first): run the prefill
  // shapes once at load, over scratch (results unused) — the dense projections at the batch size and the
  // expert matrices at every power-of-two token count an expert can get.
  void warm_up_gemm() {
    const ModelSpec& s = m_.spec();
    const DevW& w = layers_[0].wq;
    for (size_t n : {size_t(kB) + 1, T_}) gemm(w.type, w.p, w.stride, w.rows, w.cols, xn_, int64_t(n), q_);
    uint32_t il = 0;
    while (il < s.n_layer && !s.layers[il].is_moe) ++il;
    const char* base = il == s.n_layer ? nullptr
                       : all_resident_   ? static_cast<const char*>(h_table_[size_t(il) * max_e_])
                       : n_slots_ > 0    ? static_cast<const char*>(slots_mem_)
                                         : nullptr;
    if (base) {
      const DevLayer& D = layers_[il];
      const int64_t F = s.layers[il].n_ff_expert, E = static_cast<int64_t>(E_);
      for (size_t n = 1; n <= T_; n *= 2) {
        gemm(D.t_gate, base, D.s_gate, F, E, xg_, int64_t(n), g_);
        gemm(D.t_down, base + D.off_down, D.s_down, E, F, g_, int64_t(n), xg_);
      }
    }
    MOE_CUDA_CHECK(cudaStreamSynchronize(cs_));
  }

  // Captures one decode step (every expert resident) as a graph: nothing runs. The step reads its token,
  // position and key count from device memory, so the graph serves every position.
  void capture_graph() {
    SessionStats cap;
    MOE_CUDA_CHECK(cudaStreamBeginCapture(cs_, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue(1, 0, nullptr, true, cap, nullptr, nullptr, 0);  // resident: no host routing copies
    } catch (...) {
      cudaGraph_t g = nullptr;
      (void)cudaStreamEndCapture(cs_, &g);
      if (g) cudaGraphDestroy(g);
      (void)cudaGetLastError();
      throw;
    }
    MOE_CUDA_CHECK(cudaStreamEndCapture(cs_, &graph_));
    MOE_CUDA_CHECK(cudaGraphInstantiate(&gexec_, graph_, 0));
    graph_step_ = cap;
    graph_step_.kv_bytes = 0;
  }

  // One decode token with every expert resident: launches the captured graph. Counters the host would have
  // added while enqueueing are added here: the per-step constant ones as captured, the KV bytes for this position.
  void decode_graph(uint32_t p0, SessionStats& st) {
    const ModelSpec& s = m_.spec();
    if (!gexec_) capture_graph();
    MOE_CUDA_CHECK(cudaGraphLaunch(gexec_, cs_));
    st.expert_acquires += graph_step_.expert_acquires;
    st.expert_bytes += graph_step_.expert_bytes;
    st.vram_hits += graph_step_.vram_hits;
    st.kv_bytes += uint64_t(s.n_layer) * (p0 + 1) * (HK_ + HV_) * 2;
    st.gpu_graph_launches += 1;
  }

  // Queues the forward pass of the chunk on the compute stream (inputs already copied to pos_, tok_, nkv_):
  // with all_logits every token's logits are copied there (kB tokens at a time through logits_), else with
  // want_last the last token's logits are copied to h_logits_. Synchronises with the host only for routing,
  // when experts are not all resident or the chunk is a GEMM batch.
  void enqueue(uint32_t nt, uint32_t p0, float* all_logits, bool want_last, SessionStats& st, int32_t* last_e,
               float* last_w, size_t kk) {
    const ModelSpec& s = m_.spec();
    const int hk = static_cast<int>(s.head_dim_k);
    cuda::embed(tok_embd_.type, tok_embd_.p, tok_embd_.stride, static_cast<int32_t>(s.n_vocab), tok_, nt, E_, x_,
                cs_);
    const ops::AttnShape as = attn_shape_for(s);
    for (uint32_t il = 0; il < s.n_layer; ++il) {
      const DevLayer& D = layers_[il];
      cuda::rmsnorm(x_, D.attn_norm, xn_, nt, E_, s.rms_eps, cs_);
      mv(D.wq, xn_, nt, q_);
      mv(D.wk, xn_, nt, k_);
      mv(D.wv, xn_, nt, v_);
      if (D.bq) {
        cuda::add_rows(q_, D.bq, nt, HQ_, cs_);
        cuda::add_rows(k_, D.bk, nt, HK_, cs_);
        cuda::add_rows(v_, D.bv, nt, HV_, cs_);
      }
      if (s.qk_norm == QkNorm::PerHead) {
        cuda::rmsnorm(q_, D.q_norm, q_, int64_t(nt) * s.n_head, hk, s.rms_eps, cs_);
        cuda::rmsnorm(k_, D.k_norm, k_, int64_t(nt) * s.n_head_kv, hk, s.rms_eps, cs_);
      } else if (s.qk_norm == QkNorm::Full) {
        cuda::rmsnorm(q_, D.q_norm, q_, nt, HQ_, s.rms_eps, cs_);
        cuda::rmsnorm(k_, D.k_norm, k_, nt, HK_, s.rms_eps, cs_);
      }
      if (rope_table_)  // q and k in one launch, (cos, sin) from the host-built table
        cuda::rope_table(rope_table_, rope_.n_rot, rope_.mode == ops::RopeMode::NeoX, static_cast<int>(n_ctx_), pos_,
                         nt, q_, static_cast<int>(s.n_head), HQ_, k_, static_cast<int>(s.n_head_kv), HK_, hk, cs_);
      // Positions and key counts come from device memory (pos_, nkv_), so a captured step serves every
      // position. A few tokens split their positions over attn_split_ blocks each; a batch has blocks enough.
      cuda::kv_store_tokens(k_, v_, D.kc, D.vc, HK_, HV_, pos_, static_cast<int>(nt), static_cast<int>(n_ctx_), cs_);
      cuda::attention(as, q_, D.kc, D.vc, static_cast<int>(n_ctx_), nkv_, static_cast<int>(nt), att_,
                      nt <= kB ? attn_split_ : 1, part_, cs_);
      for (uint32_t t = 0; t < nt; ++t) st.kv_bytes += uint64_t(p0 + t + 1) * (HK_ + HV_) * 2;
      mv(D.wo, att_, nt, tmp_);
      cuda::add(x_, tmp_, int64_t(nt) * E_, cs_);
      cuda::rmsnorm(x_, D.ffn_norm, xn_, nt, E_, s.rms_eps, cs_);
      if (nt > kB)
        ffn_batch(il, nt, st, last_e, last_w, kk);
      else
        ffn(il, nt, st, last_e, last_w, kk);
      cuda::add(x_, moe_, int64_t(nt) * E_, cs_);
    }
    cuda::rmsnorm(x_, out_norm_, xn_, nt, E_, s.rms_eps, cs_);
    const size_t V = s.n_vocab;
    if (all_logits) {  // logits_ holds kB tokens: each piece is copied out before the next overwrites it
      for (uint32_t t0 = 0; t0 < nt; t0 += cuda::kMatvecMaxBatch) {
        const int c = static_cast<int>(std::min<uint32_t>(cuda::kMatvecMaxBatch, nt - t0));
        cuda::matvec(output_.type, output_.p, output_.stride, output_.rows, output_.cols, xn_ + t0 * E_, c, logits_,
                     cs_);
        MOE_CUDA_CHECK(cudaMemcpyAsync(all_logits + size_t(t0) * V, logits_, size_t(c) * V * 4,
                                       cudaMemcpyDeviceToHost, cs_));
      }
    } else if (want_last) {
      cuda::matvec(output_.type, output_.p, output_.stride, output_.rows, output_.cols, xn_ + (nt - 1) * E_, 1,
                   logits_, cs_);
      MOE_CUDA_CHECK(cudaMemcpyAsync(h_logits_, logits_, V * 4, cudaMemcpyDeviceToHost, cs_));
    }
  }

  // Y = X W^T for n tokens through dequantized tiles and cuBLAS. Quantized weights use TF32 tensor-core
  // products (f32 inputs rounded to a 10-bit mantissa, f32 accumulation) unless SessionOptions::gpu_exact_gemm:
  // the weights' own quantization error is larger (Q8_0 ~2^-8 relative, TF32 2^-11), and it is 1.27x faster
  // end to end on prefill (H100, OLMoE-1B-7B Q8_0, 2048 tokens). Plain f32/f16/bf16 weights keep f32 products.
  void gemm(TensorType t, const void* W, size_t stride, int64_t rows, int64_t cols, const float* x, int64_t n,
            float* y) {
    const bool quantized = t != TensorType::F32 && t != TensorType::F16 && t != TensorType::BF16;
    const bool tf32 = quantized && !o_.gpu_exact_gemm;
    if (tf32 != blas_tf32_) {
      blas_->allow_tf32(tf32);
      blas_tf32_ = tf32;
    }
    cuda::gemm(*blas_, t, W, stride, rows, cols, x, n, y, ws_, ws_floats_, cs_);
  }

  // y = W x for nt tokens: the matvec kernel up to kB tokens, a GEMM over dequantized tiles above.
  void mv(const DevW& w, const float* x, uint32_t nt, float* y) {
    if (nt > kB)
      gemm(w.type, w.p, w.stride, w.rows, w.cols, x, nt, y);
    else
      cuda::matvec(w.type, w.p, w.stride, w.rows, w.cols, x, static_cast<int>(nt), y, cs_);
  }

  // Host side of one routed expert in GpuMissMode::Cpu: out (E floats) = down(act(gate x) * up x).
  void cpu_expert(const ExpertWeights& w, const float* x, float* out) {
    const ModelSpec& s = m_.spec();
    const size_t F = w.gate.rows;
    float* g = h_gu_.data();
    float* u = g + F;
    kernels::matmul(w.gate.type, w.gate.data, w.gate.rows, w.gate.cols, x, 1, g, pool_);
    kernels::matmul(w.up.type, w.up.data, w.up.rows, w.up.cols, x, 1, u, pool_);
    if (s.ffn_act == FfnAct::GeluGlu)
      ops::gelu_mul(g, u, static_cast<int64_t>(F));
    else
      ops::silu_mul(g, u, static_cast<int64_t>(F));
    kernels::matmul(w.down.type, w.down.data, w.down.rows, w.down.cols, g, 1, out, pool_);
  }

  // Copies expert (il, e) from the host source into VRAM slot `slot` on the copy stream; the slot's
  // ready event marks the end of the copy.
  void upload(uint32_t il, uint32_t e, uint32_t slot, SessionStats& st) {
    const DevLayer& D = layers_[il];
    char* dst = static_cast<char*>(slots_mem_) + size_t(slot) * slot_bytes_;
    if (host_pinned_) {
      // Straight from the page-locked mapping: three DMAs, nothing on the CPU thread.
      const ExpertWeights w = src_.acquire(il, e);
      if (slot_free_[slot].used) MOE_CUDA_CHECK(cudaStreamWaitEvent(xs_, slot_free_[slot].e, 0));
      MOE_CUDA_CHECK(cudaMemcpyAsync(dst, w.gate.data, w.gate.nbytes, cudaMemcpyHostToDevice, xs_));
      MOE_CUDA_CHECK(cudaMemcpyAsync(dst + D.off_up, w.up.data, w.up.nbytes, cudaMemcpyHostToDevice, xs_));
      MOE_CUDA_CHECK(cudaMemcpyAsync(dst + D.off_down, w.down.data, w.down.nbytes, cudaMemcpyHostToDevice, xs_));
      src_.release(il, e);  // mapped views stay valid: the source is the memory map
      MOE_CUDA_CHECK(cudaEventRecord(slot_ready_[slot].e, xs_));
      slot_ready_[slot].used = true;
      last_upload_ = slot;
      st.vram_upload_bytes += D.expert_bytes;
      return;
    }
    Staging& sg = staging_[next_stage_];
    next_stage_ = (next_stage_ + 1) % staging_.size();
    if (sg.ev.used) MOE_CUDA_CHECK(cudaEventSynchronize(sg.ev.e));  // its previous copy finished
    const ExpertWeights w = src_.acquire(il, e);
    char* h = static_cast<char*>(sg.p);
    std::memcpy(h, w.gate.data, w.gate.nbytes);
    std::memcpy(h + D.off_up, w.up.data, w.up.nbytes);
    std::memcpy(h + D.off_down, w.down.data, w.down.nbytes);
    src_.release(il, e);
    if (slot_free_[slot].used) MOE_CUDA_CHECK(cudaStreamWaitEvent(xs_, slot_free_[slot].e, 0));
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, h, D.expert_bytes, cudaMemcpyHostToDevice, xs_));
    MOE_CUDA_CHECK(cudaEventRecord(sg.ev.e, xs_));
    sg.ev.used = true;
    MOE_CUDA_CHECK(cudaEventRecord(slot_ready_[slot].e, xs_));
    slot_ready_[slot].used = true;
    last_upload_ = slot;
    st.vram_upload_bytes += D.expert_bytes;
  }

  // True when the copy stream has finished every upload queued so far (a background fill may start).
  bool copy_idle() const {
    if (last_upload_ == UINT64_MAX) return true;
    const cudaError_t r = cudaEventQuery(slot_ready_[last_upload_].e);
    if (r == cudaErrorNotReady) return false;
    MOE_CUDA_CHECK(r);
    return true;
  }

  // GpuMissMode::Auto: the greedy split of one layer's misses. Each miss goes where it would finish
  // sooner given what that side already has this layer: CPU time from the seconds per byte of CPU
  // expert work (calibrated at start, then a running average), upload time from the DMA rate
  // calibrated at start.
  // cpu_bytes: expert bytes the CPU would stream (times the tokens it serves), up_bytes: bytes to upload.
  bool choose_cpu(uint64_t cpu_bytes, uint64_t up_bytes) {
    const double c = cpu_s_per_byte_ * double(cpu_bytes), u = up_s_per_byte_ * double(up_bytes);
    if (t_cpu_ + c <= t_up_ + u) {
      t_cpu_ += c;
      return true;
    }
    t_up_ += u;
    return false;
  }
  void auto_begin_layer() { t_cpu_ = t_up_ = 0; }

  // GpuMissMode::Auto: measures, once, the seconds per byte of an upload (DMA from the page-locked
  // mapping into a free slot, timed with events) and of the CPU computing one expert (host clock).
  void calibrate_auto() {
    const ModelSpec& s = m_.spec();
    uint32_t il = 0;
    while (il < s.n_layer && !s.layers[il].is_moe) ++il;
    if (il == s.n_layer) return;
    const DevLayer& D = layers_[il];
    const ExpertWeights w = src_.acquire(il, 0);
    std::vector<float> x(E_, 0.5f), y(E_);
    cpu_expert(w, x.data(), y.data());  // warm-up (page faults, thread start)
    constexpr int kReps = 4;
    auto c0 = std::chrono::steady_clock::now();
    for (int r = 0; r < kReps; ++r) cpu_expert(w, x.data(), y.data());
    cpu_s_per_byte_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count() /
                      (kReps * double(D.expert_bytes));
    if (n_slots_ > 0 && host_pinned_) {
      char* dst = static_cast<char*>(slots_mem_);  // slot 0 is free: nothing is resident yet
      MOE_CUDA_CHECK(cudaEventRecord(up_t0_, xs_));
      for (int r = 0; r < kReps; ++r) {
        MOE_CUDA_CHECK(cudaMemcpyAsync(dst, w.gate.data, w.gate.nbytes, cudaMemcpyHostToDevice, xs_));
        MOE_CUDA_CHECK(cudaMemcpyAsync(dst + D.off_up, w.up.data, w.up.nbytes, cudaMemcpyHostToDevice, xs_));
        MOE_CUDA_CHECK(cudaMemcpyAsync(dst + D.off_down, w.down.data, w.down.nbytes, cudaMemcpyHostToDevice, xs_));
      }
      MOE_CUDA_CHECK(cudaEventRecord(up_t1_, xs_));
      MOE_CUDA_CHECK(cudaEventSynchronize(up_t1_));
      float ms = 0;
      MOE_CUDA_CHECK(cudaEventElapsedTime(&ms, up_t0_, up_t1_));
      up_s_per_byte_ = double(ms) * 1e-3 / (kReps * double(D.expert_bytes));
    }
    src_.release(il, 0);
  }

  // The chunk's routed-expert FFNs on the GPU: per token, gate and up of its k jobs (one shared input; one
  // launch for both when the chunk is one token), then the activation over all jobs, then down for all jobs
  // into e_ (job t*k+j at row t*k+j).
  // With ids (device, nt*k): slots is a per-expert table of n_slots entries indexed by ids. Without:
  // slots holds one entry per job (nullptr = computed elsewhere; its rows are left untouched).
  void expert_matvecs(const DevLayer& D, uint32_t nt, uint32_t k, size_t F, const void* const* slots, int32_t n_slots,
                      const int32_t* ids) {
    const size_t E = E_, jobs = size_t(nt) * k;
    cuda::ExpertMatvec a;
    a.n = 1;
    a.n_jobs = static_cast<int32_t>(k);
    a.x_job_stride = 0;
    a.rows = static_cast<int64_t>(F);
    a.cols = static_cast<int64_t>(E);
    a.y_job_stride = static_cast<int64_t>(F);
    const cuda::Glu glu = m_.spec().ffn_act == FfnAct::GeluGlu ? cuda::Glu::Gelu : cuda::Glu::Silu;
    const bool fused = nt == 1 && D.t_gate == D.t_up && D.s_gate == D.s_up;
    if (fused) {
      // Decode: gate and up of the k experts in one launch of 2k jobs (gate rows g_[0, kF), up rows
      // g_[kF, 2kF)), then the activation into g_[0, kF): the down launch reads it as below.
      a.slots = slots;
      a.n_slots = ids ? n_slots : static_cast<int32_t>(k);
      a.ids = ids;
      a.x = xn_;
      a.type = D.t_gate;
      a.offset = 0;
      a.offset_hi = D.off_up;
      a.jobs_lo = static_cast<int32_t>(k);
      a.n_jobs = static_cast<int32_t>(2 * k);
      a.row_stride = D.s_gate;
      a.y = g_;
      cuda::matvec_experts(a, cs_);
      cuda::glu(glu, g_, g_ + size_t(k) * F, static_cast<int64_t>(size_t(k) * F), cs_);
      a.jobs_lo = 0;
      a.offset_hi = 0;
    }
    for (uint32_t t = 0; t < nt && !fused; ++t) {
      a.slots = ids ? slots : slots + size_t(t) * k;
      a.n_slots = ids ? n_slots : static_cast<int32_t>(k);
      a.ids = ids ? ids + size_t(t) * k : nullptr;
      a.x = xn_ + size_t(t) * E;
      a.type = D.t_gate;
      a.offset = 0;
      a.row_stride = D.s_gate;
      a.y = g_ + size_t(t) * k * F;
      cuda::matvec_experts(a, cs_);
      a.type = D.t_up;
      a.offset = D.off_up;
      a.row_stride = D.s_up;
      a.y = u_ + size_t(t) * k * F;
      cuda::matvec_experts(a, cs_);
    }
    if (!fused) cuda::glu(glu, g_, u_, static_cast<int64_t>(jobs * F), cs_);
    a.slots = slots;
    a.n_slots = ids ? n_slots : static_cast<int32_t>(jobs);
    a.ids = ids;
    a.n_jobs = static_cast<int32_t>(jobs);
    a.x = g_;
    a.x_job_stride = static_cast<int64_t>(F);
    a.rows = static_cast<int64_t>(E);
    a.cols = static_cast<int64_t>(F);
    a.type = D.t_down;
    a.offset = D.off_down;
    a.row_stride = D.s_down;
    a.y = e_;
    a.y_job_stride = static_cast<int64_t>(E);
    cuda::matvec_experts(a, cs_);
  }

  // The routed experts of a chunk when every expert is resident: ids and weights stay on the device
  // (the matvecs read the slot table with them); a copy goes to pinned memory for last_experts().
  void resident_experts(uint32_t il, uint32_t nt, SessionStats& st) {
    const LayerSpec& ls = m_.spec().layers[il];
    const DevLayer& D = layers_[il];
    const uint32_t k = ls.n_expert_used;
    const size_t F = ls.n_ff_expert, E = E_, jobs = size_t(nt) * k;
    MOE_CUDA_CHECK(cudaMemcpyAsync(h_ids_all_ + size_t(il) * kB * max_k_, ids_, jobs * 4, cudaMemcpyDeviceToHost, cs_));
    MOE_CUDA_CHECK(cudaMemcpyAsync(h_w_all_ + size_t(il) * kB * max_k_, w_, jobs * 4, cudaMemcpyDeviceToHost, cs_));
    expert_matvecs(D, nt, k, F, d_table_ + size_t(il) * max_e_, static_cast<int32_t>(ls.n_expert), ids_);
    cuda::combine(moe_, e_, static_cast<int64_t>(E), w_, static_cast<int>(k), nt, static_cast<int64_t>(E), false, cs_);
    st.vram_hits += jobs;
    st.expert_acquires += jobs;
    st.expert_bytes += jobs * D.expert_bytes;
  }

  // The routed experts of a prefill batch (nt > kB tokens), grouped by expert: the host sorts the batch's
  // (token, k) jobs by expert, the jobs' inputs are gathered into consecutive rows of xg_, each distinct expert
  // runs three GEMMs over its rows (its down product overwrites its own gathered rows, already consumed), and
  // the rows are scattered back to job order for the combine. Every expert's weights are read once per batch.
  // A miss is uploaded (one pinned slot at a time, so any budget the upload mode accepts works) or, in the CPU
  // and auto modes, computed on the CPU as one batched product over its tokens.
  void ffn_batch_experts(uint32_t il, uint32_t nt, SessionStats& st, int32_t* last_e, float* last_w, size_t kk) {
    const LayerSpec& ls = m_.spec().layers[il];
    const DevLayer& D = layers_[il];
    const uint32_t ne = ls.n_expert, k = ls.n_expert_used;
    const size_t F = ls.n_ff_expert, E = E_, J = size_t(nt) * k, JC = T_ * max_k_;
    const bool host_x = !all_resident_ && o_.gpu_miss != GpuMissMode::Upload;
    MOE_CUDA_CHECK(cudaMemcpyAsync(h_ids_, ids_, J * 4, cudaMemcpyDeviceToHost, cs_));
    MOE_CUDA_CHECK(cudaMemcpyAsync(h_w_, w_, J * 4, cudaMemcpyDeviceToHost, cs_));
    if (host_x) MOE_CUDA_CHECK(cudaMemcpyAsync(h_xn_, xn_, size_t(nt) * E * 4, cudaMemcpyDeviceToHost, cs_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(cs_));
    std::copy_n(h_ids_ + size_t(nt - 1) * k, k, last_e + il * kk);
    std::copy_n(h_w_ + size_t(nt - 1) * k, k, last_w + il * kk);
    // Counting sort of the jobs by expert (stable: tokens ascending within an expert).
    group_off_.assign(size_t(ne) + 1, 0);
    for (size_t jj = 0; jj < J; ++jj) group_off_[size_t(h_ids_[jj]) + 1] += 1;
    for (uint32_t e = 0; e < ne; ++e) group_off_[e + 1] += group_off_[e];
    group_cur_.assign(group_off_.begin(), group_off_.end() - 1);
    for (size_t jj = 0; jj < J; ++jj) {
      const uint32_t p = group_cur_[size_t(h_ids_[jj])]++;
      h_perm_[p] = static_cast<int32_t>(jj / k);       // the job's token: gather source row
      h_perm_[JC + p] = static_cast<int32_t>(jj);      // the job: scatter destination row
    }
    MOE_CUDA_CHECK(cudaMemcpyAsync(perm_, h_perm_, J * 4, cudaMemcpyHostToDevice, cs_));
    MOE_CUDA_CHECK(cudaMemcpyAsync(perm_ + JC, h_perm_ + JC, J * 4, cudaMemcpyHostToDevice, cs_));
    cuda::gather_rows(xn_, static_cast<int64_t>(E), perm_, static_cast<int64_t>(J), xg_, cs_);
    const cuda::Glu glu = m_.spec().ffn_act == FfnAct::GeluGlu ? cuda::Glu::Gelu : cuda::Glu::Silu;
    auto_begin_layer();
    cpu_groups_.clear();
    // Experts already in VRAM run first (pass 0), so no miss's eviction takes one of them before its turn.
    group_done_.assign(ne, 0);
    for (int pass = 0; pass < 2; ++pass) {
      for (uint32_t e = 0; e < ne; ++e) {
        const uint32_t o = group_off_[e], n_e = group_off_[e + 1] - o;
        if (n_e == 0 || group_done_[e]) continue;
        if (pass == 0 && !all_resident_ &&
            (!vram_ || vram_->Peek(ExpertKey{il, e}) == cache::EntryState::Absent))
          continue;
        group_done_[e] = 1;
        st.expert_acquires += 1;
        st.expert_bytes += D.expert_bytes;
        const char* base = nullptr;
        cache::Handle h;
        if (all_resident_) {
          base = static_cast<const char*>(h_table_[size_t(il) * max_e_ + e]);
          st.vram_hits += 1;
        } else {
          const ExpertKey key{il, e};
          h = vram_ ? vram_->Lookup(key) : cache::Handle{};
          if (h) {
            st.vram_hits += 1;
          } else {
            st.vram_misses += 1;
            if (o_.gpu_miss == GpuMissMode::Cpu ||
                (o_.gpu_miss == GpuMissMode::Auto && choose_cpu(D.expert_bytes * n_e, D.expert_bytes))) {
              cpu_groups_.push_back(e);
              continue;
            }
            cache::Reservation r =
                vram_ ? vram_->BeginFetch(key, cache::FetchKind::Demand, true, 0) : cache::Reservation{};
            if (!r.ok() && o_.gpu_miss == GpuMissMode::Auto) {
              cpu_groups_.push_back(e);
              continue;
            }
            if (!r.ok())
              fail(ErrorCode::Internal, "cuda backend: no VRAM slot for expert {}/{} ({}; {} slots)", il, e,
                   cache::reserve_status_name(r.status), n_slots_);
            if (r.status == cache::ReserveStatus::Reserved) {
              upload(il, e, r.slot, st);
              vram_->CompleteFetch(key);
            }
            h = std::move(r.handle);
          }
          if (slot_ready_[h.slot()].used) MOE_CUDA_CHECK(cudaStreamWaitEvent(cs_, slot_ready_[h.slot()].e, 0));
          base = static_cast<const char*>(slots_mem_) + size_t(h.slot()) * slot_bytes_;
        }
        float* xe = xg_ + size_t(o) * E;
        float* g = g_ + size_t(o) * F;
        float* u = u_ + size_t(o) * F;
        gemm(D.t_gate, base, D.s_gate, int64_t(F), int64_t(E), xe, n_e, g);
        gemm(D.t_up, base + D.off_up, D.s_up, int64_t(F), int64_t(E), xe, n_e, u);
        cuda::glu(glu, g, u, int64_t(n_e) * int64_t(F), cs_);
        gemm(D.t_down, base + D.off_down, D.s_down, int64_t(E), int64_t(F), g, n_e, xe);
        if (h) {  // the slot may be refilled only after these kernels ran
          MOE_CUDA_CHECK(cudaEventRecord(slot_free_[h.slot()].e, cs_));
          slot_free_[h.slot()].used = true;
        }
      }
    }
    // Misses on the CPU while the GPU works: each expert once over its tokens; results join in xg_.
    if (!cpu_groups_.empty()) {
      const ModelSpec& s = m_.spec();
      const auto c0 = std::chrono::steady_clock::now();
      size_t jobs = 0;
      h_gx_.resize(size_t(T_) * std::max(E, 2 * F));
      for (uint32_t e : cpu_groups_) {
        const uint32_t o = group_off_[e], n_e = group_off_[e + 1] - o;
        float* x = h_gx_.data();
        for (uint32_t i = 0; i < n_e; ++i) std::memcpy(x + size_t(i) * E, h_xn_ + size_t(h_perm_[o + i]) * E, E * 4);
        const ExpertWeights w = src_.acquire(il, e);
        h_gu_.resize(size_t(n_e) * F * 2);
        float* gg = h_gu_.data();
        float* uu = gg + size_t(n_e) * F;
        kernels::matmul(w.gate.type, w.gate.data, w.gate.rows, w.gate.cols, x, n_e, gg, pool_);
        kernels::matmul(w.up.type, w.up.data, w.up.rows, w.up.cols, x, n_e, uu, pool_);
        if (s.ffn_act == FfnAct::GeluGlu)
          ops::gelu_mul(gg, uu, static_cast<int64_t>(size_t(n_e) * F));
        else
          ops::silu_mul(gg, uu, static_cast<int64_t>(size_t(n_e) * F));
        float* out = h_e_ + size_t(o) * E;
        kernels::matmul(w.down.type, w.down.data, w.down.rows, w.down.cols, gg, n_e, out, pool_);
        src_.release(il, e);
        MOE_CUDA_CHECK(cudaMemcpyAsync(xg_ + size_t(o) * E, out, size_t(n_e) * E * 4, cudaMemcpyHostToDevice, cs_));
        st.cpu_expert_runs += n_e;
        jobs += n_e;
      }
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
      cpu_s_per_byte_ = 0.8 * cpu_s_per_byte_ + 0.2 * dt / double(jobs) / double(D.expert_bytes);
    }
    cuda::scatter_rows(xg_, static_cast<int64_t>(E), perm_ + JC, static_cast<int64_t>(J), e_, cs_);
    cuda::combine(moe_, e_, static_cast<int64_t>(E), w_, static_cast<int>(k), nt, static_cast<int64_t>(E), false, cs_);
  }

  // The FFN of a prefill batch: routed experts grouped by expert (ffn_batch_experts), then the shared
  // expert or dense FFN as GEMMs (ffn_shared).
  void ffn_batch(uint32_t il, uint32_t nt, SessionStats& st, int32_t* last_e, float* last_w, size_t kk) {
    const ModelSpec& s = m_.spec();
    const LayerSpec& ls = s.layers[il];
    const DevLayer& D = layers_[il];
    bool have_moe = false;
    if (ls.is_moe) {
      mv(D.router, xn_, nt, rl_);
      route_chunk(ls, nt, ids_, w_);
      ffn_batch_experts(il, nt, st, last_e, last_w, kk);
      have_moe = true;
    }
    ffn_shared(il, nt, have_moe);
  }

  void ffn(uint32_t il, uint32_t nt, SessionStats& st, int32_t* last_e, float* last_w, size_t kk) {
    const ModelSpec& s = m_.spec();
    const LayerSpec& ls = s.layers[il];
    const DevLayer& D = layers_[il];
    const size_t E = E_;
    bool have_moe = false;
    if (ls.is_moe) {
      mv(D.router, xn_, nt, rl_);
      route_chunk(ls, nt, ids_, w_);
      if (all_resident_) {
        resident_experts(il, nt, st);
        have_moe = true;
      }
    }
    if (ls.is_moe && !all_resident_) {
      const uint32_t ne = ls.n_expert, k = ls.n_expert_used;
      (void)ne;
      const size_t F = ls.n_ff_expert;
      // Pre-gated prediction: the next MoE layer's router on this layer's post-attention residual, normalised
      // with the next layer's norm; its choices come back with this layer's routing (the same sync).
      const uint32_t nx = next_moe_[il];
      // Decode steps only: a chunk of several tokens already demands most of a layer's experts, and guessing
      // for all of them would upload whole layers (a 52-token prompt at 4 GiB: 4x slower).
      const bool predict = o_.gpu_prefetch && vram_ && nx != UINT32_MAX && nt == 1;
      if (predict) {
        const LayerSpec& lx = s.layers[nx];
        cuda::rmsnorm(x_, layers_[nx].ffn_norm, tmp_, nt, E_, s.rms_eps, cs_);
        mv(layers_[nx].router, tmp_, nt, rl_);  // rl_ was consumed by this layer's route
        route_chunk(lx, nt, pids_, pw_);
        MOE_CUDA_CHECK(
            cudaMemcpyAsync(h_pids_, pids_, size_t(nt) * lx.n_expert_used * 4, cudaMemcpyDeviceToHost, cs_));
      }
      MOE_CUDA_CHECK(cudaMemcpyAsync(h_ids_, ids_, size_t(nt) * k * 4, cudaMemcpyDeviceToHost, cs_));
      MOE_CUDA_CHECK(cudaMemcpyAsync(h_w_, w_, size_t(nt) * k * 4, cudaMemcpyDeviceToHost, cs_));
      if (o_.gpu_miss != GpuMissMode::Upload)
        MOE_CUDA_CHECK(cudaMemcpyAsync(h_xn_, xn_, size_t(nt) * E * 4, cudaMemcpyDeviceToHost, cs_));
      MOE_CUDA_CHECK(cudaStreamSynchronize(cs_));
      std::copy_n(h_ids_ + size_t(nt - 1) * k, k, last_e + il * kk);
      std::copy_n(h_w_ + size_t(nt - 1) * k, k, last_w + il * kk);

      auto_begin_layer();
      // Residency: one pin per distinct expert of the chunk (held until the kernels are queued). Hits are
      // looked up and pinned first, so a miss's eviction can never take an expert this chunk is about to use
      // (under LRU this layer's experts from the last token are often the oldest; prefetched guesses are
      // evicted first while unused).
      const void** tab = h_ptrs_ + size_t(il) * kB * max_k_;
      handles_.clear();
      cpu_jobs_.clear();
      const uint32_t jobs_n = nt * k;
      first_.resize(jobs_n);
      for (uint32_t jj = 0; jj < jobs_n; ++jj) {
        first_[jj] = jj;
        for (uint32_t q = 0; q < jj; ++q)
          if (h_ids_[q] == h_ids_[jj]) {
            first_[jj] = q;
            break;
          }
        tab[jj] = nullptr;
        st.expert_acquires += 1;
        st.expert_bytes += D.expert_bytes;
      }
      auto use_slot = [&](uint32_t jj, uint32_t slot) {
        if (slot_ready_[slot].used) MOE_CUDA_CHECK(cudaStreamWaitEvent(cs_, slot_ready_[slot].e, 0));
        tab[jj] = static_cast<const char*>(slots_mem_) + size_t(slot) * slot_bytes_;
      };
      for (uint32_t jj = 0; jj < jobs_n; ++jj) {  // pass 1: hits
        if (first_[jj] != jj || !vram_) continue;
        cache::Handle h = vram_->Lookup(ExpertKey{il, static_cast<uint32_t>(h_ids_[jj])});
        if (!h) continue;
        st.vram_hits += 1;
        use_slot(jj, h.slot());
        handles_.push_back(std::move(h));
      }
      for (uint32_t jj = 0; jj < jobs_n; ++jj) {  // pass 2: misses
        if (first_[jj] != jj || tab[jj]) continue;
        const uint32_t e = static_cast<uint32_t>(h_ids_[jj]);
        const ExpertKey key{il, e};
        st.vram_misses += 1;
        if (o_.gpu_miss == GpuMissMode::Cpu ||
            (o_.gpu_miss == GpuMissMode::Auto && choose_cpu(D.expert_bytes, D.expert_bytes))) {
          cpu_jobs_.push_back(jj);
          if (o_.gpu_miss == GpuMissMode::Auto) continue;
          // Fill the cache in the background for later tokens (no pin: nothing reads it now), only
          // when the copy engine is idle: the CPU computes this token's misses either way.
          if (vram_ && copy_idle()) {
            cache::Reservation r = vram_->BeginFetch(key, cache::FetchKind::Demand, false, 0);
            if (r.status == cache::ReserveStatus::Reserved) {
              upload(il, e, r.slot, st);
              vram_->CompleteFetch(key);
            }
          }
          continue;
        }
        cache::Reservation r = vram_ ? vram_->BeginFetch(key, cache::FetchKind::Demand, true, 0) : cache::Reservation{};
        if (!r.ok() && o_.gpu_miss == GpuMissMode::Auto) {  // no free slot: the CPU takes it
          cpu_jobs_.push_back(jj);
          continue;
        }
        if (!r.ok())
          fail(ErrorCode::Internal, "cuda backend: no VRAM slot for expert {}/{} ({}; {} slots, chunk {})", il, e,
               cache::reserve_status_name(r.status), n_slots_, chunk_);
        if (r.status == cache::ReserveStatus::Reserved) {
          upload(il, e, r.slot, st);
          vram_->CompleteFetch(key);
        }
        use_slot(jj, r.slot);
        handles_.push_back(std::move(r.handle));
      }
      for (uint32_t jj = 0; jj < jobs_n; ++jj) {  // repeats of an expert in the chunk follow its first job
        if (first_[jj] == jj) continue;
        tab[jj] = tab[first_[jj]];
        if (!tab[jj]) cpu_jobs_.push_back(jj);
      }
      // With this layer's experts pinned, queue the predicted experts of the next MoE layer on the copy stream
      // behind this layer's uploads: they arrive while this layer (and the next one's attention) computes.
      if (predict) {
        // Upload mode: every guess (the copy engine would otherwise idle until the next layer's misses). CPU and
        // auto modes: only what the copy engine can move while the CPU computes this layer's misses (the
        // seconds of CPU work minus the uploads already queued), so guesses never delay a demand upload.
        uint64_t budget = UINT64_MAX;
        if (o_.gpu_miss != GpuMissMode::Upload) {
          const double slack = double(cpu_jobs_.size()) * cpu_s_per_byte_ * double(D.expert_bytes) - t_up_;
          budget = slack > 0 ? static_cast<uint64_t>(slack / up_s_per_byte_) : 0;
        }
        prefetch_layer(nx, nt, st, budget);
      }
      const size_t jobs = size_t(nt) * k;
      const void** dtab = ptrs_ + size_t(il) * kB * max_k_;
      MOE_CUDA_CHECK(cudaMemcpyAsync(dtab, tab, jobs * 8, cudaMemcpyHostToDevice, cs_));
      if (!cpu_jobs_.empty() || !handles_.empty()) {
        expert_matvecs(D, nt, k, F, dtab, 0, nullptr);
        // The slots read above may be refilled only after these kernels ran.
        for (const cache::Handle& h : handles_) {
          MOE_CUDA_CHECK(cudaEventRecord(slot_free_[h.slot()].e, cs_));
          slot_free_[h.slot()].used = true;
        }
        handles_.clear();
        // Misses computed on the CPU while the GPU works; their outputs join the GPU's in e_.
        if (!cpu_jobs_.empty()) {
          const auto c0 = std::chrono::steady_clock::now();
          for (uint32_t jj : cpu_jobs_) {
            const uint32_t t = jj / k;
            const int32_t e = h_ids_[jj];
            const ExpertWeights w = src_.acquire(il, static_cast<uint32_t>(e));
            cpu_expert(w, h_xn_ + size_t(t) * E, h_e_ + size_t(jj) * E);
            src_.release(il, static_cast<uint32_t>(e));
            st.cpu_expert_runs += 1;
            MOE_CUDA_CHECK(
                cudaMemcpyAsync(e_ + size_t(jj) * E, h_e_ + size_t(jj) * E, E * 4, cudaMemcpyHostToDevice, cs_));
          }
          const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
          const double per = dt / double(cpu_jobs_.size());
          cpu_s_per_byte_ = 0.8 * cpu_s_per_byte_ + 0.2 * per / double(D.expert_bytes);
        }
        cuda::combine(moe_, e_, static_cast<int64_t>(E), w_, static_cast<int>(k), nt, static_cast<int64_t>(E), false,
                      cs_);
        have_moe = true;
      }
    }
    ffn_shared(il, nt, have_moe);
  }

  // Uploads the experts h_pids_ predicts for MoE layer `il` (nt tokens) that are not in VRAM, as prefetches
  // (no pin; the tier marks them prefetched-unused until a lookup uses them), up to budget_bytes. Skips them
  // when no slot is free.
  void prefetch_layer(uint32_t il, uint32_t nt, SessionStats& st, uint64_t budget_bytes) {
    const uint32_t k = m_.spec().layers[il].n_expert_used;
    uint64_t queued = 0;
    for (uint32_t i = 0; i < nt * k; ++i) {
      const uint32_t e = static_cast<uint32_t>(h_pids_[i]);
      bool dup = false;
      for (uint32_t q = 0; q < i && !dup; ++q) dup = h_pids_[q] == h_pids_[i];
      if (dup) continue;
      const ExpertKey key{il, e};
      if (vram_->Peek(key) != cache::EntryState::Absent) continue;
      if (queued + layers_[il].expert_bytes > budget_bytes) break;
      cache::Reservation r = vram_->BeginFetch(key, cache::FetchKind::Prefetch, false, 0);
      if (r.status != cache::ReserveStatus::Reserved) continue;
      upload(il, e, r.slot, st);
      vram_->CompleteFetch(key);
      queued += layers_[il].expert_bytes;
      st.vram_prefetches += 1;
    }
  }

  // Router logits rl_ of the chunk's nt tokens to top-k (ids, weights) of layer ls.
  void route_chunk(const LayerSpec& ls, uint32_t nt, int32_t* ids, float* w) {
    const ModelSpec& s = m_.spec();
    cuda::RouterParams rp;
    rp.sigmoid = s.gating.func == GatingFunc::Sigmoid;
    rp.topk_before_norm = s.gating.topk_before_norm;
    rp.renormalize = s.gating.renormalize;
    rp.scale = s.gating.scale;
    cuda::route(rp, rl_, nt, static_cast<int>(ls.n_expert), static_cast<int>(ls.n_expert_used), ids, w, cs_);
  }

  // The shared expert (or a dense layer's FFN) added into moe_ (have_moe: moe_ already holds the routed
  // experts' sum; else it is written).
  void ffn_shared(uint32_t il, uint32_t nt, bool have_moe) {
    const ModelSpec& s = m_.spec();
    const DevLayer& D = layers_[il];
    const cuda::Glu glu = s.ffn_act == FfnAct::GeluGlu ? cuda::Glu::Gelu : cuda::Glu::Silu;
    const size_t E = E_;
    const LayerWeights& L = m_.layer(il);
    if (L.n_ff_sh > 0) {
      const size_t F = L.n_ff_sh;
      mv(D.gate_sh, xn_, nt, g_);
      mv(D.up_sh, xn_, nt, u_);
      cuda::glu(glu, g_, u_, static_cast<int64_t>(nt * F), cs_);
      mv(D.down_sh, g_, nt, tmp_);
      const float* wsh = ones_;
      if (D.shared_gate) {  // on the device: no host round trip inside the layer
        mv(D.shared_gate, xn_, nt, sg_);
        cuda::sigmoid(sg_, wsh_, nt, cs_);
        wsh = wsh_;
      }
      cuda::combine(moe_, tmp_, static_cast<int64_t>(E), wsh, 1, nt, static_cast<int64_t>(E), have_moe, cs_);
      have_moe = true;
    }
    if (!have_moe) MOE_CUDA_CHECK(cudaMemsetAsync(moe_, 0, size_t(nt) * E * 4, cs_));
  }

  static constexpr size_t kB = cuda::kMatvecMaxBatch;
  const Model& m_;
  ExpertSource& src_;
  SessionOptions o_;
  uint32_t n_ctx_;
  kernels::ThreadPool* pool_;
  std::string device_name_;
  size_t E_ = 0, HQ_ = 0, HK_ = 0, HV_ = 0, HO_ = 0, max_ff_ = 0, max_e_ = 1, max_k_ = 1, chunk_ = 1;
  uint64_t dense_bytes_ = 0, kv_bytes_ = 0, slot_bytes_ = 0, n_slots_ = 0;
  ops::RopeParams rope_;
  const float* rope_table_ = nullptr;  // device: n_ctx_ x n_rot (cos, sin) pairs (cuda::rope_table_host)
  std::vector<DevLayer> layers_;
  DevW tok_embd_, output_;
  const float* out_norm_ = nullptr;
  cudaStream_t cs_ = nullptr, xs_ = nullptr;
  void *dense_mem_ = nullptr, *kv_mem_ = nullptr, *scratch_mem_ = nullptr, *slots_mem_ = nullptr;
  float *x_ = nullptr, *xn_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *att_ = nullptr, *tmp_ = nullptr;
  float *moe_ = nullptr, *rl_ = nullptr, *w_ = nullptr, *g_ = nullptr, *u_ = nullptr, *e_ = nullptr, *sg_ = nullptr;
  float *ones_ = nullptr, *wsh_ = nullptr, *logits_ = nullptr, *part_ = nullptr, *xg_ = nullptr, *ws_ = nullptr;
  size_t T_ = 0, ws_floats_ = 0;  // tokens per batch (scratch rows); GEMM workspace floats
  int attn_split_ = 1;            // decode attention: position splits per (head, token)
  bool batch_ok_ = false;         // batches above kB tokens use GEMMs (every weight type decodes on the GPU)
  bool blas_tf32_ = false;        // the math mode blas_ is set to
  std::unique_ptr<cuda::Blas> blas_;
  int32_t* perm_ = nullptr;       // device: a batch's jobs sorted by expert (token | job, T_*max_k_ each)
  int32_t* h_perm_ = nullptr;     // pinned twin of perm_
  std::vector<uint32_t> group_off_, group_cur_, cpu_groups_, first_;
  std::vector<uint8_t> group_done_;
  std::vector<float> h_gx_;       // a CPU group's gathered inputs
  std::vector<const void*> h_table_;  // host copy of d_table_ (all_resident_)
  // Pre-gated VRAM prefetch (SessionOptions::gpu_prefetch): the next MoE layer of each layer, the predicted
  // ids (device, kB*max_k) and weights (unused), their pinned copy, and the tier's prefetch hits so far.
  std::vector<uint32_t> next_moe_;
  int32_t* pids_ = nullptr;
  float* pw_ = nullptr;
  int32_t* h_pids_ = nullptr;
  uint64_t prefetch_hits_seen_ = 0;
  int32_t *ids_ = nullptr, *pos_ = nullptr, *tok_ = nullptr, *nkv_ = nullptr;  // nkv_: pos + 1 per token
  const void** ptrs_ = nullptr;
  // Pinned host.
  int32_t* h_ids_ = nullptr;
  float* h_w_ = nullptr;
  int32_t* h_in_ = nullptr;     // positions | tokens | key counts, kB each (copied to pos_ in one piece)
  float* h_logits_ = nullptr;  // the last token's logits
  const void** h_ptrs_ = nullptr;
  float* h_xn_ = nullptr;
  float* h_e_ = nullptr;
  std::vector<Staging> staging_ = std::vector<Staging>(2);
  size_t next_stage_ = 0;
  uint8_t* registered_ = nullptr;  // the page-locked mapping (unregistered on destruction)
  bool host_pinned_ = false;       // expert bytes are in page-locked host memory
  uint64_t last_upload_ = UINT64_MAX;  // slot of the last queued upload
  bool all_resident_ = false;
  // GpuMissMode::Auto estimates (seconds per expert byte) and this layer's queued work.
  double cpu_s_per_byte_ = 1.0 / 20e9, up_s_per_byte_ = 1.0 / 20e9, t_cpu_ = 0, t_up_ = 0;
  cudaEvent_t up_t0_ = nullptr, up_t1_ = nullptr;  // timing events of calibrate_auto
          // every routed expert has a slot: preloaded, no routing round trip
  const void** d_table_ = nullptr;     // device: (n_layer, max_e) slot addresses (all_resident_)
  int32_t* h_ids_all_ = nullptr;       // pinned: (n_layer, kB, max_k) routing of the chunk (all_resident_)
  float* h_w_all_ = nullptr;
  uint64_t preload_bytes_ = 0;
  // The captured decode step (all_resident_ only) and the counters one step adds.
  bool use_graph_ = false;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t gexec_ = nullptr;
  SessionStats graph_step_;
  std::vector<Event> slot_ready_, slot_free_;
  std::unique_ptr<cache::ResidencyManager> vram_;
  std::vector<cache::Handle> handles_;
  std::vector<uint32_t> cpu_jobs_;
  std::vector<float> h_gu_;
};

}  // namespace

std::unique_ptr<GpuForward> make_gpu_forward(const Model& m, ExpertSource& src, const SessionOptions& o,
                                             uint32_t n_ctx, kernels::ThreadPool* pool) {
  if (cuda::device_count() <= o.gpu_device) {
    if (!o.quiet_backend)
      std::fprintf(stderr, "moe: no CUDA device %d found; --vram ignored, running on the CPU\n", o.gpu_device);
    return nullptr;
  }
  return std::make_unique<CudaForward>(m, src, o, n_ctx, pool);
}

#endif

}  // namespace moe::detail
