"""Sentence pooling over packed sequences (mean, CLS, max, mean/sqrt(len)) and the L2 normalisation, fused."""

import torch
import triton
import triton.language as tl

MODES = {"mean": 0, "cls": 1, "max": 2, "mean_sqrt_len_tokens": 3}


# Sequence b is rows cu_seqlens[b] .. cu_seqlens[b + 1] of h (N, C), n_b = its length:
#   mean: y = sum_t h_t / n_b      mean_sqrt_len_tokens: y = sum_t h_t / sqrt(n_b)
#   cls:  y = h_{cu_seqlens[b]}    max: y_c = max_t h_tc
#   NORMALIZE: y <- y / max(||y||_2, 1e-12)        (torch.nn.functional.normalize)
# One program per sequence walks its rows BLOCK_T at a time, accumulating in fp32; no padding exists to skip.
# The result goes to out[b, col0 : col0 + C] (fp32), so several modes can fill one concatenated row.
@triton.jit
def _pool_normalize_kernel(
    H, CU_SEQLENS, OUT, C, stride_hm, stride_ob, col0,
    MODE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0)
    start = tl.load(CU_SEQLENS + b)
    n = tl.load(CU_SEQLENS + b + 1) - start
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    if MODE == 1:
        y = tl.load(H + start * stride_hm + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    else:
        offs_t = tl.arange(0, BLOCK_T)
        if MODE == 2:
            acc = tl.full([BLOCK_T, BLOCK_C], float("-inf"), tl.float32)
        else:
            acc = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
        for t0 in range(0, n, BLOCK_T):
            rows = t0 + offs_t
            ok = (rows < n)[:, None] & c_ok[None, :]
            if MODE == 2:
                h = tl.load(H + (start + rows)[:, None] * stride_hm + offs_c[None, :], mask=ok,
                            other=float("-inf")).to(tl.float32)
                acc = tl.maximum(acc, h)
            else:
                h = tl.load(H + (start + rows)[:, None] * stride_hm + offs_c[None, :], mask=ok,
                            other=0.0).to(tl.float32)
                acc += h
        if MODE == 2:
            y = tl.max(acc, 0)
            y = tl.where(c_ok, y, 0.0)
        else:
            y = tl.sum(acc, 0)
            count = tl.maximum(n.to(tl.float32), 1e-9)
            if MODE == 3:
                y = y / tl.sqrt(count)
            else:
                y = y / count
    if NORMALIZE:
        y = y / tl.maximum(tl.sqrt(tl.sum(y * y, 0)), 1e-12)
    tl.store(OUT + b * stride_ob + col0 + offs_c, y, mask=c_ok)


# y (B, D) -> y / max(||y||, 1e-12) per row: only for several pooling modes concatenated (one mode fuses it)
@triton.jit
def _l2_normalize_kernel(Y, D, stride_b, BLOCK_D: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    ok = offs < D
    y = tl.load(Y + b * stride_b + offs, mask=ok, other=0.0)
    y = y / tl.maximum(tl.sqrt(tl.sum(y * y, 0)), 1e-12)
    tl.store(Y + b * stride_b + offs, y, mask=ok)


def pool_normalize(h, cu_seqlens, modes=("mean",), normalize=True, max_seqlen=None):
    """Sentence embeddings of packed token states. h (N, C) (row stride free), cu_seqlens (B + 1,) ->
    (B, len(modes) * C) float32, the modes concatenated in the given order, then L2-normalised if asked."""
    if h.ndim != 2 or h.stride(1) != 1:
        raise ValueError(f"h must be (N, C), contiguous along C, got {tuple(h.shape)}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"pooling modes must be among {list(MODES)}, got {list(modes)}")
    B = cu_seqlens.numel() - 1
    C = h.shape[1]
    cu = cu_seqlens.to(device=h.device, dtype=torch.int32)
    out = torch.empty((B, len(modes) * C), dtype=torch.float32, device=h.device)
    if B == 0:
        return out
    fused = normalize and len(modes) == 1
    config = pool_normalize_config(C, h.device.type)
    for j, mode in enumerate(modes):
        _pool_normalize_kernel[(B,)](h, cu, out, C, h.stride(0), out.stride(0), j * C,
                                     MODE=MODES[mode], NORMALIZE=fused, **config)
    if normalize and not fused:
        _l2_normalize_kernel[(B,)](out, out.shape[1], out.stride(0), BLOCK_D=triton.next_power_of_2(out.shape[1]),
                                   num_warps=4)
    return out


def pool_normalize_config(C, device_type):
    """{BLOCK_T, BLOCK_C, num_warps}: rows a step and the row width of one sequence's program (the one place the
    launcher chooses). On a GPU a step holds 8K values, 16 rows of MiniLM's 384 (padded to 512)."""
    block_c = triton.next_power_of_2(C)
    if device_type == "cpu":
        return {"BLOCK_T": 64, "BLOCK_C": block_c, "num_warps": 4}
    return {"BLOCK_T": max(1, min(16, 8192 // block_c)), "BLOCK_C": block_c, "num_warps": 4}
