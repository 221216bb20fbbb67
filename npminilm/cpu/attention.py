"""Attention per text and head in one numba kernel: no score tensor for the batch, no Python between the heads,
and the output written in place into the (rows, C) layout the next GEMM reads. Its two products run through
sgemms MKL compiles for their shapes (`mkl.jit_sgemm`) where MKL runs, else through register tiles
(`small_gemm`) over the head's operands copied into padded buffers.

    q, k, v += their biases, in the pass that bounds the scores
    for each text b and head h, in blocks of query rows:
        S = scale q k^T          (Tq, T)   sgemm, alpha = scale
        P = exp(S - shift)       in place, sums' inverses kept (the shift: the row max, or 0 where the
                                 Cauchy-Schwarz bound scale |q_i| max_j |k_j| <= limit)
        y = P v / rowsum(P)      (Tq, hs)  sgemm straight into out[b rows, h columns], then the rows scaled

A text's bits depend on the text alone: every product has the text's own shapes (query blocks of
QUERY_BLOCK_ENTRIES // T rows, a count from its length), whatever batch it sits in. MKL's JIT sgemm, made once
for each shape and row strides, makes attention 3-13% faster than its cblas_sgemm does (2 x 256 tokens: 2.73 ->
2.55 ms, 32 x 12: 0.71 -> 0.63 ms, 1 x 512: 4.85 -> 4.69 ms on one core, 12 heads of 32, Xeon). The register
tiles replace numpy's batched matmuls where MKL is off (AMD CPUs).
"""

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ..errors import InvalidInputError
from . import mkl
from .kernels import REDUCING, _row_max, exp_shifted, prefer_512_bit_vectors
from .small_gemm import TILE_COLS, TILE_ROWS, small_gemm

QUERY_BLOCK_ENTRIES = 1 << 18  # a block of scores is at most 1 MB: it stays in L2 between its three passes
KEY_BLOCK = 128  # P v (tiles) sums each block of keys on its own, then the blocks: float32's error grows with 128
f32 = np.float32


@intrinsic
def _jit_gemm(typingctx, gemm, a, b, c):
    """C = A op(B) by an sgemm MKL compiled for the shape (`mkl.jit_sgemm`): gemm is its (jitter, kernel)
    addresses, a, b, c the data addresses, all ints, so that the compiled kernel holds no address of this process
    and can be cached."""
    def codegen(context, builder, signature, args):
        ptr = ir.IntType(8).as_pointer()
        fn_type = ir.FunctionType(ir.VoidType(), [ptr] * 4)  # kernel(jitter, a, b, c)
        gemm_, a_, b_, c_ = args
        jitter, kernel = (builder.extract_value(gemm_, i) for i in range(2))
        builder.call(builder.inttoptr(kernel, fn_type.as_pointer()), [builder.inttoptr(x, ptr) for x in
                                                                       (jitter, a_, b_, c_)])
        return context.get_dummy_value()

    return types.void(gemm, a, b, c), codegen


@njit(inline="always", **REDUCING)
def _add_biases(q, k, v, bq, bk, bv, r0, c0, T, hs, q_norms, k_t, v_pad):
    """q, k, v += bq, bk, bv over the T rows from r0 and the hs columns from c0 (one text, one head), each row's
    loop vectorised; q_norms[i] = |q_i|^2, and where k_t and v_pad have rows, (k + bk)^T and v + bv copied into
    them. Returns max_j |k_j|^2 and max_j |v_j|, the latter an upper bound of max |v| for P v's overflow check."""
    k_max, v_max = f32(0.0), f32(0.0)
    for j in range(T):
        qr, kr, vr = q[r0 + j, c0:c0 + hs], k[r0 + j, c0:c0 + hs], v[r0 + j, c0:c0 + hs]
        qq, kk, vv = f32(0.0), f32(0.0), f32(0.0)
        for d in range(hs):
            x, y, z = qr[d] + bq[c0 + d], kr[d] + bk[c0 + d], vr[d] + bv[c0 + d]
            qr[d], kr[d], vr[d] = x, y, z
            qq, kk, vv = qq + x * x, kk + y * y, vv + z * z
        if k_t.shape[0]:
            for d in range(hs):
                k_t[d, j] = kr[d]
                v_pad[j, d] = vr[d]
        q_norms[j] = qq
        k_max, v_max = max(k_max, kk), max(v_max, vv)
    return k_max, np.sqrt(v_max)


