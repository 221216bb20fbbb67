"""CrossEncoder against sentence_transformers.CrossEncoder and transformers' BertForSequenceClassification, on
random-weight folders of 2 and 6 layers with 1 and 3 labels built here: scores, ranking, truncation of long
pairs, and the gradients of every tensor against torch autograd."""

import json
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder as STCrossEncoder
from transformers import BertConfig, BertForSequenceClassification

from npminilm import CrossEncoder
from npminilm.errors import InvalidArgumentError
from tests.encoder.test_folder_oracle import TOKENIZER_FILES
from tests.helpers import assert_close

LONG = "The quick brown fox jumps over the lazy dog near the river bank. " * 12
PAIRS = [("what is a cat?", "A cat is a small domesticated carnivorous mammal."), ("q", "d"),
         ("how tall is Mount Everest?", LONG), (LONG, "short answer"), (LONG, LONG[::-1]),
         ("Ünïcödé 東京 🙂", "two\nlines")]


def scale_of(scores):
    """Raw logits (identity activation) reach a few units: judge them within 1e-5 of their scale."""
    return max(1.0, float(np.abs(scores).max()))


def build_cross_encoder(path, model_dir, layers, labels, seed, activation=None, max_positions=128):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=80, max_position_embeddings=max_positions, type_vocab_size=2,
                        num_labels=labels)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # every tensor random, LayerNorm weights around 1
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.08) + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
    model.save_pretrained(path)
    if activation is not None:
        raw = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**raw, "sentence_transformers": {"activation_fn": activation}}))
    for name in TOKENIZER_FILES:
        shutil.copy(model_dir / name, path / name)
    return path, model


@pytest.fixture(scope="module", params=[(2, 1), (6, 1), (2, 3), (6, 3)], ids=lambda p: f"{p[0]}layers-{p[1]}labels")
def folder(request, tmp_path_factory, model_dir):
    layers, labels = request.param
    seed = int(np.random.SeedSequence().entropy % 2**31)
    path, model = build_cross_encoder(tmp_path_factory.mktemp("ce") / "m", model_dir, layers, labels, seed)
    return path, model, labels, seed


@pytest.mark.parametrize("max_length", [48, 128])
def test_predict_matches_sentence_transformers(folder, max_length):
    path, _, labels, seed = folder
    ours, ref = CrossEncoder(path, max_length=max_length), STCrossEncoder(str(path), max_length=max_length,
                                                                         device="cpu")
    got, expected = ours.predict(PAIRS, batch_size=4), ref.predict(PAIRS, batch_size=4)
    assert got.shape == expected.shape == ((len(PAIRS),) if labels == 1 else (len(PAIRS), labels))
    assert_close(got, expected, 1e-5 * scale_of(expected), name=f"predict, seed {seed}")
    assert_close(ours.predict(PAIRS[0]), ref.predict(PAIRS[0]), 1e-5 * scale_of(expected), name="one pair")
    if labels > 1:
        assert_close(ours.predict(PAIRS, apply_softmax=True), ref.predict(PAIRS, apply_softmax=True), 1e-5,
                     name="softmax")


def test_rank_matches_sentence_transformers(folder):
    path, _, labels, seed = folder
    ours, ref = CrossEncoder(path), STCrossEncoder(str(path), device="cpu")
    # unique texts: equal documents tie, and a tie's order rests on the last bit of each engine's batching
    documents = list(dict.fromkeys([b for _, b in PAIRS] + [a for a, _ in PAIRS]))
    if labels != 1:  # both refuse: ranking needs one score per document
        with pytest.raises(InvalidArgumentError, match="use predict"):
            ours.rank("q", documents)
        with pytest.raises(ValueError):
            ref.rank("q", documents)
        return
    for top_k in (None, 3):
        got = ours.rank("how tall is Mount Everest?", documents, top_k=top_k, return_documents=True)
        expected = ref.rank("how tall is Mount Everest?", documents, top_k=top_k, return_documents=True)
        # the same order, except that two scores within float32's noise of each other may trade places
        reference = ref.predict([("how tall is Mount Everest?", d) for d in documents])
        assert len(got) == len(expected) and len({g["corpus_id"] for g in got}) == len(got)
        assert_close(reference[[g["corpus_id"] for g in got]], [e["score"] for e in expected], 1e-6,
                     name=f"reference scores in our order, seed {seed}")
        assert [g["text"] for g in got] == [documents[g["corpus_id"]] for g in got]
        assert_close([g["score"] for g in got], [e["score"] for e in expected], 1e-5, name="rank scores")


