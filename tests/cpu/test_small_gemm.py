"""The register-tile GEMM (npminilm/cpu/small_gemm.py) against float64: within float32's worst-case error of the
exact product over awkward shapes and row strides, adding to C when asked, and touching nothing outside C."""

import numpy as np
import pytest

from npminilm.cpu.small_gemm import TILE_COLS, TILE_ROWS, small_gemm

SHAPES = [(TILE_ROWS, TILE_COLS, 1), (2 * TILE_ROWS, TILE_COLS, 5), (3 * TILE_ROWS, 3 * TILE_COLS, 32),
          (8 * TILE_ROWS, 8 * TILE_COLS, 32), (2 * TILE_ROWS, TILE_COLS, 257),
          (TILE_ROWS, 2 * TILE_COLS, 600)]  # (m, n, k)


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("add", [False, True])
def test_within_float32s_error_bound_at_any_row_strides(m, n, k, add):
    """C (+)= alpha A B on (m, k) A and (k, n) B inside wider arrays, into a wider C whose other columns and rows
    it must leave alone."""
    rng = np.random.default_rng()
    alpha = np.float32(rng.uniform(0.1, 2.0))
    a = rng.standard_normal((m, k + 3)).astype(np.float32)[:, 1:k + 1]  # row stride k + 3, one float in
    b = rng.standard_normal((k, n + 5)).astype(np.float32)[:, 2:n + 2]
    canvas = np.full((m + 1, n + 7), np.nan, np.float32)
    c = canvas[:m, 3:n + 3]
    c0 = rng.standard_normal((m, n)).astype(np.float32) if add else np.zeros((m, n), np.float32)
    if add:
        c[:] = c0
    small_gemm(a, b, c, alpha, add)
    exact = c0.astype(np.float64) + float(alpha) * (a.astype(np.float64) @ b.astype(np.float64))
    assert np.isnan(canvas[:, :3]).all() and np.isnan(canvas[:, n + 3:]).all() and np.isnan(canvas[m]).all(), \
        "wrote outside C"
    # float32's worst case for k products summed, alpha applied and C added: (k + 3) u (|C| + |alpha| |A| |B|)
    bound = (k + 3) * 2.0 ** -24 * (np.abs(c0) + float(alpha) * (np.abs(a).astype(np.float64) @
                                                                  np.abs(b).astype(np.float64)))
    assert (np.abs(c - exact) <= bound).all(), np.abs(c - exact).max()


def test_a_row_s_bits_do_not_depend_on_the_rows_around_it():
    rng = np.random.default_rng()
    k, n = 48, 2 * TILE_COLS
    b = rng.standard_normal((k, n)).astype(np.float32)
    row = rng.standard_normal(k).astype(np.float32)
    alone = np.zeros((TILE_ROWS, k), np.float32)
    alone[0] = row
    c_alone = np.empty((TILE_ROWS, n), np.float32)
    small_gemm(alone, b, c_alone, np.float32(0.3), False)
    for m in (TILE_ROWS, 5 * TILE_ROWS):
        a = rng.standard_normal((m, k)).astype(np.float32)
        at = int(rng.integers(m))
        a[at] = row
        c = np.empty((m, n), np.float32)
        small_gemm(a, b, c, np.float32(0.3), False)
        assert c[at].tobytes() == c_alone[0].tobytes(), (m, at)
