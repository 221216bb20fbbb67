"""Step parity with sentence-transformers: the same initial weights, batches, hyperparameters and no dropout
give the same losses and parameters, step by step, as its losses trained the way its trainer trains
(`finetune.st_reference`).

The attention key biases are the one exception to a relative bound: their exact gradient is zero (softmax
ignores a per-row constant), so both engines update them by Adam's normalised rounding noise, up to lr a step
in either direction. Their difference is bounded by that instead.
"""

import numpy as np
import pytest

from npminilm import SentenceEncoder
from npminilm.finetune.fit import FitConfig
from npminilm.finetune.st_reference import parameters, train_sentence_transformers
from tests.helpers import toy_pairs, write_random_folder

STEPS = 20
TOLERANCES = {"float32": (1e-5, 1e-4), "float64": (1e-9, 1e-9)}  # (losses, parameters), relative


def compare(enc, folder, train, config, dtype):
    ours = enc.fit(train, **config.to_dict(), show_progress_bar=False)
    model, theirs = train_sentence_transformers(folder, train, config, dtype)
    params = parameters(model)
    loss_tol, param_tol = TOLERANCES[dtype]
    our_losses = np.array([h["loss"] for h in ours])
    assert len(our_losses) == STEPS
    assert np.abs(our_losses - theirs).max() <= loss_tol * np.abs(theirs).max(), (our_losses, theirs)
    worst = {}
    for name, theirs_p in params.items():
        if name.startswith("pooler."):
            continue
        diff = float(np.abs(enc.params[name] - theirs_p).max())
        if name.endswith("attention.self.key.bias"):
            assert diff <= 2 * config.lr * STEPS, (name, diff)
            continue
        worst[name] = diff / float(np.abs(theirs_p).max())
    assert len(worst) == len(enc.params) - 2 - enc.bert_config.num_hidden_layers  # but the pooler and key biases
    assert max(worst.values()) <= param_tol, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    return np.abs(our_losses - theirs).max(), max(worst.values())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["cosent", "cosine", "mnrl"])
def test_twenty_steps_match_on_a_random_folder(tmp_path, model_dir, dtype, loss):
    folder = write_random_folder(tmp_path / "base", model_dir, layers=2, hidden=32, heads=4, inter=48, seed=5)
    rng = np.random.default_rng(6)
    train = toy_pairs(rng, 160)
    config = FitConfig(loss=loss, max_steps=STEPS, batch_size=8, lr=1e-3, dropout=False, log_steps=1,
                       min_score=0.5 if loss == "mnrl" else None)
    compare(SentenceEncoder(folder, dtype=dtype), folder, train, config, dtype)


def test_twenty_steps_match_on_all_minilm(model_dir, data_dir):
    from npminilm.finetune.data import read_examples

    train = read_examples(data_dir / "stsb" / "stsb-en-train.csv").take(np.arange(320))
    config = FitConfig(loss="cosent", max_steps=STEPS, batch_size=16, lr=2e-5, dropout=False, log_steps=1)
    compare(SentenceEncoder(model_dir), model_dir, train, config, "float32")


def test_sentence_transformers_loads_the_folder_with_the_same_embeddings(tmp_path, model_dir, data_dir):
    from sentence_transformers import SentenceTransformer

    from npminilm.finetune.data import read_examples

    enc = SentenceEncoder(model_dir)
    train = read_examples(data_dir / "stsb" / "stsb-en-train.csv").take(np.arange(48))
    enc.fit(train, tmp_path / "out", loss="cosine", max_steps=3, lr=1e-4, show_progress_bar=False)
    texts = read_examples(data_dir / "stsb" / "stsb-en-test.csv").columns[0][:20]
    theirs = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(texts, convert_to_numpy=True)
    ours = enc.encode(texts)
    assert np.abs(ours - SentenceEncoder(model_dir).encode(texts)).max() > 1e-4  # the weights did move
    assert np.abs(ours - theirs).max() <= 1e-5
