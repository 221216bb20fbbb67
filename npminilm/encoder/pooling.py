"""Sentence pooling as sentence-transformers composes it: the enabled modes, concatenated in its order."""

import numpy as np

from ..nn.ops import (
    cls_pool_backward,
    cls_pool_forward,
    max_pool_backward,
    max_pool_forward,
    mean_pool_backward,
    mean_pool_forward,
)

FORWARD = {
    "cls": cls_pool_forward,
    "max": max_pool_forward,
    "mean": mean_pool_forward,
    "mean_sqrt_len_tokens": lambda h, mask: mean_pool_forward(h, mask, sqrt_len=True),
}
BACKWARD = {
    "cls": cls_pool_backward,
    "max": max_pool_backward,
    "mean": mean_pool_backward,
    "mean_sqrt_len_tokens": mean_pool_backward,
}


def pool_forward(h, mask, modes):
    """h (B, T, C), mask (B, T) -> (B, len(modes) * C)."""
    outs, caches = zip(*(FORWARD[m](h, mask) for m in modes))
    return np.concatenate(outs, axis=-1), caches


def pool_packed(h, text_rows, modes, skip=0):
    """Inference over packed rows: h (rows, C), text_rows each text's rows in token order (slices or index
    arrays) -> (S, len(modes) * C), each text pooled over exactly its own rows, as `pool_forward` pools it.

    skip > 0 (one number, or one per text) leaves each text's first `skip` tokens out (a prompt's, with the
    Pooling module's include_prompt false), as sentence-transformers masks them: a text with nothing left pools
    to zeros (mean), its first token (cls) or -inf (max)."""
    whole = [h[rows] for rows in text_rows]
    skips = np.broadcast_to(np.asarray(skip, dtype=np.int64), (len(whole),))
    texts = [t[int(s):] for t, s in zip(whole, skips)]
    count = np.array([len(t) for t in texts], dtype=h.dtype)[:, None]  # (S, 1)
    count = np.maximum(count, np.asarray(1e-9, h.dtype))  # sentence-transformers' clamp: an empty text's 0 / 1e-9 = 0
    outs = []
    for mode in modes:
        if mode == "cls":
            outs.append(np.stack([t[0] if len(t) else w[0] for t, w in zip(texts, whole)]))
        elif mode == "max":
            outs.append(np.stack([t.max(axis=0) if len(t) else np.full(h.shape[1], -np.inf, h.dtype)
                                  for t in texts]))
        else:
            total = np.stack([t.sum(axis=0) for t in texts])
            outs.append(total / (np.sqrt(count) if mode == "mean_sqrt_len_tokens" else count))
    return np.concatenate(outs, axis=-1)


# each mode reads the same h, so its gradients add up
def pool_backward(dout, caches, modes):
    C = dout.shape[-1] // len(modes)
    dh = None
    for j, (mode, cache) in enumerate(zip(modes, caches)):
        (g,) = BACKWARD[mode](dout[:, j * C:(j + 1) * C], cache)
        dh = g if dh is None else dh + g
    return (dh,)
