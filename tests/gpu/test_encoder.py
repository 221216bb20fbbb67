"""The Triton SentenceEncoder against the NumPy engine: embeddings, token states, the padded forward, errors."""

import numpy as np
import pytest
import torch

from npminilm import SentenceEncoder
from npminilm.errors import InvalidArgumentError
from tests.kernels import DEVICE, torch_dtype
from tests.helpers import assert_close, write_random_folder

SENTENCES = ["A man is playing a guitar.", "Hi", "", "The quick brown fox jumps over the lazy dog near the river, "
             "twice, at dawn; nobody saw it."]


@pytest.fixture(scope="module")
def gpu32(model_dir):
    return SentenceEncoder(model_dir, backend="triton", device=DEVICE, dtype="float32")


@pytest.fixture(scope="module")
def reference(encoder):
    return encoder.encode(SENTENCES, batch_size=2)


def test_fp32_matches_numpy(gpu32, encoder, reference):
    """Sentence and token embeddings over two packed batches of different lengths, in input order."""
    ours = gpu32.encode(SENTENCES, batch_size=3, output_value=None)
    emb = np.stack([d["sentence_embedding"] for d in ours])
    assert emb.dtype == np.float32
    assert_close(emb, reference, 1e-4, name="sentence embeddings fp32")
    for a, b in zip(ours, encoder.encode(SENTENCES, output_value=None)):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        assert_close(a["token_embeddings"], b["token_embeddings"], 1e-4, 1e-4, name="token embeddings")


