"""The GPT-2-style decoder: forward and backward built from `npminilm.nn.ops`, parameters keyed by GPT-2 names.

    x = drop(wte[idx] + wpe[0..T))                                   token + learned position embeddings
    per block:  x = x + drop(c_proj(drop(attn(ln_1(x)))))            pre-LN causal multi-head attention
                x = x + drop(mlp.c_proj(gelu(mlp.c_fc(ln_2(x)))))    pre-LN FFN, exact-erf GELU
    logits = ln_f(x) @ wte.T                                         LM head tied to the token embedding

Parameters are a dict keyed as GPT-2's checkpoints without the `transformer.` prefix (`wte.weight`,
`h.0.attn.c_attn.weight`, `ln_f.bias`, ...). One difference: HF's GPT-2 keeps its linear weights in a Conv1D
stored [in, out]; here every linear weight is [out, in] like the rest of npminilm (`x @ W.T + b`), and
`export.hf_state_dict` transposes them once at export.

Dropout sits on the embeddings, on the attention output (the merged heads, before c_proj) and on both residual
branches. HF's GPT-2 drops attention *probabilities* instead; with dropout 0 (evaluation, sampling, export) the two
are the same function. The attention op keeps its probabilities private, so dropping the merged heads keeps one
implementation of attention.

Dimensions: B batch, T time, C n_embd, NH n_head, hs C // NH, I 4C, V vocab.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidArgumentError
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


def param_shapes(config: GPTConfig) -> dict[str, tuple]:
    V, C, I = config.vocab_size, config.n_embd, 4 * config.n_embd
    shapes = {"wte.weight": (V, C), "wpe.weight": (config.block_size, C)}
    for i in range(config.n_layer):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
            p + "attn.c_attn.weight": (3 * C, C), p + "attn.c_attn.bias": (3 * C,),
            p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
            p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
            p + "mlp.c_fc.weight": (I, C), p + "mlp.c_fc.bias": (I,),
            p + "mlp.c_proj.weight": (C, I), p + "mlp.c_proj.bias": (C,),
        })  # fmt: skip
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


def init_params(config: GPTConfig, seed=0, dtype=np.float32) -> dict[str, np.ndarray]:
    """GPT-2's initialisation: N(0, 0.02) weights, N(0, 0.02 / sqrt(2 n_layer)) for the projections into the
    residual stream, zero biases, unit LayerNorm gains."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if ".ln_" in name or name.startswith("ln_"):
            value = np.ones(shape) if name.endswith("weight") else np.zeros(shape)
        elif name.endswith("bias"):
            value = np.zeros(shape)
        else:
            std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
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


def gpt_forward(params, idx, config: GPTConfig, rng=None):
    """idx (B, T) int -> logits (B, T, V), cache. rng None: no dropout (evaluation); else dropout draws from rng.
    The cache names each op's cache after GPT-2's modules (wte, wpe, drop, h: one dict per block, ln_f, lm_head)."""
    idx = np.asarray(idx)
    B, T = idx.shape
    if T > config.block_size:
        raise InvalidArgumentError(f"sequence length {T} exceeds the block size {config.block_size}")
    p, eps, NH, C = config.dropout, config.layer_norm_epsilon, config.n_head, config.n_embd
    tok, c_tok = embedding_forward(idx, params["wte.weight"])  # (B, T) -> (B, T, C)
    pos, c_pos = embedding_forward(np.arange(T), params["wpe.weight"])  # (T,) -> (T, C)
    x, c_edrop = dropout_forward(tok + pos, p, rng)  # (B, T, C) + (T, C) -> (B, T, C)
    blocks = []
    for i in range(config.n_layer):
        w = _block_params(params, i)
        c = {}
        a, c["ln_1"] = layernorm_forward(x, w["ln_1.weight"], w["ln_1.bias"], eps)
        qkv, c["c_attn"] = linear_forward(a, w["attn.c_attn.weight"], w["attn.c_attn.bias"])  # -> (B, T, 3C)
        q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]  # (B, T, 3C) -> 3 x (B, T, C)
        y, c["attn"] = attention_forward(q, k, v, NH, causal=True)  # -> (B, T, C)
        y, c["attn_drop"] = dropout_forward(y, p, rng)
        y, c["c_proj"] = linear_forward(y, w["attn.c_proj.weight"], w["attn.c_proj.bias"])
        y, c["resid_drop_1"] = dropout_forward(y, p, rng)
        x = x + y
        m, c["ln_2"] = layernorm_forward(x, w["ln_2.weight"], w["ln_2.bias"], eps)
        h, c["c_fc"] = linear_forward(m, w["mlp.c_fc.weight"], w["mlp.c_fc.bias"])  # (B, T, C) -> (B, T, I)
        h, c["gelu"] = gelu_forward(h, save_derivative=True)
        h, c["mlp_proj"] = linear_forward(h, w["mlp.c_proj.weight"], w["mlp.c_proj.bias"])  # -> (B, T, C)
        h, c["resid_drop_2"] = dropout_forward(h, p, rng)
        x = x + h
        blocks.append(c)
    x, c_lnf = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"], eps)
    logits, c_head = linear_forward(x, params["wte.weight"])  # (B, T, C) @ (C, V) -> (B, T, V)
    return logits, {"wte": c_tok, "wpe": c_pos, "drop": c_edrop, "h": blocks, "ln_f": c_lnf, "lm_head": c_head,
                    "config": config}


