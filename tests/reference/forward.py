#!/usr/bin/env python3
"""tests/reference/forward.py — an independent reference forward pass for the engine's tests.

Parses a GGUF file itself (numpy only: no code shared with the C++ engine, no gguf package needed),
dequantizes the tensors it needs (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, MXFP4) and computes, in
float64, the logits of every position of a token sequence for the architectures the engine runs:
llama (Mixtral), qwen2moe, qwen3moe, olmoe, granitemoe, dbrx, deepseek2 (DeepSeek-V2/V3,
forward_deepseek2), gpt-oss (forward_gpt_oss), llama4 (forward_llama4), glm4moe (GLM-4.5/4.6,
forward_glm4moe) and phimoe (Phi-3.5-MoE as GGUF runtimes run it, forward_phimoe: see its docstring
for where that differs from the release). Each family's rules are written out here from the models' published definitions,
keyed by general.architecture, so a wrong flag in the C++ spec loader shows up as a mismatch rather
than being copied.

Math is exact float64 with no KV-cache rounding: the C++ side states tolerances for its f16 KV cache
and 8-bit activation quantization.

Usage: forward.py MODEL.gguf --tokens 1,2,3 --out logits.f32   (writes n_tokens x n_vocab float32)
       forward.py --check-quant DIR   (checks the dequantizers against shared/data/quant-vectors)
"""
import argparse
import struct
import sys

import numpy as np

# ---------------------------------------------------------------- GGUF parsing

GGUF_MAGIC = b"GGUF"
# value type -> struct format for scalars
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
# tensor type -> (block elements, block bytes)
BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 8: (32, 34), 12: (256, 144), 13: (256, 176), 14: (256, 210),
         39: (32, 17)}


class Reader:
    def __init__(self, buf):
        self.b = buf
        self.o = 0

    def unpack(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.unpack("<Q")
        s = bytes(self.b[self.o:self.o + n]).decode("utf-8", errors="replace")
        self.o += n
        return s

    def value(self, t):
        if t in SCALAR:
            return self.unpack(SCALAR[t])
        if t == 8:
            return self.string()
        if t == 9:
            et = self.unpack("<I")
            n = self.unpack("<Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {t}")


class Gguf:
    def __init__(self, path):
        self.path = path
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        r = Reader(self.buf)
        if bytes(self.buf[:4]) != GGUF_MAGIC:
            raise ValueError(f"{path}: not a GGUF file")
        r.o = 4
        self.version = r.unpack("<I")
        n_tensors = r.unpack("<Q")
        n_kv = r.unpack("<Q")
        self.kv = {}
        for _ in range(n_kv):
            k = r.string()
            t = r.unpack("<I")
            self.kv[k] = r.value(t)
        self.tensors = {}
        for _ in range(n_tensors):
            name = r.string()
            nd = r.unpack("<I")
            ne = [r.unpack("<Q") for _ in range(nd)]
            tt = r.unpack("<I")
            off = r.unpack("<Q")
            self.tensors[name] = (ne, tt, off)
        align = int(self.kv.get("general.alignment", 32))
        self.data_start = (r.o + align - 1) // align * align

    def has(self, name):
        return name in self.tensors

    def get(self, name):
        """The tensor as float64, numpy shape reversed from GGUF ne (ne[0] innermost = last axis)."""
        ne, tt, off = self.tensors[name]
        n = int(np.prod(ne))
        be, bb = BLOCK[tt]
        nbytes = n // be * bb
        raw = np.asarray(self.buf[self.data_start + off:self.data_start + off + nbytes])
        return dequantize(tt, raw, n).reshape(list(reversed(ne)))


# ---------------------------------------------------------------- dequantization (GGUF block formats)

def f16(raw):
    return raw.view(np.float16).astype(np.float64)


def k_scale_min(scales):
    """6-bit scales and mins of the 8 sub-blocks of a Q4_K/Q5_K block; scales is (nb, 12) uint8."""
    s = scales.astype(np.uint32)
    sc = np.zeros((s.shape[0], 8), np.uint32)
    mn = np.zeros((s.shape[0], 8), np.uint32)
    for j in range(8):
        if j < 4:
            sc[:, j] = s[:, j] & 63
            mn[:, j] = s[:, j + 4] & 63
        else:
            sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
            mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc.astype(np.float64), mn.astype(np.float64)


def dequantize(tt, raw, n):
    if tt == 0:
        return raw.view(np.float32).astype(np.float64)
    if tt == 1:
        return raw.view(np.float16).astype(np.float64)
    if tt == 30:
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    be, bb = BLOCK[tt]
    blk = raw.reshape(-1, bb)
    if tt == 8:  # Q8_0: f16 d, int8 q[32]
        d = f16(blk[:, 0:2].copy())
        q = blk[:, 2:34].view(np.int8).astype(np.float64)
        return (d * q).reshape(-1)
    if tt == 2:  # Q4_0: f16 d, nibbles (low: 0..15, high: 16..31), value d * (q - 8)
        d = f16(blk[:, 0:2].copy())
        qs = blk[:, 2:18]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float64) - 8
        return (d * q).reshape(-1)
    if tt == 12:  # Q4_K: f16 d, f16 dmin, scales[12], qs[128]
        d = f16(blk[:, 0:2].copy())
        dmin = f16(blk[:, 2:4].copy())
        sc, mn = k_scale_min(blk[:, 4:16])
        qs = blk[:, 16:144]
        out = np.empty((blk.shape[0], 256))
        for j in range(4):
            q = qs[:, 32 * j:32 * j + 32]
            out[:, 64 * j:64 * j + 32] = d * sc[:, 2 * j:2 * j + 1] * (q & 0xF) - dmin * mn[:, 2 * j:2 * j + 1]
            out[:, 64 * j + 32:64 * j + 64] = d * sc[:, 2 * j + 1:2 * j + 2] * (q >> 4) - dmin * mn[:, 2 * j + 1:2 * j + 2]
        return out.reshape(-1)
    if tt == 13:  # Q5_K: f16 d, f16 dmin, scales[12], qh[32], qs[128]
        d = f16(blk[:, 0:2].copy())
        dmin = f16(blk[:, 2:4].copy())
        sc, mn = k_scale_min(blk[:, 4:16])
        qh = blk[:, 16:48]
        qs = blk[:, 48:176]
        out = np.empty((blk.shape[0], 256))
        for j in range(4):
            q = qs[:, 32 * j:32 * j + 32]
            lo = (q & 0xF) + np.where(qh & (1 << (2 * j)), 16, 0)
            hi = (q >> 4) + np.where(qh & (2 << (2 * j)), 16, 0)
            out[:, 64 * j:64 * j + 32] = d * sc[:, 2 * j:2 * j + 1] * lo - dmin * mn[:, 2 * j:2 * j + 1]
            out[:, 64 * j + 32:64 * j + 64] = d * sc[:, 2 * j + 1:2 * j + 2] * hi - dmin * mn[:, 2 * j + 1:2 * j + 2]
        return out.reshape(-1)
    if tt == 14:  # Q6_K: ql[128], qh[64], int8 scales[16], f16 d
        ql = blk[:, 0:128].astype(np.int32)
        qh = blk[:, 128:192].astype(np.int32)
        sc = blk[:, 192:208].view(np.int8).astype(np.float64)
        d = f16(blk[:, 208:210].copy())
        out = np.empty((blk.shape[0], 256))
        for h in range(2):
            L = ql[:, 64 * h:64 * h + 64]
            H = qh[:, 32 * h:32 * h + 32]
            s = sc[:, 8 * h:8 * h + 8]
            q1 = (L[:, 0:32] & 0xF) | (((H >> 0) & 3) << 4)
            q2 = (L[:, 32:64] & 0xF) | (((H >> 2) & 3) << 4)
            q3 = (L[:, 0:32] >> 4) | (((H >> 4) & 3) << 4)
            q4 = (L[:, 32:64] >> 4) | (((H >> 6) & 3) << 4)
            for k, q in enumerate((q1, q2, q3, q4)):
                scale = np.repeat(s[:, 2 * k:2 * k + 2], 16, axis=1)  # 16 elements per scale
                out[:, 128 * h + 32 * k:128 * h + 32 * k + 32] = d * scale * (q - 32)
        return out.reshape(-1)
    if tt == 39:  # MXFP4 (OCP Microscaling): E8M0 shared scale byte, then 16 bytes of FP4 (E2M1) codes;
        # element j < 16 is the low nibble of byte j, element j + 16 its high nibble.
        scale = np.exp2(blk[:, 0].astype(np.float64) - 127.0)[:, None]
        qs = blk[:, 1:17]
        codes = np.concatenate([qs & 0xF, qs >> 4], axis=1)
        return (scale * fp4_e2m1(codes)).reshape(-1)
    raise ValueError(f"tensor type {tt} not supported by the reference")


