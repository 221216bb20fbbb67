"""CrossEncoder with NumPy alone: the packed inference path against the padded training forward, the backward
against float64 central differences (dropout on), and every bad folder or argument's typed error."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from npminilm import CrossEncoder
from npminilm.errors import InvalidArgumentError, InvalidInputError, ModelLoadError
from tests.helpers import assert_close, write_random_folder

PAIRS = [("what is a cat?", "A cat is a small mammal."), ("q", "d"), ("how tall is it? " * 9, "very " * 30),
         ("Ünïcödé 東京", "two\nlines")]


def write_cross_encoder(path, model_dir, labels, seed):
    """write_random_folder's BERT (pooler included) as a BertForSequenceClassification with `labels` labels."""
    folder = write_random_folder(path, model_dir, seed=seed, prefix=True, modules=False)
    raw = json.loads((folder / "config.json").read_text())
    raw.update(architectures=["BertForSequenceClassification"], id2label={str(i): f"L{i}" for i in range(labels)})
    (folder / "config.json").write_text(json.dumps(raw))
    tensors = load_file(str(folder / "model.safetensors"))
    rng = np.random.default_rng(seed + 1)
    tensors["classifier.weight"] = (rng.standard_normal((labels, raw["hidden_size"])) * 0.3).astype(np.float32)
    tensors["classifier.bias"] = (rng.standard_normal(labels) * 0.3).astype(np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(params=[1, 3], ids=["1label", "3labels"])
def folder(request, tmp_path, model_dir):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    return write_cross_encoder(tmp_path / "ce", model_dir, request.param, seed), request.param


def test_packed_predict_equals_the_padded_forward(folder):
    path, labels = folder
    ce = CrossEncoder(path, dtype="float64", max_length=40)
    logits, _ = ce.forward_train(ce.tokenize(PAIRS))
    expected = 1 / (1 + np.exp(-logits[:, 0])) if labels == 1 else logits
    assert_close(ce.predict(PAIRS, batch_size=3), expected, 1e-12, name="predict vs padded forward")
    if labels == 1:
        ranked = ce.rank("q", [b for _, b in PAIRS], top_k=2, return_documents=True)
        scores = ce.predict([("q", b) for _, b in PAIRS])
        assert [r["corpus_id"] for r in ranked] == list(np.argsort(-scores)[:2])
        assert ranked[0]["text"] == PAIRS[ranked[0]["corpus_id"]][1]


def test_backward_matches_finite_differences_with_dropout(folder):
    path, labels = folder
    ce = CrossEncoder(path, dtype="float64", max_length=24)
    features = ce.tokenize(PAIRS)
    weights = np.random.default_rng().standard_normal((len(PAIRS), labels))

    def loss():
        logits, cache = ce.forward_train(features, rng=np.random.default_rng(7))  # the same masks every call
        return float((logits * weights).sum()), cache

    _, cache = loss()
    grads = ce.backward(weights, cache)
    rng = np.random.default_rng()
    for name in ("classifier.weight", "classifier.bias", "pooler.dense.weight", "embeddings.token_type_embeddings.weight",
                 "encoder.layer.1.attention.self.query.weight", "encoder.layer.0.output.dense.bias"):
        p = ce.params[name]
        for index in [tuple(rng.integers(0, s) for s in p.shape) for _ in range(3)]:
            if name == "embeddings.token_type_embeddings.weight":
                index = (1, index[1])  # the second text's segment
            old = p[index]
            p[index] = old + 1e-6
            up, _ = loss()
            p[index] = old - 1e-6
            down, _ = loss()
            p[index] = old
            numeric = (up - down) / 2e-6
            assert abs(grads[name][index] - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name, index)


def test_not_a_sequence_classifier(model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="is not BertForSequenceClassification.*for embeddings use SentenceEncoder"):
        CrossEncoder(model_dir)
    folder = write_cross_encoder(tmp_path / "ce", model_dir, 1, 0)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["classifier.bias"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="missing tensor 'classifier.bias'"):
        CrossEncoder(folder)


@pytest.mark.parametrize("call, error, words", [
    (lambda ce: ce.predict("just one text"), InvalidInputError, "pairs"),
    (lambda ce: ce.predict([("a", "b"), ("c",)]), InvalidInputError, r"sentences\[1\] must be a pair"),
    (lambda ce: ce.predict([("a", "b")], activation_fn="relu6"), InvalidArgumentError, "activation_fn must be"),
    (lambda ce: ce.predict([("a", "b")], batch_size=0), InvalidArgumentError, "batch_size"),
    (lambda ce: ce.rank(["q"], ["d"]), InvalidInputError, "query must be a str"),
    (lambda ce: ce.rank("q", ["d"], top_k=0), InvalidArgumentError, "top_k"),
    (lambda ce: setattr(ce, "max_length", 1000), InvalidArgumentError, "max_length must be"),
])  # fmt: skip
def test_bad_arguments(tmp_path, model_dir, call, error, words):
    ce = CrossEncoder(write_cross_encoder(tmp_path / "ce", model_dir, 1, 0))
    with pytest.raises(error, match=words):
        call(ce)
