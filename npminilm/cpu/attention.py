"""Attention per text and head in one numba kernel, its two products through sgemms that MKL compiles for their
shapes (`mkl.jit_sgemm`), called from the kernel: no score tensor for the batch, no Python between the heads, and
the output written in place into the (rows, C) layout the next GEMM reads.

    q, k, v += their biases, in the pass that bounds the scores
    for each text b and head h, in blocks of query rows:
        S = scale q k^T          (Tq, T)   sgemm, alpha = scale
        P = exp(S - shift)       in place, sums' inverses kept (exp_rows' shift: the row max, or 0 where the
                                 Cauchy-Schwarz bound scale |q_i| max_j |k_j| <= limit)
        y = P v / rowsum(P)      (Tq, hs)  sgemm straight into out[b rows, h columns], then the rows scaled

A text's bits depend on the text alone: every product has the text's own shapes (query blocks of
QUERY_BLOCK_ENTRIES // T rows, a count from its length), whatever batch it sits in. MKL's JIT sgemm, made once
for each shape and row strides, makes attention 3-13% faster than its cblas_sgemm does (2 x 256 tokens: 2.73 ->
2.55 ms, 32 x 12: 0.71 -> 0.63 ms, 1 x 512: 4.85 -> 4.69 ms on one core, 12 heads of 32).
"""

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ..errors import InvalidInputError
from . import mkl
from .kernels import REDUCING, _row_max, exp_shifted, prefer_512_bit_vectors

QUERY_BLOCK_ENTRIES = 1 << 18  # a block of scores is at most 1 MB: it stays in L2 between its three passes
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
                scores_gemm, values_gemm = gemms[0] if n == block else gemms[1]
                _jit_gemm(scores_gemm, q[r0 + i0:, c0:].ctypes.data, k[r0:, c0:].ctypes.data, scores.ctypes.data)
                for i in range(n):
                    row = scores[i]
                    bounded = shift_free and scale * np.sqrt(q_norms[i0 + i] * k_max) <= limit
                    top = f32(0.0) if bounded else _row_max(row)
                    inv_sum[i] = f32(1.0) / exp_shifted(row, top)
                y = out[r0 + i0:r0 + i0 + n, c0:c0 + hs]
                _jit_gemm(values_gemm, scores.ctypes.data, v[r0:, c0:].ctypes.data, y.ctypes.data)
                for i in range(n):
                    for d in range(hs):
                        y[i, d] *= inv_sum[i]


def attention_heads(q, k, v, biases, out, texts, n_head, scale, limit):
    """out = softmax(scale (q + bq) (k + bk)^T) (v + bv) for each of `texts` equal-length texts and each head,
    through MKL's sgemm compiled for the shapes (`mkl.jit_sgemm`), biases (bq, bk, bv). q, k, v, out:
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
    T, hs = rows // texts, C // n_head
    block = max(1, min(T, QUERY_BLOCK_ENTRIES // T))
    ldq, ldk, ldv, ldo = (a.strides[0] // 4 for a in arrays)
    scale = np.float32(scale)
    gemms = tuple((mkl.jit_sgemm(True, n, T, hs, scale, ldq, ldk, T),  # S = scale q k^T, (n, T)
                   mkl.jit_sgemm(False, n, hs, T, 1.0, T, ldv, ldo))  # P v, (n, hs)
                  for n in (block, T % block or block))
    _attention_heads(gemms, q, k, v, *biases, out, texts, n_head, scale, np.float32(limit))
    return out