def fp4_e2m1(c):
    """FP4 E2M1 codes (sign bit 3, exponent bits 2-1 with bias 1, mantissa bit 0) to float64."""
    c = c.astype(np.int64)
    sign = np.where(c & 8, -1.0, 1.0)
    e = (c >> 1) & 3
    m = (c & 1).astype(np.float64)
    mag = np.where(e == 0, m * 0.5, (1.0 + m / 2.0) * np.exp2(e - 1.0))
    return sign * mag


# ---------------------------------------------------------------- the forward pass

def rmsnorm(x, w, eps):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * w if w is not None else y


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def rope(x, pos, n_rot, base, scale, neox, yarn, msc_override=None, factors=None):
    """x: (T, H, D). Rotates the first n_rot dims of each head. yarn: None or dict.
    msc_override: the cos/sin factor to use instead of YaRN's default attention temperature.
    factors: None or n_rot/2 divisors of the pair frequencies (Llama 3.1 rope scaling, LongRoPE)."""
    half = n_rot // 2
    i = np.arange(half)
    inv = base ** (-2.0 * i / n_rot)
    if factors is not None:
        inv = inv / np.asarray(factors, dtype=np.float64)[:half]
    th_ext = pos[:, None] * inv[None, :]
    th = th_ext * scale
    msc = 1.0
    if yarn is not None:
        def corr(rot):
            return n_rot * np.log(yarn["orig_ctx"] / (rot * 2 * np.pi)) / (2 * np.log(base))
        lo = max(0.0, np.floor(corr(yarn["beta_fast"])))
        hi = min(n_rot - 1.0, np.ceil(corr(yarn["beta_slow"])))
        ramp = 1.0 - np.clip((i - lo) / max(0.001, hi - lo), 0, 1)
        mix = ramp * yarn["ext_factor"]
        th = th * (1 - mix) + th_ext * mix
        msc = yarn["attn_factor"] * (1 + 0.1 * np.log(1 / scale))
    if msc_override is not None:
        msc = msc_override
    c = (np.cos(th) * msc)[:, None, :]
    s = (np.sin(th) * msc)[:, None, :]
    y = x.copy()
    if neox:
        a, b = x[..., 0:half], x[..., half:n_rot]
        y[..., 0:half] = a * c - b * s
        y[..., half:n_rot] = a * s + b * c
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        y[..., 0:n_rot:2] = a * c - b * s
        y[..., 1:n_rot:2] = a * s + b * c
    return y


# Per-family rules (from each model's published definition).
FAMILY = {
    #            neox   qk_norm     attn_bias  gating: (topk_on_logits, renormalize)  shared_gate
    "llama":    (False, None,       False,     (True, False),  False),   # Mixtral
    "qwen2moe": (True,  None,       True,      (False, False), True),
    "qwen3moe": (True,  "per_head", False,     (False, True),  False),
    "olmoe":    (True,  "full",     False,     (False, False), False),
    "granitemoe": (False, None,     False,     (True, False),  False),   # + the four multipliers below
    "dbrx":     (True,  None,       False,     (True, False),  False),   # LayerNorm, fused qkv, clamp
    "arctic":   (False, None,       False,     (True, False),  False),   # + a dense residual MLP beside the MoE
    "grok":     (True,  None,       False,     (True, False),  False),   # soft-caps, post norms, GELU experts
}


def silu_glu(h, gate, up, down):
    a = h @ gate.T
    return (a / (1 + np.exp(-a)) * (h @ up.T)) @ down.T


def select_biased(choice, n_used, n_group, topk_group, margins):
    """DeepSeek-V3's expert choice (also GLM-4.5's): the n_used best of `choice` (scores + selection
    bias), restricted, with n_group > 1 groups, to the topk_group groups whose two best choice scores sum
    highest. Appends the relative gaps at each cut to `margins`; returns the chosen expert ids."""
    n_expert = len(choice)
    spread = max(1e-30, choice.max() - choice.min())
    if n_group > 1:
        per = n_expert // n_group
        grp = np.sort(choice.reshape(n_group, per), axis=1)[:, ::-1]
        gsc = grp[:, :2].sum(axis=1) if per >= 2 else grp[:, 0]
        gs = np.sort(gsc)[::-1]
        margins.append((gs[topk_group - 1] - gs[topk_group]) / spread)
        keep = np.argsort(-gsc, kind="stable")[:topk_group]
        masked = np.full(n_expert, -np.inf)
        for gi in keep:
            masked[gi * per:(gi + 1) * per] = choice[gi * per:(gi + 1) * per]
        choice = masked
    srt = np.sort(choice)[::-1]
    if n_used < n_expert and np.isfinite(srt[n_used]):
        margins.append((srt[n_used - 1] - srt[n_used]) / spread)
    return np.argsort(-choice, kind="stable")[:n_used]


