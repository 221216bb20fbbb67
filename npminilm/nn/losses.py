"""Training losses as forward/backward pairs: cross-entropy, in-batch contrastive (MNRL, plain or symmetric),
CoSENT, cosine-MSE, Matryoshka over any of the sentence-pair losses, and binary cross-entropy on logits (a
cross-encoder's).

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


def mnrl_forward(anchors, positives, scale=20.0, symmetric=False):
    """sentence-transformers' MultipleNegativesRankingLoss: cross-entropy of scale * cos_sim(anchors, positives)
    with row i's target column i. anchors (B, C), positives (B', C) with B' >= B: columns past B are extra
    (hard) negatives shared by every anchor. symmetric: the mean with the reverse direction, each positive
    against every anchor (the first B columns transposed; MultipleNegativesSymmetricRankingLoss)."""
    B, Bp = anchors.shape[0], positives.shape[0]
    if anchors.ndim != 2 or positives.ndim != 2 or anchors.shape[1] != positives.shape[1]:
        raise ValueError(f"anchors {anchors.shape} and positives {positives.shape} must be (B, C) and (B', C)")
    if Bp < B:
        raise ValueError(f"need at least as many positives as anchors, got {Bp} < {B}")
    a, a_cache = l2_normalize_forward(anchors)
    p, p_cache = l2_normalize_forward(positives)
    scores = (a @ p.T) * np.asarray(scale, anchors.dtype)  # (B, C) @ (C, B') -> (B, B')
    loss, ce_cache = cross_entropy_forward(scores, np.arange(B))
    back_cache = None
    if symmetric:
        back, back_cache = cross_entropy_forward(np.ascontiguousarray(scores[:, :B].T), np.arange(B))
        loss = np.asarray((loss + back) / 2, anchors.dtype)
    return loss, (a, p, scale, a_cache, p_cache, ce_cache, back_cache)


# S = s * A P^T  (A, P row-normalised)   =>   dA = s dS P,   dP = s dS^T A,  then back through each x / |x|
# symmetric: L = (CE(S) + CE(S[:, :B]^T)) / 2   =>   dS = (dCE(S) + [dCE(S[:, :B]^T)^T, 0]) / 2
def mnrl_backward(dout, cache):
    a, p, scale, a_cache, p_cache, ce_cache, back_cache = cache
    if back_cache is None:
        (dscores,) = cross_entropy_backward(dout, ce_cache)
    else:
        (dscores,) = cross_entropy_backward(dout / 2, ce_cache)
        (dback,) = cross_entropy_backward(dout / 2, back_cache)
        dscores[:, :a.shape[0]] += dback.T
    dscores = dscores * np.asarray(scale, dscores.dtype)
    (danchors,) = l2_normalize_backward(dscores @ p, a_cache)  # (B, B') @ (B', C) -> (B, C)
    (dpositives,) = l2_normalize_backward(dscores.T @ a, p_cache)  # (B', B) @ (B, C) -> (B', C)
    return danchors, dpositives


# ---------------------------------------------------------------------------------------------- cosine-MSE


def _pair_cosines(a, b, labels, label_dtype):
    """cos(a_i, b_i) (B,) of two (B, C) columns, the labels (B,) checked, and the cache for the backward."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a {a.shape} and b {b.shape} must both be (B, C)")
    labels = np.asarray(labels, dtype=label_dtype)
    if labels.shape != a.shape[:1]:
        raise ValueError(f"labels have shape {labels.shape}, expected {a.shape[:1]}")
    an, a_cache = l2_normalize_forward(a)
    bn, b_cache = l2_normalize_forward(b)
    return np.sum(an * bn, axis=-1), labels, (an, bn, a_cache, b_cache)


# c_i = an_i . bn_i   =>   d an_i = dc_i bn_i,  d bn_i = dc_i an_i,  then back through each x / |x|
def _pair_cosines_backward(dcos, cache):
    an, bn, a_cache, b_cache = cache
    dcos = np.asarray(dcos, an.dtype)
    (da,) = l2_normalize_backward(dcos[:, None] * bn, a_cache)
    (db,) = l2_normalize_backward(dcos[:, None] * an, b_cache)
    return da, db


def cosine_mse_forward(a, b, labels):
    """sentence-transformers' CosineSimilarityLoss: mean_i (cos(a_i, b_i) - label_i)^2. a, b (B, C), labels (B,).

    The labels are targets, not differentiated: backward returns (da, db)."""
    cos, labels, pair_cache = _pair_cosines(a, b, labels, a.dtype)
    diff = cos - labels
    loss = np.asarray(np.mean(diff * diff), dtype=a.dtype)
    return loss, (diff, pair_cache)


