"""The float32 erf approximation: GELU within 1e-6 of the exact (float64 libm) GELU."""

import math

import numpy as np

from npminilm.nn.ops import erf, gelu_backward, gelu_forward


def exact_gelu(x):
    return np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(np.float64)])


def test_gelu_float32_error_below_1e6():
    rng = np.random.default_rng()
    x = np.concatenate([np.linspace(-12, 12, 200_001), rng.standard_normal(100_000) * 4]).astype(np.float32)
    ours, _ = gelu_forward(x)
    assert ours.dtype == np.float32
    err = np.abs(ours.astype(np.float64) - exact_gelu(x))
    assert err.max() <= 1e-6, f"max GELU error {err.max():.3g} at x={x[err.argmax()]}"


def test_gelu_float32_saved_derivative():
    """Training keeps gelu'(x) from the forward pass; both caches give the same output and (within float32
    rounding) the same gradient as the exact derivative, over several cache blocks and a ragged last one."""
    rng = np.random.default_rng()
    x = (rng.standard_normal((3, 70_001)) * 4).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    out_train, cache_train = gelu_forward(x, save_derivative=True)
    out_infer, cache_infer = gelu_forward(x)
    np.testing.assert_array_equal(out_train, out_infer)
    x64 = x.astype(np.float64)
    exact = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x64.ravel()]).reshape(x.shape)
    exact += x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
    for cache in (cache_train, cache_infer):
        (dx,) = gelu_backward(dout, cache)
        assert dx.dtype == np.float32 and dx.shape == x.shape
        assert np.abs(dx - dout * exact).max() <= 2e-6 * np.abs(dout).max()


def test_erf_float64_is_libm_erf():
    x = np.random.default_rng().standard_normal(5000) * 3
    np.testing.assert_array_equal(erf(x), np.array([math.erf(v) for v in x]))


def test_erf_float32_odd_and_saturating():
    x = np.array([0.0, 1e-8, 0.5, 3.0, 9.0, 50.0, np.inf], np.float32)
    np.testing.assert_array_equal(erf(-x), -erf(x))
    assert erf(np.array([np.inf], np.float32))[0] == 1.0
    grid = np.linspace(-6, 6, 100_001).astype(np.float32)
    exact = np.array([math.erf(v) for v in grid.astype(np.float64)])
    # A&S 7.1.26 is within 1.5e-7 in exact arithmetic; evaluating 1 - poly * exp in float32 adds up to ~4 ulps
    assert np.abs(erf(grid) - exact).max() < 1e-6
