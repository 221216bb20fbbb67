"""GEMM + bias + residual + LayerNorm in one kernel, the LayerNorm in the epilogue (BERT's post-LN sublayer ends)."""

import torch
import triton
import triton.language as tl

from .dot import cast_to, matmul_tile


# x (M, K), W (N, K) stored [out, in], b (N,), residual r (M, N), LayerNorm weight g and bias beta (N,):
#   z = x W^T + b + r                                          (fp32)
#   mean = sum_j z_j / N,   rstd = 1 / sqrt(sum_j (z_j - mean)^2 / N + eps)
#   out = (z - mean) rstd g + beta
# One program owns BLOCK_M whole rows (BLOCK_N >= N), so the row statistics are taken from the accumulator
# in registers: z never goes to memory. Columns past N are zero in z and excluded from the variance.
# mean and rstd are written when MEAN/RSTD are given (what a LayerNorm backward needs).
@triton.jit
def _linear_residual_layernorm_kernel(
    X, W, BIAS, RES, LN_W, LN_B, Y, MEAN, RSTD, M, N, K, eps,
    stride_xm, stride_wn, stride_rm, stride_ym,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STORE_STATS: tl.constexpr,
    DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr,
):
    pid_m = tl.program_id(0)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = matmul_tile(X, W, offs_m, offs_n, M, N, K, stride_xm, stride_wn, BLOCK_M, BLOCK_N, BLOCK_K,
                      DOT_PRECISION, CPU_BF16)
    tile_ok = m_ok[:, None] & n_ok[None, :]
    acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    acc += tl.load(RES + offs_m[:, None] * stride_rm + offs_n[None, :], mask=tile_ok, other=0.0).to(tl.float32)
    mean = tl.sum(acc, 1) / N  # (BLOCK_M,)
    zc = tl.where(n_ok[None, :], acc - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, 1) / N + eps)
    g = tl.load(LN_W + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    beta = tl.load(LN_B + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    out = zc * rstd[:, None] * g[None, :] + beta[None, :]
    tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], cast_to(out, Y.dtype.element_ty, CPU_BF16),
             mask=tile_ok)
    if STORE_STATS:
        tl.store(MEAN + offs_m, mean, mask=m_ok)
        tl.store(RSTD + offs_m, rstd, mask=m_ok)


def linear_residual_layernorm(x, weight, bias, residual, ln_weight, ln_bias, eps, return_stats=False):
    """LayerNorm(x @ W.T + b + residual). x (M, K), W (N, K), b (N,), residual (M, N), LN params (N,) -> (M, N).

    One dtype throughout (float16, bfloat16 or float32), fp32 accumulation and statistics. N <= 4096 (a
    program holds whole rows). With `return_stats`, also mean and rstd (M,) fp32.
    """
    if x.ndim != 2 or weight.ndim != 2 or residual.ndim != 2:
        raise ValueError(f"expected x (M, K), W (N, K), residual (M, N), got {tuple(x.shape)} {tuple(weight.shape)} "
                         f"{tuple(residual.shape)}")
    M, K = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K or tuple(residual.shape) != (M, N):
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, W {tuple(weight.shape)}, "
                         f"residual {tuple(residual.shape)}")
    for name, t in (("b", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if tuple(t.shape) != (N,) or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous ({N},), got {tuple(t.shape)}")
    dtypes = {t.dtype for t in (x, weight, bias, residual, ln_weight, ln_bias)}
    if len(dtypes) != 1 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"all inputs must share one of float16, bfloat16, float32, got {sorted(map(str, dtypes))}")
    if N > 4096:
        raise ValueError(f"N = {N} > 4096: a program holds whole rows")
    if x.stride(1) != 1 or weight.stride(1) != 1 or residual.stride(1) != 1:
        raise ValueError("x, W and residual must be contiguous along their last axis")
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    mean = torch.empty((M,), dtype=torch.float32, device=x.device) if return_stats else out
    rstd = torch.empty((M,), dtype=torch.float32, device=x.device) if return_stats else out
    if M > 0:
        block_n = triton.next_power_of_2(N)
        if x.device.type == "cpu":  # the interpreter: fewer, larger programs
            block_m, block_k = min(64, max(16, triton.next_power_of_2(M))), 128
        else:
            block_m, block_k = (32 if block_n <= 512 else 16), 32
        _linear_residual_layernorm_kernel[(triton.cdiv(M, block_m),)](
            x, weight, bias, residual, ln_weight, ln_bias, out, mean, rstd, M, N, K, float(eps),
            x.stride(0), weight.stride(0), residual.stride(0), out.stride(0),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, STORE_STATS=return_stats,
            DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
            CPU_BF16=x.dtype == torch.bfloat16 and x.device.type == "cpu",
            num_warps=8 if x.device.type != "cpu" else 4,
        )
    return (out, mean, rstd) if return_stats else out
