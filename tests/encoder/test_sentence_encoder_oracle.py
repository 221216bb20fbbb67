"""The NumPy engine against transformers.BertModel (every hidden state) and sentence-transformers (embeddings)."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from sentence_transformers import SentenceTransformer
from transformers import BertModel

from tests.helpers import assert_close

# (dtype, atol): the bars for hidden states against HF in each precision
TOLERANCES = [("float32", 1e-5), ("float64", 1e-10)]
# float32 hidden states reach |x| ~ 10 after a few layers: on top of 1e-5, the rtol torch.testing uses for float32
RTOL = {"float32": 1.3e-6, "float64": 0.0}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@pytest.fixture(scope="module")
def st_model(model_dir):
    return SentenceTransformer(str(model_dir), device="cpu")


def stsb_sentences(data_dir, n, seed):
    import csv

    with open(data_dir / "stsb" / "stsb-en-test.csv", encoding="utf-8") as f:
        lines = [row[0] for row in csv.reader(f)]
    rng = np.random.default_rng(seed)
    return [lines[i] for i in rng.choice(len(lines), n, replace=False)]


def shakespeare_passage(data_dir, n_words):
    words = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split()
    start = np.random.default_rng().integers(0, len(words) - n_words)
    return " ".join(words[start:start + n_words])


def hf_hidden_states(model_dir, torch_dtype, features):
    hf = BertModel.from_pretrained(str(model_dir), torch_dtype=torch_dtype).eval()
    with torch.no_grad():
        out = hf(**{k: torch.from_numpy(v) for k, v in features.items()}, output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


@pytest.mark.parametrize("dtype,atol", TOLERANCES)
def test_hidden_states_and_pooler_match_bert_model(model_dir, data_dir, dtype, atol):
    from npminilm import SentenceEncoder

    enc = SentenceEncoder(model_dir, dtype=dtype)
    hf = BertModel.from_pretrained(str(model_dir), torch_dtype=TORCH_DTYPES[dtype]).eval()
    texts = stsb_sentences(data_dir, 7, seed=None) + ["", shakespeare_passage(data_dir, 300)]
    f = enc.tokenize(texts)
    rng = np.random.default_rng()
    f["token_type_ids"] = (rng.random(f["input_ids"].shape) < 0.3).astype(np.int64) * f["attention_mask"]
    ours = enc.forward(f["input_ids"], f["attention_mask"], f["token_type_ids"], output_hidden_states=True)
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in f.items()}, output_hidden_states=True)
    real = f["attention_mask"].astype(bool)
    assert len(ours["hidden_states"]) == len(ref.hidden_states) == 7
    for i, (a, b) in enumerate(zip(ours["hidden_states"], ref.hidden_states)):
        assert a.dtype == np.dtype(dtype)
        assert_close(a[real], b.numpy()[real], atol, RTOL[dtype], name=f"hidden_states[{i}] {dtype}")
    assert_close(ours["last_hidden_state"][real], ref.last_hidden_state.numpy()[real], atol, RTOL[dtype],
                 name="last_hidden_state")
    assert_close(ours["pooler_output"], ref.pooler_output.numpy(), atol, name="pooler_output")


WIDE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=60
) | st.lists(st.sampled_from(["the", "cat", "sat", "on", "mat", "Ünïcödé", "naïve", "東京", "🙂", "[SEP]", "!", "42",
                              "co-operate", "LLMs", "   ", "\t", "x" * 120]),
             min_size=0, max_size=40).map(" ".join)


def test_float32_error_no_worse_than_torch_float32(encoder, model_dir):
    """On degenerate 256-token inputs both float32 engines drift ~1e-5 from the float64 result; ours must not
    drift further than torch's own float32 does (a 25% margin for rounding luck)."""
    f = encoder.tokenize(["a " * 300, "! " * 300, "the cat " * 150])
    ours = encoder.forward(**f, output_hidden_states=True)["hidden_states"]
    ref32 = hf_hidden_states(model_dir, torch.float32, f)
    ref64 = hf_hidden_states(model_dir, torch.float64, f)
    real = f["attention_mask"].astype(bool)
    for i, (a, b, c) in enumerate(zip(ours, ref32, ref64)):
        ours_err = np.abs(a[real] - c[real]).max()
        torch_err = np.abs(b[real] - c[real]).max()
        assert ours_err <= 1.25 * torch_err + 1e-6, f"layer {i}: ours {ours_err:.3g} vs torch float32 {torch_err:.3g}"


@given(texts=st.lists(WIDE_TEXT, min_size=1, max_size=6))
def test_embeddings_match_sentence_transformers(encoder, st_model, texts):
    ours = encoder.encode(texts, batch_size=4)
    ref = st_model.encode(texts, batch_size=4, convert_to_numpy=True)
    assert ours.shape == ref.shape == (len(texts), 384)
    assert_close(ours, ref, 1e-5, name="sentence embeddings")


def test_token_embeddings_match_sentence_transformers(encoder, st_model, data_dir):
    texts = stsb_sentences(data_dir, 5, seed=None)
    ours = encoder.encode(texts, output_value="token_embeddings")
    ref = st_model.encode(texts, output_value="token_embeddings")
    for a, b in zip(ours, ref):
        assert_close(a, np.asarray(b), 1e-5, RTOL["float32"], name="token embeddings")  # unnormalised, |x| ~ 10


def test_edge_texts_match_sentence_transformers(encoder, st_model):
    texts = ["", "   ", "\n\t ", "a" * 1_000_000, "\x00\x07 ctrl \x1b[0m", "[SEP] [CLS] [sep]"]
    assert_close(encoder.encode(texts), st_model.encode(texts), 1e-5, name="edge texts")


def test_encode_with_either_kernels_matches_sentence_transformers(kernels, encoder, st_model, model_dir, data_dir):
    """encode's packed forward, with the NumPy ops and with the numba kernels: embeddings within 1e-5 of
    sentence-transformers', and on degenerate 256-token inputs within twice the float32 drift torch's float32 has.
    Both paths drift 1.4-1.6x torch's on average over the tokens (the GELU's A&S erf takes a part); the largest
    error moves with rounding luck (1.9 to 2.6e-6 on "a a a ...", torch's 1.3e-6, as the LayerNorms' rounding
    changed)."""
    texts = stsb_sentences(data_dir, 40, seed=None) + ["", shakespeare_passage(data_dir, 250)]
    assert_close(encoder.encode(texts, batch_size=16), st_model.encode(texts, batch_size=16), 1e-5,
                 name=f"embeddings ({kernels})")
    degenerate = ["a " * 300, "! " * 300, "the cat " * 150]
    ours = encoder.encode(degenerate, output_value="token_embeddings")
    f = encoder.tokenize(degenerate)
    ref32 = hf_hidden_states(model_dir, torch.float32, f)[-1]
    ref64 = hf_hidden_states(model_dir, torch.float64, f)[-1]
    for i, a in enumerate(ours):
        n = len(a)
        ours_err, torch_err = np.abs(a - ref64[i, :n]), np.abs(ref32[i, :n] - ref64[i, :n])
        mean, limit = ours_err.mean(), 2 * torch_err.mean()
        assert mean <= limit, f"{kernels}: mean error {mean:.3g}, torch float32's x 2 {limit:.3g}"
        top, limit = ours_err.max(), 2 * torch_err.max() + 1e-6
        assert top <= limit, f"{kernels}: max error {top:.3g}, torch float32's x 2 + 1e-6 {limit:.3g}"
