"""kernels/pool_normalize.py against npminilm's pooling and L2 normalisation."""

import numpy as np
import pytest
import torch

from npminilm.encoder.pooling import pool_forward
from npminilm.kernels.pool_normalize import pool_normalize
from npminilm.nn.ops import l2_normalize_forward
from tests.helpers import assert_close
from tests.kernels import DEVICE, DTYPES, f64, randn

LENGTHS = [[1], [3, 1, 70], [17, 5, 64, 2]]  # length 1, lengths off the 64-row interpreter block, several blocks


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
