"""MKL's packed sgemm and its JIT sgemm (npminilm/cpu/mkl.py) against float64 GEMMs over awkward shapes, a
row's bits the same at any row count, position and alignment, and the packs' lifetime."""

import ctypes
import gc

import numpy as np
import pytest

from npminilm.cpu import mkl, packs
from npminilm.errors import InvalidInputError

SHAPES = [(1, 1, 1), (3, 7, 5), (17, 33, 65), (512, 384, 1536), (700, 1536, 384), (129, 384, 1152)]  # (M, K, N)


@pytest.fixture(autouse=True)
def mkl_on(monkeypatch):
    monkeypatch.setenv("NPMINILM_MKL", "1")
    assert mkl.available(), "MKL (the mkl wheel) is not installed here"


@pytest.mark.parametrize("M,K,N", SHAPES)
def test_matmul_t_as_close_to_float64_as_numpy(M, K, N):
    rng = np.random.default_rng()
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    err = np.abs(mkl.matmul_t(x, w) - exact).max()
    numpy_err = np.abs(x @ w.T - exact).max()
    assert err <= 2.0 * numpy_err + 1e-6, (err, numpy_err)


JIT_SHAPES = [(1, 1, 1), (3, 7, 5), (17, 33, 65), (256, 256, 32), (164, 600, 32), (12, 32, 12)]  # (m, n, k)


