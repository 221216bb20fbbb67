"""The corpus command with Parquet (the `corpus` extra, pyarrow): .parquet in (a text column, an id column, read
a record batch at a time) and out (id, embedding as a fixed-size float32 list)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from npminilm.corpus import readers
from npminilm.corpus.job import embed_corpus
from npminilm.errors import DataError
from tests.corpus.test_job import corpus_lines
from tests.helpers import assert_close


def read_output(path):
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    return table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist(), dtype=np.float32)


def test_parquet_in_and_out_equal_encode(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PARQUET_BATCH", 37)  # many record batches across the chunks
    lines = corpus_lines(301, int(np.random.SeedSequence().entropy % 2**31))
    ids = [f"doc-{i * 7}" for i in range(len(lines))]
    pq.write_table(pa.table({"doc_id": ids, "body": lines, "other": list(range(len(lines)))}), tmp_path / "c.parquet",
                   row_group_size=100)
    counts = embed_corpus(encoder, tmp_path / "c.parquet", tmp_path / "out.parquet", column="body",
                          id_column="doc_id", chunk_size=64)
    assert counts == {"rows": 301, "skipped": 0}
    got_ids, emb = read_output(tmp_path / "out.parquet")
    assert got_ids == ids
    assert_close(emb, encoder.encode(lines), 1e-6, name="parquet corpus vs encode")


def test_jsonl_in_parquet_out_with_row_index_ids_and_skips(encoder, tmp_path):
    rows = [{"text": "first"}, {"text": None}, {"text": "third"}, {"nope": 1}, {"text": "fifth"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    counts = embed_corpus(encoder, tmp_path / "c.jsonl", tmp_path / "o.parquet", on_error="skip", chunk_size=2)
    assert counts == {"rows": 3, "skipped": 2}
    got_ids, emb = read_output(tmp_path / "o.parquet")
    assert got_ids == [0, 2, 4]  # each row's index in the input: the skipped ones leave gaps
    assert_close(emb, encoder.encode(["first", "third", "fifth"]), 1e-6, name="jsonl to parquet")


def test_parquet_bad_columns(encoder, tmp_path):
    pq.write_table(pa.table({"text": ["a", None, "c"], "n": [1, 2, 3]}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c\.parquet: no column 'body'"):
        embed_corpus(encoder, tmp_path / "c.parquet", tmp_path / "o.npy", column="body")
    with pytest.raises(DataError, match=r"c\.parquet row 1: 'text' is NoneType, not a string"):
        embed_corpus(encoder, tmp_path / "c.parquet", tmp_path / "o2.npy")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        embed_corpus(encoder, tmp_path / "junk.parquet", tmp_path / "o3.npy")
