"""The Triton encoder (the interpreter here, the GPU when there is one) against transformers' BertModel and
sentence-transformers, on batches Hypothesis draws: 1 to 8 texts of 1 to 300 tokens (lengths on and off the tile
sizes), fp32 / fp16 / bf16, every pooling mode, with and without normalisation."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentence_transformers import SentenceTransformer
from transformers import BertModel

from npminilm import SentenceEncoder
from tests.encoder.test_folder_oracle import build_folder
from tests.helpers import assert_close
from tests.kernels import DEVICE
from tests.kernels import DTYPES as KERNEL_TOLERANCES

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
# the kernel tests' (atol, rtol) by dtype, applied to each row divided by max(1, its largest |reference|): summed
# poolings over 300 tokens reach tens, and their rounding grows with them
TOLERANCES = {p.values[0]: p.values[1:] for p in KERNEL_TOLERANCES}
LENGTHS = st.one_of(st.sampled_from([1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129, 300]), st.integers(1, 300))
DTYPES = sorted(d for d in TOLERANCES if d != "bfloat16" or DEVICE == "cpu" or torch.cuda.is_bf16_supported())
EXAMPLES = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def folder(tmp_path_factory, model_dir):
    """Random weights (hidden 64, 2 heads of 32, 2 layers, 320 positions); pooling: all four modes, concatenated."""
    return build_folder(tmp_path_factory.mktemp("oracle") / "m", model_dir, 2, list(MODES), False, False, False,
                        seed=20261201, hidden=64, heads=2, intermediate=128, max_positions=320, max_seq_length=302)


@pytest.fixture(scope="module")
def references(folder):
    return (SentenceTransformer(str(folder), device="cpu"),
            BertModel.from_pretrained(str(folder), torch_dtype=torch.float64).eval())


@pytest.fixture(scope="module")
def engines(folder):
    return {dtype: SentenceEncoder(folder, backend="triton", device=DEVICE, dtype=dtype, max_batch_tokens=512)
            for dtype in DTYPES}


@pytest.fixture(scope="module")
def words(model_dir):
    """Vocabulary entries that are whole lower-case words: each is one token, so n words are n + 2 tokens."""
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return [w for w in vocab if w.isascii() and w.isalpha() and w.islower() and len(w) > 2]


@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from(DTYPES), n=st.integers(1, 8),
       modes=st.lists(st.sampled_from(MODES), min_size=1, max_size=4, unique=True), normalize=st.booleans())
def test_embeddings_match_sentence_transformers(engines, references, words, data, dtype, n, modes, normalize):
    lengths = data.draw(st.lists(LENGTHS, min_size=n, max_size=n), label="tokens per text")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    texts = [" ".join(rng.choice(words, size=max(0, length - 2))) for length in lengths]
    enc = engines[dtype]
    enc.pooling_modes = [m for m in MODES if m in modes]  # sentence-transformers' order
    ours = enc.encode(texts, normalize_embeddings=normalize)
    full = references[0].encode(texts, convert_to_numpy=True).astype(np.float64)  # (n, 4 * 64)
    ref = np.concatenate([full[:, MODES.index(m) * 64:(MODES.index(m) + 1) * 64] for m in enc.pooling_modes], axis=1)
    if normalize:
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert_rows_close(ours, ref, dtype, f"{dtype} {enc.pooling_modes} normalize={normalize} lengths {lengths}")


@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from(DTYPES), n=st.integers(1, 8))
def test_padded_forward_matches_bert_model(engines, references, data, dtype, n):
    lengths = data.draw(st.lists(LENGTHS, min_size=n, max_size=n), label="tokens per row")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    T = max(lengths)
    ids = rng.integers(1000, 30000, size=(n, T))
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    ours = engines[dtype].forward(ids, mask)["last_hidden_state"]
    with torch.no_grad():
        ref = references[1](input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    real = mask.astype(bool)
    assert_rows_close(ours[real], ref.numpy()[real], dtype, f"{dtype} last_hidden_state, lengths {lengths}")


def assert_rows_close(ours, ref, dtype, name):
    scale = np.maximum(1.0, np.abs(ref).max(axis=-1, keepdims=True))
    assert_close(ours / scale, ref / scale, *TOLERANCES[dtype], name=name)
