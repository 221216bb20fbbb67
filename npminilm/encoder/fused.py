"""The packed forward's block with the numba kernels (`npminilm.cpu`, the `fast` extra), for float32 inference:
the same function as `packed.layer`, with what lies between the GEMMs done in one pass a row.

    q, k, v = x [Wq; Wk; Wv]^T                                         one GEMM (MKL's packed sgemm where it runs)
    a = attention of q + bq, k + bk, v + bv per run of equal-length    `cpu.attention`'s kernel where MKL runs
        texts                                                          (the biases in its bounds' pass), else
                                                                       S = q k^T, exp_rows(S), P V / sums
    h = add_layernorm(a Wo^T; bo, x)                                   LN(. + bo + x) in one pass
    f = gelu_bias(h Wi^T; bi)                                          GELU(. + bi) in one pass
    out = add_layernorm(f Wd^T; bd, h)
"""

import numpy as np

from ..cpu import mkl
from ..cpu.attention import attention_heads
from ..cpu.kernels import add_layernorm, exp_rows, gelu_bias
from ..nn.ops import EXP_FREE, attention_chunk, probs_times_values
from ..runtime.blas_rows import numpy_matmul_t

QKV = ("query", "key", "value")


def linear_gemm():
    """The x @ w.T of the block's linear layers, x @ [w_1; w_2; ..].T for several weights: from MKL's pack of
    them where it runs (`cpu.mkl`), else numpy's."""
    return mkl.matmul_t if mkl.available() else numpy_matmul_t


def fused_layer(params, config, i, x, batch):
    """One post-LN block over packed float32 rows, (rows, C) -> (rows, C), as `packed.layer`."""
    p = f"encoder.layer.{i}."
    C, NH, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps

    def w(name):
        return params[p + name]

    linear_t = linear_gemm()
    qkv = linear_t(x, *(w(f"attention.self.{m}.weight") for m in QKV))  # (rows, 3C)
    a = np.empty_like(x) if batch.dense else np.zeros_like(x)  # (rows, C); padding rows (if any) stay zero
    self_attention(qkv, [w(f"attention.self.{m}.bias") for m in QKV], a, batch, NH)
    h = linear_t(a, w("attention.output.dense.weight"))
    add_layernorm(h, w("attention.output.dense.bias"), x, w("attention.output.LayerNorm.weight"),
                  w("attention.output.LayerNorm.bias"), eps)
    f = linear_t(h, w("intermediate.dense.weight"))  # (rows, I)
    gelu_bias(f, w("intermediate.dense.bias"))
    out = linear_t(f, w("output.dense.weight"))
    add_layernorm(out, w("output.dense.bias"), h, w("output.LayerNorm.weight"), w("output.LayerNorm.bias"), eps)
    return out


def self_attention(qkv, biases, out, batch, n_head):
    """out[rows] = softmax(q k^T / sqrt(hs)) v over each run of equal-length texts of the batch, q, k, v the
    column thirds of qkv (rows, 3C) plus their biases (bq, bk, bv), added to qkv in place; out (rows, C)."""
    C = out.shape[1]
    scale = 1.0 / np.sqrt(C // n_head)
    with_mkl = mkl.available()
    if not with_mkl:
        qkv += np.concatenate(biases)
        qkv[:, :C] *= np.float32(scale)  # scaling q is T / NH times cheaper than scaling the scores
    q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
    for rows, texts, length in batch.runs():
        if not with_mkl:
            y = attention(*(t[rows].reshape(texts, length, C) for t in (q, k, v)), n_head)  # (texts, length, C)
            out[rows] = y.reshape(out[rows].shape)
        elif isinstance(rows, slice):  # the dense layout: the run's rows in place
            attention_heads(q[rows], k[rows], v[rows], biases, out[rows], texts, n_head, scale, EXP_FREE)
        else:
            rows = rows.ravel()
            out[rows] = attention_heads(q[rows], k[rows], v[rows], biases, np.empty((len(rows), C), out.dtype), texts,
                                        n_head, scale, EXP_FREE)


def attention(q, k, v, n_head):
    """Softmax attention without a mask, q already scaled: (B, T, C) each -> (B, T, C). The (B, NH, T, T) scores
    go a chunk of heads at a time (ATTENTION_CHUNK entries, in cache) through exp_rows; P V's (T, hs) rows are
    then multiplied by the sums' inverses instead of normalising P, in the pass that writes them to (B, T, C). A
    row skips its max where `head_bounds` bounds its scores by EXP_FREE."""
    B, T, C = q.shape
    hs = C // n_head
    qh, kh, vh = (t.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, NH, T, hs)
    bound = head_bounds(q, k, v, n_head)  # (B, NH, T)
    rows, heads = attention_chunk(B, n_head, T)
    yh = np.empty((B, n_head, T, hs), q.dtype)
    scratch = np.empty(min(rows, B) * heads * T * T, q.dtype)
    inv_sum = np.empty((B, n_head, T), q.dtype)
    for b in range(0, B, rows):
        for h in range(0, n_head, heads):
            at = (slice(b, b + rows), slice(h, h + heads))
            r, hh = min(rows, B - b), min(heads, n_head - h)
            scores = scratch[:r * hh * T * T].reshape(r, hh, T, T)
            np.matmul(qh[at], kh[at].transpose(0, 1, 3, 2), out=scores)  # (.., T, hs) @ (.., hs, T) -> (.., T, T)
            inv = np.empty(r * hh * T, q.dtype)
            exp_rows(scores.reshape(-1, T), np.ascontiguousarray(bound[at]).reshape(-1), EXP_FREE, inv)
            inv_sum[at] = inv.reshape(r, hh, T)
            probs_times_values(scores, vh[at], yh[at])
    y = np.empty((B, T, C), q.dtype)
    np.multiply(yh, inv_sum[..., None], out=y.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3))  # into (B, T, C)
    return y


def head_bounds(q, k, v, n_head):
    """(B, NH, T) float32, C-contiguous: |q_i| max_j |k_j| per text and head, the Cauchy-Schwarz bound of row i's
    scores; inf for the heads where P V's sums could overflow without the max (T e^40 max |v| > e^80)."""
    B, T, C = q.shape
    q4, k4, v4 = (t.reshape(B, T, n_head, C // n_head) for t in (q, k, v))
    q_norms = np.einsum("bthd,bthd->bht", q4, q4)  # squared, (B, NH, T)
    k_max = np.einsum("bthd,bthd->bth", k4, k4).max(axis=1)  # (B, NH)
    bound = np.sqrt(q_norms * k_max[..., None])
    with np.errstate(divide="ignore"):
        overflow = np.log(T * np.abs(v4).max(axis=1).max(axis=-1)) > 80.0 - EXP_FREE  # (B, NH)
    bound[overflow] = np.inf
    return bound
