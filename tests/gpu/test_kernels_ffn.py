"""kernels/ffn_gelu.py and kernels/linear_residual_layernorm.py against npminilm.ops (linear, GELU, LayerNorm)."""

import numpy as np
import pytest
import torch

from kernels.ffn_gelu import linear_gelu
from kernels.linear_residual_layernorm import linear_residual_layernorm
from npminilm.ops import gelu_forward, layernorm_forward, linear_forward
from tests.gpu import DEVICE, DTYPES, f64, randn
from tests.helpers import assert_close

# (M, K, N): one row, sizes off every block (prime M, K not a multiple of BLOCK_K), MiniLM's 384 -> 1536
SHAPES = [(1, 8, 16), (37, 100, 72), (131, 67, 200), (29, 384, 1536)]
LN_SHAPES = [(1, 16, 8), (37, 100, 72), (131, 300, 45), (29, 1536, 384)]


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("M, K, N", SHAPES)
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "linear"])
def test_linear_gelu(M, K, N, gelu, dtype, atol, rtol):
    rng = np.random.default_rng(M + K + N)
    x = randn(rng, (M, 2 * K), dtype)[:, :K]  # a row stride that is not K
    w, b = randn(rng, (N, K), dtype, K ** -0.5), randn(rng, (N,), dtype)
    y = linear_gelu(x, w, b, gelu=gelu)
    ref, _ = linear_forward(f64(x), f64(w), f64(b))
    if gelu:
        ref, _ = gelu_forward(ref)
    scale = 1.0 if x.dtype == torch.float32 else 2.0  # K-long fp32 sums of rounded products
    assert_close(f64(y), ref, atol * scale, rtol, name=f"linear_gelu {dtype}")


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


def test_shape_errors():
    x, w, b = torch.zeros(3, 4, device=DEVICE), torch.zeros(5, 6, device=DEVICE), torch.zeros(5, device=DEVICE)
    with pytest.raises(ValueError, match="do not chain"):
        linear_gelu(x, w, b)
    with pytest.raises(ValueError, match="do not chain"):
        linear_residual_layernorm(x, w, b, torch.zeros(3, 5, device=DEVICE), b, b, 1e-12)
    with pytest.raises(ValueError, match="share one"):
        linear_gelu(x.double(), torch.zeros(5, 4, device=DEVICE), b)
