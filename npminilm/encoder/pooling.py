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


# each mode reads the same h, so its gradients add up
def pool_backward(dout, caches, modes):
    C = dout.shape[-1] // len(modes)
    dh = None
    for j, (mode, cache) in enumerate(zip(modes, caches)):
        (g,) = BACKWARD[mode](dout[:, j * C:(j + 1) * C], cache)
        dh = g if dh is None else dh + g
    return (dh,)