def test_single_string_tensor_and_empty(gpu32, reference):
    one = gpu32.encode(SENTENCES[1])
    assert isinstance(one, np.ndarray) and one.shape == (gpu32.dim,)
    assert_close(one, reference[1], 1e-4, name="single string")
    t = gpu32.encode(SENTENCES[1:2], convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and t.device.type == torch.device(DEVICE).type and t.shape == (1, gpu32.dim)
    assert gpu32.encode([]).shape == (0, gpu32.dim)


def test_prompts_truncate_dim_and_precision_match_numpy(gpu32, encoder):
    """The shared API on the GPU engine: a prompt, truncate_dim with normalize_embeddings, a quantized precision;
    a prompt left out of pooling or truncation into a tensor are typed errors."""
    kwargs = {"prompt": "query: ", "truncate_dim": 100, "normalize_embeddings": True}
    assert_close(gpu32.encode_query(SENTENCES, **kwargs), encoder.encode_query(SENTENCES, **kwargs), 1e-4,
                 name="prompt + truncate_dim")
    got = gpu32.encode(SENTENCES, precision="ubinary")
    expected = encoder.encode(SENTENCES, precision="ubinary")
    assert got.shape == expected.shape == (len(SENTENCES), 48) and got.dtype == np.uint8
    assert np.unpackbits(got ^ expected).mean() < 0.01  # a sign flips only where a value is within ~1e-4 of 0
    with pytest.raises(InvalidArgumentError, match="convert_to_tensor=False with truncate_dim"):
        gpu32.encode(SENTENCES, truncate_dim=8, convert_to_tensor=True)


def test_encode_ids_matches_encode(gpu32, reference):
    """The server's path: texts tokenised first (token_ids), then embedded from their ids, over two batches."""
    gpu32.max_batch_tokens, budget = 24, gpu32.max_batch_tokens
    try:
        emb = gpu32.encode_ids(gpu32.token_ids(SENTENCES))
    finally:
        gpu32.max_batch_tokens = budget
    assert emb.shape == reference.shape and emb.dtype == np.float32
    assert_close(emb, reference, 1e-4, name="encode_ids fp32")


def test_padded_forward_matches_numpy(gpu32, encoder):
    """forward() takes padded ids: the attention kernel's key-padding-mask path inside the whole model."""
    feats = encoder.tokenize(SENTENCES[:2])
    args = [feats[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
    ours = gpu32.forward(*args)["last_hidden_state"]
    ref = encoder.forward(*args)["last_hidden_state"]
    assert_close(ours, ref, 2e-4, 1e-4, name="last_hidden_state")


@pytest.mark.parametrize("dtype, min_cos", [("float32", 0.999999), ("float16", 0.9999), ("bfloat16", 0.9999)])
def test_cosine_to_numpy_engine(model_dir, reference, dtype, min_cos):
    """The embedding cosine targets; the empty string (CLS, SEP) and "Hi" average the fewest tokens."""
    torch_dtype(dtype)  # skips bf16 on GPUs without it
    enc = SentenceEncoder(model_dir, backend="triton", device=DEVICE, dtype=dtype)
    emb, ref = enc.encode(SENTENCES), reference
    cos = (emb * ref).sum(axis=1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= min_cos, f"{dtype}: cosine to the fp32 NumPy engine {cos}"


def test_errors(model_dir, gpu32, monkeypatch):
    with pytest.raises(InvalidArgumentError, match="dtype"):
        SentenceEncoder(model_dir, backend="triton", device=DEVICE, dtype="float64")
    with pytest.raises(InvalidArgumentError, match="device"):
        SentenceEncoder(model_dir, backend="numpy", device="cuda")
    with pytest.raises(InvalidArgumentError, match="numpy"):
        gpu32.forward_train({})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InvalidArgumentError, match="TRITON_INTERPRET"):
        SentenceEncoder(model_dir, backend="triton", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="CUDA GPU"):
            SentenceEncoder(model_dir, backend="triton", device="cuda")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, model_dir):
    """A 2-layer random BERT (hidden 32, 2 heads of 16): the batching tests need many batches, not a big model."""
    return write_random_folder(tmp_path_factory.mktemp("tiny") / "m", model_dir, layers=2, hidden=32, heads=2, inter=64,
                               seed=11)


@pytest.fixture(scope="module")
def sequential(tiny):
    return SentenceEncoder(tiny, backend="triton", device=DEVICE, dtype="float32", max_batch_tokens=24, overlap=False)


TEXTS = SENTENCES + ["Short one.", "Another sentence, a little longer than the short one.", "x y z", "Hi"]


@pytest.mark.parametrize("batch_size", [None, 2])
def test_overlapped_encode_equals_sequential(tiny, sequential, batch_size):
    """Tokenising ahead on a worker thread changes when batches are packed, never what they hold or give."""
    overlapped = SentenceEncoder(tiny, backend="triton", device=DEVICE, dtype="float32", max_batch_tokens=24)
    assert overlapped.overlap and not sequential.overlap
    a = overlapped.encode(TEXTS, batch_size=batch_size, output_value=None)
    b = sequential.encode(TEXTS, batch_size=batch_size, output_value=None)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
        np.testing.assert_array_equal(x["token_embeddings"], y["token_embeddings"])
        np.testing.assert_array_equal(x["sentence_embedding"], y["sentence_embedding"])
    np.testing.assert_array_equal(overlapped.encode(TEXTS, batch_size=batch_size),
                                  np.stack([y["sentence_embedding"] for y in b]))


@pytest.mark.parametrize("max_texts", [1, 2, 1000])
def test_batches_are_cut_by_tokens_and_texts(sequential, max_texts):
    batches = list(sequential._packed_batches(TEXTS, max_texts))
    assert sorted(i for b in batches for i in b.idx) == list(range(len(TEXTS)))
    for b in batches:
        assert len(b.idx) <= max_texts
        assert b.n_tokens <= sequential.max_batch_tokens or len(b.idx) == 1  # a long text rides alone
        assert b.n_tokens == sum(int(sequential.tokenize([TEXTS[i]])["attention_mask"].sum()) for i in b.idx)
        n = b.n_tokens
        np.testing.assert_array_equal(b.buffer[:n], b.ids)  # the device buffer: ids | positions | types | cu
        assert b.buffer[3 * n:].tolist() == b.cu.tolist() and b.cu[-1] == n
    if max_texts == 1000:  # only the budget cuts: fewer batches than texts
        assert len(batches) < len(TEXTS)


def test_matches_numpy_across_token_budget_batches(tiny, sequential):
    reference = SentenceEncoder(tiny).encode(TEXTS)
    assert_close(sequential.encode(TEXTS), reference, 1e-5, name="sentence embeddings, batches of 24 tokens")


def test_bad_token_budget(model_dir):
    with pytest.raises(InvalidArgumentError, match="max_batch_tokens"):
        SentenceEncoder(model_dir, backend="triton", device=DEVICE, max_batch_tokens=0)
