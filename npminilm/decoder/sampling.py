"""Sampling from the decoder: greedy, temperature, top-k and top-p (nucleus), seedable, one token at a time."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from ..nn.ops import softmax_forward
from .config import GPTConfig
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
             seed=None, on_token=None):
    """Extend prompt_ids by max_new_tokens sampled tokens (the context is cropped to the last block_size).
    on_token(id) is called as each token is drawn (for streaming). Returns the new ids."""
    if temperature < 0:
        raise InvalidArgumentError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InvalidArgumentError(f"top-k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidArgumentError(f"top-p must be in (0, 1], got {top_p}")
    rng = np.random.default_rng(seed)
    ids = list(prompt_ids) or [0]  # an empty prompt starts from token 0
    new = []
    for _ in range(max_new_tokens):
        context = np.asarray(ids[-config.block_size:], dtype=np.int64)[None]  # (1, T)
        logits, _ = gpt_forward(params, context, config)  # (1, T, V)
        token = next_token(logits[0, -1], rng, temperature, top_k, top_p)
        ids.append(token)
        new.append(token)
        if on_token is not None:
            on_token(token)
    return new
