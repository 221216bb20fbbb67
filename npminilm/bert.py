"""The BERT encoder forward pass (post-LN blocks, exact GELU), built from the ops in `ops.py`.

Parameters are a dict keyed by HF names (`encoder.layer.3.attention.output.LayerNorm.weight`). Each stage
returns `(out, cache)` so the same code can serve a backward pass; inference simply drops the caches.
"""

import numpy as np

from .errors import InvalidInputError
from .ops import (
    attention_backward,
    attention_forward,
    embedding_backward,
    embedding_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    tanh_backward,
    tanh_forward,
)


def embeddings_forward(params, config, input_ids, token_type_ids):
    """LayerNorm(word[ids] + position[t] + token_type[type]). (B, T) ints -> (B, T, C)."""
    T = input_ids.shape[1]
    word, word_cache = embedding_forward(input_ids, params["embeddings.word_embeddings.weight"])
    pos, pos_cache = embedding_forward(np.arange(T)[None, :], params["embeddings.position_embeddings.weight"])
    typ, typ_cache = embedding_forward(token_type_ids, params["embeddings.token_type_embeddings.weight"])
    x = word + pos + typ  # (B, T, C) + (1, T, C) + (B, T, C)
    out, ln_cache = layernorm_forward(
        x, params["embeddings.LayerNorm.weight"], params["embeddings.LayerNorm.bias"], config.layer_norm_eps
    )
    return out, (word_cache, pos_cache, typ_cache, ln_cache)


def layer_forward(params, config, i, x, mask, training=False):
    """One post-LN block: h = LN(x + Attn(x)); out = LN(h + FFN(h)). (B, T, C) -> (B, T, C).
    training: the GELU cache also holds its derivative, ready for backward."""
    p = f"encoder.layer.{i}."
    eps = config.layer_norm_eps
    q, q_cache = linear_forward(x, params[p + "attention.self.query.weight"], params[p + "attention.self.query.bias"])
    k, k_cache = linear_forward(x, params[p + "attention.self.key.weight"], params[p + "attention.self.key.bias"])
    v, v_cache = linear_forward(x, params[p + "attention.self.value.weight"], params[p + "attention.self.value.bias"])
    a, attn_cache = attention_forward(q, k, v, config.num_attention_heads, mask)
    o, o_cache = linear_forward(a, params[p + "attention.output.dense.weight"], params[p + "attention.output.dense.bias"])
    h, ln1_cache = layernorm_forward(
        o + x, params[p + "attention.output.LayerNorm.weight"], params[p + "attention.output.LayerNorm.bias"], eps
    )
    f, up_cache = linear_forward(h, params[p + "intermediate.dense.weight"], params[p + "intermediate.dense.bias"])  # (B, T, I)
    g, gelu_cache = gelu_forward(f, save_derivative=training)
    d, down_cache = linear_forward(g, params[p + "output.dense.weight"], params[p + "output.dense.bias"])  # (B, T, C)
    out, ln2_cache = layernorm_forward(
        d + h, params[p + "output.LayerNorm.weight"], params[p + "output.LayerNorm.bias"], eps
    )
    cache = (q_cache, k_cache, v_cache, attn_cache, o_cache, ln1_cache, up_cache, gelu_cache, down_cache, ln2_cache)
    return out, cache


def pooler_forward(params, h):
    """BERT's pooler: tanh(dense(h[:, 0])). (B, T, C) -> (B, C)."""
    z, dense_cache = linear_forward(h[:, 0], params["pooler.dense.weight"], params["pooler.dense.bias"])
    out, tanh_cache = tanh_forward(z)
    return out, (dense_cache, tanh_cache)


def check_inputs(config, input_ids, attention_mask, token_type_ids):
    """Validate ids, mask and types against the config; returns them as int64 arrays."""
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
        raise InvalidInputError(f"input_ids must be a 2-D integer array (B, T), got {input_ids.dtype} {input_ids.shape}")
    B, T = input_ids.shape
    attention_mask = np.ones((B, T), np.int64) if attention_mask is None else np.asarray(attention_mask)
    token_type_ids = np.zeros((B, T), np.int64) if token_type_ids is None else np.asarray(token_type_ids)
    for name, arr in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if arr.shape != (B, T):
            raise InvalidInputError(f"{name} has shape {arr.shape}, input_ids has {(B, T)}")
    if T > config.max_position_embeddings:
        raise InvalidInputError(f"sequence length {T} exceeds max_position_embeddings {config.max_position_embeddings}")
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
        raise InvalidInputError(f"input_ids must lie in [0, {config.vocab_size})")
    if token_type_ids.size and (token_type_ids.min() < 0 or token_type_ids.max() >= config.type_vocab_size):
        raise InvalidInputError(f"token_type_ids must lie in [0, {config.type_vocab_size})")
    return input_ids.astype(np.int64, copy=False), attention_mask.astype(np.int64, copy=False), \
        token_type_ids.astype(np.int64, copy=False)


