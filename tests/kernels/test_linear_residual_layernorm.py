"""kernels/linear_residual_layernorm.py, both paths (fused, split), against npminilm.nn.ops (linear, residual
add, LayerNorm)."""

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
@pytest.mark.parametrize("split", [False, True], ids=["fused", "split"])
def test_linear_residual_layernorm(M, K, N, dtype, atol, rtol, split):
    rng = np.random.default_rng(M * K + N)
    x, r = randn(rng, (M, K), dtype), randn(rng, (M, N), dtype)
    w, b = randn(rng, (N, K), dtype, K ** -0.5), randn(rng, (N,), dtype)
    g, beta = randn(rng, (N,), dtype, 0.2) + 1, randn(rng, (N,), dtype, 0.1)
    y, mean, rstd = linear_residual_layernorm(x, w, b, r, g, beta, 1e-12, return_stats=True, split=split)
    z, _ = linear_forward(f64(x), f64(w), f64(b))
    ref, (_, _, ref_rstd, _) = layernorm_forward(z + f64(r), f64(g), f64(beta), 1e-12)
    ref_mean = (z + f64(r)).mean(axis=1)
    scale = 1.0 if x.dtype == torch.float32 else 2.0
    assert_close(f64(y), ref, atol * scale, rtol, name=f"linear_residual_layernorm {dtype}")
    assert_close(f64(mean), ref_mean, 1e-5, 1e-4, name="mean")
    assert_close(f64(rstd), ref_rstd[:, 0], 1e-5, 1e-4, name="rstd")


def test_the_split_path_is_chosen_when_rows_cannot_fill_the_gpu():
    from npminilm.kernels.linear_residual_layernorm import linear_residual_layernorm_config as config

    assert config(800, 384, torch.float16, "cuda", num_sms=132)["split"]  # 32 sentences: 25 fused programs
    assert not config(16384, 384, torch.float16, "cuda", num_sms=132)["split"]  # 512 fused programs
    assert config(16384, 768, torch.bfloat16, "cuda", num_sms=132)["split"]  # 1024-wide rows would spill
    assert config(16384, 384, torch.float32, "cuda", num_sms=132)["split"]
    assert not config(800, 384, torch.float16, "cpu")["split"]  # the interpreter fuses
    lin = config(800, 384, torch.float16, "cuda", num_sms=132)["linear"]
    assert -(-800 // lin["BLOCK_M"]) * (384 // lin["BLOCK_N"]) >= 66  # the split grid: half the SMs or more
