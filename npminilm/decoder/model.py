"""The decoder: forward and backward built from `npminilm.nn.ops` and `nn.decoder_ops`, parameters keyed by
GPT-2's names (and LlamaMLP's for the SwiGLU feed-forward).

    x = drop(wte[idx] + wpe[0..T))                                   token + learned position embeddings
    per block:  x = x + drop(c_proj(drop(attn(ln_1(x)))))            pre-norm causal multi-head attention
                x = x + drop(mlp.c_proj(gelu(mlp.c_fc(ln_2(x)))))    pre-norm FFN, exact-erf GELU
    logits = ln_f(x) @ wte.T                                         LM head tied to the token embedding

The config swaps components (`config.py`): RMSNorm for the LayerNorms (weights only); rotary positions on q and k
instead of wpe; grouped-query attention (c_attn makes C + 2 KV: NH query heads, NKV key/value heads); a SwiGLU
feed-forward, down(silu(gate x) * up x), without biases; Mixtral's mixture of SwiGLU experts, a router picking k
of E per token, whose load-balancing loss the cache carries (cache["aux_loss"]; gpt_backward's daux). Together
they are Llama (`export.py`: LlamaForCausalLM, with attention_bias unless bias=False) and Mixtral decoders.
`mixer="mamba"` makes each block x + mixer(ln_1(x)), Mamba's selective state-space mixer (`mamba.py`), with no
positions and no feed-forward: MambaForCausalLM.

Parameters are a dict keyed as GPT-2's checkpoints without the `transformer.` prefix (`wte.weight`,
`h.0.attn.c_attn.weight`, `ln_f.bias`, ...). One difference: HF's GPT-2 keeps its linear weights in a Conv1D
stored [in, out]; here every linear weight is [out, in] like the rest of npminilm (`x @ W.T + b`), and
`export.hf_state_dict` transposes them once at export.

Dropout sits on the embeddings, on the attention output (the merged heads, before c_proj) and on both residual
branches. HF's GPT-2 drops attention *probabilities* instead; with dropout 0 (evaluation, sampling, export) the two
are the same function. The attention op keeps its probabilities private, so dropping the merged heads keeps one
implementation of attention.

Dimensions: B batch, T time, C n_embd, NH n_head, NKV n_kv_head, hs C // NH, KV NKV hs, I n_inner, V vocab.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidArgumentError
from ..nn.decoder_ops import (
    gqa_attention_backward,
    gqa_attention_forward,
    load_balancing_backward,
    load_balancing_forward,
    moe_backward,
    moe_forward,
    rmsnorm_backward,
    rmsnorm_forward,
    rope_backward,
    rope_forward,
    rope_tables,
    swiglu_backward,
    swiglu_forward,
)
from ..nn.ops import (
    attention_backward,
    attention_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
)
from .config import GPTConfig
from .mamba import mamba_backward, mamba_forward, mamba_init, mamba_shapes, mamba_state


def param_shapes(config: GPTConfig) -> dict[str, tuple]:
    V, C, I, KV, E = config.vocab_size, config.n_embd, config.n_inner, config.kv_size, config.moe_experts
    shapes = {"wte.weight": (V, C)}
    if config.pos == "learned":
        shapes["wpe.weight"] = (config.block_size, C)
    for i in range(config.n_layer):
        p = f"h.{i}."
        shapes.update(_norm_shapes(p + "ln_1", config))
        if config.mixer == "mamba":  # MambaBlock: a norm and the mixer, no feed-forward
            shapes.update(mamba_shapes(p + "mixer.", config))
            continue
        shapes.update(_linear_shapes(p + "attn.c_attn", (C + 2 * KV, C), config))  # q, k, v stacked
        shapes.update(_linear_shapes(p + "attn.c_proj", (C, C), config))
        shapes.update(_norm_shapes(p + "ln_2", config))
        if E:  # Mixtral's router ("gate") and its experts' SwiGLU weights, stacked
            shapes.update({p + "mlp.gate.weight": (E, C), p + "mlp.experts.gate_proj.weight": (E, I, C),
                           p + "mlp.experts.up_proj.weight": (E, I, C), p + "mlp.experts.down_proj.weight": (E, C, I)})
        elif config.ffn == "gelu":
            shapes.update(_linear_shapes(p + "mlp.c_fc", (I, C), config))
            shapes.update(_linear_shapes(p + "mlp.c_proj", (C, I), config))
        else:  # LlamaMLP's names, no biases
            shapes.update({p + "mlp.gate_proj.weight": (I, C), p + "mlp.up_proj.weight": (I, C),
                           p + "mlp.down_proj.weight": (C, I)})
    shapes.update(_norm_shapes("ln_f", config))
    return shapes


def _linear_shapes(name, shape, config):
    return {name + ".weight": shape, name + ".bias": shape[:1]} if config.bias else {name + ".weight": shape}


def _norm_shapes(name, config):
    C = config.n_embd
    return {name + ".weight": (C,), name + ".bias": (C,)} if config.norm == "layernorm" else {name + ".weight": (C,)}


def init_params(config: GPTConfig, seed=0, dtype=np.float32) -> dict[str, np.ndarray]:
    """GPT-2's initialisation: N(0, 0.02) weights, N(0, 0.02 / sqrt(2 n_layer)) for the projections into the
    residual stream, zero biases, unit norm gains."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        special = mamba_init(name, shape, config, rng) if ".mixer." in name else None
        if special is not None:
            value = special
        elif ".ln_" in name or name.startswith("ln_"):
            value = np.ones(shape) if name.endswith("weight") else np.zeros(shape)
        elif name.endswith("bias"):
            value = np.zeros(shape)
        else:
            into_residual = name.endswith(("c_proj.weight", "down_proj.weight", "out_proj.weight"))  # experts' too
            std = 0.02 / math.sqrt(2 * config.n_layer) if into_residual else 0.02
            value = rng.standard_normal(shape) * std
        params[name] = value.astype(dtype)
    return params


