"""The BERT encoder forward and backward passes (post-LN blocks, exact GELU), built from `npminilm.nn.ops`.

Parameters are a dict keyed by HF names (`encoder.layer.3.attention.output.LayerNorm.weight`). Each stage
returns `(out, cache)` so the same code serves the backward pass; inference simply drops the caches. A cache
names what it keeps (`Cache`): each op's cache under the HF module that ran it, which backward reads, and the
tensors between the modules under their stage names, which `npminilm trace` shows.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError
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
    tanh_backward,
    tanh_forward,
)


@dataclass
class Cache:
    """One stage of the forward pass: `ops` by HF module name (for backward), `stages` by stage name (for trace).
    The stage tensors are the ones the op caches hold anyway, so naming them costs no memory."""

    ops: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)


@dataclass
class BertCache:
    """What `bert_forward(..., keep_cache=True)` keeps for `bert_backward`."""

    embeddings: Cache
    layers: list  # one Cache per block
    pooler: Cache | None
    attention_mask: np.ndarray  # (B, T)


def embeddings_forward(params, config, input_ids, token_type_ids, rng=None):
    """Dropout(LayerNorm(word[ids] + position[t] + token_type[type])). (B, T) ints -> (B, T, C).
    rng None: no dropout (evaluation)."""
    T = input_ids.shape[1]
    c = Cache()
    word, c.ops["word_embeddings"] = embedding_forward(input_ids, params["embeddings.word_embeddings.weight"])
    pos, c.ops["position_embeddings"] = embedding_forward(np.arange(T)[None, :],
                                                          params["embeddings.position_embeddings.weight"])
    typ, c.ops["token_type_embeddings"] = embedding_forward(token_type_ids,
                                                            params["embeddings.token_type_embeddings.weight"])
    x = word + pos + typ  # (B, T, C) + (1, T, C) + (B, T, C)
    out, c.ops["LayerNorm"] = layernorm_forward(
        x, params["embeddings.LayerNorm.weight"], params["embeddings.LayerNorm.bias"], config.layer_norm_eps
    )
    out, c.ops["dropout"] = dropout_forward(out, config.hidden_dropout_prob, rng)
    c.stages.update({"word": word, "position": pos, "token_type": typ, "sum": x})
    return out, c


def layer_forward(params, config, i, x, mask, training=False, rng=None):
    """One post-LN block: h = LN(x + Drop(Attn(x))); out = LN(h + Drop(FFN(h))). (B, T, C) -> (B, T, C).
    training: the GELU cache also holds its derivative, ready for backward. rng: dropout where HF BERT has it
    (the attention probabilities and both branches before their residual sums); None: none (evaluation)."""
    p = f"encoder.layer.{i}."
    eps = config.layer_norm_eps
    c = Cache()
    q, c.ops["attention.self.query"] = linear_forward(x, params[p + "attention.self.query.weight"],
                                                      params[p + "attention.self.query.bias"])
    k, c.ops["attention.self.key"] = linear_forward(x, params[p + "attention.self.key.weight"],
                                                    params[p + "attention.self.key.bias"])
    v, c.ops["attention.self.value"] = linear_forward(x, params[p + "attention.self.value.weight"],
                                                      params[p + "attention.self.value.bias"])
    a, c.ops["attention.self"] = attention_forward(
        q, k, v, config.num_attention_heads, mask,
        dropout=None if rng is None else (config.attention_probs_dropout_prob, rng))
    o, c.ops["attention.output.dense"] = linear_forward(a, params[p + "attention.output.dense.weight"],
                                                        params[p + "attention.output.dense.bias"])
    o, c.ops["attention.output.dropout"] = dropout_forward(o, config.hidden_dropout_prob, rng)
    s1 = o + x
    h, c.ops["attention.output.LayerNorm"] = layernorm_forward(
        s1, params[p + "attention.output.LayerNorm.weight"], params[p + "attention.output.LayerNorm.bias"], eps
    )
    f, c.ops["intermediate.dense"] = linear_forward(h, params[p + "intermediate.dense.weight"],
                                                    params[p + "intermediate.dense.bias"])  # (B, T, I)
    g, c.ops["intermediate.gelu"] = gelu_forward(f, save_derivative=training)
    d, c.ops["output.dense"] = linear_forward(g, params[p + "output.dense.weight"],
                                              params[p + "output.dense.bias"])  # (B, T, I) -> (B, T, C)
    d, c.ops["output.dropout"] = dropout_forward(d, config.hidden_dropout_prob, rng)
    s2 = d + h
    out, c.ops["output.LayerNorm"] = layernorm_forward(
        s2, params[p + "output.LayerNorm.weight"], params[p + "output.LayerNorm.bias"], eps
    )
    c.stages.update({"attention.query": q, "attention.key": k, "attention.value": v,
                     "attention.probs": c.ops["attention.self"]["probs"], "attention.context": a,
                     "attention.residual_sum": s1, "attention.LayerNorm": h, "ffn.intermediate": f, "ffn.gelu": g,
                     "ffn.residual_sum": s2})
    return out, c


def pooler_forward(params, h):
    """BERT's pooler: tanh(dense(h[:, 0])). (B, T, C) -> (B, C)."""
    c = Cache()
    z, c.ops["dense"] = linear_forward(h[:, 0], params["pooler.dense.weight"], params["pooler.dense.bias"])
    out, c.ops["activation"] = tanh_forward(z)
    return out, c


