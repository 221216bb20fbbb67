"""Prompts, pooling that leaves the prompt out, truncate_dim, precision and similarity functions, with NumPy alone:
against the padded BertModel-style forward, util's own functions, and every bad argument's typed error."""

import json

import numpy as np
import pytest

from npminilm import SentenceEncoder, util
from npminilm.errors import InvalidArgumentError, ModelLoadError
from tests.helpers import assert_close, write_random_folder

PROMPT = "Instruct: answer the question\nQuery: "
TEXTS = ["what is the capital of France?", "A man is playing a guitar.", "ok", "word " * 80]


def with_st_config(folder, include_prompt=True, **config):
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "include_prompt": include_prompt}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def prompt_folder(tmp_path, model_dir):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    folder = write_random_folder(tmp_path / "m", model_dir, seed=seed, pooling=("mean",), normalize=False)
    return with_st_config(folder, include_prompt=False, prompts={"query": PROMPT, "passage": "passage: "},
                          default_prompt_name="query", similarity_fn_name="manhattan")


def test_prompt_left_out_of_pooling_equals_the_padded_forward(prompt_folder):
    """include_prompt false: mean over the tokens after the prompt's ([CLS] and the prompt's own), from the
    padded forward, independently of the packed path."""
    enc = SentenceEncoder(prompt_folder, dtype="float64")
    assert enc.default_prompt_name == "query" and enc.similarity_fn_name == "manhattan"
    skip = len(enc.tokenize([PROMPT])["input_ids"][0]) - 1  # [CLS] + the prompt's tokens, no [SEP]
    features = enc.tokenize([PROMPT + t for t in TEXTS])
    h = enc.forward(features["input_ids"], features["attention_mask"])["last_hidden_state"]
    expected = np.stack([h[i, skip:n].mean(axis=0) for i, n in enumerate(features["attention_mask"].sum(1))])
    assert_close(enc.encode(TEXTS), expected, 1e-12, name="default prompt, left out of pooling")
    assert_close(enc.encode(TEXTS, prompt_name="query"), expected, 1e-12, name="prompt_name query")
    assert_close(enc.encode_query(TEXTS), expected, 1e-12, name="encode_query")
    assert not np.allclose(enc.encode(TEXTS, prompt=""), expected)  # an empty prompt: none at all


def test_encode_document_and_prompt_precedence(prompt_folder):
    enc = SentenceEncoder(prompt_folder, dtype="float64")
    # sentence-transformers' order: "document" (always there, blank unless given) before "passage"
    assert enc.prompts == {"query": PROMPT, "document": "", "passage": "passage: "}
    assert_close(enc.encode_document(TEXTS), enc.encode(TEXTS, prompt=""), 0, name="blank document prompt")
    mine = SentenceEncoder(prompt_folder, dtype="float64", prompts={"document": "passage: "},
                           default_prompt_name="document")
    assert mine.prompts["query"] == PROMPT and mine.default_prompt_name == "document"
    assert_close(mine.encode(TEXTS), enc.encode(TEXTS, prompt_name="passage"), 0, name="caller's prompts first")


@pytest.mark.parametrize("normalize", [None, True, False])
def test_truncate_dim_order(tmp_path, model_dir, normalize):
    """The folder's Normalize, then the cut, then normalize_embeddings=True (sentence-transformers' order)."""
    enc = SentenceEncoder(write_random_folder(tmp_path / "m", model_dir, normalize=True), dtype="float64")
    d = int(np.random.default_rng().integers(1, enc.dim))
    full = enc.encode(TEXTS, normalize_embeddings=normalize)
    cut = enc.encode(TEXTS, truncate_dim=d, normalize_embeddings=normalize)
    expected = full[:, :d] / np.linalg.norm(full[:, :d], axis=1, keepdims=True) if normalize else full[:, :d]
    assert_close(cut, expected, 1e-12, name=f"truncate_dim {d}, normalize_embeddings {normalize}")
    assert SentenceEncoder(enc.folder, truncate_dim=d).encode(TEXTS[0]).shape == (d,)
    dicts = enc.encode(TEXTS[:2], truncate_dim=d, output_value=None)
    assert [item["sentence_embedding"].shape for item in dicts] == [(d,), (d,)]


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision_quantizes_the_call_s_embeddings(encoder, precision):
    got = encoder.encode(TEXTS, precision=precision, truncate_dim=100)
    np.testing.assert_array_equal(got, util.quantize_embeddings(encoder.encode(TEXTS, truncate_dim=100), precision))
    assert got.shape == (len(TEXTS), 13 if precision.endswith("binary") else 100)


@pytest.mark.parametrize("fn", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_follows_similarity_fn_name(encoder, fn):
    a, b = encoder.encode(TEXTS), encoder.encode(TEXTS[1:])
    enc = SentenceEncoder(encoder.folder, similarity_fn_name=fn)
    matrix, pairwise = util.SIMILARITY_FUNCTIONS[fn]
    np.testing.assert_array_equal(enc.similarity(a, b), matrix(a, b))
    np.testing.assert_array_equal(enc.similarity_pairwise(a[1:], b), pairwise(a[1:], b))


@pytest.mark.parametrize("make, words", [
    (lambda d: SentenceEncoder(d).encode("x", prompt_name="passage"), "unknown prompt_name 'passage'"),
    (lambda d: SentenceEncoder(d).encode("x", prompt=3), "prompt must be a string"),
    (lambda d: SentenceEncoder(d, prompts=["query: "]), "prompts must be a dict"),
    (lambda d: SentenceEncoder(d, default_prompt_name="query2"), "default_prompt_name 'query2'"),
    (lambda d: SentenceEncoder(d, truncate_dim=385), "truncate_dim must be an integer from 1 to the model's 384"),
    (lambda d: SentenceEncoder(d).encode("x", truncate_dim=0), "truncate_dim must be"),
    (lambda d: SentenceEncoder(d).encode("x", truncate_dim=8.0), "truncate_dim must be"),
    (lambda d: SentenceEncoder(d).encode(["x", "y"], precision="int4"), "precision must be one of"),
    (lambda d: SentenceEncoder(d).encode(["x"], precision="int8", output_value="token_embeddings"),
     "use output_value='sentence_embedding'"),
    (lambda d: SentenceEncoder(d).encode(["x"], precision="int8"), "more than one embedding"),
    (lambda d: SentenceEncoder(d, similarity_fn_name="jaccard"), "similarity_fn_name must be one of"),
])  # fmt: skip
def test_bad_arguments_are_typed_errors(model_dir, make, words):
    with pytest.raises(InvalidArgumentError, match=words.replace("(", r"\(").replace("[", r"\[")):
        make(model_dir)


@pytest.mark.parametrize("config, pooling, words", [
    ({"prompts": {"q": "q: "}, "default_prompt_name": "query"}, {}, "default_prompt_name 'query' is not among"),
    ({"prompts": ["q: "]}, {}, "prompts must map names to strings"),
    ({"similarity_fn_name": "jaccard"}, {}, "similarity_fn_name must be one of"),
    ({}, {"include_prompt": "no"}, "include_prompt must be true or false"),
])  # fmt: skip
def test_bad_folder_configs_name_the_file(tmp_path, model_dir, config, pooling, words):
    folder = write_random_folder(tmp_path / "m", model_dir)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    old = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**old, **pooling}))
    with pytest.raises(ModelLoadError, match=words) as err:
        SentenceEncoder(folder)
    assert ".json" in str(err.value)
