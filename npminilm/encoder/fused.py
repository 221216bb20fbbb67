"""The packed forward's block with the numba kernels (`npminilm.cpu`, the `fast` extra), for float32 inference:
the same function as `packed.layer`, with what lies between the GEMMs done in one pass a row.

    q, k, v = x Wq^T + bq (scaled by 1 / sqrt(hs)), x Wk^T + bk, x Wv^T + bv     GEMMs, then a bias pass each
    a = attention per run of equal-length texts: S = q k^T, exp_rows(S), P V, rows / their sums
    h = add_layernorm(a Wo^T; bo, x)                                              LN(. + bo + x) in one pass
    f = gelu_bias(h Wi^T; bi)                                                     GELU(. + bi) in one pass
    out = add_layernorm(f Wd^T; bd, h)
"""

import numpy as np

from ..cpu.kernels import add_layernorm, exp_rows, gelu_bias
from ..nn.ops import EXP_FREE, attention_chunk, probs_times_values


def fused_layer(params, config, i, x, batch):
    """One post-LN block over packed float32 rows, (rows, C) -> (rows, C), as `packed.layer`."""
    p = f"encoder.layer.{i}."
    C, NH, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps

    def w(name):
        return params[p + name]

    q, k, v = (x @ w(f"attention.self.{m}.weight").T for m in ("query", "key", "value"))  # (rows, C) each
    q += w("attention.self.query.bias")
    q *= np.float32(1.0 / np.sqrt(C // NH))  # scaling q is T / NH times cheaper than scaling the scores
    k += w("attention.self.key.bias")
    v += w("attention.self.value.bias")
    a = np.zeros_like(x)  # (rows, C); the padding rows stay zero
    for rows, texts, length in batch.runs():
        y = attention(*(t[rows].reshape(texts, length, C) for t in (q, k, v)), NH)  # (texts, length, C)
        a[rows] = y.reshape(a[rows].shape)
    h = a @ w("attention.output.dense.weight").T
    add_layernorm(h, w("attention.output.dense.bias"), x, w("attention.output.LayerNorm.weight"),
                  w("attention.output.LayerNorm.bias"), eps)
    f = h @ w("intermediate.dense.weight").T  # (rows, I)
    gelu_bias(f, w("intermediate.dense.bias"))
    out = f @ w("output.dense.weight").T
    add_layernorm(out, w("output.dense.bias"), h, w("output.LayerNorm.weight"), w("output.LayerNorm.bias"), eps)
    return out


def attention(q, k, v, n_head):
    """Softmax attention without a mask, q already scaled: (B, T, C) each -> (B, T, C). The (B, NH, T, T) scores
    go a chunk of heads at a time (ATTENTION_CHUNK entries, in cache) through exp_rows; P V's (T, hs) rows are
    then divided by the sums instead of normalising P. A row skips its max where Cauchy-Schwarz bounds its
    scores, |q_i . k_j| <= |q_i| max_j |k_j| <= EXP_FREE, and P V's sums cannot overflow (T e^40 max|v|)."""
    B, T, C = q.shape
    hs = C // n_head
    qh, kh, vh = (t.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, NH, T, hs)
    bound = np.sqrt(np.einsum("bhtd,bhtd->bht", qh, qh))  # (B, NH, T): |q_i|
    bound *= np.sqrt(np.einsum("bhtd,bhtd->bht", kh, kh).max(axis=-1))[..., None]  # times max_j |k_j|
    with np.errstate(divide="ignore"):
        overflow = np.log(T * np.abs(vh).max(axis=(2, 3))) > 80.0 - EXP_FREE  # (B, NH)
    bound[overflow] = np.inf
    rows, heads = attention_chunk(B, n_head, T)
    yh = np.empty((B, n_head, T, hs), q.dtype)
    scratch = np.empty(min(rows, B) * heads * T * T, q.dtype)
    inv_sum = np.empty(min(rows, B) * heads * T, q.dtype)
    for b in range(0, B, rows):
        for h in range(0, n_head, heads):
            at = (slice(b, b + rows), slice(h, h + heads))
            r, hh = min(rows, B - b), min(heads, n_head - h)
            scores = scratch[:r * hh * T * T].reshape(r, hh, T, T)
            np.matmul(qh[at], kh[at].transpose(0, 1, 3, 2), out=scores)  # (.., T, hs) @ (.., hs, T) -> (.., T, T)
            inv = inv_sum[:r * hh * T]
            exp_rows(scores.reshape(-1, T), np.ascontiguousarray(bound[at]).reshape(-1), EXP_FREE, inv)
            probs_times_values(scores, vh[at], yh[at])
            yh[at] *= inv.reshape(r, hh, T, 1)
    return yh.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, NH, T, hs) -> (B, T, C)
