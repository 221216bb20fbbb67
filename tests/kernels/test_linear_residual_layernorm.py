"""kernels/linear_residual_layernorm.py against npminilm.nn.ops (linear, residual add, LayerNorm)."""

import numpy as np
import pytest
import torch

from npminilm.kernels.linear_residual_layernorm import linear_residual_layernorm
from npminilm.nn.ops import layernorm_forward, linear_forward
from tests.helpers import assert_close
from tests.kernels import DTYPES, f64, randn

LN_SHAPES = [(1, 16, 8), (37, 100, 72), (131, 300, 45), (29, 1536, 384)]


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("M, K, N", LN_SHAPES)
def test_linear_residual_layernorm(M, K, N, dtype, atol, rtol):
    rng = np.random.default_rng(M * K + N)
    x, r = randn(rng, (M, K), dtype), randn(rng, (M, N), dtype)
    w, b = randn(rng, (N, K), dtype, K ** -0.5), randn(rng, (N,), dtype)
    g, beta = randn(rng, (N,), dtype, 0.2) + 1, randn(rng, (N,), dtype, 0.1)
    y, mean, rstd = linear_residual_layernorm(x, w, b, r, g, beta, 1e-12, return_stats=True)
    z, _ = linear_forward(f64(x), f64(w), f64(b))
    ref, (_, _, ref_rstd, _) = layernorm_forward(z + f64(r), f64(g), f64(beta), 1e-12)
    ref_mean = (z + f64(r)).mean(axis=1)
    scale = 1.0 if x.dtype == torch.float32 else 2.0
    assert_close(f64(y), ref, atol * scale, rtol, name=f"linear_residual_layernorm {dtype}")
    assert_close(f64(mean), ref_mean, 1e-5, 1e-4, name="mean")
    assert_close(f64(rstd), ref_rstd[:, 0], 1e-5, 1e-4, name="rstd")