def _block_params(params, i):
    prefix = f"h.{i}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------- backward


# Each block is x1 = x + f(x), x2 = x1 + g(x1): the residual passes dx straight through and adds the branch's
# gradient, dx = dx1 + df^T dx1 (llm.c's "+=" into the residual gradient). The tied wte collects two gradients,
# one from the embedding lookup (scatter-add) and one from the LM head (dlogits^T x).
def gpt_backward(dlogits, cache) -> dict[str, np.ndarray]:
    """Gradients of every parameter (a dict like params) from dlogits (B, T, V)."""
    config = cache["config"]
    grads = {}
    dx, dwte_head, _ = linear_backward(dlogits, cache["lm_head"])
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layernorm_backward(dx, cache["ln_f"])
    for i in reversed(range(config.n_layer)):
        c, g = cache["h"][i], {}
        (dh,) = dropout_backward(dx, c["resid_drop_2"])
        dh, g["mlp.c_proj.weight"], g["mlp.c_proj.bias"] = linear_backward(dh, c["mlp_proj"])
        (dh,) = gelu_backward(dh, c["gelu"])
        dm, g["mlp.c_fc.weight"], g["mlp.c_fc.bias"] = linear_backward(dh, c["c_fc"])
        dln2, g["ln_2.weight"], g["ln_2.bias"] = layernorm_backward(dm, c["ln_2"])
        dx = dx + dln2  # x2 = x1 + mlp(ln_2(x1))
        (dy,) = dropout_backward(dx, c["resid_drop_1"])
        dy, g["attn.c_proj.weight"], g["attn.c_proj.bias"] = linear_backward(dy, c["c_proj"])
        (dy,) = dropout_backward(dy, c["attn_drop"])
        dq, dk, dv = attention_backward(dy, c["attn"])
        dqkv = np.concatenate([dq, dk, dv], axis=-1)  # 3 x (B, T, C) -> (B, T, 3C)
        da, g["attn.c_attn.weight"], g["attn.c_attn.bias"] = linear_backward(dqkv, c["c_attn"])
        dln1, g["ln_1.weight"], g["ln_1.bias"] = layernorm_backward(da, c["ln_1"])
        dx = dx + dln1  # x1 = x + attn(ln_1(x))
        grads.update({f"h.{i}.{k}": v for k, v in g.items()})
    (demb,) = dropout_backward(dx, cache["drop"])
    (dwte_emb,) = embedding_backward(demb, cache["wte"])
    (dwpe_used,) = embedding_backward(demb.sum(axis=0), cache["wpe"])  # pos broadcast over B: sum the batch
    grads["wte.weight"] = dwte_emb + dwte_head
    grads["wpe.weight"] = dwpe_used
    return {k: grads[k] for k in param_shapes(config)}  # in parameter order
