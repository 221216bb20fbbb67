"""Training losses as forward/backward pairs: cross-entropy, in-batch contrastive (MNRL) and cosine-MSE.

Same contract as `ops.py`: `*_forward(...) -> (loss, cache)` with a 0-d loss in the inputs' dtype, and
`*_backward(dloss, cache)` returning the gradients of the forward's float array inputs in argument order.
Dimensions: N rows, B batch (anchors), B' candidates (positives, then any hard negatives), C embedding size,
T time, V classes (vocab).
"""

import numpy as np

from .ops import l2_normalize_backward, l2_normalize_forward

# ---------------------------------------------------------------------------------------- cross-entropy


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean over the non-ignored rows of -log softmax(logits)[target] (torch.nn.functional.cross_entropy).

    logits (N, V) or (B, T, V) float, targets (N,) or (B, T) int. With every row ignored the loss is NaN and
    the gradient zero, as in torch.
    """
    V = logits.shape[-1]
    targets = np.asarray(targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets have shape {targets.shape}, logits {logits.shape} need {logits.shape[:-1]}")
    x = logits.reshape(-1, V)  # (..., V) -> (N, V)
    t = targets.reshape(-1)  # (N,)
    valid = t != ignore_index
    if np.any((t[valid] < 0) | (t[valid] >= V)):
        raise ValueError(f"targets must lie in [0, {V}) or equal ignore_index {ignore_index}")
    shifted = x - x.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # stable log-softmax (N, V)
    rows = np.nonzero(valid)[0]
    n = rows.size
    picked = logp[rows, t[rows]]  # (n,)
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.asarray(-picked.sum() / n, dtype=logits.dtype)  # 0 / 0 = NaN when all are ignored
    return loss, (logp, t, rows, logits.shape)


# L = -(1/n) sum_{valid i} log p[i, t_i],  p = softmax(x)   =>   dx[i] = dL * (p[i] - onehot(t_i)) / n  (valid i),
#   0 for ignored rows
def cross_entropy_backward(dout, cache):
    logp, t, rows, shape = cache
    dx = np.zeros_like(logp)
    if rows.size:
        dx[rows] = np.exp(logp[rows])
        dx[rows, t[rows]] -= 1.0
        dx *= dout / rows.size
    return (dx.reshape(shape),)


# ------------------------------------------------------------------------ MultipleNegativesRankingLoss


def mnrl_forward(anchors, positives, scale=20.0):
    """sentence-transformers' MultipleNegativesRankingLoss: cross-entropy of scale * cos_sim(anchors, positives)
    with row i's target column i. anchors (B, C), positives (B', C) with B' >= B: columns past B are extra
    (hard) negatives shared by every anchor."""
    B, Bp = anchors.shape[0], positives.shape[0]
    if anchors.ndim != 2 or positives.ndim != 2 or anchors.shape[1] != positives.shape[1]:
        raise ValueError(f"anchors {anchors.shape} and positives {positives.shape} must be (B, C) and (B', C)")
    if Bp < B:
        raise ValueError(f"need at least as many positives as anchors, got {Bp} < {B}")
    a, a_cache = l2_normalize_forward(anchors)
    p, p_cache = l2_normalize_forward(positives)
    scores = (a @ p.T) * np.asarray(scale, anchors.dtype)  # (B, C) @ (C, B') -> (B, B')
    loss, ce_cache = cross_entropy_forward(scores, np.arange(B))
    return loss, (a, p, scale, a_cache, p_cache, ce_cache)


# S = s * A P^T  (A, P row-normalised)   =>   dA = s dS P,   dP = s dS^T A,  then back through each x / |x|
def mnrl_backward(dout, cache):
    a, p, scale, a_cache, p_cache, ce_cache = cache
    (dscores,) = cross_entropy_backward(dout, ce_cache)
    dscores = dscores * np.asarray(scale, dscores.dtype)
    (danchors,) = l2_normalize_backward(dscores @ p, a_cache)  # (B, B') @ (B', C) -> (B, C)
    (dpositives,) = l2_normalize_backward(dscores.T @ a, p_cache)  # (B', B) @ (B, C) -> (B', C)
    return danchors, dpositives


# ---------------------------------------------------------------------------------------------- cosine-MSE


def cosine_mse_forward(a, b, labels):
    """sentence-transformers' CosineSimilarityLoss: mean_i (cos(a_i, b_i) - label_i)^2. a, b (B, C), labels (B,).

    The labels are targets, not differentiated: backward returns (da, db)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a {a.shape} and b {b.shape} must both be (B, C)")
    labels = np.asarray(labels, dtype=a.dtype)
    if labels.shape != a.shape[:1]:
        raise ValueError(f"labels have shape {labels.shape}, expected {a.shape[:1]}")
    an, a_cache = l2_normalize_forward(a)
    bn, b_cache = l2_normalize_forward(b)
    cos = np.sum(an * bn, axis=-1)  # (B, C) -> (B,)
    diff = cos - labels
    loss = np.asarray(np.mean(diff * diff), dtype=a.dtype)
    return loss, (an, bn, diff, a_cache, b_cache)


# L = (1/B) sum_i (c_i - y_i)^2,  c_i = an_i . bn_i   =>   dc_i = 2 (c_i - y_i) dL / B,
#   d an_i = dc_i bn_i,  d bn_i = dc_i an_i,  then back through each x / |x|
def cosine_mse_backward(dout, cache):
    an, bn, diff, a_cache, b_cache = cache
    dcos = (2.0 * dout / diff.shape[0]) * diff  # (B,)
    (da,) = l2_normalize_backward(dcos[:, None] * bn, a_cache)
    (db,) = l2_normalize_backward(dcos[:, None] * an, b_cache)
    return da, db
