"""The numba kernels against the same math in float64: exp, GELU with its bias, the residual LayerNorm, the
embeddings' LayerNorm, the unnormalised softmax rows; over awkward shapes, and a row's bits the same wherever it
sits in an array."""

import numpy as np
import pytest

from npminilm.cpu import kernels as K
from npminilm.nn.ops import gelu_forward, layernorm_forward
from tests.helpers import assert_close

SHAPES = [(1, 1), (3, 7), (5, 16), (2, 33), (9, 384), (4, 1537)]


def test_exp_relative_error_below_numpy_s():
    x = np.concatenate([np.linspace(-86.5, 88.3, 200_001), np.random.default_rng().uniform(-86.5, 88.3, 100_000),
                        [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5]]).astype(np.float32)
    out = np.empty_like(x)
    exact = np.exp(x.astype(np.float64))
    got = _expf_array(x, out).astype(np.float64)
    rel = np.abs(got - exact) / exact
    numpy_rel = np.abs(np.exp(x).astype(np.float64) - exact) / exact
    assert rel.max() <= 1.2e-7 and rel.max() <= numpy_rel.max(), (rel.max(), numpy_rel.max())
    assert np.isfinite(_expf_array(np.array([100.0, -1e4, -np.inf], np.float32), np.empty(3, np.float32))).all()


def _expf_array(x, out):
    from numba import njit

    @njit
    def run(x, out):
        for i in range(x.size):
            out[i] = K.expf(x[i])
        return out

    return run(x, out)


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_bias(shape):
    rng = np.random.default_rng()
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    flat = x.reshape(-1)  # a view: some edge values among the random ones
    picks = rng.choice(flat.size, min(flat.size, 7), replace=False)
    flat[picks] = np.array([0.0, -0.0, 12.0, -12.0, 40.0, -40.0, 1e-6], np.float32)[:picks.size]
    b = rng.standard_normal(shape[1]).astype(np.float32)
    y = x.copy()
    K.gelu_bias(y, b)
    exact, _ = gelu_forward((x + b).astype(np.float64))  # the sum as float32 rounds it, as the kernel does
    assert_close(y, exact, 4e-7, 2e-7, name="gelu")
    ours, _ = gelu_forward(x + b)  # the NumPy float32 op: the same formula
    assert_close(y, ours, 1e-6, 1e-6, name="gelu vs the NumPy op")


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_add_layernorm(shape, offset):
    rng = np.random.default_rng()
    x, r = (rng.standard_normal(shape).astype(np.float32) + np.float32(offset) for _ in range(2))
    b, w, beta = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(3))
    eps = float(rng.choice([1e-12, 1e-5]))
    y = x.copy()
    K.add_layernorm(y, b, r, w, beta, eps)
    s = (x + b) + r  # float32, the kernel's order
    exact, _ = layernorm_forward(s.astype(np.float64), w.astype(np.float64), beta.astype(np.float64), eps)
    ours, _ = layernorm_forward(s, w, beta, eps)
    tol = np.abs(ours - exact).max()  # no worse than the NumPy float32 op, with a margin for rounding luck
    assert np.abs(y - exact).max() <= 1.5 * tol + 1e-6, (np.abs(y - exact).max(), tol)


@pytest.mark.parametrize("C", [1, 7, 33, 384])
@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_embed_layernorm(C, offset):
    rng = np.random.default_rng()
    word, position, token_type = (rng.standard_normal((n, C)).astype(np.float32) + np.float32(offset / 3)
                                  for n in (50, 20, 2))
    w, beta = (rng.standard_normal(C).astype(np.float32) for _ in range(2))
    N, R = 13, 17
    ids, positions, types = rng.integers(0, 50, N), rng.integers(0, 20, N), rng.integers(0, 2, N)
    rows = rng.permutation(R)[:N]  # tokens scattered over more rows than there are tokens
    out = np.full((R, C), 7.0, np.float32)  # rows no token takes keep what they had
    eps = float(rng.choice([1e-12, 1e-5]))
    K.embed_layernorm(out, rows, ids, positions, types, word, position, token_type, w, beta, eps)
    s = (word[ids] + position[positions]) + token_type[types]  # float32, the kernel's order
    exact, _ = layernorm_forward(s.astype(np.float64), w.astype(np.float64), beta.astype(np.float64), eps)
    ours, _ = layernorm_forward(s, w, beta, eps)
    tol = np.abs(ours - exact).max()
    assert np.abs(out[rows] - exact).max() <= 1.5 * tol + 1e-6, (np.abs(out[rows] - exact).max(), tol)
    assert (np.delete(out, rows, axis=0) == 7.0).all()