@njit(inline="always", **REDUCING)
def _exp_scores(scores, n, T, q_norms, k_max, v_max, scale, limit, inv_sum):
    """scores[i, :T] = exp(scores[i, :T] - shift) for the block's n rows, inv_sum[i] = 1 / the row's sum; the shift
    is 0 where the row's bound scale |q_i| max_j |k_j| (q_norms for the block's rows) is within limit and P v's
    sums cannot overflow (T e^limit max|v| < e^80), else the row's max."""
    shift_free = np.log(f32(T) * v_max) <= f32(80.0) - limit
    for i in range(n):
        row = scores[i, :T]
        bounded = shift_free and scale * np.sqrt(q_norms[i] * k_max) <= limit
        top = f32(0.0) if bounded else _row_max(row)
        inv_sum[i] = f32(1.0) / exp_shifted(row, top)


@njit(**REDUCING)
def _attention_heads(gemms, q, k, v, bq, bk, bv, out, texts, n_head, scale, limit):
    """out = softmax(scale (q + bq) (k + bk)^T) (v + bv) per text and head, the biases added to q, k, v in place.
    q, k, v, out (texts * T, C) float32, unit column stride, rows of text b at b * T.. ; bq, bk, bv (C,); scale,
    limit float32; gemms ((S, P v) for a whole query block, (S, P v) for the last, shorter one), `_jit_gemm`'s for
    these shapes and row strides."""
    prefer_512_bit_vectors()
    rows, C = out.shape
    T, hs = rows // texts, C // n_head
    block = max(1, min(T, QUERY_BLOCK_ENTRIES // T))
    scores = np.empty((block, T), np.float32)
    q_norms, inv_sum = np.empty(T, np.float32), np.empty(block, np.float32)
    no_copy = np.empty((0, 0), np.float32)
    for b in range(texts):
        r0 = b * T
        for h in range(n_head):
            c0 = h * hs
            k_max, v_max = _add_biases(q, k, v, bq, bk, bv, r0, c0, T, hs, q_norms, no_copy, no_copy)
            for i0 in range(0, T, block):
                n = min(block, T - i0)
                scores_gemm, values_gemm = gemms[0] if n == block else gemms[1]
                _jit_gemm(scores_gemm, q[r0 + i0:, c0:].ctypes.data, k[r0:, c0:].ctypes.data, scores.ctypes.data)
                _exp_scores(scores, n, T, q_norms[i0:], k_max, v_max, scale, limit, inv_sum)
                y = out[r0 + i0:r0 + i0 + n, c0:c0 + hs]
                _jit_gemm(values_gemm, scores.ctypes.data, v[r0:, c0:].ctypes.data, y.ctypes.data)
                for i in range(n):
                    for d in range(hs):
                        y[i, d] *= inv_sum[i]


@njit(inline="always")
def _padded(n, multiple):
    return -(-n // multiple) * multiple


@njit(**REDUCING)
def _attention_heads_tiled(q, k, v, bq, bk, bv, out, texts, n_head, scale, limit):
    """`_attention_heads` with its products through `small_gemm`, over the head's operands copied into buffers
    padded to whole tiles: q's block (rows to TILE_ROWS), k^T (keys to TILE_COLS), v (keys and hs to TILE_COLS).
    The padding is zero in k^T and v, so the padded keys add nothing to S's rows or to P v."""
    prefer_512_bit_vectors()
    rows, C = out.shape
    T, hs = rows // texts, C // n_head
    block = max(1, min(T, QUERY_BLOCK_ENTRIES // T))
    keys, width = _padded(T, TILE_COLS), _padded(hs, TILE_COLS)
    block_rows = _padded(block, TILE_ROWS)
    q_block = np.zeros((block_rows, hs), np.float32)
    k_t, v_pad = np.zeros((hs, keys), np.float32), np.zeros((keys, width), np.float32)
    scores, y = np.empty((block_rows, keys), np.float32), np.empty((block_rows, width), np.float32)
    q_norms, inv_sum = np.empty(T, np.float32), np.empty(block, np.float32)
    for b in range(texts):
        r0 = b * T
        for h in range(n_head):
            c0 = h * hs
            k_max, v_max = _add_biases(q, k, v, bq, bk, bv, r0, c0, T, hs, q_norms, k_t, v_pad)
            for i0 in range(0, T, block):
                n = min(block, T - i0)
                n_rows = _padded(n, TILE_ROWS)
                for i in range(n_rows):
                    for d in range(hs):
                        q_block[i, d] = q[r0 + i0 + i, c0 + d] if i < n else f32(0.0)
                small_gemm(q_block[:n_rows], k_t, scores[:n_rows], scale, False)  # the padded keys' scores are 0
                _exp_scores(scores, n, T, q_norms[i0:], k_max, v_max, scale, limit, inv_sum)
                for j0 in range(0, keys, KEY_BLOCK):  # P v, summed a block of keys at a time; v_pad's 0 rows add 0
                    j1 = min(keys, j0 + KEY_BLOCK)
                    small_gemm(scores[:n_rows, j0:j1], v_pad[j0:j1], y[:n_rows], f32(1.0), j0 > 0)
                for i in range(n):
                    for d in range(hs):
                        out[r0 + i0 + i, c0 + d] = y[i, d] * inv_sum[i]


def attention_heads(q, k, v, biases, out, texts, n_head, scale, limit):
    """out = softmax(scale (q + bq) (k + bk)^T) (v + bv) for each of `texts` equal-length texts and each head,
    through MKL's sgemm compiled for the shapes (`mkl.jit_sgemm`) where MKL runs, else through `small_gemm`'s
    register tiles; biases (bq, bk, bv). q, k, v, out: (texts * T, C) float32 views with unit column stride (e.g.
    column slices of one QKV product); q, k, v get their biases added in place, out is written in place."""
    arrays = (q, k, v, out)
    rows, C = out.shape if out.ndim == 2 else (0, 0)
    biases = tuple(np.ascontiguousarray(b, dtype=np.float32) for b in biases)
    if (any(a.dtype != np.float32 or a.ndim != 2 or a.shape != (rows, C) or a.strides[1] != 4
            or a.strides[0] % 4 or a.strides[0] < 4 * C or not a.flags.writeable for a in arrays)
            or len(biases) != 3 or any(b.shape != (C,) for b in biases)
            or rows == 0 or texts < 1 or rows % texts or n_head < 1 or C % n_head):
        got = [(a.dtype, a.shape, a.strides) for a in arrays]
        raise InvalidInputError(f"attention_heads needs q, k, v, out float32 (texts * T, C), writable, with unit "
                                f"column stride, three biases (C,), C a multiple of n_head; got {got}, texts {texts}, "
                                f"n_head {n_head}")
    scale, limit = np.float32(scale), np.float32(limit)
    if not mkl.available():
        _attention_heads_tiled(q, k, v, *biases, out, texts, n_head, scale, limit)
        return out
    T, hs = rows // texts, C // n_head
    block = max(1, min(T, QUERY_BLOCK_ENTRIES // T))
    ldq, ldk, ldv, ldo = (a.strides[0] // 4 for a in arrays)
    gemms = tuple((mkl.jit_sgemm(True, n, T, hs, scale, ldq, ldk, T),  # S = scale q k^T, (n, T)
                   mkl.jit_sgemm(False, n, hs, T, 1.0, T, ldv, ldo))  # P v, (n, hs)
                  for n in (block, T % block or block))
    _attention_heads(gemms, q, k, v, *biases, out, texts, n_head, scale, limit)
    return out
