"""Sampling from the decoder: greedy, temperature, top-k and top-p (nucleus), seedable, one token at a time."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from ..nn.ops import softmax_forward
from .config import GPTConfig
from .kv_cache import KVCache
from .model import gpt_forward


def filter_logits(logits, top_k=None, top_p=None):
    """Set to -inf every logit outside the top_k largest and outside the smallest set of tokens whose
    probabilities sum to at least top_p (the most likely token always stays). logits (V,) -> (V,)."""
    logits = np.array(logits, dtype=np.float64)
    if top_k is not None and 0 < top_k < logits.size:
        kth = np.partition(logits, -top_k)[-top_k]
        logits[logits < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        probs, _ = softmax_forward(logits[order])
        before = np.cumsum(probs) - probs  # probability mass of the tokens ranked above each one
        logits[order[before >= top_p]] = -np.inf
    return logits


def next_token(logits, rng, temperature=1.0, top_k=None, top_p=None) -> int:
    """Greedy (argmax) at temperature 0, else a draw from softmax(filtered logits / temperature)."""
    if temperature == 0:
        return int(np.argmax(logits))
    filtered = filter_logits(np.asarray(logits, np.float64) / temperature, top_k, top_p)
    probs, _ = softmax_forward(filtered)
    return int(rng.choice(probs.size, p=probs))


def generate(params, config: GPTConfig, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             seed=None, on_token=None, use_cache=True, stop=()):
    """Extend prompt_ids by up to max_new_tokens sampled tokens, or until one of the ids in `stop` is drawn (a
    chat model's <|im_end|>; it ends the returned ids). on_token(id) is called as each token is drawn (for
    streaming). Returns the new ids.

    use_cache: each new token runs one position through the model against the KV cache (`kv_cache.py`), and
    the logits are those of the full forward over the same context. When the context reaches block_size, the
    cache is rebuilt from the last block_size // 2 tokens (a context shift, as llama.cpp does), and decoding
    goes on from there (a Mamba decoder keeps its recurrent state in the cache, under the same policy). Without
    the cache, every step runs the full forward over the last block_size tokens."""
    if temperature < 0:
        raise InvalidArgumentError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InvalidArgumentError(f"top-k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidArgumentError(f"top-p must be in (0, 1], got {top_p}")
    rng = np.random.default_rng(seed)
    ids = list(prompt_ids) or [0]  # an empty prompt starts from token 0
    new = []
    cache = None
    for _ in range(max_new_tokens):
        if not use_cache:
            context = np.asarray(ids[-config.block_size:], dtype=np.int64)[None]  # (1, T)
            logits, _ = gpt_forward(params, context, config)  # (1, T, V)
        elif cache is None or cache.length == config.block_size:  # prefill, or a context shift
            keep = config.block_size if cache is None else max(1, config.block_size // 2)  # whole prompt, or shift
            cache = KVCache(config, batch=1, dtype=params["wte.weight"].dtype)
            logits, _ = gpt_forward(params, np.asarray(ids[-keep:], dtype=np.int64)[None], config, kv_cache=cache)
        else:
            logits, _ = gpt_forward(params, np.asarray([[ids[-1]]], dtype=np.int64), config, kv_cache=cache)
        token = next_token(logits[0, -1], rng, temperature, top_k, top_p)
        ids.append(token)
        new.append(token)
        if on_token is not None:
            on_token(token)
        if token in stop:
            break
    return new
