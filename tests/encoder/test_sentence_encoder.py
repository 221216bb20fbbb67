"""The public SentenceEncoder API: shapes, order, options and bad input, on the real default model."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npminilm.errors import InvalidArgumentError, InvalidInputError
from tests.helpers import assert_close

SENTENCES = ["A girl is styling her hair.", "Open-source LLMs rock.", "", "A man is playing a flute " * 30,
             "Ein Mann spielt Gitarre.", "東京は大きい", "ok"]


def test_shapes_and_dtypes(encoder):
    one = encoder.encode("Open-source LLMs rock.")
    many = encoder.encode(SENTENCES)
    assert one.shape == (384,) and one.dtype == np.float32
    assert many.shape == (len(SENTENCES), 384) and many.dtype == np.float32
    assert encoder.encode([]).shape == (0, 384)
    assert encoder.dim == encoder.get_sentence_embedding_dimension() == 384


def test_published_first_sentence_values(encoder):
    # the data README's published reference: all-MiniLM-L6-v2("A girl is styling her hair.")[:4]
    v = encoder.encode("A girl is styling her hair.")
    assert_close(v[:4], [-0.001218, -0.006279, 0.012886, -0.020564], 1e-6, name="published embedding[:4]")


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31), batch_size=st.sampled_from([1, 2, 3, 5, 32]))
def test_embedding_does_not_depend_on_batch(encoder, seed, batch_size):
    rng = np.random.default_rng(seed)
    texts = [SENTENCES[i] for i in rng.permutation(len(SENTENCES))]
    together = encoder.encode(texts, batch_size=batch_size)
    for i, t in enumerate(texts):
        assert_close(together[i], encoder.encode(t), 1e-6, name=f"text {i} in batch of {batch_size}")


def test_float64_matches_float32(encoder, encoder64):
    assert encoder64.encode(SENTENCES).dtype == np.float64
    assert_close(encoder.encode(SENTENCES), encoder64.encode(SENTENCES), 1e-5, name="float32 vs float64")


def test_normalize_switch(encoder):
    raw = encoder.encode(SENTENCES, normalize_embeddings=False)
    unit = encoder.encode(SENTENCES)
    assert encoder.normalize
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert_close(np.linalg.norm(unit, axis=1), np.ones(len(SENTENCES)), 1e-6, name="norms")
    assert_close(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), 1e-6, name="normalised raw")


def test_token_embeddings_are_unpadded(encoder):
    toks = encoder.encode(SENTENCES, output_value="token_embeddings")
    lengths = encoder.tokenize(SENTENCES)["attention_mask"].sum(axis=1)
    assert [t.shape for t in toks] == [(n, 384) for n in lengths]
    mean = np.stack([t.mean(axis=0) for t in toks])
    assert_close(encoder.encode(SENTENCES, normalize_embeddings=False), mean, 1e-5, name="mean of token embeddings")
    both = encoder.encode(SENTENCES[:2], output_value=None)
    assert set(both[0]) >= {"token_embeddings", "sentence_embedding", "input_ids"}


def test_empty_and_whitespace_are_valid(encoder):
    e = encoder.encode(["", "   ", "\n\t"])
    assert np.isfinite(e).all()
    assert_close(e[1], e[0], 1e-7, name="whitespace == empty")
    assert_close(e[2], e[0], 1e-7, name="newline/tab == empty")


def test_huge_string_is_truncated(encoder):
    text = "word " * 200_000  # 1 MB
    f = encoder.tokenize([text])
    assert f["input_ids"].shape == (1, encoder.max_seq_length)
    assert encoder.encode(text).shape == (384,)


@pytest.mark.parametrize("text", ["x\ud800y", "\udfff", "\x00\x01\x02\x7f", "\u200b\u200d\ufeff", "\x1b[31mred\x1b[0m"])
def test_odd_text_does_not_crash(encoder, text):
    assert np.isfinite(encoder.encode(text)).all()


@pytest.mark.parametrize("bad,where", [
    (None, "NoneType"), (5, "int"), (3.5, "float"), (b"bytes", "bytes"),
    (["ok", None], r"sentences\[1\]"), (["ok", "fine", 7], r"sentences\[2\]"),
    ([["nested"]], r"sentences\[0\]"), (["a", b"b"], r"sentences\[1\]"),
])
def test_bad_input_is_a_type_error_with_index(encoder, bad, where):
    with pytest.raises(InvalidInputError, match=where) as info:
        encoder.encode(bad)
    assert isinstance(info.value, TypeError)


def test_bad_arguments(encoder):
    with pytest.raises(InvalidArgumentError):
        encoder.encode(["a"], output_value="logits")
    with pytest.raises(InvalidArgumentError):
        encoder.encode(["a"], batch_size=0)
    with pytest.raises(InvalidArgumentError):
        encoder.max_seq_length = 100_000


def test_max_seq_length_is_settable(model_dir):
    from npminilm import SentenceEncoder

    enc = SentenceEncoder(model_dir)
    assert enc.max_seq_length == 256
    enc.max_seq_length = 16
    assert enc.tokenize(["many words " * 50])["input_ids"].shape == (1, 16)


def test_similarity_is_cosine(encoder):
    a, b = encoder.encode(SENTENCES[:3], normalize_embeddings=False), encoder.encode(SENTENCES[3:])
    expected = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    assert_close(np.asarray(encoder.similarity(a, b)), expected, 1e-6, name="similarity")


def test_forward_outputs(encoder):
    f = encoder.tokenize(SENTENCES[:3])
    out = encoder.forward(f["input_ids"], f["attention_mask"], output_hidden_states=True)
    B, T = f["input_ids"].shape
    assert out["last_hidden_state"].shape == (B, T, 384)
    assert len(out["hidden_states"]) == 7 and out["pooler_output"].shape == (B, 384)
    assert "hidden_states" not in encoder.forward(f["input_ids"], f["attention_mask"])
    with pytest.raises(InvalidInputError):
        encoder.forward(np.full((1, 3), 10**6), None)


def test_import_and_encode_never_load_torch(model_dir):
    code = (
        "import sys, npminilm\n"
        f"v = npminilm.SentenceEncoder({str(model_dir)!r}).encode('Open-source LLMs rock.')\n"
        "assert v.shape == (384,), v.shape\n"
        "bad = [m for m in ('torch', 'transformers', 'tokenizers', 'sentence_transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deterministic_is_checked(model_dir, monkeypatch):
    import npminilm.encoder.sentence_encoder as module
    from npminilm import SentenceEncoder

    with pytest.raises(InvalidArgumentError):
        SentenceEncoder(model_dir, deterministic="yes")
    monkeypatch.setattr(module, "blas_pinnable", lambda: False)  # what the core install (no threadpoolctl) says
    with pytest.raises(InvalidArgumentError, match="threadpoolctl"):
        SentenceEncoder(model_dir, deterministic=True)


def test_training_dropout_is_seeded_and_off_in_eval(encoder):
    features = encoder.tokenize(SENTENCES[:4])
    evaluation, _ = encoder.forward_train(features)
    first, _ = encoder.forward_train(features, rng=np.random.default_rng(7))
    again, _ = encoder.forward_train(features, rng=np.random.default_rng(7))
    other, _ = encoder.forward_train(features, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - evaluation).max() > 1e-3 and np.abs(first - other).max() > 1e-3
    assert_close(evaluation, encoder.encode(SENTENCES[:4]), 1e-5, name="forward_train in eval vs encode")
