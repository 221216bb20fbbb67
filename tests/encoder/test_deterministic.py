"""deterministic=True: a text's embedding is the same bytes whatever it is batched with, with the NumPy ops and with
the numba kernels (the `kernels` fixture runs the module once for each)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npminilm import SentenceEncoder

POOL = ["A man is playing a guitar.", "", "ok", "Ein Mann spielt Gitarre.", "東京は大きい",
        "A girl is styling her hair.",
        "Three dogs run across a wide green field while a child throws a red ball for them. " * 2,
        "word " * 300]


@pytest.fixture(scope="module")
def det(model_dir, kernels):
    return SentenceEncoder(model_dir, deterministic=True)


@pytest.fixture(scope="module")
def alone(det):
    return {t: det.encode(t) for t in POOL}


@settings(max_examples=12)
@given(data=st.data(), batch_size=st.integers(1, 64), threads=st.sampled_from(["1", "2"]),
       output=st.sampled_from(["sentence_embedding", "token_embeddings"]))
def test_a_text_is_the_same_bytes_in_any_batch(det, alone, monkeypatch, data, batch_size, threads, output):
    text = data.draw(st.sampled_from(POOL), label="text")
    others = data.draw(st.lists(st.one_of(st.sampled_from(POOL), st.text(max_size=80)), max_size=70), label="others")
    at = data.draw(st.integers(0, len(others)), label="position")
    batch = others[:at] + [text] + others[at:]
    monkeypatch.setenv("NPMINILM_NUM_THREADS", threads)
    got = det.encode(batch, batch_size=batch_size, output_value=output)[at]
    if output == "sentence_embedding":
        assert got.tobytes() == alone[text].tobytes(), f"{text[:30]!r} at {at} of {len(batch)}, batch {batch_size}"
    else:
        assert got.tobytes() == det.encode([text], output_value=output)[0].tobytes()


def test_deterministic_matches_the_default_closely(det, encoder, kernels):
    assert np.abs(det.encode(POOL) - encoder.encode(POOL)).max() < 1e-6


@settings(max_examples=8)
@given(data=st.data(), threads=st.sampled_from(["1", "2"]))
def test_encode_ids_gives_encode_s_bytes(det, alone, monkeypatch, data, threads):
    """The server's path (token_ids, then encode_ids on whatever batch it forms) gives encode's bytes."""
    batch = data.draw(st.lists(st.sampled_from(POOL[2:]), min_size=1, max_size=20), label="batch")
    monkeypatch.setenv("NPMINILM_NUM_THREADS", threads)
    emb = det.encode_ids(det.token_ids(batch))
    for text, row in zip(batch, emb):
        assert row.tobytes() == alone[text].tobytes(), text[:30]
