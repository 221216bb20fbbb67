"""The KV cache for sampling: each layer's keys and values (after RoPE) kept from the tokens already seen, so a
new token costs one row of every GEMM and one row of attention instead of a forward over the whole context.

    cache = KVCache(config, batch=1)
    logits, _ = gpt_forward(params, prompt_ids, config, kv_cache=cache)     # prefill: T tokens, cache.length = T
    logits, _ = gpt_forward(params, [[token]], config, kv_cache=cache)     # then one token at a time

Inference only: there is no backward through the cache (training runs the full forward, whose attention is the
same function: `KVCache.attend` gives what `attention_forward(causal=True)` gives at those rows).
Memory: 2 x n_layer x B x block_size x KV floats (grouped-query attention shrinks it by NH / NKV). A Mamba
decoder keeps its recurrent state instead (`mamba.mamba_state`): n_layer x B x D x (N + K - 1) floats, whatever
the length.
"""

from __future__ import annotations

import math

import numpy as np

from ..nn.ops import softmax_forward
from .config import GPTConfig


class KVCache:
    def __init__(self, config: GPTConfig, batch=1, dtype=np.float32):
        self.length = 0  # tokens cached; gpt_forward advances it after its last layer
        if config.mixer == "mamba":  # a recurrent state instead: per layer, the convolution's last K - 1 inputs
            self.mamba = [None] * config.n_layer  # and the scan's (B, D, N) state (None: a sequence's start)
            return
        T, KV = config.block_size, config.kv_size
        self.keys = np.zeros((config.n_layer, batch, T, KV), dtype)  # (L, B, T, KV), filled up to self.length
        self.values = np.zeros((config.n_layer, batch, T, KV), dtype)

    def attend(self, layer, q, k, v, n_head, n_kv_head):
        """Store k, v (B, Tn, KV) after the cached positions of `layer` and attend q (B, Tn, NH hs) to every key
        up to its own position. Returns (B, Tn, NH hs)."""
        B, Tn, C = q.shape
        start, end = self.length, self.length + Tn
        self.keys[layer, :, start:end] = k
        self.values[layer, :, start:end] = v
        hs, groups = C // n_head, n_head // n_kv_head
        qh = q.reshape(B, Tn, n_kv_head, groups, hs).transpose(0, 2, 3, 1, 4)  # (B, NKV, G, Tn, hs)
        kh = self.keys[layer, :, :end].reshape(B, end, n_kv_head, 1, hs).transpose(0, 2, 3, 1, 4)  # (B, NKV, 1, S, hs)
        vh = self.values[layer, :, :end].reshape(B, end, n_kv_head, 1, hs).transpose(0, 2, 3, 1, 4)
        scores = (qh @ kh.swapaxes(-1, -2)) * np.asarray(1.0 / math.sqrt(hs), q.dtype)  # (B, NKV, G, Tn, S)
        future = np.arange(end)[None, :] > np.arange(start, end)[:, None]  # (Tn, S): key after the query
        scores[..., future] = np.finfo(q.dtype).min
        probs, _ = softmax_forward(scores)
        y = probs @ vh  # (B, NKV, G, Tn, hs)
        return y.transpose(0, 3, 1, 2, 4).reshape(B, Tn, C)  # query head h = (kv head h // G, group h % G)
