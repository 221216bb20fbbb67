"""Attention per text and head in one numba kernel: no score tensor for the batch, no Python between the heads,
and the output written in place into the (rows, C) layout the next GEMM reads. Its two products run through
sgemms MKL compiles for their shapes (`mkl.jit_sgemm`) where MKL runs, else through register tiles
(`small_gemm`), which read q and v in place and k from a transposed copy.

    q, k, v += their biases      one pass over the rows
    for each text b and head h:
        |q_i|^2, max |k_j|, max |v_j|   the bounds that decide the shift
      in blocks of query rows:
        S = scale q k^T          (Tq, T)   sgemm, alpha = scale
        P = exp(S - shift)       in place, sums' inverses kept (the shift: the row max, or 0 where the
                                 Cauchy-Schwarz bound scale |q_i| max_j |k_j| <= limit)
        y = P v / rowsum(P)      (Tq, hs)  sgemm straight into out[b rows, h columns], then the rows scaled

A text's bits depend on the text alone: every product has the text's own shapes (query blocks of
QUERY_BLOCK_ENTRIES // T rows, a count from its length), whatever batch it sits in. MKL's JIT sgemm, made once
for each shape and row strides, makes attention 3-13% faster than its cblas_sgemm does (2 x 256 tokens: 2.73 ->
2.55 ms, 32 x 12: 0.71 -> 0.63 ms, 1 x 512: 4.85 -> 4.69 ms on one core, 12 heads of 32, Xeon). The register
tiles replace numpy's batched matmuls where MKL is off (AMD CPUs).

The row loops go through `_row`'s contiguous views, which LLVM vectorises: the biases and bounds had been added
per head over the column slices, in scalar code. Per call on one core, 12 heads of 32, Zen 4 (2026-12-07), before
-> after, tiles: 2 x 256 tokens 2.94 -> 2.61 ms, 32 x 12 0.67 -> 0.40, 16 x 37 1.42 -> 0.96, 1 x 512 5.7 -> 5.2;
AVX2 code: 3.35 -> 3.09, 0.55 -> 0.34, 1.28 -> 0.86; MKL's JIT sgemm: 3.11 -> 2.96, 0.60 -> 0.46, 1.28 -> 1.06.
"""

import numpy as np
from llvmlite import ir
from numba import carray, njit
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


@intrinsic
def _float32_pointer(typingctx, address):
    """The int `address` as a float32 pointer, for `numba.carray`."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.float32)))

    return types.CPointer(types.float32)(types.intp), codegen


@njit(inline="always")
def _row(a, r, c0, n):
    """a[r, c0:c0 + n] as a contiguous 1-D array (a has unit column stride): numba types a column slice of the QKV
    product as an array of any layout, and LLVM leaves loops over its rows scalar; over this view they vectorise."""
    return carray(_float32_pointer(a.ctypes.data + a.strides[0] * r + 4 * c0), n)


@njit(inline="always", **REDUCING)
def _add_bias(x, b):
    """x += b over every row of x (rows, C), in place."""
    for r in range(x.shape[0]):
        row = _row(x, r, 0, b.size)
        for c in range(b.size):
            row[c] += b[c]


@njit(inline="always", **REDUCING)
def _bounds(q, k, v, r0, c0, T, hs, q_norms):
    """For the head's q, k, v in the T rows from r0 and the hs columns from c0: q_norms[i] = |q_i|^2; returns
    max_j |k_j|^2 and max_j |v_j|, the latter an upper bound of max |v| for P v's overflow check."""
    k_max, v_max = f32(0.0), f32(0.0)
    for j in range(T):
        qr, kr, vr = _row(q, r0 + j, c0, hs), _row(k, r0 + j, c0, hs), _row(v, r0 + j, c0, hs)
        qq, kk, vv = f32(0.0), f32(0.0), f32(0.0)
        for d in range(hs):
            qq, kk, vv = qq + qr[d] * qr[d], kk + kr[d] * kr[d], vv + vr[d] * vr[d]
        q_norms[j] = qq
        k_max, v_max = max(k_max, kk), max(v_max, vv)
    return k_max, np.sqrt(v_max)


