"""token_ids and encode_ids: encode in two steps (what the server does), and their errors."""

import numpy as np
import pytest

from npminilm.errors import InvalidArgumentError, InvalidInputError
from tests.helpers import assert_close

TEXTS = ["A man is playing a guitar.", "  Leading and trailing spaces  ", "ok", "東京は大きい", "word " * 300]


def test_two_steps_equal_encode(encoder):
    ids = encoder.token_ids(TEXTS)
    features = encoder.tokenize(TEXTS)
    for row, padded, mask in zip(ids, features["input_ids"], features["attention_mask"]):
        assert row.dtype == np.int64 and row.tolist() == padded[mask == 1].tolist()
    assert len(ids[-1]) == encoder.max_seq_length
    assert len(encoder.token_ids(TEXTS[-1:], max_length=encoder.max_seq_length + 1)[0]) == encoder.max_seq_length + 1
    rng = np.random.default_rng()
    order = rng.permutation(len(TEXTS))
    emb = encoder.encode_ids([ids[i] for i in order])
    assert emb.shape == (len(TEXTS), encoder.dim) and emb.dtype == np.float32
    assert_close(emb, encoder.encode([TEXTS[i] for i in order]), 1e-6, name="encode_ids")
    raw = encoder.encode_ids([list(ids[0])], normalize_embeddings=False)
    assert_close(raw, encoder.encode(TEXTS[:1], normalize_embeddings=False), 1e-6, name="unnormalised")


@pytest.mark.parametrize("bad, error", [
    ("text", InvalidInputError), (None, InvalidInputError), ([[]], InvalidInputError), ([[1.5, 2.0]], InvalidInputError),
    ([[[101, 102]]], InvalidInputError), ([[101] * 513], InvalidInputError), ([[101, -1]], InvalidArgumentError),
    ([[101, 30522]], InvalidArgumentError),
])  # fmt: skip
def test_bad_ids(encoder, bad, error):
    with pytest.raises(error):
        encoder.encode_ids(bad)