def check_params(params: dict, config: GPTConfig, where="parameters") -> None:
    shapes = param_shapes(config)
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing or extra:
        raise InvalidArgumentError(f"{where}: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, s in shapes.items():
        if tuple(params[k].shape) != s:
            raise InvalidArgumentError(f"{where}: tensor {k!r} has shape {tuple(params[k].shape)}, expected {s}")


def is_decayed(name: str) -> bool:
    """AdamW's weight decay applies to matrices (linear weights, embeddings), never to biases or LayerNorms."""
    return name.endswith(".weight") and ".ln_" not in name and not name.startswith("ln_")


# ----------------------------------------------------------------------------------------------- forward


def gpt_forward(params, idx, config: GPTConfig, rng=None, kv_cache=None):
    """idx (B, T) int -> logits (B, T, V), cache. rng None: no dropout (evaluation); else dropout draws from rng.
    The cache names each op's cache after GPT-2's modules (wte, wpe, drop, h: one dict per block, ln_f, lm_head).

    kv_cache (a `kv_cache.KVCache`, inference only): idx are the tokens after the cached ones; their keys and
    values are appended to it and they attend to every cached position (a Mamba decoder goes on from the
    recurrent state kept there instead)."""
    idx = np.asarray(idx)
    B, T = idx.shape
    past = 0 if kv_cache is None else kv_cache.length
    if past + T > config.block_size:
        raise InvalidArgumentError(f"sequence length {past + T} exceeds the block size {config.block_size}")
    if kv_cache is not None and rng is not None:
        raise InvalidArgumentError("the KV cache is for inference: no dropout rng with it")
    p, NH, NKV, C, KV = config.dropout, config.n_head, config.n_kv_head, config.n_embd, config.kv_size
    x, c_tok = embedding_forward(idx, params["wte.weight"])  # (B, T) -> (B, T, C)
    c_pos = rope = None
    if config.pos == "learned":
        pos, c_pos = embedding_forward(np.arange(past, past + T), params["wpe.weight"])  # (T,) -> (T, C)
        x = x + pos  # (B, T, C) + (T, C)
    elif config.pos == "rope":
        cos, sin = rope_tables(np.arange(past, past + T), config.head_size, config.rope_theta, x.dtype)  # (T, hs)
        rope = (cos[:, None, :], sin[:, None, :])  # broadcast over the heads of (B, T, H, hs)
    x, c_edrop = dropout_forward(x, p, rng)
    blocks = []
    for i in range(config.n_layer):
        w = _block_params(params, i)
        c = {}
        a, c["ln_1"] = _norm_forward(x, w, "ln_1", config)
        if config.mixer == "mamba":
            state = None if kv_cache is None else kv_cache.mamba[i]
            y, c["mixer"] = mamba_forward(a, {k[6:]: v for k, v in w.items() if k.startswith("mixer.")}, config,
                                          state)
            if kv_cache is not None:
                kv_cache.mamba[i] = mamba_state(c["mixer"], config)
            y, c["resid_drop_1"] = dropout_forward(y, p, rng)
            x = x + y
            blocks.append(c)
            continue
        qkv, c["c_attn"] = linear_forward(a, w["attn.c_attn.weight"], w.get("attn.c_attn.bias"))  # (B, T, C + 2KV)
        q, k, v = qkv[..., :C], qkv[..., C:C + KV], qkv[..., C + KV:]  # (B, T, C), 2 x (B, T, KV)
        if rope is not None:
            q, k = _rope_forward(q, NH, rope), _rope_forward(k, NKV, rope)
        if kv_cache is not None:
            y = kv_cache.attend(i, q, k, v, NH, NKV)  # -> (B, T, C)
        elif NKV == NH:
            y, c["attn"] = attention_forward(q, k, v, NH, causal=True)  # -> (B, T, C)
        else:
            y, c["attn"] = gqa_attention_forward(q, k, v, NH, NKV, causal=True)
        y, c["attn_drop"] = dropout_forward(y, p, rng)
        y, c["c_proj"] = linear_forward(y, w["attn.c_proj.weight"], w.get("attn.c_proj.bias"))
        y, c["resid_drop_1"] = dropout_forward(y, p, rng)
        x = x + y
        m, c["ln_2"] = _norm_forward(x, w, "ln_2", config)
        if config.moe_experts:
            h, c["moe"] = moe_forward(m, w["mlp.gate.weight"], w["mlp.experts.gate_proj.weight"],
                                      w["mlp.experts.up_proj.weight"], w["mlp.experts.down_proj.weight"],
                                      config.moe_top_k)  # (B, T, C) -> (B, T, C), k experts a token
        elif config.ffn == "gelu":
            h, c["c_fc"] = linear_forward(m, w["mlp.c_fc.weight"], w.get("mlp.c_fc.bias"))  # (B, T, C) -> (B, T, I)
            h, c["gelu"] = gelu_forward(h, save_derivative=True)
            h, c["mlp_proj"] = linear_forward(h, w["mlp.c_proj.weight"], w.get("mlp.c_proj.bias"))  # -> (B, T, C)
        else:
            h, c["swiglu"] = swiglu_forward(m, w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"],
                                            w["mlp.down_proj.weight"])  # (B, T, C) -> (B, T, C)
        h, c["resid_drop_2"] = dropout_forward(h, p, rng)
        x = x + h
        blocks.append(c)
    x, c_lnf = _norm_forward(x, params, "ln_f", config)
    logits, c_head = linear_forward(x, params["wte.weight"])  # (B, T, C) @ (C, V) -> (B, T, V)
    if kv_cache is not None:
        kv_cache.length += T
    aux_loss, c_aux = 0.0, None
    if config.moe_experts:  # the load-balancing loss over every layer's routing (for training; 0 when dense)
        aux_loss, c_aux = load_balancing_forward([c["moe"]["probs"] for c in blocks], [c["moe"]["top"] for c in blocks],
                                                 config.moe_experts)
    return logits, {"wte": c_tok, "wpe": c_pos, "rope": rope, "drop": c_edrop, "h": blocks, "ln_f": c_lnf,
                    "lm_head": c_head, "config": config, "aux_loss": float(aux_loss), "aux": c_aux}


def _block_params(params, i):
    prefix = f"h.{i}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _norm_forward(x, w, name, config):
    if config.norm == "layernorm":
        return layernorm_forward(x, w[name + ".weight"], w[name + ".bias"], config.layer_norm_epsilon)
    return rmsnorm_forward(x, w[name + ".weight"], config.layer_norm_epsilon)


def _norm_backward(dx, cache, name, config, grads):
    if config.norm == "layernorm":
        dx, grads[name + ".weight"], grads[name + ".bias"] = layernorm_backward(dx, cache)
    else:
        dx, grads[name + ".weight"] = rmsnorm_backward(dx, cache)
    return dx


def _rope_forward(x, n_heads, rope):
    """Rotary positions on (B, T, H hs) projections: per head, as HF Llama rotates (B, H, T, hs)."""
    B, T, _ = x.shape
    y, _ = rope_forward(x.reshape(B, T, n_heads, -1), *rope)
    return y.reshape(B, T, -1)


def _rope_backward(dy, n_heads, rope):
    B, T, _ = dy.shape
    (dx,) = rope_backward(dy.reshape(B, T, n_heads, -1), rope)
    return dx.reshape(B, T, -1)


# ---------------------------------------------------------------------------------------------- backward


# Each block is x1 = x + f(x), x2 = x1 + g(x1): the residual passes dx straight through and adds the branch's
# gradient, dx = dx1 + df^T dx1 (llm.c's "+=" into the residual gradient). The tied wte collects two gradients,
# one from the embedding lookup (scatter-add) and one from the LM head (dlogits^T x).
def gpt_backward(dlogits, cache, daux=0.0) -> dict[str, np.ndarray]:
    """Gradients of every parameter (a dict like params) from dlogits (B, T, V), and from daux, the gradient of
    the loss with respect to cache["aux_loss"] (the training loss's moe_aux_coef, for a mixture of experts)."""
    config = cache["config"]
    NH, NKV = config.n_head, config.n_kv_head
    grads = {}
    dprobs = [None] * config.n_layer
    if config.moe_experts and daux:
        dprobs = load_balancing_backward(daux, cache["aux"])  # (N, E) per layer
    dx, dwte_head, _ = linear_backward(dlogits, cache["lm_head"])
    dx = _norm_backward(dx, cache["ln_f"], "ln_f", config, grads)
    for i in reversed(range(config.n_layer)):
        c, g = cache["h"][i], {}
        if config.mixer == "mamba":  # x1 = x + mixer(ln_1(x))
            (dy,) = dropout_backward(dx, c["resid_drop_1"])
            da, dmixer = mamba_backward(dy, c["mixer"], config)
            g.update({"mixer." + k: v for k, v in dmixer.items()})
            dx = dx + _norm_backward(da, c["ln_1"], "ln_1", config, g)
            grads.update({f"h.{i}.{k}": v for k, v in g.items()})
            continue
        (dh,) = dropout_backward(dx, c["resid_drop_2"])
        if config.moe_experts:
            dm, *dw = moe_backward(dh, c["moe"], dprobs[i])
            g.update(zip(("mlp.gate.weight", "mlp.experts.gate_proj.weight", "mlp.experts.up_proj.weight",
                          "mlp.experts.down_proj.weight"), dw))
        elif config.ffn == "gelu":
            dh, g["mlp.c_proj.weight"], g["mlp.c_proj.bias"] = linear_backward(dh, c["mlp_proj"])
            (dh,) = gelu_backward(dh, c["gelu"])
            dm, g["mlp.c_fc.weight"], g["mlp.c_fc.bias"] = linear_backward(dh, c["c_fc"])
        else:
            dm, g["mlp.gate_proj.weight"], g["mlp.up_proj.weight"], g["mlp.down_proj.weight"] = swiglu_backward(
                dh, c["swiglu"])
        dx = dx + _norm_backward(dm, c["ln_2"], "ln_2", config, g)  # x2 = x1 + mlp(ln_2(x1))
        (dy,) = dropout_backward(dx, c["resid_drop_1"])
        dy, g["attn.c_proj.weight"], g["attn.c_proj.bias"] = linear_backward(dy, c["c_proj"])
        (dy,) = dropout_backward(dy, c["attn_drop"])
        if NKV == NH:
            dq, dk, dv = attention_backward(dy, c["attn"])
        else:
            dq, dk, dv = gqa_attention_backward(dy, c["attn"])
        if cache["rope"] is not None:
            dq, dk = _rope_backward(dq, NH, cache["rope"]), _rope_backward(dk, NKV, cache["rope"])
        dqkv = np.concatenate([dq, dk, dv], axis=-1)  # (B, T, C), 2 x (B, T, KV) -> (B, T, C + 2KV)
        da, g["attn.c_attn.weight"], g["attn.c_attn.bias"] = linear_backward(dqkv, c["c_attn"])
        dx = dx + _norm_backward(da, c["ln_1"], "ln_1", config, g)  # x1 = x + attn(ln_1(x))
        grads.update({f"h.{i}.{k}": v for k, v in g.items()})
    (demb,) = dropout_backward(dx, cache["drop"])
    (dwte_emb,) = embedding_backward(demb, cache["wte"])
    grads["wte.weight"] = dwte_emb + dwte_head
    if config.pos == "learned":
        (grads["wpe.weight"],) = embedding_backward(demb.sum(axis=0), cache["wpe"])  # pos broadcast over B
    return {k: grads[k] for k in param_shapes(config)}  # in parameter order (biases the config has none of dropped)