def test_activation_from_the_folder(tmp_path, model_dir):
    path, _ = build_cross_encoder(tmp_path / "m", model_dir, 2, 1, seed=3,
                                  activation="torch.nn.modules.linear.Identity")
    ours, ref = CrossEncoder(path), STCrossEncoder(str(path), device="cpu")
    expected = ref.predict(PAIRS)
    assert_close(ours.predict(PAIRS), expected, 1e-5 * scale_of(expected), name="identity activation from config.json")
    assert_close(ours.predict(PAIRS, activation_fn="sigmoid"), 1 / (1 + np.exp(-ref.predict(PAIRS))), 1e-5,
                 name="activation_fn per call")


def test_gradients_match_torch_autograd(folder):
    """float64: logits equal BertForSequenceClassification's in eval mode, and the gradient of sum(R * logits)
    for every parameter equals torch autograd's."""
    path, model, labels, seed = folder
    ours = CrossEncoder(path, dtype="float64", max_length=48)
    features = ours.tokenize(PAIRS)
    logits, cache = ours.forward_train(features)
    model = model.double().eval()
    torch_logits = model(**{k: torch.from_numpy(v) for k, v in features.items()}).logits
    assert_close(logits, torch_logits.detach().numpy(), 1e-10, name="logits")
    weights = np.random.default_rng(seed).standard_normal(logits.shape)
    grads = ours.backward(weights, cache)
    model.zero_grad()
    (torch_logits * torch.from_numpy(weights)).sum().backward()
    expected = {n.removeprefix("bert."): p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(expected)
    for name, g in grads.items():
        assert_close(g, expected[name], 1e-9 * max(1.0, np.abs(expected[name]).max()), name=name)


def test_fine_tuning_steps_match_torch(tmp_path, model_dir):
    """The same machinery as the sentence encoder's: forward_train, BCE on the logits (sentence-transformers'
    BinaryCrossEntropyLoss), backward, AdamW. Five float64 steps give torch's losses and parameters."""
    from npminilm.nn.losses import bce_with_logits_backward, bce_with_logits_forward
    from npminilm.nn.optim import AdamW

    seed = int(np.random.SeedSequence().entropy % 2**31)
    path, model = build_cross_encoder(tmp_path / "m", model_dir, 2, 1, seed)
    ours = CrossEncoder(path, dtype="float64", max_length=32)
    model = model.double().eval()  # no dropout in either engine
    labels = np.random.default_rng(seed).integers(0, 2, len(PAIRS)).astype(np.float64)
    features = ours.tokenize(PAIRS)
    inputs = {k: torch.from_numpy(v) for k, v in features.items()}
    optimizer = AdamW(ours.params, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, decay=lambda name: True)
    torch_optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    for step in range(5):
        logits, cache = ours.forward_train(features)
        loss, loss_cache = bce_with_logits_forward(logits[:, 0], labels)
        (d_logits,) = bce_with_logits_backward(np.float64(1.0), loss_cache)
        optimizer.step(ours.params, ours.backward(d_logits[:, None], cache), lr=1e-3)
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.BCEWithLogitsLoss()(model(**inputs).logits[:, 0], torch.from_numpy(labels))
        torch_loss.backward()
        torch_optimizer.step()
        assert abs(float(loss) - torch_loss.item()) < 1e-10, f"step {step}, seed {seed}"
    for name, p in model.named_parameters():
        assert_close(ours.params[name.removeprefix("bert.")], p.detach().numpy(), 1e-9, name=name)
