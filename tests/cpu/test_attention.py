"""The attention kernel (npminilm/cpu/attention.py), with its products through MKL's JIT sgemm and through the
register tiles, against softmax attention in float64 over awkward shapes and strides, with the biases it adds in
place, rows that need the max shift, and a text's bits the same in any batch."""

import numpy as np
import pytest

from npminilm.cpu import mkl
from npminilm.cpu.attention import QUERY_BLOCK_ENTRIES, attention_heads
from npminilm.errors import InvalidInputError
from npminilm.nn.ops import EXP_FREE, attention_forward

SHAPES = [(1, 1, 8, 2), (3, 7, 48, 3), (2, 33, 60, 4), (5, 12, 384, 12), (1, 300, 96, 3), (5, 24, 15, 3),
          (2, 65, 128, 2), (1, 600, 32, 2)]  # (texts, T, C, NH): hs 4..64, odd T, and T = 600 in two query blocks
assert QUERY_BLOCK_ENTRIES // 600 < 600


@pytest.fixture(autouse=True, params=["mkl", "tiles"])
def products(request, monkeypatch):
    """Each test runs with the products through MKL's JIT sgemm (on Intel CPUs by default) and through the
    register tiles (elsewhere)."""
    monkeypatch.setenv("NPMINILM_MKL", "1" if request.param == "mkl" else "0")
    assert mkl.available() == (request.param == "mkl"), "MKL (the mkl wheel) is not installed here"
    return request.param


def qkv_views(rng, texts, T, C, spread=1.0):
    """q, k, v as the column slices of one (texts * T, 3C) product, as the encoder's block passes them."""
    qkv = (rng.standard_normal((texts * T, 3 * C)) * spread).astype(np.float32)
    return qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]


def biases_for(rng, C, spread=0.3):
    return [(spread * rng.standard_normal(C)).astype(np.float32) for _ in range(3)]


def with_biases(q, k, v, biases, out, texts, n_head, scale):
    """Runs the kernel; returns q + bq, k + bk, v + bv as float32 (what it attended over), checking that it left
    them in q, k, v."""
    summed = [t + b for t, b in zip((q, k, v), biases)]
    attention_heads(q, k, v, biases, out, texts, n_head, scale, EXP_FREE)
    for t, expected in zip((q, k, v), summed):
        assert t.tobytes() == np.ascontiguousarray(expected).tobytes(), "the biases are not in q, k, v"
    return summed