@njit(inline="always")
def _transpose(k, r0, c0, T, hs, k_t):
    """k_t[:, :T] = k[r0:r0 + T, c0:c0 + hs]^T, eight rows of k at a time (each store a run of 8 in k_t's row):
    3.8x faster than a row at a time."""
    whole = T // 8 * 8
    for j in range(0, whole, 8):
        k0, k1, k2, k3 = _row(k, r0 + j, c0, hs), _row(k, r0 + j + 1, c0, hs), _row(k, r0 + j + 2, c0, hs), \
            _row(k, r0 + j + 3, c0, hs)
        k4, k5, k6, k7 = _row(k, r0 + j + 4, c0, hs), _row(k, r0 + j + 5, c0, hs), _row(k, r0 + j + 6, c0, hs), \
            _row(k, r0 + j + 7, c0, hs)
        for d in range(hs):
            o = k_t[d]
            o[j], o[j + 1], o[j + 2], o[j + 3] = k0[d], k1[d], k2[d], k3[d]
            o[j + 4], o[j + 5], o[j + 6], o[j + 7] = k4[d], k5[d], k6[d], k7[d]
    for j in range(whole, T):
        kr = _row(k, r0 + j, c0, hs)
        for d in range(hs):
            k_t[d, j] = kr[d]


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
    _add_bias(q, bq), _add_bias(k, bk), _add_bias(v, bv)
    for b in range(texts):
        r0 = b * T
        for h in range(n_head):
            c0 = h * hs
            k_max, v_max = _bounds(q, k, v, r0, c0, T, hs, q_norms)
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
    """`_attention_heads` with its products through `small_gemm`. S = q k^T reads q's whole tiles of rows in place
    (a block's last rows through a copy padded to TILE_ROWS) and k^T from a copy with its keys padded to TILE_COLS;
    P v reads v in place where hs is a multiple of TILE_COLS, else from a copy padded to one. The padding is zero
    in k^T and v, so the padded keys add nothing to S's rows, and P v sums the T keys alone."""
    prefer_512_bit_vectors()
    rows, C = out.shape
    T, hs = rows // texts, C // n_head
    block = max(1, min(T, QUERY_BLOCK_ENTRIES // T))
    keys, width = _padded(T, TILE_COLS), _padded(hs, TILE_COLS)
    v_in_place = width == hs
    q_tail, k_t = np.zeros((TILE_ROWS, hs), np.float32), np.zeros((hs, keys), np.float32)
    v_pad = np.zeros((0 if v_in_place else T, width), np.float32)
    scores = np.empty((_padded(block, TILE_ROWS), keys), np.float32)
    y = np.empty((scores.shape[0], width), np.float32)
    q_norms, inv_sum = np.empty(T, np.float32), np.empty(block, np.float32)
    _add_bias(q, bq), _add_bias(k, bk), _add_bias(v, bv)
    for b in range(texts):
        r0 = b * T
        for h in range(n_head):
            c0 = h * hs
            k_max, v_max = _bounds(q, k, v, r0, c0, T, hs, q_norms)
            _transpose(k, r0, c0, T, hs, k_t)
            if not v_in_place:
                for j in range(T):
                    v_pad[j, :hs] = _row(v, r0 + j, c0, hs)
            for i0 in range(0, T, block):
                n = min(block, T - i0)
                whole = n // TILE_ROWS * TILE_ROWS
                n_rows = _padded(n, TILE_ROWS)
                if whole:
                    small_gemm(q[r0 + i0:r0 + i0 + whole, c0:c0 + hs], k_t, scores[:whole], scale, False)
                if whole < n:  # the block's last rows, padded with zero rows to a tile
                    q_tail[:] = 0.0
                    for i in range(n - whole):
                        q_tail[i] = _row(q, r0 + i0 + whole + i, c0, hs)
                    small_gemm(q_tail, k_t, scores[whole:n_rows], scale, False)
                _exp_scores(scores, n, T, q_norms[i0:], k_max, v_max, scale, limit, inv_sum)
                for j0 in range(0, T, KEY_BLOCK):  # P v, summed a block of keys at a time
                    j1 = min(T, j0 + KEY_BLOCK)
                    values = v[r0 + j0:r0 + j1, c0:c0 + hs] if v_in_place else v_pad[j0:j1]
                    small_gemm(scores[:n_rows, j0:j1], values, y[:n_rows], f32(1.0), j0 > 0)
                for i in range(n):
                    o = _row(out, r0 + i0 + i, c0, hs)
                    for d in range(hs):
                        o[d] = y[i, d] * inv_sum[i]


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