@pytest.mark.parametrize("m,n,k", JIT_SHAPES)
@pytest.mark.parametrize("trans_b", [True, False])
def test_jit_sgemm_within_float32s_error_bound_at_any_row_strides(m, n, k, trans_b):
    """C = alpha A op(B) by the kernel jit_sgemm makes, called as cpu.attention calls it, on (m, k) A and (n, k) or
    (k, n) B inside wider arrays, into a wider C whose other columns it must leave alone: within float32's worst-case
    error of the exact product, made once per shape."""
    rng = np.random.default_rng()
    alpha = float(rng.uniform(0.1, 2.0))
    a = rng.standard_normal((m, k + 3)).astype(np.float32)[:, 1:k + 1]  # row stride k + 3
    b = rng.standard_normal((n, 2 * k + 1) if trans_b else (k, n + 5)).astype(np.float32)
    b = b[:, :k] if trans_b else b[:, :n]
    c = np.full((m, n + 2), np.nan, np.float32)
    jitter, kernel = mkl.jit_sgemm(trans_b, m, n, k, alpha, a.strides[0] // 4, b.strides[0] // 4, c.strides[0] // 4)
    assert mkl.jit_sgemm(trans_b, m, n, k, alpha, a.strides[0] // 4, b.strides[0] // 4,
                         c.strides[0] // 4) == (jitter, kernel), "made again"
    call = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4)(kernel)
    call(jitter, a.ctypes.data, b.ctypes.data, c.ctypes.data)
    op_b = b.T if trans_b else b
    exact = alpha * (a.astype(np.float64) @ op_b.astype(np.float64))
    assert np.isnan(c[:, n:]).all(), "wrote past its columns"
    # float32's worst case for k products summed and alpha applied: (k + 2) u |alpha| |A| |op(B)|, u = 2^-24
    bound = (k + 2) * 2.0 ** -24 * abs(alpha) * (np.abs(a).astype(np.float64) @ np.abs(op_b).astype(np.float64))
    assert (np.abs(c[:, :n] - exact) <= bound).all(), np.abs(c[:, :n] - exact).max()


def test_a_row_has_the_same_bits_at_any_row_count_position_and_alignment():
    """Rows whose positions are alike modulo the period `runtime.blas_rows` finds for MKL get the same bits at any
    row count, position and alignment; on the Intel CPUs where MKL runs by default the period is 1: every row is
    alike."""
    from npminilm.runtime.blas_rows import row_classes

    K, N = 384, 1536
    P = len(row_classes(np.float32, ((K, N),), mkl.matmul_t))
    if mkl._intel_cpu():
        assert P == 1
    rng = np.random.default_rng()
    w = rng.standard_normal((N, K)).astype(np.float32)
    rows = rng.standard_normal((576, K)).astype(np.float32)  # 576: a multiple of every period blas_rows tries
    whole = mkl.matmul_t(rows, w)
    raw = np.empty(576 * K + 16, np.float32)
    for periods in (1, 2, 3, 6):
        m = periods * P
        start = int(rng.integers(0, (576 - m) // P + 1)) * P
        shift = int(rng.integers(0, 16))  # the rows 0..60 bytes off the buffer's alignment
        x = raw[shift:shift + m * K].reshape(m, K)
        x[...] = rows[start:start + m]
        assert np.array_equal(mkl.matmul_t(x, w), whole[start:start + m]), (m, start, shift)
    for m in (7, 16, 31, 64, 255, 511):  # any row count, where every row is alike
        if P == 1:
            start, shift = int(rng.integers(0, 576 - m + 1)), int(rng.integers(0, 16))
            x = raw[shift:shift + m * K].reshape(m, K)
            x[...] = rows[start:start + m]
            assert np.array_equal(mkl.matmul_t(x, w), whole[start:start + m]), (m, start, shift)
    wide = np.zeros((6 * P, K + 5), np.float32)  # rows further apart than K (lda > K)
    wide[:, :K] = rows[:6 * P]
    assert np.array_equal(mkl.matmul_t(wide[:, :K], w), whole[:6 * P])


def test_a_pack_is_made_once_and_goes_with_its_weight():
    w = np.random.default_rng().standard_normal((8, 4)).astype(np.float32)
    first = mkl.pack(w)
    assert mkl.pack(w) is first
    key = (mkl.PackedWeight, id(w))
    assert key in packs._packs
    del w, first
    gc.collect()
    assert key not in packs._packs


def test_a_weight_updated_in_place_is_packed_anew():
    """pack makes the weight read-only; AdamW (or any writer through nn.optim.writable) makes it writable again
    before it writes, and the next product packs the new values."""
    from npminilm.nn.optim import AdamW

    rng = np.random.default_rng()
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32)}
    x = rng.standard_normal((5, 8)).astype(np.float32)
    before = mkl.matmul_t(x, params["w"])
    assert not params["w"].flags.writeable
    with pytest.raises(ValueError):
        params["w"] += 1.0  # a writer that skips writable() fails loudly instead of reading a stale pack
    AdamW(params).step(params, {"w": rng.standard_normal((16, 8)).astype(np.float32)}, lr=0.1)
    after = mkl.matmul_t(x, params["w"])
    exact = x.astype(np.float64) @ params["w"].T.astype(np.float64)
    assert np.abs(after - exact).max() < 1e-5 and np.abs(after - before).max() > 1e-2


def test_weights_stacked_by_rows_are_packed_as_one_and_anew_when_one_changes():
    """matmul_t(x, wq, wk, wv) is x @ [wq; wk; wv].T from one pack (the block's Q, K, V in one GEMM); an update
    of any of the three retires it."""
    from npminilm.nn.optim import writable

    rng = np.random.default_rng()
    ws = [rng.standard_normal((n, 24)).astype(np.float32) for n in (24, 24, 8)]
    x = rng.standard_normal((37, 24)).astype(np.float32)
    stacked = mkl.matmul_t(x, *ws)
    assert stacked.shape == (37, 56) and mkl.pack(*ws) is mkl.pack(*ws)
    assert stacked.tobytes() == mkl.matmul_t(x, np.concatenate(ws)).tobytes()
    assert not any(w.flags.writeable for w in ws)
    writable(ws[1])
    ws[1] += 1.0
    after = mkl.matmul_t(x, *ws)
    exact = x.astype(np.float64) @ np.concatenate(ws).T.astype(np.float64)
    assert np.abs(after - exact).max() < 1e-5 and np.abs(after[:, 24:48] - stacked[:, 24:48]).max() > 1e-2


def test_wrong_inputs_are_typed_errors():
    w = np.ones((6, 4), np.float32)
    for x in (np.ones((3, 5), np.float32), np.ones((3, 4), np.float64), np.ones((4, 3), np.float32).T):
        with pytest.raises(InvalidInputError):
            mkl.matmul_t(x, w)
    assert mkl.matmul_t(np.ones((0, 4), np.float32), w).shape == (0, 6)


def test_npminilm_mkl_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("NPMINILM_MKL", "0")
    assert not mkl.available()
