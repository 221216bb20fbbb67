"""The packed forward's block with the numba kernels (encoder/fused.py) against the NumPy one: whole forwards
against float64 within the float32 bars, and no more float32 drift than the NumPy ops have (the attention kernel
itself: tests/cpu/test_attention.py)."""

import numpy as np
import pytest

from npminilm.encoder.packed import PackedTexts, packed_forward
from npminilm.errors import InvalidInputError
from tests.helpers import assert_close


@pytest.fixture(scope="module")
def lengths():
    return [1, 2, 5, 16, 17, 33, 64, 65, 128, 200, 256]


def test_packed_forward_equals_float64(encoder, encoder64, lengths, monkeypatch):
    rng = np.random.default_rng()
    config = encoder.bert_config
    ids = [np.r_[101, rng.integers(1000, config.vocab_size, n - 1)] for n in lengths]
    types = [np.zeros(n, np.int64) for n in lengths]
    batch = PackedTexts.pack(ids, types)
    monkeypatch.setenv("NPMINILM_NUMBA", "1")
    fused = packed_forward(encoder.params, config, batch)
    monkeypatch.setenv("NPMINILM_NUMBA", "0")
    plain = packed_forward(encoder.params, config, batch)
    exact = packed_forward(encoder64.params, config, batch)
    assert_close(fused, exact, 1e-5, 1.3e-6, name="fused hidden states")  # the float32 bar against HF's
    # the typical error, not one outlier's: over 30 draws the max-error ratio ranged 0.58-1.82 (for either path the
    # max is a tail event); over 1,000 draws the mean-error ratio ranged 0.92-1.11, its 99th percentile 1.07 (a bar
    # of 1.1 had failed 1 draw in 1,000)
    fused_err, plain_err = np.abs(fused - exact).mean(), np.abs(plain - exact).mean()
    assert fused_err <= 1.25 * plain_err, (fused_err, plain_err)


def test_degenerate_long_inputs_drift_no_more(encoder, encoder64, monkeypatch):
    """256 tokens of one word: both float32 paths drift ~1e-5 from float64; the fused one no further."""
    texts = ["a " * 300, "! " * 300, "the cat " * 150]
    monkeypatch.setenv("NPMINILM_NUMBA", "1")
    fused = encoder.encode(texts, output_value="token_embeddings")
    monkeypatch.setenv("NPMINILM_NUMBA", "0")
    plain = encoder.encode(texts, output_value="token_embeddings")
    exact = encoder64.encode(texts, output_value="token_embeddings")
    for f, p, e in zip(fused, plain, exact):
        fused_err, plain_err = np.abs(f - e).max(), np.abs(p - e).max()
        assert fused_err <= 1.25 * plain_err + 1e-6, (fused_err, plain_err)


@pytest.mark.parametrize("classes", [(0,), (0, 1, 1)])
def test_fused_embeddings_equal_float64(encoder, encoder64, classes):
    """Token types 0 and 1 (a cross-encoder's pairs), the dense layout and one with rows between the texts."""
    from npminilm.encoder.fused import embeddings as fused_embeddings
    from npminilm.encoder.packed import embeddings

    rng = np.random.default_rng()
    config = encoder.bert_config
    lengths = rng.integers(1, 40, 6)
    batch = PackedTexts.pack([rng.integers(0, config.vocab_size, n) for n in lengths],
                             [rng.integers(0, 2, n) for n in lengths], classes)
    got = fused_embeddings(encoder.params, config, batch)
    assert got.shape == (batch.rows, config.hidden_size)
    rows = batch.layout[0]  # the NumPy op normalises the padding rows' zeros too (to the LayerNorm's bias)
    exact = embeddings(encoder64.params, config, batch)[rows]
    plain = embeddings(encoder.params, config, batch)[rows]
    tol = np.abs(plain - exact).max()  # the NumPy float32 op's error, with a margin for rounding luck
    assert np.abs(got[rows] - exact).max() <= 1.5 * tol + 1e-6, (np.abs(got[rows] - exact).max(), tol)
    assert (np.delete(got, rows, axis=0) == 0).all()


@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize("field, value", [("input_ids", 30522), ("input_ids", -1), ("token_type_ids", 2),
                                          ("token_type_ids", -1)])
def test_packed_forward_refuses_indices_outside_their_tables(encoder, field, value, numba, monkeypatch):
    """Either path: the fused kernel would read past a table, numpy would wrap a negative index to its end."""
    monkeypatch.setenv("NPMINILM_NUMBA", numba)
    batch = PackedTexts.pack([np.array([101, 2000, 102])], [np.zeros(3, np.int64)])
    getattr(batch, field)[1] = value
    with pytest.raises(InvalidInputError, match=field):
        packed_forward(encoder.params, encoder.bert_config, batch)
