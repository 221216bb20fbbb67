"""Flash attention forward: online softmax over key blocks, packed (cu_seqlens) or padded (key mask) batches."""

import math

import torch
import triton
import triton.language as tl

from .dot import cast_to, dot_acc

LOG2E = 1.4426950408889634
# what npminilm.nn.ops.attention_forward writes into disallowed scores. A global read inside a @triton.jit function
# must be a constexpr: the interpreter takes a plain float, the GPU compiler rejects it.
FLOAT32_LOWEST: tl.constexpr = tl.constexpr(-3.4028234663852886e38)


# For one sequence of length T, one head, queries i and keys j (hs = head size, s = 1/sqrt(hs)):
#   S_ij = s q_i . k_j                     (disallowed j: the float32 lowest value, as the NumPy reference does)
#   m_i = max_j S_ij,  l_i = sum_j exp(S_ij - m_i),  o_i = sum_j exp(S_ij - m_i) v_j / l_i,  lse_i = m_i + log l_i
# computed a block of BLOCK_N keys at a time without the T x T matrix: with m' = max(m, max_j S_ij) over the
# new block, l <- l exp(m - m') + sum_j exp(S_ij - m'), acc <- acc exp(m - m') + sum_j exp(S_ij - m') v_j.
# Scores are kept in base 2 (S log2 e) so every exponential is an exp2. Keys past the sequence end are -inf
# (they are not part of it); a disallowed key (padding, or j > i with `causal`) gets the lowest finite value,
# so a row whose every visited key is disallowed averages them uniformly instead of producing NaN.
# Layout: row r of a (rows, NH * hs) tensor holds token r; head h is the column slice [h hs, (h + 1) hs).
# Packed (VARLEN): sequence b is rows cu_seqlens[b] .. cu_seqlens[b + 1], no row of padding is ever read.
# Padded: sequence b is rows b T .. b T + T, and key_mask[b, j] == 0 marks padding keys.
@triton.jit(do_not_specialize=["stride_mb", "T"])  # one compile for every sequence length
def _attention_fwd_kernel(
    Q, K, V, O, LSE, CU_SEQLENS, KEY_MASK,
    stride_qb, stride_qt, stride_kb, stride_kt, stride_vb, stride_vt, stride_ob, stride_ot, stride_mb,
    T, NH, HS, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    VARLEN: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // NH
    h = pid_bh % NH
    if VARLEN:
        start = tl.load(CU_SEQLENS + b)
        seqlen = tl.load(CU_SEQLENS + b + 1) - start
        q_base = start * stride_qt
        k_base = start * stride_kt
        v_base = start * stride_vt
        o_base = start * stride_ot
    else:
        seqlen = T
        q_base = b * stride_qb
        k_base = b * stride_kb
        v_base = b * stride_vb
        o_base = b * stride_ob
    m0 = pid_m * BLOCK_M
    if m0 < seqlen:  # query blocks past this sequence's end do nothing
        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HS
        q = tl.load(Q + q_base + offs_m[:, None] * stride_qt + h * HS + offs_d[None, :],
                    mask=(offs_m[:, None] < seqlen) & d_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        hi = seqlen
        if CAUSAL:
            hi = tl.minimum(seqlen, m0 + BLOCK_M)  # later key blocks are entirely in the future
        for n0 in range(0, hi, BLOCK_N):  # the first block holds key 0, so m_i is finite after it
            cols = n0 + offs_n
            in_seq = cols < seqlen
            k = tl.load(K + k_base + cols[None, :] * stride_kt + h * HS + offs_d[:, None],
                        mask=in_seq[None, :] & d_ok[:, None], other=0.0)  # (BLOCK_D, BLOCK_N)
            s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            s = dot_acc(q, k, s, DOT_PRECISION, CPU_BF16) * qk_scale  # (BLOCK_M, BLOCK_N), base 2
            if HAS_MASK:
                key_ok = tl.load(KEY_MASK + b * stride_mb + cols, mask=in_seq, other=0)
                s = tl.where(key_ok[None, :] != 0, s, FLOAT32_LOWEST)
            if CAUSAL:
                s = tl.where(cols[None, :] <= offs_m[:, None], s, FLOAT32_LOWEST)
            s = tl.where(in_seq[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + v_base + cols[:, None] * stride_vt + h * HS + offs_d[None, :],
                        mask=in_seq[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_D)
            acc = dot_acc(cast_to(p, v.dtype, CPU_BF16), v, acc * alpha[:, None], DOT_PRECISION, CPU_BF16)
            m_i = m_new
        acc = acc / l_i[:, None]
        row_ok = offs_m < seqlen
        tl.store(O + o_base + offs_m[:, None] * stride_ot + h * HS + offs_d[None, :],
                 cast_to(acc, O.dtype.element_ty, CPU_BF16), mask=row_ok[:, None] & d_ok[None, :])
        if STORE_LSE:  # natural-log log-sum-exp per (token, head): what a backward pass needs besides o
            lse = (m_i + tl.log2(l_i)) / 1.4426950408889634
            if VARLEN:
                lse_rows = start + offs_m
            else:
                lse_rows = b * T + offs_m
            tl.store(LSE + lse_rows * NH + h, lse, mask=row_ok)


# (longest sequence of the class, (BLOCK_M, BLOCK_N, num_warps, num_stages)), by storage dtype. Short sequences
# take small tiles (a 16-token sentence in a 64-row tile is three quarters padding); 64-row tiles from 33 tokens
# on let sm_90 use wgmma. Each entry is the one of the candidates compiled (tools/kernel_compile.py) that spills no
# register on sm_80 or sm_90 at head sizes 32 and 64, packed or padded, causal or not: 32-row tiles with 2 warps
# and 64-row tiles with 4 spill in some of those.
ATTENTION_TILES = {
    "half": ((16, (16, 16, 1, 2)), (32, (32, 32, 4, 2)), (None, (64, 64, 8, 2))),
    "float32": ((None, (64, 32, 8, 1)),),  # ieee fp32 dots: smaller tiles, fewer warps or more stages spill
}


def attention_config(T, dtype, device_type):
    """The launch for sequences of up to T tokens: {BLOCK_M, BLOCK_N, num_warps, num_stages}. The one place the
    launcher chooses, so the compile test sweeps exactly what runs."""
    if device_type == "cpu":  # the interpreter pays per program and per op, not per flop: one tile up to 64 rows
        block = min(64, max(16, triton.next_power_of_2(T)))
        return {"BLOCK_M": block, "BLOCK_N": block, "num_warps": 4, "num_stages": 1}
    for longest, (block_m, block_n, warps, stages) in ATTENTION_TILES["float32" if dtype == torch.float32 else "half"]:
        if longest is None or T <= longest:
            return {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": warps, "num_stages": stages}


def _dot_precision(dtype):
    # fp32 inputs must not be rounded to tf32 on the GPU: the fp32 engine matches NumPy to 1e-4
    return "ieee" if dtype == torch.float32 else "tf32"


def _cpu_bf16(x):
    return x.dtype == torch.bfloat16 and x.device.type == "cpu"  # CPU tensors mean the interpreter


def attention(q, k, v, n_head, cu_seqlens=None, max_seqlen=None, key_padding_mask=None, causal=False,
              return_lse=False, block_m=None, block_n=None):
    """Multi-head scaled dot-product attention, fp32 accumulation, output in q's dtype.

    Packed: q, k, v (N, C) with row stride free (views into a fused QKV tensor work), cu_seqlens (B + 1,) int
    with cu_seqlens[0] = 0 and cu_seqlens[-1] <= N, max_seqlen = the longest sequence -> o (N, C).
    Padded: q, k, v (B, T, C), key_padding_mask (B, T) (nonzero = real token) or None -> o (B, T, C).
    `causal` lets query i see keys j <= i only. With `return_lse`, also the row log-sum-exp (rows, NH) fp32.
    """
    varlen = cu_seqlens is not None
    if varlen:
        if q.ndim != 2 or key_padding_mask is not None:
            raise ValueError("packed attention takes (N, C) q, k, v and no key_padding_mask")
        B = cu_seqlens.numel() - 1
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if B > 0 else 0
        T = max_seqlen
    else:
        if q.ndim != 3:
            raise ValueError(f"padded attention takes (B, T, C) q, k, v, got {tuple(q.shape)}")
        B, T = q.shape[0], q.shape[1]
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, T):
            raise ValueError(f"key_padding_mask {tuple(key_padding_mask.shape)} != (B, T) = {(B, T)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v shapes differ: {tuple(q.shape)} {tuple(k.shape)} {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one of float16, bfloat16, float32, got {q.dtype} {k.dtype} {v.dtype}")
    C = q.shape[-1]
    if C % n_head:
        raise ValueError(f"hidden size {C} is not a multiple of {n_head} heads")
    hs = C // n_head
    if hs > 128 or hs & (hs - 1):
        raise ValueError(f"head size {hs} must be a power of two <= 128")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous along the hidden axis")

    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    rows = q.shape[0] if varlen else B * T
    lse = torch.empty((rows, n_head), dtype=torch.float32, device=q.device) if return_lse else o
    if B == 0 or T == 0:
        return (o, lse) if return_lse else o
    config = attention_config(T, q.dtype, q.device.type)
    if block_m or block_n:  # tests pin tiles to exercise several key blocks on short sequences
        config = {**config, "BLOCK_M": block_m or config["BLOCK_M"], "BLOCK_N": block_n or config["BLOCK_N"]}
    if varlen:
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        sb = (0, 0, 0, 0)
    else:
        cu = o  # unused
        sb = (q.stride(0), k.stride(0), v.stride(0), o.stride(0))
    mask = key_padding_mask
    if mask is not None:
        mask = mask.to(device=q.device, dtype=torch.int32).contiguous()
    grid = (triton.cdiv(T, config["BLOCK_M"]), B * n_head)
    _attention_fwd_kernel[grid](
        q, k, v, o, lse, cu, mask if mask is not None else o,
        sb[0], q.stride(-2), sb[1], k.stride(-2), sb[2], v.stride(-2), sb[3], o.stride(-2),
        T if mask is not None else 0,
        T, n_head, hs, LOG2E / math.sqrt(hs),
        BLOCK_D=max(16, triton.next_power_of_2(hs)), VARLEN=varlen, HAS_MASK=mask is not None,
        CAUSAL=bool(causal), STORE_LSE=return_lse, DOT_PRECISION=_dot_precision(q.dtype), CPU_BF16=_cpu_bf16(q),
        **config,
    )
    return (o, lse) if return_lse else o