def forward_glm4moe(g, tokens):
    """GLM-4.5 / GLM-4.6 (zai-org, transformers' Glm4MoeForCausalLM), with the key and tensor names of
    its GGUF conversion. Per block:
      attention: h = rmsnorm(x) (attn_norm); q, k, v = linear with bias; if use_qk_norm, an RMSNorm over
        each head's q and k (attn_q_norm / attn_k_norm, head_dim weights); RoPE on the first
        rotary_dim = head_dim * partial_rotary_factor dims of each head (rope.dimension_count) with
        rotate_half pairing (i, i + rotary_dim/2), inv_freq = base^(-2i/rotary_dim); the rest pass through;
        scores q.k / sqrt(head_dim), causal; x += o_proj(attention) (no bias).
      FFN: h = rmsnorm(x) (post_attention_norm); the first first_k_dense_replace layers
        (leading_dense_block_count) are a SiLU-gated MLP; the others a MoE: scores = sigmoid(router(h));
        the top-k by scores + e_score_correction_bias (exp_probs_b; group-limited if n_group > 1, as
        DeepSeek-V3); weights = the unbiased scores of the chosen, divided by their sum if norm_topk_prob
        (expert_weights_norm), times routed_scaling_factor (expert_weights_scale); plus the shared
        experts' MLP on h. x += that.
    Final rmsnorm, LM head. The checkpoint's trailing num_nextn_predict_layers (multi-token prediction)
    layers are not part of the model's forward: block_count - nextn_predict_layers layers run."""
    kv = g.kv

    def key(k, default=None):
        return kv.get(f"glm4moe.{k}", default)

    E = int(key("embedding_length"))
    n_layer = int(key("block_count")) - int(key("nextn_predict_layers", 0))
    n_head = int(key("attention.head_count"))
    n_kv = int(key("attention.head_count_kv", n_head))
    hd = int(key("attention.key_length", E // n_head))
    eps = float(key("attention.layer_norm_rms_epsilon"))
    base = float(key("rope.freq_base", 10000.0))
    n_rot = int(key("rope.dimension_count", hd))
    n_dense = int(key("leading_dense_block_count", 0))
    n_used = int(key("expert_used_count"))
    gating = int(key("expert_gating_func", 2) or 2)  # GLM-4.5: sigmoid
    norm_w = bool(key("expert_weights_norm", False))
    w_scale = float(key("expert_weights_scale", 1.0) or 1.0)
    n_group = int(key("expert_group_count", 0))
    topk_group = int(key("expert_group_used_count", 0))

    margins = []
    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    emb = g.get("token_embd.weight")
    x = emb[np.array(tokens)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    group = n_head // n_kv
    for il in range(n_layer):
        p = f"blk.{il}."
        h = rmsnorm(x, g.get(p + "attn_norm.weight"), eps)
        q = (h @ g.get(p + "attn_q.weight").T + g.get(p + "attn_q.bias")).reshape(T, n_head, hd)
        k = (h @ g.get(p + "attn_k.weight").T + g.get(p + "attn_k.bias")).reshape(T, n_kv, hd)
        v = (h @ g.get(p + "attn_v.weight").T + g.get(p + "attn_v.bias")).reshape(T, n_kv, hd)
        if g.has(p + "attn_q_norm.weight"):
            q = rmsnorm(q, g.get(p + "attn_q_norm.weight"), eps)
            k = rmsnorm(k, g.get(p + "attn_k_norm.weight"), eps)
        q = rope(q, pos, n_rot, base, 1.0, True, None)
        k = rope(k, pos, n_rot, base, 1.0, True, None)
        out = np.empty((T, n_head, hd))
        for hh in range(n_head):
            sc = q[:, hh, :] @ k[:, hh // group, :].T / np.sqrt(hd) + mask
            out[:, hh, :] = softmax(sc) @ v[:, hh // group, :]
        x = x + out.reshape(T, n_head * hd) @ g.get(p + "attn_output.weight").T

        h = rmsnorm(x, g.get(p + "post_attention_norm.weight"), eps)
        if il < n_dense:
            x = x + silu_glu(h, g.get(p + "ffn_gate.weight"), g.get(p + "ffn_up.weight"), g.get(p + "ffn_down.weight"))
            continue
        logits = h @ g.get(p + "ffn_gate_inp.weight").T
        bias = g.get(p + "exp_probs_b.bias")
        gate, up, down = (g.get(p + f"ffn_{n}_exps.weight") for n in ("gate", "up", "down"))
        y = np.zeros_like(x)
        if g.has(p + "ffn_gate_shexp.weight"):
            y += silu_glu(h, g.get(p + "ffn_gate_shexp.weight"), g.get(p + "ffn_up_shexp.weight"),
                          g.get(p + "ffn_down_shexp.weight"))
        for t in range(T):
            scores = 1 / (1 + np.exp(-logits[t])) if gating == 2 else softmax(logits[t])
            sel = select_biased(scores + bias, n_used, n_group, topk_group, margins)
            w = scores[sel]
            if norm_w:
                w = w / w.sum()
            w = w * w_scale
            for e, we in zip(sel, w):
                y[t] += we * silu_glu(h[t:t + 1], gate[e], up[e], down[e])[0]
        x = x + y

    x = rmsnorm(x, g.get("output_norm.weight"), eps)
    head = g.get("output.weight") if g.has("output.weight") else emb
    return x @ head.T, (min(margins) if margins else 1.0)


def forward_deepseek2(g, tokens):
    """DeepSeek-V2 / V3 (arXiv:2405.04434, arXiv:2412.19437) in the plain (non-absorbed) form: the
    latent c = RMSNorm(W_DKV x) is decompressed to per-head keys and values for every position;
    the decoupled RoPE key k_pe = RoPE(W_KR x) is shared by all heads. Routing: scores =
    softmax (V2) or sigmoid (V3) of the router logits; the choice uses scores + exp_probs_b (V3) and,
    with expert groups, only the topk_group groups whose two best choice scores sum highest (V3's
    rule); the weights are the unbiased scores, renormalised if expert_weights_norm, times the routed
    scaling factor. Shared experts are always added. The first leading_dense_block_count layers are
    dense. GGUF conventions: RoPE pairs adjacent dimensions (the checkpoints' interleaved q_pe/k_pe),
    YaRN as in DeepSeek's modelling code with mscale = mscale_all_dim (as the released configs set it:
    cos/sin unscaled, softmax scale times yarn_mscale(factor, mscale_all_dim)^2)."""
    kv = g.kv
    arch = "deepseek2"

    def key(k, default=None):
        return kv.get(f"{arch}.{k}", default)

    E = int(key("embedding_length"))
    n_layer = int(key("block_count"))
    H = int(key("attention.head_count"))
    eps = float(key("attention.layer_norm_rms_epsilon"))
    base = float(key("rope.freq_base", 10000.0))
    n_rot = int(key("rope.dimension_count"))
    r = int(key("attention.kv_lora_rank"))
    q_lora = int(key("attention.q_lora_rank", 0))
    if key("attention.key_length_mla") is not None:  # split attn_k_b / attn_v_b layout
        dk = int(key("attention.key_length_mla"))
        dv = int(key("attention.value_length_mla"))
    else:
        dk = int(key("attention.key_length"))
        dv = int(key("attention.value_length"))
    nope = dk - n_rot
    n_dense = int(key("leading_dense_block_count", 0))
    n_used = int(key("expert_used_count"))
    gating = int(key("expert_gating_func", 1))  # 1 softmax (V2 files omit it), 2 sigmoid
    norm_w = bool(key("expert_weights_norm", False))
    w_scale = float(key("expert_weights_scale", 1.0) or 1.0)
    n_group = int(key("expert_group_count", 0))
    topk_group = int(key("expert_group_used_count", 0))

    scaling = key("rope.scaling.type", "none")
    factor = float(key("rope.scaling.factor", 1.0) or 1.0)
    yarn = None
    rscale = 1.0
    softmax_scale = 1.0 / np.sqrt(dk)
    if scaling == "yarn":
        rscale = 1.0 / factor
        yarn = dict(orig_ctx=float(key("rope.scaling.original_context_length", key("context_length"))),
                    ext_factor=1.0, attn_factor=1.0, beta_fast=32.0, beta_slow=1.0)
        mscale_all = float(key("rope.scaling.yarn_log_multiplier", 0.0)) / 0.1
        m = 0.1 * mscale_all * np.log(factor) + 1.0 if factor > 1 else 1.0
        softmax_scale = softmax_scale * m * m

    margins = []
    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    emb = g.get("token_embd.weight")
    x = emb[np.array(tokens)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for il in range(n_layer):
        p = f"blk.{il}."
        h = rmsnorm(x, g.get(p + "attn_norm.weight"), eps)
        if q_lora > 0:
            q = rmsnorm(h @ g.get(p + "attn_q_a.weight").T, g.get(p + "attn_q_a_norm.weight"), eps)
            q = q @ g.get(p + "attn_q_b.weight").T
        else:
            q = h @ g.get(p + "attn_q.weight").T
        q = q.reshape(T, H, dk)
        ckv = h @ g.get(p + "attn_kv_a_mqa.weight").T  # (T, r + n_rot)
        c = rmsnorm(ckv[:, :r], g.get(p + "attn_kv_a_norm.weight"), eps)
        k_pe = rope(ckv[:, None, r:], pos, n_rot, base, rscale, False, yarn, msc_override=1.0)  # (T, 1, n_rot)
        q_pe = rope(q[:, :, nope:], pos, n_rot, base, rscale, False, yarn, msc_override=1.0)
        if g.has(p + "attn_k_b.weight"):
            k_b = g.get(p + "attn_k_b.weight")  # (H, r, nope): W_UK transposed per head
            v_b = g.get(p + "attn_v_b.weight")  # (H, dv, r)
            k_nope = np.einsum("tc,hcd->thd", c, k_b)
            v = np.einsum("tc,hjc->thj", c, v_b)
        else:
            kv_b = g.get(p + "attn_kv_b.weight").reshape(H, nope + dv, r)
            k_nope = np.einsum("tc,hdc->thd", c, kv_b[:, :nope, :])
            v = np.einsum("tc,hjc->thj", c, kv_b[:, nope:, :])
        out = np.empty((T, H, dv))
        for hh in range(H):
            s = (q[:, hh, :nope] @ k_nope[:, hh, :].T + q_pe[:, hh, :] @ k_pe[:, 0, :].T) * softmax_scale + mask
            out[:, hh, :] = softmax(s) @ v[:, hh, :]
        x = x + out.reshape(T, H * dv) @ g.get(p + "attn_output.weight").T

        h = rmsnorm(x, g.get(p + "ffn_norm.weight"), eps)
        if il < n_dense:
            x = x + silu_glu(h, g.get(p + "ffn_gate.weight"), g.get(p + "ffn_up.weight"), g.get(p + "ffn_down.weight"))
            continue
        logits = h @ g.get(p + "ffn_gate_inp.weight").T
        n_expert = logits.shape[1]
        bias = g.get(p + "exp_probs_b.bias") if g.has(p + "exp_probs_b.bias") else np.zeros(n_expert)
        gate = g.get(p + "ffn_gate_exps.weight")
        up = g.get(p + "ffn_up_exps.weight")
        down = g.get(p + "ffn_down_exps.weight")
        y = silu_glu(h, g.get(p + "ffn_gate_shexp.weight"), g.get(p + "ffn_up_shexp.weight"),
                     g.get(p + "ffn_down_shexp.weight"))
        for t in range(T):
            scores = softmax(logits[t]) if gating == 1 else 1 / (1 + np.exp(-logits[t]))
            sel = select_biased(scores + bias, n_used, n_group, topk_group, margins)
            w = scores[sel]
            if norm_w:
                w = w / w.sum()
            w = w * w_scale
            for e, we in zip(sel, w):
                a = gate[e] @ h[t]
                b = up[e] @ h[t]
                y[t] += we * (down[e] @ (a / (1 + np.exp(-a)) * b))
        x = x + y

    x = rmsnorm(x, g.get("output_norm.weight"), eps)
    head = g.get("output.weight") if g.has("output.weight") else emb
    return x @ head.T, (min(margins) if margins else 1.0)


def forward(g, tokens, n_ctx=0):
    kv = g.kv
    arch = kv["general.architecture"]
    if arch == "phimoe":
        return forward_phimoe(g, tokens, n_ctx)
    if arch == "deepseek2":
        return forward_deepseek2(g, tokens)
    if arch == "gpt-oss":
        return forward_gpt_oss(g, tokens)
    if arch == "llama4":
        return forward_llama4(g, tokens)
    if arch == "glm4moe":
        return forward_glm4moe(g, tokens)
    if arch not in FAMILY:
        raise ValueError(f"architecture {arch} not supported by the reference")
    neox, qk_norm, attn_bias, (topk_logits, renorm), shared_gate = FAMILY[arch]

    def key(k, default=None):
        return kv.get(f"{arch}.{k}", default)

    E = int(key("embedding_length"))
    n_layer = int(key("block_count"))
    n_head = int(key("attention.head_count"))
    n_kv = int(key("attention.head_count_kv", n_head))
    hd_k = int(key("attention.key_length", E // n_head))
    hd_v = int(key("attention.value_length", E // n_head))
    # DBRX (Databricks' release): LayerNorm without bias (norm_1 / norm_2), one Wqkv projection whose
    # output is clamped to [-clip_qkv, clip_qkv] and split [q | k | v].
    layer_norm = arch == "dbrx"
    eps = float(key("attention.layer_norm_epsilon" if layer_norm else "attention.layer_norm_rms_epsilon", 1e-5))
    clamp = float(key("attention.clamp_kqv", 0.0) or 0.0)

    def norm(v, w):
        if not layer_norm:
            return rmsnorm(v, w, eps)
        c = v - v.mean(axis=-1, keepdims=True)
        return c / np.sqrt((c * c).mean(axis=-1, keepdims=True) + eps) * w
    base = float(key("rope.freq_base", 10000.0))
    n_rot = int(key("rope.dimension_count", hd_k))
    scaling = key("rope.scaling.type", "none")
    factor = float(key("rope.scaling.factor", 1.0) or 1.0)
    scale = 1.0 / factor if scaling in ("linear", "yarn") and factor > 0 else 1.0
    yarn = None
    if scaling == "yarn":
        yarn = dict(orig_ctx=float(key("rope.scaling.original_context_length", key("context_length", 4096))),
                    ext_factor=1.0, attn_factor=float(key("rope.scaling.attn_factor", 1.0)),
                    beta_fast=32.0, beta_slow=1.0)
    n_used = int(key("expert_used_count", 0))
    # Granite (IBM's published config): embedding_multiplier, residual_multiplier, attention_multiplier
    # (replaces 1/sqrt(head size)) and logits_scaling (logits divided by it). Absent = no-op.
    emb_mul = float(key("embedding_scale", 0.0) or 1.0)
    res_mul = float(key("residual_scale", 0.0) or 1.0)
    att_mul = float(key("attention.scale", 0.0) or 0.0)
    logit_div = float(key("logit_scale", 0.0) or 1.0)
    # Grok-1 (xai-org/grok-1, model.py): attention logits times attn_output_multiplier, then
    # cap * tanh(logits / cap); an RMSNorm on the attention output and on the MoE output before each
    # residual add; GELU (tanh form) experts; logits times output_multiplier_scale (stored as
    # logit_scale, the inverse of granite's use). One deviation, to match GGUF runtimes: the top-k
    # routing weights are renormalised (llama.cpp does; the JAX release does not).
    grok = arch == "grok"
    attn_cap = 0.0
    final_cap = 0.0
    if grok:
        att_mul = float(key("attention.output_scale", 0.08838834764831845))
        attn_cap = float(key("attn_logit_softcapping", 30.0))
        final_cap = float(key("final_logit_softcapping", 0.0) or 0.0)
        logit_div = 1.0 / float(key("logit_scale", 0.5773502691896257))

    def act(a):
        if grok:
            return 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))
        return a / (1 + np.exp(-a))

    margins = []  # gap between the k-th and (k+1)-th routing score, per decision
    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    emb = g.get("token_embd.weight")  # (n_vocab, E)
    x = emb[np.array(tokens)] * emb_mul
    mask = np.triu(np.full((T, T), -np.inf), 1)
    group = n_head // n_kv
    for il in range(n_layer):
        p = f"blk.{il}."
        x_in = x  # the layer input (arctic's MoE reads it)
        h = norm(x, g.get(p + "attn_norm.weight"))
        if g.has(p + "attn_qkv.weight"):
            qkv = h @ g.get(p + "attn_qkv.weight").T
            if clamp > 0:
                qkv = np.clip(qkv, -clamp, clamp)
            q, k, v = np.split(qkv, [n_head * hd_k, n_head * hd_k + n_kv * hd_k], axis=1)
        else:
            q = h @ g.get(p + "attn_q.weight").T
            k = h @ g.get(p + "attn_k.weight").T
            v = h @ g.get(p + "attn_v.weight").T
        if attn_bias:
            q = q + g.get(p + "attn_q.bias")
            k = k + g.get(p + "attn_k.bias")
            v = v + g.get(p + "attn_v.bias")
        if qk_norm == "full":
            q = rmsnorm(q, g.get(p + "attn_q_norm.weight"), eps)
            k = rmsnorm(k, g.get(p + "attn_k_norm.weight"), eps)
        q = q.reshape(T, n_head, hd_k)
        k = k.reshape(T, n_kv, hd_k)
        v = v.reshape(T, n_kv, hd_v)
        if qk_norm == "per_head":
            q = rmsnorm(q, g.get(p + "attn_q_norm.weight"), eps)
            k = rmsnorm(k, g.get(p + "attn_k_norm.weight"), eps)
        q = rope(q, pos, n_rot, base, scale, neox, yarn)
        k = rope(k, pos, n_rot, base, scale, neox, yarn)
        out = np.empty((T, n_head, hd_v))
        for hh in range(n_head):
            s = q[:, hh, :] @ k[:, hh // group, :].T * (att_mul or 1 / np.sqrt(hd_k))
            if attn_cap:
                s = attn_cap * np.tanh(s / attn_cap)
            s = s + mask
            out[:, hh, :] = softmax(s) @ v[:, hh // group, :]
        ao = out.reshape(T, n_head * hd_v) @ g.get(p + "attn_output.weight").T
        if grok:
            ao = rmsnorm(ao, g.get(p + "attn_output_norm.weight"), eps)
        x = x + res_mul * ao

        h = norm(x, g.get(p + ("attn_output_norm.weight" if arch == "dbrx" else "ffn_norm.weight")))
        if arch == "arctic":
            # Snowflake Arctic's parallel residual: a dense SwiGLU MLP on ffn_norm(x) joins the stream,
            # and the MoE runs on its own norm (ffn_norm_exps) of the layer input, not of x.
            a = h @ g.get(p + "ffn_gate.weight").T
            b = h @ g.get(p + "ffn_up.weight").T
            x = x + (a / (1 + np.exp(-a)) * b) @ g.get(p + "ffn_down.weight").T
            h = norm(x_in, g.get(p + "ffn_norm_exps.weight"))
        y = np.zeros_like(x)
        if g.has(p + "ffn_gate_inp.weight"):
            logits = h @ g.get(p + "ffn_gate_inp.weight").T  # (T, n_expert)
            gate = g.get(p + "ffn_gate_exps.weight")  # (n_expert, n_ff, E)
            up = g.get(p + "ffn_up_exps.weight")
            down = g.get(p + "ffn_down_exps.weight")  # (n_expert, E, n_ff)
            for t in range(T):
                # Ranking by softmax equals ranking by logits: the gap is measured in logits,
                # relative to the spread of this token's router logits.
                srt = np.sort(logits[t])[::-1]
                if len(srt) > n_used:
                    margins.append((srt[n_used - 1] - srt[n_used]) / max(1e-30, srt[0] - srt[-1]))
                if topk_logits:
                    # top-k on logits, softmax over the k
                    sel = np.argsort(-logits[t], kind="stable")[:n_used]
                    w = softmax(logits[t, sel])
                else:
                    pr = softmax(logits[t])
                    sel = np.argsort(-pr, kind="stable")[:n_used]
                    w = pr[sel]
                    if renorm:
                        w = w / w.sum()
                for e, we in zip(sel, w):
                    a = gate[e] @ h[t]
                    b = up[e] @ h[t]
                    y[t] += we * (down[e] @ (act(a) * b))
            if g.has(p + "ffn_gate_shexp.weight"):
                a = h @ g.get(p + "ffn_gate_shexp.weight").T
                b = h @ g.get(p + "ffn_up_shexp.weight").T
                sh = (a / (1 + np.exp(-a)) * b) @ g.get(p + "ffn_down_shexp.weight").T
                if shared_gate and g.has(p + "ffn_gate_inp_shexp.weight"):
                    sg = h @ g.get(p + "ffn_gate_inp_shexp.weight").reshape(-1)
                    sh = sh * (1 / (1 + np.exp(-sg)))[:, None]
                y += sh
        else:
            a = h @ g.get(p + "ffn_gate.weight").T
            b = h @ g.get(p + "ffn_up.weight").T
            y = (a / (1 + np.exp(-a)) * b) @ g.get(p + "ffn_down.weight").T
        if grok:
            post = "layer_output_norm.weight" if g.has(p + "layer_output_norm.weight") else "post_ffw_norm.weight"
            y = rmsnorm(y, g.get(p + post), eps)
        x = x + res_mul * y

    x = norm(x, g.get("output_norm.weight"))
    head = g.get("output.weight") if g.has("output.weight") else emb
    logits = (x @ head.T) / logit_div
    if final_cap:
        logits = final_cap * np.tanh(logits / final_cap)
    return logits, (min(margins) if margins else 1.0)


STATS = {}  # counters of the last forward (printed by main)


def forward_gpt_oss(g, tokens):
    """gpt-oss, from the published model definition (openai/gpt-oss, gpt_oss/torch/model.py), with the
    tensor and key names of its GGUF conversion. Per block:
      attention: t = rmsnorm(x) (attn_norm); q, k, v = linear with bias; RoPE (NeoX halves) on q and k;
        scores = q.k / sqrt(head_dim), causal; on sliding-window layers (even layers: layer_idx % 2 == 0)
        keys with q_pos - k_pos >= sliding_window are masked too; each head has a learned sink logit that
        joins the softmax's denominator (softmax over [scores, sink], the sink column dropped);
        x += linear(attention, with bias) (attn_output).
      MoE: t = rmsnorm(x) (post_attention_norm); g = router(t) + bias; the top-k experts by g, weights =
        softmax over those k logits; expert: h = gate/up linear with bias; swiglu: x_glu = min(gate, 7),
        x_lin = clamp(up, -7, 7), a = x_glu * sigmoid(1.702 x_glu) * (x_lin + 1); y = down(a) + bias;
        x += sum_k weight_k * y_k.
    Final rmsnorm and an untied LM head. RoPE: YaRN with the file's factor and original context,
    beta_fast 32 / beta_slow 1, correction range rounded outward (floor/ceil) as in the YaRN paper's code
    and llama.cpp (the gpt-oss release does not round: "truncate": false in its HF config; GGUF has no
    key for that, and the runtimes that read GGUF round), magnitude scale 0.1 ln(factor) + 1."""
    kv = g.kv

    def key(k, default=None):
        return kv.get(f"gpt-oss.{k}", default)

    E = int(key("embedding_length"))
    n_layer = int(key("block_count"))
    n_head = int(key("attention.head_count"))
    n_kv = int(key("attention.head_count_kv", n_head))
    hd = int(key("attention.key_length", E // n_head))
    eps = float(key("attention.layer_norm_rms_epsilon"))
    base = float(key("rope.freq_base", 10000.0))
    n_rot = int(key("rope.dimension_count", hd))
    window = int(key("attention.sliding_window"))
    n_used = int(key("expert_used_count"))
    scale, yarn = 1.0, None
    if key("rope.scaling.type", "none") == "yarn":
        factor = float(key("rope.scaling.factor"))
        scale = 1.0 / factor
        yarn = dict(orig_ctx=float(key("rope.scaling.original_context_length")), ext_factor=1.0,
                    attn_factor=float(key("rope.scaling.attn_factor", 1.0)), beta_fast=32.0, beta_slow=1.0)
    limit, alpha = 7.0, 1.702
    STATS["swiglu_clamped"] = 0

    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    x = g.get("token_embd.weight")[np.array(tokens)]
    qi, ki = np.arange(T)[:, None], np.arange(T)[None, :]
    causal = np.where(ki > qi, -np.inf, 0.0)
    windowed = np.where((ki > qi) | (qi - ki >= window), -np.inf, 0.0)
    group = n_head // n_kv
    margins = []
    for il in range(n_layer):
        p = f"blk.{il}."
        t = rmsnorm(x, g.get(p + "attn_norm.weight"), eps)
        q = (t @ g.get(p + "attn_q.weight").T + g.get(p + "attn_q.bias")).reshape(T, n_head, hd)
        k = (t @ g.get(p + "attn_k.weight").T + g.get(p + "attn_k.bias")).reshape(T, n_kv, hd)
        v = (t @ g.get(p + "attn_v.weight").T + g.get(p + "attn_v.bias")).reshape(T, n_kv, hd)
        q = rope(q, pos, n_rot, base, scale, True, yarn)
        k = rope(k, pos, n_rot, base, scale, True, yarn)
        sinks = g.get(p + "attn_sinks.weight")
        mask = windowed if il % 2 == 0 else causal
        out = np.empty((T, n_head, hd))
        for hh in range(n_head):
            sc = q[:, hh, :] @ k[:, hh // group, :].T / np.sqrt(hd) + mask
            sc = np.concatenate([sc, np.full((T, 1), sinks[hh])], axis=1)
            w = softmax(sc)[:, :T]
            out[:, hh, :] = w @ v[:, hh // group, :]
        x = x + out.reshape(T, n_head * hd) @ g.get(p + "attn_output.weight").T + g.get(p + "attn_output.bias")

        t = rmsnorm(x, g.get(p + "post_attention_norm.weight"), eps)
        logits = t @ g.get(p + "ffn_gate_inp.weight").T + g.get(p + "ffn_gate_inp.bias")
        gate, up, down = (g.get(p + f"ffn_{n}_exps.weight") for n in ("gate", "up", "down"))
        gb, ub, db = (g.get(p + f"ffn_{n}_exps.bias") for n in ("gate", "up", "down"))
        y = np.zeros_like(x)
        for tt in range(T):
            srt = np.sort(logits[tt])[::-1]
            if len(srt) > n_used:
                margins.append((srt[n_used - 1] - srt[n_used]) / max(1e-30, srt[0] - srt[-1]))
            sel = np.argsort(-logits[tt], kind="stable")[:n_used]
            w = softmax(logits[tt, sel])
            for e, we in zip(sel, w):
                hg, hu = gate[e] @ t[tt] + gb[e], up[e] @ t[tt] + ub[e]
                STATS["swiglu_clamped"] += int(np.sum(hg > limit) + np.sum(np.abs(hu) > limit))
                xg = np.minimum(hg, limit)
                xl = np.clip(hu, -limit, limit)
                a = xg / (1 + np.exp(-alpha * xg)) * (xl + 1)
                y[tt] += we * (down[e] @ a + db[e])
        x = x + y

    x = rmsnorm(x, g.get("output_norm.weight"), eps)
    return x @ g.get("output.weight").T, (min(margins) if margins else 1.0)


def forward_phimoe(g, tokens, n_ctx=0):
    """Phi-3.5-MoE (phimoe) AS GGUF RUNTIMES RUN IT (llama.cpp src/models/phi3.cpp graph with the phimoe
    loader), not exactly as Microsoft released it. The model's published definition (HF modeling_phimoe /
    the Phi-3.5-MoE release) differs in two places, and this reference follows the GGUF semantics on
    purpose, because the engine must give llama.cpp's tokens on these files:
      - norms: the release uses LayerNorm (x - mean) / sqrt(var + eps) * w + b (nn.LayerNorm, eps =
        rms_norm_eps); here RMSNorm: x / sqrt(mean(x^2) + eps) * w + b, with the same weight and bias
        tensors, eps from phimoe.attention.layer_norm_rms_epsilon (what llama.cpp's converter writes).
      - routing: the release routes with "sparsemixer" at inference (expert 1 = argmax of the router
        logits, weight = softmax over the logits within a 2 * jitter_eps relative band of the max;
        expert 2 likewise with expert 1 masked; the two weights are not renormalised); here softmax
        over all logits, top-2, renormalised over the two (= softmax over the two chosen logits).
    Everything else follows the release: per block
      attention: t = norm(x) (attn_norm + bias); q, k, v = linear with bias; RoPE (NeoX halves) with
        Phi-3 LongRoPE: theta_i = pos * base^(-2i/n_rot) / factor[i], factors rope_factors_short, or
        rope_factors_long when the context is longer than rope.scaling.original_context_length, cos and
        sin times rope.scaling.attn_factor; scores q.k / sqrt(head size), causal; x += linear(attention,
        with bias) (attn_output).
      MoE: t = norm(x) (ffn_norm + bias); top-2 of the router logits as above; SwiGLU experts
        down(silu(gate t) * up t); x += sum of weight * expert output.
    Final norm (output_norm + bias), LM head with a bias (output.bias).
    The long/short choice: the release decides per forward by the sequence length; llama.cpp by its
    context size rounded up to a multiple of 256 (n_ctx here, as the engine's session does; 0 = the
    number of tokens)."""
    kv = g.kv

    def key(k, default=None):
        return kv.get(f"phimoe.{k}", default)

    E = int(key("embedding_length"))
    n_layer = int(key("block_count"))
    n_head = int(key("attention.head_count"))
    n_kv = int(key("attention.head_count_kv", n_head))
    hd = E // n_head
    eps = float(key("attention.layer_norm_rms_epsilon"))
    base = float(key("rope.freq_base", 10000.0))
    n_rot = int(key("rope.dimension_count", hd))
    n_used = int(key("expert_used_count"))
    attn_factor = float(key("rope.scaling.attn_factor", 1.0))
    factors = None
    if g.has("rope_factors_long.weight"):
        orig = int(key("rope.scaling.original_context_length", key("context_length")))
        ctx = n_ctx or len(tokens)
        ctx = (ctx + 255) // 256 * 256
        factors = g.get("rope_factors_long.weight" if ctx > orig else "rope_factors_short.weight")[: n_rot // 2]
        STATS["rope_factors"] = "long" if ctx > orig else "short"

    def norm(v, w, b):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * w + b

    def rot(x, pos):  # (T, H, D), NeoX halves
        half = n_rot // 2
        inv = base ** (-2.0 * np.arange(half) / n_rot)
        if factors is not None:
            inv = inv / factors
        th = pos[:, None] * inv[None, :]
        c = (np.cos(th) * attn_factor)[:, None, :]
        s = (np.sin(th) * attn_factor)[:, None, :]
        y = x.copy()
        a, b = x[..., 0:half], x[..., half:n_rot]
        y[..., 0:half] = a * c - b * s
        y[..., half:n_rot] = a * s + b * c
        return y

    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    x = g.get("token_embd.weight")[np.array(tokens)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    group = n_head // n_kv
    margins = []
    for il in range(n_layer):
        p = f"blk.{il}."
        t = norm(x, g.get(p + "attn_norm.weight"), g.get(p + "attn_norm.bias"))
        q = (t @ g.get(p + "attn_q.weight").T + g.get(p + "attn_q.bias")).reshape(T, n_head, hd)
        k = (t @ g.get(p + "attn_k.weight").T + g.get(p + "attn_k.bias")).reshape(T, n_kv, hd)
        v = (t @ g.get(p + "attn_v.weight").T + g.get(p + "attn_v.bias")).reshape(T, n_kv, hd)
        q, k = rot(q, pos), rot(k, pos)
        out = np.empty((T, n_head, hd))
        for hh in range(n_head):
            sc = q[:, hh, :] @ k[:, hh // group, :].T / np.sqrt(hd) + mask
            out[:, hh, :] = softmax(sc) @ v[:, hh // group, :]
        x = x + out.reshape(T, E) @ g.get(p + "attn_output.weight").T + g.get(p + "attn_output.bias")

        t = norm(x, g.get(p + "ffn_norm.weight"), g.get(p + "ffn_norm.bias"))
        logits = t @ g.get(p + "ffn_gate_inp.weight").T
        gate, up, down = (g.get(p + f"ffn_{n}_exps.weight") for n in ("gate", "up", "down"))
        y = np.zeros_like(x)
        for tt in range(T):
            srt = np.sort(logits[tt])[::-1]
            if len(srt) > n_used:
                margins.append((srt[n_used - 1] - srt[n_used]) / max(1e-30, srt[0] - srt[-1]))
            sel = np.argsort(-logits[tt], kind="stable")[:n_used]
            w = softmax(logits[tt, sel])
            for e, we in zip(sel, w):
                a = gate[e] @ t[tt]
                y[tt] += we * (down[e] @ (a / (1 + np.exp(-a)) * (up[e] @ t[tt])))
        x = x + y

    x = norm(x, g.get("output_norm.weight"), g.get("output_norm.bias"))
    return x @ g.get("output.weight").T + g.get("output.bias"), (min(margins) if margins else 1.0)


def forward_llama4(g, tokens):
    """Llama 4 (Scout/Maverick text model), from the published definition (transformers'
    modeling_llama4.py, meta-llama/llama-models' llama4), with the GGUF conversion's names. Per layer il:
      attention: t = rmsnorm(x) (attn_norm); q, k, v = linear; RoPE layers are those with
        (il + 1) % 4 != 0 ("no_rope_layers"): q and k rotated (pairs of adjacent dims: the GGUF keeps the
        release's complex layout), then, when use_qk_norm, each head of q and k divided by its RMS (eps =
        rms_norm_eps, no weight; Llama4TextL2Norm). NoPE layers: q *= 1 + attn_scale * ln(floor((p + 1) /
        floor_scale) + 1) (attention temperature tuning, attn_scale 0.1, floor_scale 8192). Scores
        q.k / sqrt(head_dim), causal; RoPE layers use chunked attention: position p sees keys of its own
        chunk of attention_chunk_size positions only (p' // C == p // C). x += linear (attn_output).
      FFN: t = rmsnorm(x) (ffn_norm). MoE layers ((il + 1) % interleave_moe_layer_step == 0): router logits
        r = t W_r; the top-k by logit, score = sigmoid(logit); each chosen expert gets t * score as its
        input (the score multiplies the input, not the output) and its SwiGLU outputs are summed; plus the
        shared expert's SwiGLU(t). Dense layers: SwiGLU(t) with ffn_gate/up/down. x += that.
    Final rmsnorm, LM head. GGUF carries no keys for the chunk, floor_scale or use_qk_norm: the chunk and
    floor are read from attention.chunk_size / attention.temperature_length when present (moe's test
    keys), else the release's 8192; use_qk_norm follows the releases (Scout, 16 experts: on; Maverick,
    128 experts: off)."""
    kv = g.kv

    def key(k, default=None):
        return kv.get(f"llama4.{k}", default)

    E = int(key("embedding_length"))
    n_layer = int(key("block_count"))
    n_head = int(key("attention.head_count"))
    n_kv = int(key("attention.head_count_kv", n_head))
    hd = int(key("attention.key_length", E // n_head))
    eps = float(key("attention.layer_norm_rms_epsilon"))
    base = float(key("rope.freq_base", 10000.0))
    n_used = int(key("expert_used_count"))
    n_expert = int(key("expert_count"))
    step = int(key("interleave_moe_layer_step"))
    # Llama 3.1-style RoPE scaling (Scout): the converter stores the per-pair divisors as rope_freqs.
    rope_freqs = g.get("rope_freqs.weight") if g.has("rope_freqs.weight") else None
    chunk = int(key("attention.chunk_size", 8192))
    floor_scale = float(key("attention.temperature_length", 8192))
    attn_scale = 0.1
    use_qk_norm = n_expert != 128

    def swiglu(h, gate, up, down):
        a = h @ gate.T
        return (a / (1 + np.exp(-a)) * (h @ up.T)) @ down.T

    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    x = g.get("token_embd.weight")[np.array(tokens)]
    qi, ki = np.arange(T)[:, None], np.arange(T)[None, :]
    causal = np.where(ki > qi, -np.inf, 0.0)
    chunked = np.where((ki > qi) | (ki // chunk != qi // chunk), -np.inf, 0.0)
    temp = 1.0 + attn_scale * np.log(np.floor((pos + 1.0) / floor_scale) + 1.0)
    group = n_head // n_kv
    margins = []
    STATS["llama4_temp_max"] = float(temp.max())
    for il in range(n_layer):
        p = f"blk.{il}."
        use_rope = (il + 1) % 4 != 0
        t = rmsnorm(x, g.get(p + "attn_norm.weight"), eps)
        q = (t @ g.get(p + "attn_q.weight").T).reshape(T, n_head, hd)
        k = (t @ g.get(p + "attn_k.weight").T).reshape(T, n_kv, hd)
        v = (t @ g.get(p + "attn_v.weight").T).reshape(T, n_kv, hd)
        if use_rope:
            q = rope(q, pos, hd, base, 1.0, False, None, factors=rope_freqs)
            k = rope(k, pos, hd, base, 1.0, False, None, factors=rope_freqs)
            if use_qk_norm:
                q = rmsnorm(q, None, eps)
                k = rmsnorm(k, None, eps)
        else:
            q = q * temp[:, None, None]
        mask = chunked if use_rope else causal
        out = np.empty((T, n_head, hd))
        for hh in range(n_head):
            sc = q[:, hh, :] @ k[:, hh // group, :].T / np.sqrt(hd) + mask
            out[:, hh, :] = softmax(sc) @ v[:, hh // group, :]
        x = x + out.reshape(T, n_head * hd) @ g.get(p + "attn_output.weight").T

        t = rmsnorm(x, g.get(p + "ffn_norm.weight"), eps)
        if (il + 1) % step == 0:
            logits = t @ g.get(p + "ffn_gate_inp.weight").T
            gate, up, down = (g.get(p + f"ffn_{n}_exps.weight") for n in ("gate", "up", "down"))
            y = swiglu(t, g.get(p + "ffn_gate_shexp.weight"), g.get(p + "ffn_up_shexp.weight"),
                       g.get(p + "ffn_down_shexp.weight"))
            for tt in range(T):
                srt = np.sort(logits[tt])[::-1]
                if len(srt) > n_used:
                    margins.append((srt[n_used - 1] - srt[n_used]) / max(1e-30, srt[0] - srt[-1]))
                sel = np.argsort(-logits[tt], kind="stable")[:n_used]
                for e in sel:
                    h_in = t[tt] / (1 + np.exp(-logits[tt, e]))
                    y[tt] += swiglu(h_in[None, :], gate[e], up[e], down[e])[0]
        else:
            y = swiglu(t, g.get(p + "ffn_gate.weight"), g.get(p + "ffn_up.weight"), g.get(p + "ffn_down.weight"))
        x = x + y

    x = rmsnorm(x, g.get("output_norm.weight"), eps)
    head = g.get("output.weight") if g.has("output.weight") else g.get("token_embd.weight")
    return x @ head.T, (min(margins) if margins else 1.0)


def check_quant(folder):
    import glob
    import os
    bad = 0
    for path in sorted(glob.glob(os.path.join(folder, "*.gguf"))):
        g = Gguf(path)
        tt = g.tensors["q"][1]
        if tt not in BLOCK:
            continue
        got = g.get("q")
        exp = g.get("expected")
        err = np.max(np.abs(got - exp) / np.maximum(np.abs(exp), 1e-30) * (np.abs(exp) > 0) + (np.abs(exp) == 0) * np.abs(got))
        ok = np.allclose(got, exp, rtol=1e-6, atol=0)
        print(f"{os.path.basename(path)}: type {tt} max rel err {err:.3g} {'ok' if ok else 'MISMATCH'}")
        bad += not ok
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--out", help="write n_tokens x n_vocab float32 logits here")
    ap.add_argument("--ctx", type=int, default=0, help="the context size a runtime would use (phimoe's LongRoPE "
                    "choice; 0 = the number of tokens)")
    ap.add_argument("--check-quant", help="folder of quant-vectors/*.gguf to check the dequantizers on")
    a = ap.parse_args()
    if a.check_quant:
        sys.exit(1 if check_quant(a.check_quant) else 0)
    g = Gguf(a.model)
    tokens = [int(t) for t in a.tokens.split(",")]
    logits, margin = forward(g, tokens, a.ctx)
    print(f"min_margin {margin:.6g}")
    for k, v in STATS.items():
        print(f"{k} {v}")
    if a.out:
        logits.astype(np.float32).tofile(a.out)
    else:
        np.set_printoptions(precision=4, suppress=True)
        print(logits)


if __name__ == "__main__":
    main()
