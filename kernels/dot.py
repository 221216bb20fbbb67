"""The tile helpers the kernels share: tl.dot into an fp32 accumulator, the K loop of a GEMM tile and the order
of GEMM tiles, a LayerNorm over the rows of a tile, and the cast from fp32 to a storage dtype.

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


# Program `pid` of a GEMM grid takes the tile (pid_m, pid_n). Tiles go GROUP_M rows of tiles at a time, column by
# column, so programs running together share the same W columns (and X rows) in L2.
@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program `pid`."""
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * n_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * n_n)) % group_size
    pid_n = (pid % (GROUP_M * n_n)) // group_size
    return pid_m, pid_n


# Each row z of a (rows, BLOCK_N) fp32 tile, whose first N columns are real (n_ok):
#   mean = sum_j z_j / N,   rstd = 1 / sqrt(sum_j (z_j - mean)^2 / N + eps),   out = (z - mean) rstd g + beta
@triton.jit
def layernorm_rows(z, offs_n, n_ok, LN_W, LN_B, N, eps):
    """(out, mean, rstd) of LayerNorm over the rows of z; columns past N are ignored and come out as beta = 0."""
    mean = tl.sum(tl.where(n_ok[None, :], z, 0.0), 1) / N
    zc = tl.where(n_ok[None, :], z - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, 1) / N + eps)
    g = tl.load(LN_W + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    beta = tl.load(LN_B + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    return zc * rstd[:, None] * g[None, :] + beta[None, :], mean, rstd


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
