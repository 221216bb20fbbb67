"""The linear layers through the register tiles (npminilm/cpu/tiled_linear.py) against float64: within float32's
worst-case error over awkward row counts, strides and input blocks; a row's bits at any row count and position;
packs made once, for stacked weights as one, and anew after an update."""

import gc

import numpy as np
import pytest

from npminilm.cpu import packs, tiled_linear
from npminilm.errors import InvalidInputError

K_BLOCK, M_BLOCK, PANEL_COLS = tiled_linear.K_BLOCK, tiled_linear.M_BLOCK, tiled_linear.PANEL_COLS
SHAPES = [(1, 1, PANEL_COLS), (3, 7, 2 * PANEL_COLS), (5, K_BLOCK, 3 * PANEL_COLS), (9, K_BLOCK + 1, PANEL_COLS),
          (130, 2 * K_BLOCK + 37, 2 * PANEL_COLS), (6, 10, 1), (11, 45, PANEL_COLS + 5),
          (4, K_BLOCK + 2, 2 * PANEL_COLS - 1), (2 * M_BLOCK + 13, K_BLOCK + 5, 2 * PANEL_COLS + 3)]
# (M, K, N): tails of rows, of input blocks, of panels, and several blocks of rows


@pytest.mark.parametrize("M,K,N", SHAPES)
def test_within_float32s_error_bound_at_any_row_stride(M, K, N):
    rng = np.random.default_rng()
    x = rng.standard_normal((M, K + 3)).astype(np.float32)[:, 2:K + 2]  # rows K + 3 floats apart
    w = rng.standard_normal((N, K)).astype(np.float32)
    y = tiled_linear.matmul_t(x, w)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    bound = (K + 2) * 2.0 ** -24 * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))
    assert y.shape == (M, N) and y.dtype == np.float32
    assert (np.abs(y - exact) <= bound).all(), np.abs(y - exact).max()


def test_a_row_has_the_same_bits_at_any_row_count_and_position():
    rng = np.random.default_rng()
    K, N = K_BLOCK + 11, 2 * PANEL_COLS
    w = rng.standard_normal((N, K)).astype(np.float32)
    n = 2 * M_BLOCK + 13  # rows in several blocks of M_BLOCK
    rows = rng.standard_normal((n, K)).astype(np.float32)
    whole = tiled_linear.matmul_t(rows, w)
    for m in (1, 2, 3, 5, 17, 63, M_BLOCK + 9):
        start = int(rng.integers(0, n - m + 1))
        part = tiled_linear.matmul_t(rows[start:start + m].copy(), w)
        assert np.array_equal(part, whole[start:start + m]), (m, start)


def test_stacked_weights_are_packed_once_as_one_and_anew_after_an_update():
    from npminilm.nn.optim import writable

    rng = np.random.default_rng()
    ws = [rng.standard_normal((n, 24)).astype(np.float32) for n in (PANEL_COLS, PANEL_COLS, 2 * PANEL_COLS)]
    x = rng.standard_normal((37, 24)).astype(np.float32)
    stacked = tiled_linear.matmul_t(x, *ws)
    assert packs.get(tiled_linear.TiledWeight, *ws) is packs.get(tiled_linear.TiledWeight, *ws)
    assert stacked.tobytes() == tiled_linear.matmul_t(x, np.concatenate(ws)).tobytes()
    assert not any(w.flags.writeable for w in ws)
    with pytest.raises(ValueError):
        ws[1] += 1.0  # a writer that skips writable() fails loudly instead of reading a stale pack
    writable(ws[1])
    ws[1] += 1.0
    after = tiled_linear.matmul_t(x, *ws)
    exact = x.astype(np.float64) @ np.concatenate(ws).T.astype(np.float64)
    assert np.abs(after - exact).max() < 1e-4 and np.abs(after[:, PANEL_COLS:2 * PANEL_COLS] -
                                                          stacked[:, PANEL_COLS:2 * PANEL_COLS]).max() > 0.5
    key = (tiled_linear.TiledWeight, *map(id, ws))
    assert key in packs._packs
    del ws
    gc.collect()
    assert key not in packs._packs


def test_a_width_off_the_panels_gives_contiguous_rows_with_the_bits_of_its_padded_weight():
    rng = np.random.default_rng()
    x, w = rng.standard_normal((6, 10)).astype(np.float32), rng.standard_normal((PANEL_COLS + 4, 10)).astype(np.float32)
    padded = np.concatenate([w, np.zeros((PANEL_COLS - 4, 10), np.float32)])
    y = tiled_linear.matmul_t(x, w)
    assert y.flags.c_contiguous and y.shape == (6, PANEL_COLS + 4)
    assert y.tobytes() == tiled_linear.matmul_t(x, padded)[:, :PANEL_COLS + 4].tobytes()


def test_wrong_inputs_are_typed_errors():
    w = np.ones((PANEL_COLS, 4), np.float32)
    for x in (np.ones((3, 5), np.float32), np.ones((3, 4), np.float64), np.ones((4, 3), np.float32).T):
        with pytest.raises(InvalidInputError):
            tiled_linear.matmul_t(x, w)
    assert tiled_linear.matmul_t(np.ones((0, 4), np.float32), w).shape == (0, PANEL_COLS)
    no_inputs = tiled_linear.matmul_t(np.ones((3, 0), np.float32), np.ones((PANEL_COLS + 1, 0), np.float32))
    assert no_inputs.shape == (3, PANEL_COLS + 1) and not no_inputs.any()
