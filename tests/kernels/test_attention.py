"""kernels/attention.py against npminilm.nn.ops.attention_forward: packed and padded batches, causal, all dtypes."""

import math

import numpy as np
import pytest
import torch

from npminilm.kernels.attention import attention
from npminilm.nn.ops import attention_forward
from tests.kernels import DEVICE, DTYPES, f64, randn
from tests.helpers import assert_close, make_mask

# (sequence lengths, heads, head size): length 1, lengths off the 16-row block, one spanning several blocks
PACKED = [([1], 2, 32), ([5, 1, 33], 2, 32), ([17, 40, 3], 1, 64), ([9, 2], 4, 16)]


def _reference_packed(q, k, v, lens, n_head, causal):
    out, start = [], 0
    for n in lens:
        sl = slice(start, start + n)
        o, _ = attention_forward(f64(q[sl])[None], f64(k[sl])[None], f64(v[sl])[None], n_head, causal=causal)
        out.append(o[0])
        start += n
    return np.concatenate(out)


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("lens, n_head, hs", PACKED)
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_packed(lens, n_head, hs, causal, dtype, atol, rtol):
    rng = np.random.default_rng(len(lens) * 7 + hs)
    C = n_head * hs
    qkv = randn(rng, (sum(lens), 3 * C), dtype)  # q, k, v as strided views of one fused tensor
    q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
    cu = torch.tensor(np.cumsum([0] + lens), dtype=torch.int32, device=DEVICE)
    o = attention(q, k, v, n_head, cu_seqlens=cu, max_seqlen=max(lens), causal=causal, block_m=16, block_n=16)
    assert o.dtype == q.dtype and o.shape == q.shape
    assert_close(f64(o), _reference_packed(q, k, v, lens, n_head, causal), atol, rtol, name="packed attention")


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("kind, causal", [("right", False), ("left", False), ("random", False), ("one", False),
                                          ("empty_row", False), ("full", True), ("right", True)])
def test_padded(kind, causal, dtype, atol, rtol):
    rng = np.random.default_rng(3)
    B, T, n_head, hs = 3, 23, 2, 32
    mask = make_mask(kind, B, T, rng)
    if causal:
        mask[:, 0] = 1  # query 0 sees key 0 only: it must be real (see the kernel's note on empty rows)
    qkv = randn(rng, (B, T, 3 * n_head * hs), dtype)
    C = n_head * hs
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    o = attention(q, k, v, n_head, key_padding_mask=torch.from_numpy(mask).to(DEVICE), causal=causal,
                  block_m=16, block_n=16)
    ref, _ = attention_forward(f64(q), f64(k), f64(v), n_head, mask=mask, causal=causal)
    assert_close(f64(o), ref, atol, rtol, name=f"padded attention ({kind})")


def test_lse_and_default_blocks():
    """The row log-sum-exp (what a backward needs) and the launcher's own block choice, fp32."""
    rng = np.random.default_rng(5)
    lens, n_head, hs = [70, 1, 6], 2, 32
    C = n_head * hs
    q, k, v = (randn(rng, (sum(lens), C), "float32") for _ in range(3))
    cu = torch.tensor(np.cumsum([0] + lens), dtype=torch.int32, device=DEVICE)
    o, lse = attention(q, k, v, n_head, cu_seqlens=cu, return_lse=True)
    assert_close(f64(o), _reference_packed(q, k, v, lens, n_head, False), 2e-5, 1e-5, name="o")
    start, ref = 0, []
    for n in lens:
        qh = f64(q[start:start + n]).reshape(n, n_head, hs).transpose(1, 0, 2)
        kh = f64(k[start:start + n]).reshape(n, n_head, hs).transpose(1, 0, 2)
        s = qh @ kh.transpose(0, 2, 1) / math.sqrt(hs)  # (NH, n, n)
        mx = s.max(-1, keepdims=True)
        ref.append((mx + np.log(np.exp(s - mx).sum(-1, keepdims=True)))[..., 0].T)  # (n, NH)
        start += n
    assert_close(f64(lse), np.concatenate(ref), 2e-5, 1e-5, name="lse")


def test_bad_shapes():
    q = torch.zeros(4, 64, device=DEVICE)
    with pytest.raises(ValueError, match="not a multiple"):
        attention(q, q, q, 5, cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="power of two"):
        attention(torch.zeros(4, 48), torch.zeros(4, 48), torch.zeros(4, 48), 2, cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="shapes differ"):
        attention(q, q[:, :32], q, 2, cu_seqlens=torch.tensor([0, 4]))
