"""Attention per text and head in one numba kernel, its two products through MKL's sgemm called from the kernel
(`mkl.sgemm_address`): no score tensor for the batch, no Python between the heads, and the output written in
place into the (rows, C) layout the next GEMM reads.

    q, k, v += their biases, in the pass that bounds the scores
    for each text b and head h, in blocks of query rows:
        S = scale q k^T          (Tq, T)   sgemm, alpha = scale
        P = exp(S - shift)       in place, sums' inverses kept (exp_rows' shift: the row max, or 0 where the
                                 Cauchy-Schwarz bound scale |q_i| max_j |k_j| <= limit)
        y = P v / rowsum(P)      (Tq, hs)  sgemm straight into out[b rows, h columns], then the rows scaled

A text's bits depend on the text alone: every product has the text's own shapes (query blocks of
QUERY_BLOCK_ENTRIES // T rows, a count from its length), whatever batch it sits in.
"""

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ..errors import InvalidInputError
from .kernels import REDUCING, _row_max, exp_shifted, prefer_512_bit_vectors

QUERY_BLOCK_ENTRIES = 1 << 18  # a block of scores is at most 1 MB: it stays in L2 between its three passes
_NO_TRANS, _TRANS = 111, 112
f32 = np.float32


@intrinsic
def _sgemm(typingctx, address, trans_b, m, n, k, alpha, a, lda, b, ldb, c, ldc):
    """cblas_sgemm(RowMajor, NoTrans, trans_b, m, n, k, alpha, a, lda, b, ldb, 0, c, ldc), called at `address`
    (an int, so that the compiled kernel holds no address of this process and can be cached); a, b, c are data
    addresses (ints)."""
    def codegen(context, builder, signature, args):
        i32, f32_, ptr = ir.IntType(32), ir.FloatType(), ir.IntType(8).as_pointer()
        fn_type = ir.FunctionType(ir.VoidType(), [i32] * 6 + [f32_, ptr, i32, ptr, i32, f32_, ptr, i32])
        fn = builder.inttoptr(args[0], fn_type.as_pointer())

        def to_int(value):  # numba's ints are int64
            return builder.trunc(value, i32) if value.type.width > 32 else value

        def to_ptr(value):
            return builder.inttoptr(value, ptr)

        _, trans_b_, m_, n_, k_, alpha_, a_, lda_, b_, ldb_, c_, ldc_ = args
        builder.call(fn, [ir.Constant(i32, 101), ir.Constant(i32, _NO_TRANS), to_int(trans_b_), to_int(m_),
                          to_int(n_), to_int(k_), alpha_, to_ptr(a_), to_int(lda_), to_ptr(b_), to_int(ldb_),
                          ir.Constant(f32_, 0.0), to_ptr(c_), to_int(ldc_)])
        return context.get_dummy_value()

    return types.void(address, trans_b, m, n, k, types.float32, a, lda, b, ldb, c, ldc), codegen


@njit(**REDUCING)
def _attention_heads(sgemm, q, k, v, bq, bk, bv, out, texts, n_head, scale, limit):
    """out = softmax(scale (q + bq) (k + bk)^T) (v + bv) per text and head, the biases added to q, k, v in place.
    q, k, v, out (texts * T, C) float32, unit column stride, rows of text b at b * T.. ; bq, bk, bv (C,); scale,
    limit float32."""
    prefer_512_bit_vectors()
    rows, C = out.shape
    T, hs = rows // texts, C // n_head
    block = max(1, min(T, QUERY_BLOCK_ENTRIES // T))
    scores = np.empty((block, T), np.float32)
    q_norms, inv_sum = np.empty(T, np.float32), np.empty(block, np.float32)
    ldq, ldk, ldv, ldo = q.strides[0] // 4, k.strides[0] // 4, v.strides[0] // 4, out.strides[0] // 4
    for b in range(texts):
        r0 = b * T
        for h in range(n_head):
            c0 = h * hs
            k_max, v_max = f32(0.0), f32(0.0)  # max_j |k_j|^2, max |v|
            for j in range(T):
                total = f32(0.0)
                for d in range(c0, c0 + hs):
                    k[r0 + j, d] += bk[d]
                    v[r0 + j, d] += bv[d]
                    total += k[r0 + j, d] * k[r0 + j, d]
                    v_max = max(v_max, abs(v[r0 + j, d]))
                k_max = max(k_max, total)
            for i in range(T):
                total = f32(0.0)
                for d in range(c0, c0 + hs):
                    q[r0 + i, d] += bq[d]
                    total += q[r0 + i, d] * q[r0 + i, d]
                q_norms[i] = total
            # without the shift, P v's sums reach T e^limit max|v|: that must stay below e^80
            shift_free = np.log(f32(T) * v_max) <= f32(80.0) - limit
            for i0 in range(0, T, block):
                n = min(block, T - i0)
                _sgemm(sgemm, _TRANS, n, T, hs, scale, q[r0 + i0:, c0:].ctypes.data, ldq,
                       k[r0:, c0:].ctypes.data, ldk, scores.ctypes.data, T)
                for i in range(n):
                    row = scores[i]
                    bounded = shift_free and scale * np.sqrt(q_norms[i0 + i] * k_max) <= limit
                    top = f32(0.0) if bounded else _row_max(row)
                    inv_sum[i] = f32(1.0) / exp_shifted(row, top)
                y = out[r0 + i0:r0 + i0 + n, c0:c0 + hs]
                _sgemm(sgemm, _NO_TRANS, n, hs, T, f32(1.0), scores.ctypes.data, T, v[r0:, c0:].ctypes.data, ldv,
                       y.ctypes.data, ldo)
                for i in range(n):
                    for d in range(hs):
                        y[i, d] *= inv_sum[i]


def attention_heads(sgemm, q, k, v, biases, out, texts, n_head, scale, limit):
    """out = softmax(scale (q + bq) (k + bk)^T) (v + bv) for each of `texts` equal-length texts and each head,
    sgemm being the address of cblas_sgemm (`mkl.sgemm_address()`), biases (bq, bk, bv). q, k, v, out:
    (texts * T, C) float32 views with unit column stride (e.g. column slices of one QKV product); q, k, v get
    their biases added in place, out is written in place."""
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
    _attention_heads(sgemm, q, k, v, *biases, out, texts, n_head, np.float32(scale), np.float32(limit))
    return out
