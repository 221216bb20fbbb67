"""Inference over packed texts: every text's tokens end to end as rows, no padding (the varlen layout of TEI and
FlashAttention).

The row-wise work (the projections, the FFN, GELU, LayerNorms, residual sums) runs over all the rows of a batch
at once; attention runs over each run of equal-length neighbours (a batch sorted by length is a few such runs),
with no mask. So no work goes to padding between texts, and no reduction ever sees it: a text's attention and
pooling are the same operations on the same numbers wherever it sits in a batch.

What then still depends on the batch is where a text's rows sit in the GEMMs: BLAS computes the rows of a tile
in different ways (`runtime.blas_rows`). Packed by BLAS's row classes, every token goes to a row that BLAS
computes as it computes the token's row when the text is alone, so a text gets the same bits in any batch;
the few rows no token takes are zeros.

With the `fast` extra (numba), a float32 forward runs the embeddings and each block as `fused` does them: the
same functions, with the work between the GEMMs in numba kernels and the GEMMs through MKL's packed sgemm where it
runs, else the register tiles (`npminilm.cpu`); `NPMINILM_NUMBA=0` keeps the NumPy ops.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..cpu import available as numba_available
from ..errors import InvalidInputError
from ..nn.ops import attention_forward, gelu_forward, layernorm_forward, linear_forward


@dataclass
class PackedTexts:
    """A batch of tokenised texts, end to end. `classes` is BLAS's row classes over one period
    (`runtime.blas_rows.row_classes`): each token then goes to a row of a class that depends on its text alone,
    so it gets the same bits in any batch; (0,), the default, packs the tokens densely in order."""

    input_ids: np.ndarray  # (N,) int64, the real tokens only
    token_type_ids: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (S,) int64, tokens per text
    classes: tuple = (0,)

    @classmethod
    def pack(cls, id_rows, type_rows, classes=(0,)):
        lengths = np.array([len(r) for r in id_rows], dtype=np.int64)
        if len(id_rows) == 0 or lengths.min() < 1:
            raise InvalidInputError("a packed batch needs at least one text of at least one token")
        return cls(np.concatenate(id_rows).astype(np.int64, copy=False),
                   np.concatenate(type_rows).astype(np.int64, copy=False), lengths, tuple(classes))

    @property
    def dense(self):
        return len(self.classes) == 1

    @cached_property
    def positions(self):
        """(N,) each token's position within its text."""
        return np.arange(self.lengths.sum()) - np.repeat(np.cumsum(self.lengths) - self.lengths, self.lengths)

    @cached_property
    def layout(self):
        """((N,) the row of each token, the number of rows). Token t of a text of phase f has the class of
        position (t + f) mod P in the period, f being the sum of the text's ids mod P, and takes the next free
        row of its class; the rows are whole periods."""
        P, N = len(self.classes), int(self.lengths.sum())
        if P == 1:
            return np.arange(N), N
        classes = np.asarray(self.classes)
        ends = np.cumsum(self.lengths)
        phase = np.add.reduceat(self.input_ids, ends - self.lengths) % P  # per text, from the text alone: the
        # texts' classes then spread evenly, where phase 0 for all would leave the rows of the later classes empty
        token_class = classes[(self.positions + np.repeat(phase, self.lengths)) % P]
        rows, periods = np.empty(N, np.int64), 0
        for k in range(classes.max() + 1):
            slots = np.flatnonzero(classes == k)  # positions of class k in a period
            mine = np.flatnonzero(token_class == k)
            rank = np.arange(len(mine))
            rows[mine] = rank // len(slots) * P + slots[rank % len(slots)]
            periods = max(periods, -(-len(mine) // len(slots)))
        return rows, periods * P

    @property
    def rows(self):
        return self.layout[1]

    def text_rows(self):
        """Each text's rows, in token order: slices when dense, index arrays otherwise."""
        ends = np.cumsum(self.lengths)
        if self.dense:
            return [slice(int(e - n), int(e)) for e, n in zip(ends, self.lengths)]
        return np.split(self.layout[0], ends[:-1])

    def runs(self):
        """(rows, texts, length) for each run of equal-length neighbours: rows is a slice of texts * length
        consecutive rows when dense, else a (texts, length) index array."""
        firsts = np.flatnonzero(np.r_[True, self.lengths[1:] != self.lengths[:-1]])
        counts = np.diff(np.r_[firsts, len(self.lengths)])
        token_starts = np.cumsum(self.lengths) - self.lengths
        out = []
        for i, n in zip(firsts, counts):
            start, length = int(token_starts[i]), int(self.lengths[i])
            if self.dense:
                out.append((slice(start, start + n * length), int(n), length))
            else:
                out.append((self.layout[0][start:start + n * length].reshape(n, length), int(n), length))
        return out


def packed_forward(params, config, batch):
    """The encoder over packed texts: (batch.rows, C) last hidden states; rows between texts are padding. Every
    index is checked against its table first: numpy would wrap a negative id, the fused kernel read past a table."""
    if batch.lengths.max() > config.max_position_embeddings:
        raise InvalidInputError(f"a text of {batch.lengths.max()} tokens exceeds max_position_embeddings "
                                f"{config.max_position_embeddings}")
    for name, table in (("input_ids", "word"), ("token_type_ids", "token_type")):  # positions: by the lengths
        index, size = getattr(batch, name), len(params[f"embeddings.{table}_embeddings.weight"])
        if index.size and (index.min() < 0 or index.max() >= size):
            raise InvalidInputError(f"{name} must lie in [0, {size}), got {index.min()}..{index.max()}")
    fused = fused_ops(params["embeddings.word_embeddings.weight"].dtype)
    x = (fused.embeddings if fused else embeddings)(params, config, batch)
    block = fused.fused_layer if fused else layer
    for i in range(config.num_hidden_layers):
        x = block(params, config, i, x, batch)
    return x


def fused_ops(dtype):
    """The `fused` module (its `embeddings` and `fused_layer`) where the `fast` extra's numba kernels run and the
    forward is float32, else None."""
    if np.dtype(dtype) != np.float32 or not numba_available():
        return None
    from . import fused

    return fused


def linear_gemm(dtype):
    """The x @ w.T that the forward's linear layers run for this dtype here, for deterministic mode to probe its
    rows: the fused block's (`fused.linear_gemm`), or None for numpy's."""
    if fused_ops(dtype) is None:
        return None
    from .fused import linear_gemm as fused_gemm

    return fused_gemm()


def gemms_on_one_thread(dtype):
    """Whether the forward's linear layers run on the calling thread alone here (MKL's sequential GEMMs, or the
    register tiles), so that a lone batch takes every core only when cut into a piece per core."""
    return linear_gemm(dtype) is not None


def embeddings(params, config, batch):
    """LayerNorm(word[ids] + position[t] + token_type[type]) -> (rows, C), zero sums in the padding rows."""
    rows = batch.layout[0]
    x = np.zeros((batch.rows, config.hidden_size), params["embeddings.word_embeddings.weight"].dtype)
    x[rows] = params["embeddings.word_embeddings.weight"][batch.input_ids]
    x[rows] += params["embeddings.position_embeddings.weight"][batch.positions]
    x[rows] += params["embeddings.token_type_embeddings.weight"][batch.token_type_ids]
    out, _ = layernorm_forward(x, params["embeddings.LayerNorm.weight"], params["embeddings.LayerNorm.bias"],
                               config.layer_norm_eps)
    return out


def layer(params, config, i, x, batch):
    """One post-LN block over packed rows: h = LN(x + Attn(x)); out = LN(h + FFN(h)). (rows, C) -> (rows, C)."""
    p = f"encoder.layer.{i}."
    C, NH, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
    q, k, v = (linear_forward(x, params[p + f"attention.self.{m}.weight"], params[p + f"attention.self.{m}.bias"])[0]
               for m in ("query", "key", "value"))  # (rows, C) each
    q *= np.asarray(1.0 / np.sqrt(C // NH), q.dtype)  # scaling q is T / NH times cheaper than scaling the scores
    a = np.zeros_like(x)  # (rows, C); the padding rows stay zero
    for rows, texts, length in batch.runs():
        y, _ = attention_forward(*(t[rows].reshape(texts, length, C) for t in (q, k, v)), NH, scale=1.0,
                                 keep_cache=False)  # (texts, length, C)
        a[rows] = y.reshape(a[rows].shape)
    o, _ = linear_forward(a, params[p + "attention.output.dense.weight"], params[p + "attention.output.dense.bias"])
    o += x
    h, _ = layernorm_forward(o, params[p + "attention.output.LayerNorm.weight"],
                             params[p + "attention.output.LayerNorm.bias"], eps)
    f, _ = linear_forward(h, params[p + "intermediate.dense.weight"], params[p + "intermediate.dense.bias"])
    g, _ = gelu_forward(f)  # (rows, I)
    d, _ = linear_forward(g, params[p + "output.dense.weight"], params[p + "output.dense.bias"])
    d += h
    out, _ = layernorm_forward(d, params[p + "output.LayerNorm.weight"], params[p + "output.LayerNorm.bias"], eps)
    return out
