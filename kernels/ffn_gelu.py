"""GEMM + bias + exact-erf GELU in one kernel (the FFN up-projection); with the GELU off, a plain linear (QKV)."""

import torch
import triton
import triton.language as tl

from .dot import cast_to, matmul_tile


# x (M, K), W (N, K) stored [out, in] as in HF checkpoints, b (N,):
#   y = x W^T + b                                  (accumulated in fp32, one BLOCK_M x BLOCK_N tile a program)
#   out = GELU(y) = 0.5 y (1 + erf(y / sqrt 2))    (exact erf, HF's "gelu"; skipped when APPLY_GELU is off)
# W^T is read through strides, never transposed in memory. Program tiles are grouped GROUP_M rows of tiles at
# a time so neighbouring programs reuse the same W columns from L2.
@triton.jit
def _linear_gelu_kernel(
    X, W, BIAS, Y, M, N, K,
    stride_xm, stride_wn, stride_ym,
    APPLY_GELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr,
):
    pid = tl.program_id(0)
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * n_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * n_n)) % group_size
    pid_n = (pid % (GROUP_M * n_n)) // group_size

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


def _blocks(device):
    # the interpreter pays per program and per op, not per flop: fewer, larger tiles there
    return (64, 256, 128, 4) if device.type == "cpu" else (64, 64, 32, 4)


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
    bm, bn, bk, group = _blocks(x.device)
    bm = min(bm, max(16, triton.next_power_of_2(M)))
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _linear_gelu_kernel[grid](
        x, weight, bias, out, M, N, K, x.stride(0), weight.stride(0), out.stride(0),
        APPLY_GELU=bool(gelu), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        CPU_BF16=x.dtype == torch.bfloat16 and x.device.type == "cpu",
    )
    return out