def bert_forward(params, config, input_ids, attention_mask=None, token_type_ids=None,
                 output_hidden_states=False, keep_cache=False):
    """The whole encoder. Returns ({"last_hidden_state", ["hidden_states"], ["pooler_output"]}, caches or None)."""
    input_ids, attention_mask, token_type_ids = check_inputs(config, input_ids, attention_mask, token_type_ids)
    x, emb_cache = embeddings_forward(params, config, input_ids, token_type_ids)
    hidden_states = [x] if output_hidden_states else None
    layer_caches = []
    for i in range(config.num_hidden_layers):
        x, layer_cache = layer_forward(params, config, i, x, attention_mask, training=keep_cache)
        if output_hidden_states:
            hidden_states.append(x)
        if keep_cache:
            layer_caches.append(layer_cache)
    out = {"last_hidden_state": x}
    if output_hidden_states:
        out["hidden_states"] = hidden_states
    pooler_cache = None
    if "pooler.dense.weight" in params:
        out["pooler_output"], pooler_cache = pooler_forward(params, x)
    cache = (emb_cache, layer_caches, pooler_cache, attention_mask) if keep_cache else None
    return out, cache


# ------------------------------------------------------------------------------------------------ backward


# x = word[ids] + pos[t] + type[tt];  out = LN(x)
#   dx = LN'(dout);  dword, dtype: scatter-add of dx;  dpos: scatter-add of dx summed over the batch
def embeddings_backward(dout, cache):
    word_cache, pos_cache, typ_cache, ln_cache = cache
    dx, dln_w, dln_b = layernorm_backward(dout, ln_cache)
    return {
        "embeddings.word_embeddings.weight": embedding_backward(dx, word_cache)[0],
        "embeddings.position_embeddings.weight": embedding_backward(dx.sum(axis=0, keepdims=True), pos_cache)[0],
        "embeddings.token_type_embeddings.weight": embedding_backward(dx, typ_cache)[0],
        "embeddings.LayerNorm.weight": dln_w,
        "embeddings.LayerNorm.bias": dln_b,
    }


# h = LN1(x + O(Attn(Q x, K x, V x)));  out = LN2(h + Down(GELU(Up(h))))
#   the residual branches fan out, so dh and dx each sum two paths
def layer_backward(dout, cache, i, grads):
    """Backward through block i: writes its parameter gradients into `grads`, returns dx (B, T, C)."""
    q_cache, k_cache, v_cache, attn_cache, o_cache, ln1_cache, up_cache, gelu_cache, down_cache, ln2_cache = cache
    p = f"encoder.layer.{i}."
    dsum2, grads[p + "output.LayerNorm.weight"], grads[p + "output.LayerNorm.bias"] = layernorm_backward(dout, ln2_cache)
    dg, grads[p + "output.dense.weight"], grads[p + "output.dense.bias"] = linear_backward(dsum2, down_cache)
    (df,) = gelu_backward(dg, gelu_cache)
    dh_ffn, grads[p + "intermediate.dense.weight"], grads[p + "intermediate.dense.bias"] = linear_backward(df, up_cache)
    dh = dsum2 + dh_ffn
    dsum1, grads[p + "attention.output.LayerNorm.weight"], grads[p + "attention.output.LayerNorm.bias"] = \
        layernorm_backward(dh, ln1_cache)
    da, grads[p + "attention.output.dense.weight"], grads[p + "attention.output.dense.bias"] = \
        linear_backward(dsum1, o_cache)
    dq, dk, dv = attention_backward(da, attn_cache)
    dx = dsum1
    for name, d, c in (("query", dq, q_cache), ("key", dk, k_cache), ("value", dv, v_cache)):
        dxi, grads[p + f"attention.self.{name}.weight"], grads[p + f"attention.self.{name}.bias"] = linear_backward(d, c)
        dx = dx + dxi
    return dx


# pooled = tanh(dense(h[:, 0]))   =>   only position 0 receives a gradient
def pooler_backward(dout, cache, grads, shape):
    dense_cache, tanh_cache = cache
    (dz,) = tanh_backward(dout, tanh_cache)
    dh0, grads["pooler.dense.weight"], grads["pooler.dense.bias"] = linear_backward(dz, dense_cache)
    dh = np.zeros(shape, dtype=dout.dtype)
    dh[:, 0] = dh0
    return dh


def bert_backward(d_last_hidden, cache, config, d_pooler=None):
    """Gradients of every parameter that reached the outputs, keyed by HF name, from the caches of
    `bert_forward(..., keep_cache=True)`. The pooler gets gradients only when `d_pooler` is given."""
    emb_cache, layer_caches, pooler_cache, _ = cache
    grads = {}
    dx = d_last_hidden
    if d_pooler is not None:
        dx = dx + pooler_backward(d_pooler, pooler_cache, grads, d_last_hidden.shape)
    for i in reversed(range(config.num_hidden_layers)):
        dx = layer_backward(dx, layer_caches[i], i, grads)
    grads.update(embeddings_backward(dx, emb_cache))
    return grads