# L = (1/B) sum_i (c_i - y_i)^2,  c_i = an_i . bn_i   =>   dc_i = 2 (c_i - y_i) dL / B,
#   d an_i = dc_i bn_i,  d bn_i = dc_i an_i,  then back through each x / |x|
def cosine_mse_backward(dout, cache):
    diff, pair_cache = cache
    return _pair_cosines_backward((2.0 * dout / diff.shape[0]) * diff, pair_cache)  # dcos (B,)


# ------------------------------------------------------------------------------------------------ CoSENT


def cosent_forward(a, b, labels, scale=20.0):
    """sentence-transformers' CoSENTLoss: log(1 + sum over pairs (i, j) with label_i < label_j of
    exp(scale * (cos_i - cos_j))), cos_i = cos(a_i, b_i). a, b (B, C), labels (B,) targets (not differentiated).
    A batch whose labels are all equal has no pairs: loss 0, gradient 0."""
    cos, labels, pair_cache = _pair_cosines(a, b, labels, np.float64)
    z = scale * (cos[:, None] - cos[None, :])  # (B, B): z[i, j] = s (cos_i - cos_j)
    pairs = labels[:, None] < labels[None, :]  # the pairs (i, j) that should have cos_i < cos_j
    top = max(0.0, float(z[pairs].max())) if pairs.any() else 0.0  # logsumexp over {0} and the pairs, stable
    w = np.where(pairs, np.exp(z - top), 0.0)
    total = np.exp(-top) + w.sum()
    loss = np.asarray(top + np.log(total), dtype=a.dtype)
    return loss, (w / total, scale, pair_cache)


# L = log(1 + sum_{(i,j)} e^{z_ij}),  z_ij = s (c_i - c_j)   =>   dz_ij = dL softmax_ij =: p_ij  (pairs only),
#   dc_k = s (sum_j p_kj - sum_i p_ik),  then d an_k = dc_k bn_k,  d bn_k = dc_k an_k,  back through each x / |x|
def cosent_backward(dout, cache):
    p, scale, pair_cache = cache
    return _pair_cosines_backward((float(dout) * scale) * (p.sum(axis=1) - p.sum(axis=0)), pair_cache)


# --------------------------------------------------------------------------------------------- Matryoshka


def matryoshka_forward(loss_forward, embeddings, dims, weights=None, **kwargs):
    """sentence-transformers' MatryoshkaLoss: sum over d in dims of weight_d * loss(each embedding's first d
    columns). `embeddings` is the list of (B, C) arrays the wrapped loss takes (anchors, positives or a, b), in
    order; `kwargs` go to it (labels, scale, ...). weights default to 1 each."""
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"{len(dims)} dims but {len(weights)} weights")
    C = embeddings[0].shape[1]
    if any(not 1 <= d <= C for d in dims):
        raise ValueError(f"Matryoshka dims must lie in [1, {C}], got {list(dims)}")
    total, caches = 0.0, []
    for d, w in zip(dims, weights):
        loss, cache = loss_forward(*(e[:, :d] for e in embeddings), **kwargs)
        total = total + w * loss
        caches.append(cache)
    shapes = [(e.shape, e.dtype) for e in embeddings]
    return np.asarray(total, dtype=embeddings[0].dtype), (dims, weights, caches, shapes)


# L = sum_d w_d L(E[:, :d])   =>   dE[:, :d] += w_d dL_d/dE_d  (the truncated columns get each loss's share)
def matryoshka_backward(loss_backward, dout, cache):
    dims, weights, caches, shapes = cache
    grads = [np.zeros(shape, dtype) for shape, dtype in shapes]
    for d, w, c in zip(dims, weights, caches):
        for g, part in zip(grads, loss_backward(dout * w, c)):
            g[:, :d] += part
    return tuple(grads)


# ------------------------------------------------------------------------------- binary cross-entropy


def bce_with_logits_forward(logits, labels):
    """mean over elements of -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], as torch's BCEWithLogitsLoss
    (sentence-transformers' BinaryCrossEntropyLoss for cross-encoders). logits and labels (B,) or (B, K); labels
    in [0, 1] are targets, not differentiated: backward returns (dlogits,).

    Written stably: max(z, 0) - z y + log(1 + exp(-|z|)), which never overflows."""
    z = logits
    y = np.asarray(labels, dtype=z.dtype).reshape(z.shape)
    loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return np.asarray(loss.mean(), dtype=z.dtype), (z, y)


# dL/dz = (sigmoid(z) - y) / n
def bce_with_logits_backward(dout, cache):
    z, y = cache
    e = np.exp(-np.abs(z))  # sigmoid without overflow: 1 / (1 + e) for z >= 0, e / (1 + e) below
    sigmoid = np.where(z >= 0, 1.0, e) / (1.0 + e)
    return ((sigmoid - y) * (dout / z.size)).astype(z.dtype, copy=False),
