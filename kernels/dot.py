"""The tile helpers the kernels share: tl.dot into an fp32 accumulator, the K loop of a GEMM tile, and the cast
from fp32 to a storage dtype.

Both carry a workaround for bfloat16 in Triton's CPU interpreter (CPU_BF16: bf16 tensors on the interpreter),
which multiplies bf16 dot operands as raw uint16 and casts fp32 to bf16 by truncation where GPUs round to nearest
even. With CPU_BF16 the operands are widened to fp32 (exact) and the rounding is done by hand, so interpreter
tests see the numbers a GPU computes.
"""

import triton
import triton.language as tl


@triton.jit
def dot_acc(a, b, acc, DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr):
    """acc + a @ b."""
    if CPU_BF16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


# X (M, K) and W (N, K) stored [out, in]: the (BLOCK_M, BLOCK_N) tile of X W^T at rows offs_m, columns offs_n,
# summed over K in BLOCK_K steps; rows, columns and k past the ends load as zeros.
@triton.jit
def matmul_tile(X, W, offs_m, offs_n, M, N, K, stride_xm, stride_wn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr):
    """fp32 tile of X @ W.T."""
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        x = tl.load(X + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :],
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        w = tl.load(W + offs_n[None, :] * stride_wn + (k0 + offs_k)[:, None],
                    mask=n_ok[None, :] & k_ok[:, None], other=0.0)  # (BLOCK_K, BLOCK_N) tile of W^T
        acc = dot_acc(x, w, acc, DOT_PRECISION, CPU_BF16)
    return acc


# Round to nearest even on the bits: add 0x7FFF plus the lowest kept bit, then drop the low 16 bits. A carry out
# of the mantissa moves into the exponent, as rounding up should (max finite rounds to inf).
@triton.jit
def cast_to(x, dtype: tl.constexpr, CPU_BF16: tl.constexpr):
    """fp32 x in `dtype`; with CPU_BF16, `dtype` must be bfloat16."""
    if CPU_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return x.to(dtype)
