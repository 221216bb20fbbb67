"""The packed forward's block with the numba kernels (encoder/fused.py) against the NumPy one: whole forwards
against float64 within the float32 bars, and no more float32 drift than the NumPy ops have (the attention kernel
itself: tests/cpu/test_attention.py)."""

import numpy as np
import pytest

from npminilm.encoder.packed import PackedTexts, packed_forward
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
    # max is a tail event), the mean-error ratio 0.98-1.05
    fused_err, plain_err = np.abs(fused - exact).mean(), np.abs(plain - exact).mean()
    assert fused_err <= 1.1 * plain_err, (fused_err, plain_err)


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
