"""GEMM + bias + residual + LayerNorm (BERT's post-LN sublayer ends): fused in one kernel with the LayerNorm in the
epilogue, or split into a GEMM over both dimensions and a LayerNorm pass when that fills the GPU better."""

import torch
import triton
import triton.language as tl

from .dot import cast_to, grouped_tile, layernorm_rows, matmul_tile
from .ffn_gelu import linear_config, sm_count


# x (M, K), W (N, K) stored [out, in], b (N,), residual r (M, N), LayerNorm weight g and bias beta (N,):
#   z = x W^T + b + r                                          (fp32)
#   mean = sum_j z_j / N,   rstd = 1 / sqrt(sum_j (z_j - mean)^2 / N + eps)
#   out = (z - mean) rstd g + beta
# Two ways, chosen by `linear_residual_layernorm_config`:
# - fused: one program owns BLOCK_M whole rows (BLOCK_N >= N), so the row statistics are taken from the
#   accumulator in registers and z never goes to memory. Programs = M / BLOCK_M: it fills a GPU only for large M.
# - split: z tiles of (BLOCK_M, BLOCK_N) over both M and N, written in fp32 (the grid of a plain GEMM, which a
#   batch of short sentences can fill), then a LayerNorm pass over the rows of z.
# mean and rstd are written when STORE_STATS is set (what a LayerNorm backward needs).
@triton.jit(do_not_specialize=["M"])
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
    z = _linear_residual_tile(X, W, BIAS, RES, offs_m, offs_n, M, N, K, stride_xm, stride_wn, stride_rm,
                              BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION, CPU_BF16)
    out, mean, rstd = layernorm_rows(z, offs_n, n_ok, LN_W, LN_B, N, eps)
    tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], cast_to(out, Y.dtype.element_ty, CPU_BF16),
             mask=m_ok[:, None] & n_ok[None, :])
    if STORE_STATS:
        tl.store(MEAN + offs_m, mean, mask=m_ok)
        tl.store(RSTD + offs_m, rstd, mask=m_ok)


@triton.jit
def _linear_residual_tile(X, W, BIAS, RES, offs_m, offs_n, M, N, K, stride_xm, stride_wn, stride_rm,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr):
    """The fp32 tile of z = x W^T + b + r at rows offs_m, columns offs_n (zero past M and N)."""
    n_ok = offs_n < N
    z = matmul_tile(X, W, offs_m, offs_n, M, N, K, stride_xm, stride_wn, BLOCK_M, BLOCK_N, BLOCK_K,
                    DOT_PRECISION, CPU_BF16)
    z += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    z += tl.load(RES + offs_m[:, None] * stride_rm + offs_n[None, :], mask=(offs_m < M)[:, None] & n_ok[None, :],
                 other=0.0).to(tl.float32)
    return z


@triton.jit(do_not_specialize=["M"])
def _linear_residual_kernel(
    X, W, BIAS, RES, Z, M, N, K, stride_xm, stride_wn, stride_rm, stride_zm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    z = _linear_residual_tile(X, W, BIAS, RES, offs_m, offs_n, M, N, K, stride_xm, stride_wn, stride_rm,
                              BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION, CPU_BF16)
    tl.store(Z + offs_m[:, None] * stride_zm + offs_n[None, :], z, mask=(offs_m < M)[:, None] & (offs_n < N)[None, :])


@triton.jit(do_not_specialize=["M"])
def _layernorm_kernel(Z, LN_W, LN_B, Y, MEAN, RSTD, M, N, eps, stride_zm, stride_ym,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STORE_STATS: tl.constexpr, CPU_BF16: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    ok = m_ok[:, None] & n_ok[None, :]
    z = tl.load(Z + offs_m[:, None] * stride_zm + offs_n[None, :], mask=ok, other=0.0)
    out, mean, rstd = layernorm_rows(z, offs_n, n_ok, LN_W, LN_B, N, eps)
    tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], cast_to(out, Y.dtype.element_ty, CPU_BF16), mask=ok)
    if STORE_STATS:
        tl.store(MEAN + offs_m, mean, mask=m_ok)
        tl.store(RSTD + offs_m, rstd, mask=m_ok)


