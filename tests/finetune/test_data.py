"""Training data from CSV and JSONL: the shapes it accepts, and one-line errors naming file and line."""

import json

import numpy as np
import pytest

from npminilm.errors import DataError
from npminilm.finetune.data import read_examples


def test_the_shared_stsb_files_read_as_scored_pairs(data_dir):
    train = read_examples(data_dir / "stsb" / "stsb-en-train.csv")
    assert train.kind == "scored pairs" and len(train) > 5000
    assert train.scores.min() >= 0 and train.scores.max() <= 5
    assert 0 <= train.unit_scores().min() and train.unit_scores().max() <= 1
    pairs = train.positive_pairs(4.0)
    assert pairs.kind == "pairs" and 0 < len(pairs) < len(train)


def test_csv_shapes_and_header(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("anchor,positive,negative\na,b,c\n\"d, e\",f,g\n")
    ex = read_examples(f)
    assert ex.kind == "triplets" and ex.columns == [["a", "d, e"], ["b", "f"], ["c", "g"]]
    f.write_text("q1,p1\nq2,p2\n")
    assert read_examples(f).columns == [["q1", "q2"], ["p1", "p2"]]
    f.write_text("sentence1,sentence2,score\nx,y,0.5\nz,w,3\n")
    ex = read_examples(f)
    assert ex.kind == "scored pairs" and ex.scores.tolist() == [0.5, 3.0] and ex.columns[0] == ["x", "z"]


def test_jsonl_shapes(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(o) for o in [{"sentence1": "a", "sentence2": "b", "score": 1},
                                                   {"sentence1": "c", "sentence2": "d", "label": 0.25}]) + "\n")
    ex = read_examples(f)
    assert ex.kind == "scored pairs" and ex.scores.tolist() == [1.0, 0.25]
    f.write_text(json.dumps({"anchor": "a", "positive": "b", "negative": "c"}) + "\n")
    assert read_examples(f).kind == "triplets"


@pytest.mark.parametrize("name, text, line", [
    ("bad.csv", "a,b,1\nc,d\n", 2),               # a pair among scored pairs
    ("bad.csv", "a,b,c,d\n", 1),                  # four columns
    ("bad.csv", "a,b\n,c\n", 2),                  # an empty text
    ("bad.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "a"\n', 2),  # not JSON
    ("bad.jsonl", '{"sentence1": "a", "sentence2": "b", "score": "high"}\n', 1),
    ("bad.jsonl", '["a", "b"]\n', 1),
    ("bad.jsonl", '{"text": "a"}\n', 1),
])  # fmt: skip
def test_a_bad_row_names_file_and_line(tmp_path, name, text, line):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(DataError, match=rf"{name}:{line}: "):
        read_examples(f)


def test_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DataError, match="no examples"):
        read_examples(tmp_path / "empty.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00a,b\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_examples(tmp_path / "bin.csv")


def test_take_keeps_rows_together():
    from npminilm.finetune.data import Examples

    ex = Examples([["a", "b", "c"], ["x", "y", "z"]], np.array([1.0, 2.0, 3.0]))
    sub = ex.take(np.array([2, 0]))
    assert sub.columns == [["c", "a"], ["z", "x"]] and sub.scores.tolist() == [3.0, 1.0]
