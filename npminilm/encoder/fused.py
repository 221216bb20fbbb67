"""The packed forward's embeddings and block with the numba kernels (`npminilm.cpu`, the `fast` extra), for float32
inference: the same functions as `packed.embeddings` and `packed.layer`, with what lies between the GEMMs done in
one pass a row.

    x = embed_layernorm(word[ids] + position[t] + token_type[type])    gathered and normalised in one pass a token
    q, k, v = x [Wq; Wk; Wv]^T                                         one GEMM (MKL's packed sgemm where it runs,
                                                                       else the register tiles)
    a = attention of q + bq, k + bk, v + bv per run of equal-length    `cpu.attention`'s kernel (the biases
        texts                                                          added in its first pass)
    h = add_layernorm(a Wo^T; bo, x)                                   LN(. + bo + x) in one pass
    f = gelu_bias(h Wi^T; bi)                                          GELU(. + bi) in one pass
    out = add_layernorm(f Wd^T; bd, h)
"""

import numpy as np

from ..cpu import mkl, tiled_linear
from ..cpu.attention import attention_heads
from ..cpu.kernels import add_layernorm, embed_layernorm, gelu_bias
from ..nn.ops import EXP_FREE

QKV = ("query", "key", "value")


def linear_gemm():
    """The x @ w.T of the block's linear layers, x @ [w_1; w_2; ..].T for several weights: from MKL's pack of
    them where it runs (`cpu.mkl`), else from their panels through the register tiles (`cpu.tiled_linear`)."""
    return mkl.matmul_t if mkl.available() else tiled_linear.matmul_t


def embeddings(params, config, batch):
    """`packed.embeddings` in one pass a token: (batch.rows, C), zeros in the padding rows. The kernel reads where
    the indices point: `packed.packed_forward` checks them against their tables first."""
    tables = [params[f"embeddings.{name}_embeddings.weight"] for name in ("word", "position", "token_type")]
    indices = (batch.input_ids, batch.positions, batch.token_type_ids)
    x = (np.empty if batch.dense else np.zeros)((batch.rows, config.hidden_size), np.float32)
    embed_layernorm(x, batch.layout[0], *indices, *tables, params["embeddings.LayerNorm.weight"],
                    params["embeddings.LayerNorm.bias"], config.layer_norm_eps)
    return x


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
    q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
    for rows, texts, length in batch.runs():
        if isinstance(rows, slice):  # the dense layout: the run's rows in place
            attention_heads(q[rows], k[rows], v[rows], biases, out[rows], texts, n_head, scale, EXP_FREE)
        else:
            rows = rows.ravel()
            out[rows] = attention_heads(q[rows], k[rows], v[rows], biases, np.empty((len(rows), C), out.dtype), texts,
                                        n_head, scale, EXP_FREE)