def linear_residual_layernorm_config(M, N, dtype, device_type, num_sms=132, split=None):
    """How to run M rows of width N: {"split": False, "fused": launch} or {"split": True, "linear": launch of the
    z tiles, "layernorm": launch of the row pass}, each launch its constexprs and num_warps / num_stages. The one
    place the launcher chooses, so the compile test sweeps exactly what runs. `num_sms` is the GPU's count of
    streaming multiprocessors (an H100's by default); `split` overrides the choice of path."""
    block_n = triton.next_power_of_2(N)
    cpu = device_type == "cpu"
    if split is None:
        # the fused kernel pays when there are rows enough for a program on every SM, and only in half precision
        # with rows of up to 512 columns (32 such fp32 rows, or wider rows, spill their accumulator); the
        # interpreter always fuses (few, large programs)
        split = not cpu and not (dtype != torch.float32 and block_n <= 512 and triton.cdiv(M, 32) >= num_sms)
    if split:
        return {"split": True, "linear": linear_config(M, N, dtype, device_type, num_sms),
                "layernorm": {"BLOCK_M": 64 if cpu else 4, "BLOCK_N": block_n, "num_warps": 4}}
    if cpu:
        return {"split": False, "fused": {"BLOCK_M": min(64, max(16, triton.next_power_of_2(M))), "BLOCK_N": block_n,
                                          "BLOCK_K": 128, "num_warps": 4, "num_stages": 1}}
    return {"split": False, "fused": {"BLOCK_M": 32, "BLOCK_N": block_n, "BLOCK_K": 32, "num_warps": 8,
                                      "num_stages": 3}}


def linear_residual_layernorm(x, weight, bias, residual, ln_weight, ln_bias, eps, return_stats=False, split=None):
    """LayerNorm(x @ W.T + b + residual). x (M, K), W (N, K), b (N,), residual (M, N), LN params (N,) -> (M, N).

    One dtype throughout (float16, bfloat16 or float32), fp32 accumulation and statistics. N <= 4096. With
    `return_stats`, also mean and rstd (M,) fp32. `split` overrides the configuration's choice of path (tests
    run both in the interpreter).
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
        raise ValueError(f"N = {N} > 4096: the LayerNorm pass holds whole rows")
    if x.stride(1) != 1 or weight.stride(1) != 1 or residual.stride(1) != 1:
        raise ValueError("x, W and residual must be contiguous along their last axis")
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    mean = torch.empty((M,), dtype=torch.float32, device=x.device) if return_stats else out
    rstd = torch.empty((M,), dtype=torch.float32, device=x.device) if return_stats else out
    if M == 0:
        return (out, mean, rstd) if return_stats else out
    config = linear_residual_layernorm_config(M, N, x.dtype, x.device.type, sm_count(x.device), split)
    common = {"DOT_PRECISION": "ieee" if x.dtype == torch.float32 else "tf32",
              "CPU_BF16": x.dtype == torch.bfloat16 and x.device.type == "cpu"}
    if config["split"]:
        z = torch.empty((M, N), dtype=torch.float32, device=x.device)
        lin, ln = config["linear"], config["layernorm"]
        _linear_residual_kernel[(triton.cdiv(M, lin["BLOCK_M"]) * triton.cdiv(N, lin["BLOCK_N"]),)](
            x, weight, bias, residual, z, M, N, K, x.stride(0), weight.stride(0), residual.stride(0), z.stride(0),
            **common, **lin)
        _layernorm_kernel[(triton.cdiv(M, ln["BLOCK_M"]),)](
            z, ln_weight, ln_bias, out, mean, rstd, M, N, float(eps), z.stride(0), out.stride(0),
            STORE_STATS=return_stats, CPU_BF16=common["CPU_BF16"], **ln)
    else:
        fused = config["fused"]
        _linear_residual_layernorm_kernel[(triton.cdiv(M, fused["BLOCK_M"]),)](
            x, weight, bias, residual, ln_weight, ln_bias, out, mean, rstd, M, N, K, float(eps),
            x.stride(0), weight.stride(0), residual.stride(0), out.stride(0), STORE_STATS=return_stats,
            **common, **fused)
    return (out, mean, rstd) if return_stats else out
