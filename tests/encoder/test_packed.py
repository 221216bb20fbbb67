"""The packed (no padding) inference path against the padded BertModel forward and pooling."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npminilm.encoder.bert import bert_forward
from npminilm.encoder.packed import PackedTexts, packed_forward
from npminilm.encoder.pooling import pool_forward, pool_packed
from npminilm.errors import InvalidInputError
from tests.helpers import assert_close

MODES = (["mean"], ["cls"], ["max"], ["mean_sqrt_len_tokens"], ["cls", "mean", "max"])


def random_texts(rng, config, lengths):
    ids = [rng.integers(0, config.vocab_size, n) for n in lengths]
    types = [rng.integers(0, config.type_vocab_size, n) for n in lengths]
    return ids, types


def padded(rows, fill=0):
    out = np.full((len(rows), max(len(r) for r in rows)), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


CLASSES = [(0,), (0, 0), (0, 1, 1), (0,) * 6 + (1,) * 6, (0, 1, 2, 0)]


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31), lengths=st.lists(st.integers(1, 40), min_size=1, max_size=9),
       classes=st.sampled_from(CLASSES), sort=st.booleans(), modes=st.sampled_from(MODES))
def test_packed_forward_and_pooling_match_the_padded_ones(encoder64, seed, lengths, classes, sort, modes):
    rng = np.random.default_rng(seed)
    if sort:  # encode's order: runs of equal lengths
        lengths = sorted(lengths, reverse=True)
    config = encoder64.bert_config
    ids, types = random_texts(rng, config, lengths)
    batch = PackedTexts.pack(ids, types, classes)
    h = packed_forward(encoder64.params, config, batch)
    mask = padded([np.ones(n) for n in lengths])
    ref, _ = bert_forward(encoder64.params, config, padded(ids), mask, padded(types))
    ref = ref["last_hidden_state"]
    assert h.shape == (batch.rows, config.hidden_size) and batch.rows % len(classes) == 0
    assert batch.rows < sum(lengths) + len(classes) * (max(classes) + 1)  # whole periods, and no more
    for i, rows in enumerate(batch.text_rows()):
        assert_close(h[rows], ref[i, :lengths[i]], 1e-11, name=f"text {i} hidden states")
    assert_close(pool_packed(h, batch.text_rows(), modes), pool_forward(ref, mask, modes)[0], 1e-11,
                 name=f"{modes} pooling")


@settings(max_examples=30)
@given(seed=st.integers(0, 2**31), lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12),
       classes=st.sampled_from(CLASSES))
def test_each_token_takes_one_row_of_the_class_it_has_alone(seed, lengths, classes):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(0, 1000, n) for n in lengths]
    batch = PackedTexts.pack(ids, [np.zeros(n, np.int64) for n in lengths], classes)
    rows = np.concatenate([np.atleast_1d(np.arange(batch.rows)[r]) for r in batch.text_rows()])
    assert len(np.unique(rows)) == len(rows) == sum(lengths) and rows.max() < batch.rows
    for i, text_rows in enumerate(batch.text_rows()):
        alone = PackedTexts.pack([ids[i]], [np.zeros(lengths[i], np.int64)], classes)
        period = len(classes)
        got = [classes[r % period] for r in np.arange(batch.rows)[text_rows]]
        assert got == [classes[r % period] for r in np.arange(alone.rows)[alone.text_rows()[0]]]


def test_dense_layout_and_runs():
    batch = PackedTexts.pack([[1, 2], [3, 4], [5]], [[0, 0], [0, 0], [0]])
    assert batch.rows == 5 and batch.text_rows() == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert [(rows, n, length) for rows, n, length in batch.runs()] == [(slice(0, 4), 2, 2), (slice(4, 5), 1, 1)]


def test_bad_packed_input(encoder):
    with pytest.raises(InvalidInputError):
        PackedTexts.pack([], [])
    with pytest.raises(InvalidInputError):
        PackedTexts.pack([[1], []], [[0], []])
    too_long = PackedTexts.pack([np.ones(513, np.int64)], [np.zeros(513, np.int64)])
    with pytest.raises(InvalidInputError):
        packed_forward(encoder.params, encoder.bert_config, too_long)