def exact_attention(q, k, v, texts, n_head, scale):
    """softmax(scale q k^T) v per text and head in float64: (texts * T, C)."""
    rows, C = q.shape
    q4, k4, v4 = (t.astype(np.float64).reshape(texts, rows // texts, n_head, C // n_head).transpose(0, 2, 1, 3)
                  for t in (q, k, v))
    s = scale * q4 @ k4.transpose(0, 1, 3, 2)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    y = (p / p.sum(axis=-1, keepdims=True)) @ v4
    return y.transpose(0, 2, 1, 3).reshape(rows, C)


def numpy_op(q, k, v, texts, n_head, scale):
    """The float32 NumPy op (nn.ops.attention_forward), whose error is the bar the kernel is held to."""
    rows, C = q.shape
    y, _ = attention_forward(*(np.ascontiguousarray(t).reshape(texts, rows // texts, C) for t in (q, k, v)),
                             n_head, scale=scale, keep_cache=False)
    return y.reshape(rows, C)


@pytest.mark.parametrize("texts,T,C,NH", SHAPES)
def test_as_close_to_float64_as_the_numpy_op(texts, T, C, NH):
    rng = np.random.default_rng()
    q, k, v = qkv_views(rng, texts, T, C)
    scale = 1.0 / np.sqrt(C // NH)
    wide = np.full((texts * T, C + 3), np.nan, np.float32)  # out with a longer row stride than C
    q, k, v = with_biases(q, k, v, biases_for(rng, C), wide[:, :C], texts, NH, scale)
    assert np.isnan(wide[:, C:]).all(), "wrote past its columns"
    exact = exact_attention(q, k, v, texts, NH, scale)
    err, bar = np.abs(wide[:, :C] - exact).max(), np.abs(numpy_op(q, k, v, texts, NH, scale) - exact).max()
    assert err <= 4.0 * bar + 3e-7 * np.abs(exact).max(), (err, bar)  # T = 1: P v / sum(P) is v give or take an ulp


def worst_case_error(q, k, v, texts, n_head, scale):
    """float32's worst case for the kernel's softmax(scale q k^T) v, per element (texts * T, C), from the float32
    q, k, v it attended over. A score s_ij = scale q_i . k_j of hs FMAs is off by at most (hs + 2) u a_ij, a_ij =
    scale sum_d |q_id k_jd|; its exp by 2e-7 + u |s_ij - shift| relative (the shift: 0 or the row's max, which
    softmax cancels). So each weight is off by at most rho_i relative, and y_id, a ratio of sums of T terms, by
    (2 rho_i / (1 - rho_i) + (2T + 4) u) sum_j w_ij |v_jd|, w the exact softmax weights."""
    u = 2.0 ** -24
    rows, C = q.shape
    T, hs = rows // texts, C // n_head
    q4, k4, v4 = (t.astype(np.float64).reshape(texts, T, n_head, hs).transpose(0, 2, 1, 3) for t in (q, k, v))
    s = scale * q4 @ k4.transpose(0, 1, 3, 2)  # (texts, NH, T, T)
    a = scale * np.abs(q4) @ np.abs(k4).transpose(0, 1, 3, 2)
    shifted = np.maximum(np.abs(s), np.abs(s - s.max(axis=-1, keepdims=True)))
    rho = (np.expm1((hs + 2) * u * a) + 2e-7 + u * shifted).max(axis=-1, keepdims=True)  # (texts, NH, T, 1)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    bound = (2 * rho / (1 - rho) + (2 * T + 4) * u) * (w @ np.abs(v4))  # (texts, NH, T, hs)
    return bound.transpose(0, 2, 1, 3).reshape(rows, C)


@pytest.mark.parametrize("case", ["large scores", "large values", "bounded"])
def test_the_max_shift_where_exp_could_overflow(case):
    """Rows whose scores reach past EXP_FREE take the max shift; so do heads whose values could overflow P V's
    sums; the others skip it. Each gives softmax's result: within float32's worst case where the scores are large
    (scores of ~300 carry rounding errors of ~1e-5 into exp, which vary from one float32 engine to the next), and
    as close as the NumPy op where they are small."""
    rng = np.random.default_rng()
    texts, T, C, NH = 2, 40, 64, 2
    q, k, v = qkv_views(rng, texts, T, C)
    if case == "large scores":
        q[::3] *= 60.0  # scores of about 60 * |q| |k| / sqrt(hs): far past EXP_FREE, exp(score) overflows
    elif case == "large values":  # head 0: scores of 35, within EXP_FREE, but T e^35 max|v| overflows unshifted
        hs = C // NH
        u = rng.standard_normal(hs)
        u *= np.sqrt(35.0 * np.sqrt(hs)) / np.linalg.norm(u)  # u.u / sqrt(hs) = 35
        k[:, :hs] = u
        q[:, :hs] = u + 0.01 * rng.standard_normal((texts * T, hs))
        v[:, :hs] *= 1e30
    scale = 1.0 / np.sqrt(C // NH)
    out = np.empty((texts * T, C), np.float32)
    q, k, v = with_biases(q, k, v, biases_for(rng, C, 0.003), out, texts, NH, scale)  # keeping the scores
    assert np.isfinite(out).all()
    exact = exact_attention(q, k, v, texts, NH, scale)
    if case == "bounded":
        err, bar = (np.abs(y - exact).max() for y in (out, numpy_op(q, k, v, texts, NH, scale)))
        assert err <= 4.0 * bar + 3e-7 * np.abs(exact).max(), (err, bar)
    else:
        err = np.abs(out - exact) / worst_case_error(q, k, v, texts, NH, scale)
        assert err.max() <= 1.0, err.max()


def test_a_text_has_the_same_bits_in_any_batch_at_any_position_and_alignment():
    rng = np.random.default_rng()
    T, C, NH = 19, 96, 3
    q1, k1, v1 = qkv_views(rng, 1, T, C)
    biases = biases_for(rng, C)
    text = [t.copy() for t in (q1, k1, v1)]  # before its biases
    alone = np.empty((T, C), np.float32)
    attention_heads(q1, k1, v1, biases, alone, 1, NH, 0.17, EXP_FREE)
    for texts in (2, 5):
        for at in range(texts):
            for shift in (0, 1, 5):  # in floats: the batch's rows 4, 20 bytes off the text's own alignment
                buffer = np.empty(texts * T * 3 * C + shift, np.float32)
                qkv = buffer[shift:].reshape(texts * T, 3 * C)
                qkv[:] = rng.standard_normal(qkv.shape)
                rows = slice(at * T, (at + 1) * T)
                qkv[rows, :C], qkv[rows, C:2 * C], qkv[rows, 2 * C:] = text
                out = np.empty((texts * T, C), np.float32)
                attention_heads(qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:], biases, out, texts, NH, 0.17,
                                EXP_FREE)
                assert out[rows].tobytes() == alone.tobytes(), (texts, at, shift)


@pytest.mark.parametrize("T", [1, 19, 600])
def test_a_text_has_the_same_bits_from_views_of_one_product_or_arrays_of_their_own(T):
    """The encoder passes q, k, v as column slices of the QKV product (row stride 3C) for consecutive rows, and as
    gathered (rows, C) arrays otherwise: the two give the same bits (MKL makes a kernel for each stride)."""
    rng = np.random.default_rng()
    C, NH = 96, 3
    qkv = rng.standard_normal((T, 3 * C)).astype(np.float32)
    biases = biases_for(rng, C)
    views, own = np.empty((T, C), np.float32), np.empty((T, C), np.float32)
    attention_heads(*(qkv.copy()[:, i * C:(i + 1) * C] for i in range(3)), biases, views, 1, NH, 0.17, EXP_FREE)
    attention_heads(*(qkv[:, i * C:(i + 1) * C].copy() for i in range(3)), biases, own, 1, NH, 0.17, EXP_FREE)
    assert views.tobytes() == own.tobytes()


def test_bad_arrays_get_a_typed_error():
    rng = np.random.default_rng()
    q, k, v = qkv_views(rng, 2, 5, 12)
    out = np.empty((10, 12), np.float32)
    biases = biases_for(rng, 12)
    bad = [
        (q.astype(np.float64), k, v, out, 2, 3),  # float64
        (q, k, v, out, 3, 3),  # 10 rows are not 3 texts
        (q, k, v, out, 2, 5),  # 12 columns are not 5 heads
        (q[:, ::2], k[:, ::2], v[:, ::2], out[:, :6], 2, 3),  # columns not contiguous
        (q, k, v[:8], out, 2, 3),  # shapes differ
        (q, k, v, np.empty((10, 12), np.float32)[:, ::-1], 2, 3),  # a reversed out
        (q, k, v, np.empty(120, np.float32), 2, 3),  # a flat out
    ]
    for args in bad:
        with pytest.raises(InvalidInputError):
            attention_heads(*args[:3], biases, args[3], args[4], args[5], 0.5, EXP_FREE)
    for wrong in (biases[:2], [biases[0], biases[1], biases[2][:6]]):  # two biases; one of the wrong length
        with pytest.raises(InvalidInputError):
            attention_heads(q, k, v, wrong, out, 2, 3, 0.5, EXP_FREE)
