"""kernels/embeddings_layernorm.py against npminilm's embeddings and LayerNorm."""

import numpy as np
import pytest
import torch

from npminilm.kernels.embeddings_layernorm import embeddings_layernorm
from npminilm.nn.ops import layernorm_forward
from tests.helpers import assert_close
from tests.kernels import DEVICE, DTYPES, f64, randn


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
