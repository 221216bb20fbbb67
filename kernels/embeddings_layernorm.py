"""BERT embeddings: word + position + token-type gather and the embedding LayerNorm, in one kernel."""

import torch
import triton
import triton.language as tl

from .dot import cast_to, layernorm_rows


# For token r with word id w_r, position p_r and type t_r (tables Wd (V, C), P (maxpos, C), Ty (types, C)):
#   e_r = Wd[w_r] + P[p_r] + Ty[t_r]                         (fp32)
#   out_r = (e_r - mean(e_r)) / sqrt(var(e_r) + eps) * g + beta
# One program takes BLOCK_M tokens; a row of C values is gathered from each table, summed and normalised in
# registers. Positions are given per token, so packed sequences restart at 0 without any padding.
@triton.jit(do_not_specialize=["M"])
def _embeddings_layernorm_kernel(
    IDS, POS, TYPES, WORD, POSITION, TYPE, LN_W, LN_B, Y, M, C, eps,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CPU_BF16: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    m_ok = offs_m < M
    c_ok = offs_c < C
    ok = m_ok[:, None] & c_ok[None, :]
    ids = tl.load(IDS + offs_m, mask=m_ok, other=0).to(tl.int64)
    pos = tl.load(POS + offs_m, mask=m_ok, other=0).to(tl.int64)
    typ = tl.load(TYPES + offs_m, mask=m_ok, other=0).to(tl.int64)
    e = tl.load(WORD + ids[:, None] * C + offs_c[None, :], mask=ok, other=0.0).to(tl.float32)
    e += tl.load(POSITION + pos[:, None] * C + offs_c[None, :], mask=ok, other=0.0).to(tl.float32)
    e += tl.load(TYPE + typ[:, None] * C + offs_c[None, :], mask=ok, other=0.0).to(tl.float32)
    out, _, _ = layernorm_rows(e, offs_c, c_ok, LN_W, LN_B, C, eps)
    tl.store(Y + offs_m[:, None] * C + offs_c[None, :], cast_to(out, Y.dtype.element_ty, CPU_BF16), mask=ok)


def embeddings_layernorm(input_ids, position_ids, token_type_ids, word, position, token_type, ln_weight, ln_bias,
                         eps):
    """LayerNorm(word[ids] + position[pos] + token_type[types]). Index tensors (M,) int; tables (rows, C) and
    LayerNorm params (C,) contiguous, one float dtype -> (M, C) in that dtype. Indices are not range-checked
    here: the encoder checks them on the CPU."""
    M = input_ids.numel()
    C = word.shape[1]
    for name, t in (("position_ids", position_ids), ("token_type_ids", token_type_ids)):
        if t.numel() != M:
            raise ValueError(f"{name} has {t.numel()} entries, input_ids has {M}")
    for name, t in (("position", position), ("token_type", token_type)):
        if t.ndim != 2 or t.shape[1] != C or not t.is_contiguous():
            raise ValueError(f"{name} table must be contiguous (rows, {C}), got {tuple(t.shape)}")
    if tuple(ln_weight.shape) != (C,) or tuple(ln_bias.shape) != (C,) or not word.is_contiguous():
        raise ValueError("word table must be contiguous and the LayerNorm params (C,)")
    dtypes = {t.dtype for t in (word, position, token_type, ln_weight, ln_bias)}
    if len(dtypes) != 1 or word.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"tables must share one of float16, bfloat16, float32, got {sorted(map(str, dtypes))}")
    out = torch.empty((M, C), dtype=word.dtype, device=word.device)
    if M:
        config = embeddings_layernorm_config(C, word.device.type)
        _embeddings_layernorm_kernel[(triton.cdiv(M, config["BLOCK_M"]),)](
            input_ids.reshape(-1), position_ids.reshape(-1), token_type_ids.reshape(-1), word, position, token_type,
            ln_weight, ln_bias, out, M, C, float(eps),
            CPU_BF16=word.dtype == torch.bfloat16 and word.device.type == "cpu", **config,
        )
    return out


def embeddings_layernorm_config(C, device_type):
    """{BLOCK_M, BLOCK_C, num_warps}: tokens per program, the row width, the launch's warps (the one place the
    launcher chooses). A GPU program takes a few rows, so even one sentence spreads over several SMs."""
    block_c = triton.next_power_of_2(C)
    if device_type == "cpu":  # the interpreter pays per program: many rows each
        return {"BLOCK_M": 64, "BLOCK_C": block_c, "num_warps": 4}
    return {"BLOCK_M": 4, "BLOCK_C": block_c, "num_warps": 4}