def check_inputs(config, input_ids, attention_mask, token_type_ids):
    """Validate ids, mask and types against the config; returns them as int64 arrays."""
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
        raise InvalidInputError(f"input_ids must be a 2-D integer array (B, T), "
                                f"got {input_ids.dtype} {input_ids.shape}")
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
                 output_hidden_states=False, keep_cache=False, rng=None):
    """The whole encoder. Returns ({"last_hidden_state", ["hidden_states"], ["pooler_output"]}, caches or None).
    rng (a numpy Generator): training-mode dropout, drawn in a fixed order; None: evaluation."""
    input_ids, attention_mask, token_type_ids = check_inputs(config, input_ids, attention_mask, token_type_ids)
    x, emb_cache = embeddings_forward(params, config, input_ids, token_type_ids, rng)
    hidden_states = [x] if output_hidden_states else None
    layer_caches = []
    for i in range(config.num_hidden_layers):
        x, layer_cache = layer_forward(params, config, i, x, attention_mask, training=keep_cache, rng=rng)
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
    cache = BertCache(emb_cache, layer_caches, pooler_cache, attention_mask) if keep_cache else None
    return out, cache


# ------------------------------------------------------------------------------------------------ backward


# x = word[ids] + pos[t] + type[tt];  out = Drop(LN(x))
#   dx = LN'(Drop'(dout));  dword, dtype: scatter-add of dx;  dpos: scatter-add of dx summed over the batch
def embeddings_backward(dout, cache):
    c = cache.ops
    (dout,) = dropout_backward(dout, c["dropout"])
    dx, dln_w, dln_b = layernorm_backward(dout, c["LayerNorm"])
    return {
        "embeddings.word_embeddings.weight": embedding_backward(dx, c["word_embeddings"])[0],
        "embeddings.position_embeddings.weight": embedding_backward(dx.sum(axis=0, keepdims=True),
                                                                    c["position_embeddings"])[0],
        "embeddings.token_type_embeddings.weight": embedding_backward(dx, c["token_type_embeddings"])[0],
        "embeddings.LayerNorm.weight": dln_w,
        "embeddings.LayerNorm.bias": dln_b,
    }


# h = LN1(x + Drop(O(Attn(Q x, K x, V x))));  out = LN2(h + Drop(Down(GELU(Up(h)))))
#   the residual branches fan out, so dh and dx each sum two paths
def layer_backward(dout, cache, i, grads):
    """Backward through block i: writes its parameter gradients into `grads`, returns dx (B, T, C)."""
    c = cache.ops
    p = f"encoder.layer.{i}."
    dsum2, grads[p + "output.LayerNorm.weight"], grads[p + "output.LayerNorm.bias"] = \
        layernorm_backward(dout, c["output.LayerNorm"])
    (dd,) = dropout_backward(dsum2, c["output.dropout"])
    dg, grads[p + "output.dense.weight"], grads[p + "output.dense.bias"] = linear_backward(dd, c["output.dense"])
    (df,) = gelu_backward(dg, c["intermediate.gelu"])
    dh_ffn, grads[p + "intermediate.dense.weight"], grads[p + "intermediate.dense.bias"] = \
        linear_backward(df, c["intermediate.dense"])
    dh = dsum2 + dh_ffn
    dsum1, grads[p + "attention.output.LayerNorm.weight"], grads[p + "attention.output.LayerNorm.bias"] = \
        layernorm_backward(dh, c["attention.output.LayerNorm"])
    (do,) = dropout_backward(dsum1, c["attention.output.dropout"])
    da, grads[p + "attention.output.dense.weight"], grads[p + "attention.output.dense.bias"] = \
        linear_backward(do, c["attention.output.dense"])
    dq, dk, dv = attention_backward(da, c["attention.self"])
    dx = dsum1
    for name, d in (("query", dq), ("key", dk), ("value", dv)):
        m = f"attention.self.{name}"
        dxi, grads[p + m + ".weight"], grads[p + m + ".bias"] = linear_backward(d, c[m])
        dx = dx + dxi
    return dx


# pooled = tanh(dense(h[:, 0]))   =>   only position 0 receives a gradient
def pooler_backward(dout, cache, grads, shape):
    (dz,) = tanh_backward(dout, cache.ops["activation"])
    dh0, grads["pooler.dense.weight"], grads["pooler.dense.bias"] = linear_backward(dz, cache.ops["dense"])
    dh = np.zeros(shape, dtype=dout.dtype)
    dh[:, 0] = dh0
    return dh


def bert_backward(d_last_hidden, cache, config, d_pooler=None):
    """Gradients of every parameter that reached the outputs, keyed by HF name, from the caches of
    `bert_forward(..., keep_cache=True)`. The pooler gets gradients only when `d_pooler` is given."""
    grads = {}
    dx = d_last_hidden
    if d_pooler is not None:
        dx = dx + pooler_backward(d_pooler, cache.pooler, grads, d_last_hidden.shape)
    for i in reversed(range(config.num_hidden_layers)):
        dx = layer_backward(dx, cache.layers[i], i, grads)
    grads.update(embeddings_backward(dx, cache.embeddings))
    return grads
