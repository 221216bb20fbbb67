"""GEMM + bias + exact-erf GELU in one kernel (the FFN up-projection); with the GELU off, a plain linear (QKV)."""

import functools

import torch
import triton
import triton.language as tl

from .dot import cast_to, grouped_tile, matmul_tile


# x (M, K), W (N, K) stored [out, in] as in HF checkpoints, b (N,):
#   y = x W^T + b                                  (accumulated in fp32, one BLOCK_M x BLOCK_N tile a program)
#   out = GELU(y) = 0.5 y (1 + erf(y / sqrt 2))    (exact erf, HF's "gelu"; skipped when APPLY_GELU is off)
# W^T is read through strides, never transposed in memory; tiles are ordered by `grouped_tile`.
@triton.jit(do_not_specialize=["M"])
def _linear_gelu_kernel(
    X, W, BIAS, Y, M, N, K,
    stride_xm, stride_wn, stride_ym,
    APPLY_GELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = matmul_tile(X, W, offs_m, offs_n, M, N, K, stride_xm, stride_wn, BLOCK_M, BLOCK_N, BLOCK_K,
                      DOT_PRECISION, CPU_BF16)
    acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if APPLY_GELU:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], cast_to(acc, Y.dtype.element_ty, CPU_BF16),
             mask=m_ok[:, None] & n_ok[None, :])


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) by storage dtype and size: a batch of a few sentences takes
# 16-row tiles (mma.sync); 64-row and larger tiles let sm_90 use wgmma, and 128 x 128 tiles are taken only when
# there are enough of them for every SM. fp32 (no tensor cores, ieee dots) keeps 32-deep K steps.
GEMM_TILES = {
    "half": {"few_rows": (16, 64, 64, 4, 3), "medium": (64, 64, 64, 4, 3), "large": (128, 128, 64, 8, 3)},
    "float32": {"few_rows": (16, 64, 32, 4, 3), "medium": (64, 64, 32, 4, 3), "large": (64, 64, 32, 4, 3)},
}


def linear_config(M, N, dtype, device_type, num_sms=132):
    """{BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages} for an (M, N) output: the one place the
    launcher (and linear_residual_layernorm's split path) chooses, so the compile test sweeps exactly what runs.
    `num_sms` is the GPU's count of streaming multiprocessors (an H100's by default)."""
    if device_type == "cpu":  # the interpreter pays per program and per op, not per flop: fewer, larger tiles
        return {"BLOCK_M": min(64, max(16, triton.next_power_of_2(M))), "BLOCK_N": 256, "BLOCK_K": 128,
                "GROUP_M": 4, "num_warps": 4, "num_stages": 1}
    size = "few_rows" if M <= 16 else "large" if triton.cdiv(M, 128) * triton.cdiv(N, 128) >= num_sms else "medium"
    bm, bn, bk, warps, stages = GEMM_TILES["float32" if dtype == torch.float32 else "half"][size]
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": warps, "num_stages": stages}


@functools.cache
def _sms_of(index):
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device):
    """Streaming multiprocessors of a CUDA device; an H100's 132 for any other device (the compile test's meta)."""
    if device.type != "cuda":
        return 132
    return _sms_of(torch.cuda.current_device() if device.index is None else device.index)


def linear_gelu(x, weight, bias, gelu=True, out=None):
    """GELU(x @ W.T + b) (or x @ W.T + b with gelu=False). x (M, K) (row stride free), W (N, K), b (N,) -> (M, N).

    Everything in one dtype (float16, bfloat16 or float32); fp32 accumulation; fp32 inputs are not rounded
    to tf32 on the GPU.
    """
    if x.ndim != 2 or weight.ndim != 2 or bias.ndim != 1:
        raise ValueError(f"expected x (M, K), W (N, K), b (N,), got {tuple(x.shape)} {tuple(weight.shape)} "
                         f"{tuple(bias.shape)}")
    M, K = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K or bias.shape[0] != N:
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, W {tuple(weight.shape)}, b {tuple(bias.shape)}")
    if not (x.dtype == weight.dtype == bias.dtype) or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x, W, b must share one of float16, bfloat16, float32: {x.dtype} {weight.dtype} {bias.dtype}")
    if x.stride(1) != 1 or weight.stride(1) != 1 or not bias.is_contiguous():
        raise ValueError("x and W must be contiguous along K, b contiguous")
    if out is None:
        out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    config = linear_config(M, N, x.dtype, x.device.type, sm_count(x.device))
    grid = (triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]),)
    _linear_gelu_kernel[grid](
        x, weight, bias, out, M, N, K, x.stride(0), weight.stride(0), out.stride(0), APPLY_GELU=bool(gelu),
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        CPU_BF16=x.dtype == torch.bfloat16 and x.device.type == "cpu", **config,
    )
    return out
