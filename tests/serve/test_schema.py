"""Request bodies read into plain values, and every way they can be wrong (no server needed)."""

import pytest

from npminilm.errors import RequestError
from npminilm.serve import schema


def test_openai_inputs_in_each_form():
    read = lambda body: schema.openai_embeddings(body, 8, 384, False)  # noqa: E731
    assert read({"input": "a"}).texts == ["a"]
    assert read({"input": ["a", "b"]}).texts == ["a", "b"]
    assert read({"input": [5, 7]}).ids == [[5, 7]]
    assert read({"input": [[5], [7, 8]]}).ids == [[5], [7, 8]]
    req = read({"input": "a", "encoding_format": "base64", "dimensions": 64, "truncate": True})
    assert (req.encoding_format, req.dimensions, req.truncate, req.normalize) == ("base64", 64, True, None)
    assert schema.openai_embeddings({"input": "a"}, 8, 384, True).truncate  # the server's default


def test_tei_bodies():
    req = schema.tei_embed({"inputs": ["a"], "normalize": False}, 8, 384, False)
    assert (req.texts, req.normalize, req.field) == (["a"], False, "inputs")
    assert schema.tei_tokenize({"inputs": "a b", "add_special_tokens": False}, 8) == (["a b"], False)
    assert schema.tei_similarity({"inputs": {"source_sentence": "s", "sentences": ["a", "b"]}}, 8) == ("s", ["a", "b"])


@pytest.mark.parametrize("body, status, param", [
    ({}, 400, "input"), ({"input": {}}, 400, "input"), ({"input": True}, 400, "input"),
    ({"input": ["a", None]}, 400, "input"), ({"input": [[1, True]]}, 400, "input"), ({"input": [-1]}, 400, "input"),
    ({"input": ["x"] * 9}, 413, "input"), ({"input": [[1]] * 9}, 413, "input"),
    ({"input": "a", "dimensions": True}, 400, "dimensions"), ({"input": "a", "dimensions": 2.0}, 400, "dimensions"),
    ({"input": "a", "encoding_format": None}, 400, "encoding_format"),
])  # fmt: skip
def test_bad_openai_bodies(body, status, param):
    with pytest.raises(RequestError) as err:
        schema.openai_embeddings(body, 8, 384, False)
    assert (err.value.status, err.value.param) == (status, param), str(err.value)


@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b"{", b'"text"', b"\xc3\x28"])
def test_read_json_wants_an_object(raw):
    with pytest.raises(RequestError):
        schema.read_json(raw)
