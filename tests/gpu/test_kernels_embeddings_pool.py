"""kernels/embeddings_layernorm.py and kernels/pool_normalize.py against npminilm's embeddings and pooling."""

import numpy as np
import pytest
import torch

from kernels.embeddings_layernorm import embeddings_layernorm
from kernels.pool_normalize import pool_normalize
from npminilm.ops import l2_normalize_forward, layernorm_forward
from npminilm.pooling import pool_forward
from tests.gpu import DEVICE, DTYPES, f64, randn
from tests.helpers import assert_close

LENGTHS = [[1], [3, 1, 70], [17, 5, 64, 2]]  # length 1, lengths off the 64-row interpreter block, several blocks


def _ints(values):
    return torch.tensor(np.asarray(values), dtype=torch.int64, device=DEVICE)


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("lens, C", [([1], 8), ([3, 1, 70], 384), ([17, 5, 66], 45)])
def test_embeddings_layernorm(lens, C, dtype, atol, rtol):
    rng = np.random.default_rng(C)
    V, P, TY = 97, 80, 2
    word, pos, typ = randn(rng, (V, C), dtype), randn(rng, (P, C), dtype), randn(rng, (TY, C), dtype)
    g, beta = randn(rng, (C,), dtype, 0.2) + 1, randn(rng, (C,), dtype, 0.1)
    ids = rng.integers(0, V, sum(lens))
    positions = np.concatenate([np.arange(n) for n in lens])  # packed: each sequence restarts at 0
    types = rng.integers(0, TY, sum(lens))
    y = embeddings_layernorm(_ints(ids), _ints(positions), _ints(types), word, pos, typ, g, beta, 1e-12)
    e = f64(word)[ids] + f64(pos)[positions] + f64(typ)[types]
    ref, _ = layernorm_forward(e, f64(g), f64(beta), 1e-12)
    assert_close(f64(y), ref, atol, rtol, name=f"embeddings_layernorm {dtype}")


def _padded(h, lens):
    """Packed (N, C) -> padded (B, T, C) with a right-padding mask, for the NumPy pooling."""
    T, C = max(lens), h.shape[1]
    out, mask, start = np.zeros((len(lens), T, C)), np.zeros((len(lens), T), np.int64), 0
    for b, n in enumerate(lens):
        out[b, :n], mask[b, :n] = h[start:start + n], 1
        start += n
    return out, mask


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("lens", LENGTHS)
@pytest.mark.parametrize("modes, normalize", [(("mean",), True), (("cls",), True), (("max",), False),
                                              (("mean_sqrt_len_tokens",), False), (("cls", "mean", "max"), True)])
def test_pool_normalize(lens, modes, normalize, dtype, atol, rtol):
    rng = np.random.default_rng(len(lens))
    C = 45
    h = randn(rng, (sum(lens), C), dtype)
    cu = torch.tensor(np.cumsum([0] + lens), dtype=torch.int32, device=DEVICE)
    y = pool_normalize(h, cu, modes, normalize)
    assert y.dtype == torch.float32 and y.shape == (len(lens), len(modes) * C)
    padded, mask = _padded(f64(h), lens)
    ref, _ = pool_forward(padded, mask, list(modes))
    if normalize:
        ref, _ = l2_normalize_forward(ref)
    assert_close(f64(y), ref, 1e-5, 1e-5, name=f"pool {modes}")  # fp32 accumulation of exact inputs


def test_zero_vector_stays_zero():
    h = torch.zeros(3, 8, device=DEVICE)
    y = pool_normalize(h, torch.tensor([0, 1, 3], device=DEVICE), ("mean",), True)
    assert not torch.isnan(y).any() and float(y.abs().max()) == 0.0