@pytest.mark.parametrize("T", [1, 7, 16, 65, 300])
def test_exp_shifted_by_the_row_max_or_by_nothing(T):
    rng = np.random.default_rng()
    R = 11
    s = (rng.standard_normal((R, T)) * rng.choice([1.0, 8.0, 30.0], (R, 1))).astype(np.float32)
    s[0] = 80.0 - np.arange(T, dtype=np.float32) * 0.1  # beyond any bound: must shift
    s[1, rng.integers(T)] = 1e4  # the max anywhere in the row
    shifted = (np.abs(s).max(axis=1) > 40.0) | (rng.random(R) < 0.3)  # as the kernel: unshifted within EXP_FREE
    e, sums = s.copy(), np.empty(R)
    for i in range(R):
        top = K._row_max(e[i]) if shifted[i] else np.float32(0.0)
        assert top == (s[i].max() if shifted[i] else 0.0)
        sums[i] = K.exp_shifted(e[i], top)
    shift = np.where(shifted, s.max(axis=1), 0.0).astype(np.float32)[:, None]
    x = s.astype(np.float64) - shift
    exact = np.exp(x)
    # exp's own error is below 2e-7; x = s - shift may be rounded to float32 first (half an ulp of x, relative to
    # exp) or not, as LLVM fuses it into the range reduction; below e^-86.6 (3e-38) exp is clamped
    assert_close(e, exact, 3e-38, 2e-7 + np.abs(x) * 2.0 ** -24, name="exp(s - shift)")
    assert_close(sums / exact.sum(axis=1), np.ones(R), 1e-6 + np.abs(x).max() * 2.0 ** -24, name="row sums")


def test_a_row_s_bits_do_not_depend_on_where_it_sits():
    rng = np.random.default_rng()
    C = 389
    row = rng.standard_normal((1, C)).astype(np.float32) * 3
    b, w, beta = (rng.standard_normal(C).astype(np.float32) for _ in range(3))
    res = rng.standard_normal((1, C)).astype(np.float32)
    for n in (1, 2, 17):
        at = int(rng.integers(0, n))
        block = rng.standard_normal((n, C)).astype(np.float32)
        resid = rng.standard_normal((n, C)).astype(np.float32)
        block[at], resid[at] = row[0], res[0]
        alone, many = row.copy(), block.copy()
        K.gelu_bias(alone, b)
        K.gelu_bias(many, b)
        assert many[at].tobytes() == alone[0].tobytes()
        alone, many = row.copy(), block.copy()
        K.add_layernorm(alone, b, res, w, beta, 1e-12)
        K.add_layernorm(many, b, resid, w, beta, 1e-12)
        assert many[at].tobytes() == alone[0].tobytes()
        alone, many = np.zeros_like(row), np.zeros_like(block)
        K.embed_layernorm(alone, np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64),
                          np.zeros(1, np.int64), row, res, b[None], w, beta, 1e-12)
        K.embed_layernorm(many, np.arange(n), np.arange(n), np.arange(n), np.zeros(n, np.int64), block, resid,
                          b[None], w, beta, 1e-12)
        assert many[at].tobytes() == alone[0].tobytes()
        alone, many = row.copy(), block.copy()
        total = K.exp_shifted(alone[0], K._row_max(alone[0]))
        totals = [K.exp_shifted(r, K._row_max(r)) for r in many]
        assert many[at].tobytes() == alone[0].tobytes() and totals[at] == total
