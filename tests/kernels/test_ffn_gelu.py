"""kernels/ffn_gelu.py against npminilm.nn.ops (linear, GELU)."""

import numpy as np
import pytest
import torch

from npminilm.kernels.ffn_gelu import linear_gelu
from npminilm.kernels.linear_residual_layernorm import linear_residual_layernorm
from npminilm.nn.ops import gelu_forward, linear_forward
from tests.helpers import assert_close
from tests.kernels import DEVICE, DTYPES, f64, randn

# (M, K, N): one row, sizes off every block (prime M, K not a multiple of BLOCK_K), MiniLM's 384 -> 1536
SHAPES = [(1, 8, 16), (37, 100, 72), (131, 67, 200), (29, 384, 1536)]


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


def test_shape_errors():
    x, w, b = torch.zeros(3, 4, device=DEVICE), torch.zeros(5, 6, device=DEVICE), torch.zeros(5, device=DEVICE)
    with pytest.raises(ValueError, match="do not chain"):
        linear_gelu(x, w, b)
    with pytest.raises(ValueError, match="do not chain"):
        linear_residual_layernorm(x, w, b, torch.zeros(3, 5, device=DEVICE), b, b, 1e-12)
    with pytest.raises(ValueError, match="share one"):
        linear_gelu(x.double(), torch.zeros(5, 4, device=DEVICE), b)
