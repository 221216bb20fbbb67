"""The fine-tuning loop on a small random-weight folder: it learns, resumes exactly, and writes a folder that
loads with the same embeddings; bad settings are typed errors."""

import json

import numpy as np
import pytest

from npminilm import SentenceEncoder
from npminilm.errors import DataError, InvalidArgumentError
from npminilm.finetune.data import Examples
from npminilm.finetune.fit import FitConfig, batch_order, linear_lr
from tests.helpers import toy_pairs, write_random_folder


@pytest.fixture
def folder(tmp_path, model_dir):
    return write_random_folder(tmp_path / "base", model_dir, layers=2, hidden=24, heads=4, inter=40)


def test_the_loss_goes_down_and_the_best_dev_model_is_kept(folder, tmp_path):
    from npminilm.finetune.evaluation import evaluate

    rng = np.random.default_rng(0)
    train, dev = toy_pairs(rng, 96), toy_pairs(rng, 64)
    enc = SentenceEncoder(folder)
    history = enc.fit(train, tmp_path / "out", dev=dev, loss="cosent", epochs=8, batch_size=16, lr=1e-2,
                      eval_steps=12, show_progress_bar=False)
    assert [h["step"] for h in history] == [12, 24, 36, 48]
    assert history[-1]["loss"] < 0.85 * history[0]["loss"], history
    best = max(history, key=lambda h: h["score"])
    assert evaluate(SentenceEncoder(tmp_path / "out" / "best"), dev)["score"] == pytest.approx(best["score"], abs=1e-6)
    assert evaluate(SentenceEncoder(tmp_path / "out"), dev)["score"] == pytest.approx(history[-1]["score"], abs=1e-6)


@pytest.mark.parametrize("loss", ["mnrl", "mnrl-symmetric", "cosine", "cosent"])
def test_folder_loads_with_the_same_embeddings_and_a_card(folder, tmp_path, loss):
    rng = np.random.default_rng(1)
    train = toy_pairs(rng, 20)
    enc = SentenceEncoder(folder)
    enc.fit(train, tmp_path / "out", loss=loss, max_steps=3, batch_size=8, lr=1e-3,
            min_score=0.5 if loss.startswith("mnrl") else None, matryoshka_dims=(24, 8), show_progress_bar=False)
    texts = ["a red cat runs", "the old dog sleeps"]
    again = SentenceEncoder(tmp_path / "out")
    assert np.array_equal(again.encode(texts), enc.encode(texts))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "base_model: base" in card and "MatryoshkaLoss" in card and "`lr`: 0.001" in card
    assert json.loads((tmp_path / "out" / "modules.json").read_text())[1]["type"].endswith("Pooling")


def test_checkpoints_leave_the_run_alone_and_resume_checks_the_config(folder, tmp_path):
    rng = np.random.default_rng(2)
    train = toy_pairs(rng, 40)
    settings = dict(loss="cosent", max_steps=6, batch_size=8, lr=1e-3, show_progress_bar=False)
    plain = SentenceEncoder(folder)
    plain.fit(train, **settings)  # no out: nothing written
    saved = SentenceEncoder(folder)
    saved.fit(train, tmp_path / "a", save_steps=2, **settings)
    assert all(np.array_equal(plain.params[k], saved.params[k]) for k in plain.params)
    assert not all(np.array_equal(plain.params[k], SentenceEncoder(folder).params[k]) for k in plain.params)
    other = SentenceEncoder(folder)
    with pytest.raises(InvalidArgumentError, match="another config"):
        other.fit(train, tmp_path / "a", resume=True, save_steps=2, **{**settings, "lr": 2e-3})
    with pytest.raises(InvalidArgumentError, match="nothing to resume"):
        other.fit(train, tmp_path / "none", resume=True, **settings)


def test_resume_continues_from_a_mid_run_checkpoint(folder, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    train = toy_pairs(rng, 40)
    settings = dict(loss="cosent", max_steps=6, batch_size=8, lr=1e-3, save_steps=2, show_progress_bar=False)
    straight = SentenceEncoder(folder)
    straight.fit(train, tmp_path / "a", **settings)

    import npminilm.finetune.fit as fit_module

    calls = {"n": 0}
    real = fit_module.train_step

    def dies_at_step_5(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(fit_module, "train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        SentenceEncoder(folder).fit(train, tmp_path / "b", **settings)
    monkeypatch.setattr(fit_module, "train_step", real)
    last = tmp_path / "b" / "checkpoints" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 4  # the last complete checkpoint
    assert SentenceEncoder(last).encode("x").shape == (24,)  # itself a loadable model folder
    resumed = SentenceEncoder(folder)
    resumed.fit(train, tmp_path / "b", resume=True, **settings)
    assert all(np.array_equal(straight.params[k], resumed.params[k]) for k in straight.params)


def test_schedule_and_batches():
    lrs = [linear_lr(s, 1.0, 3, 10) for s in range(11)]
    assert lrs[:4] == [0.0, 1 / 3, 2 / 3, 1.0] and lrs[10] == 0.0
    assert all(a > b for a, b in zip(lrs[3:10], lrs[4:11]))
    order = batch_order(10, 4, seed=5, epoch=1)
    assert [len(b) for b in order] == [4, 4, 2] and sorted(np.concatenate(order).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(order, batch_order(10, 4, seed=5, epoch=1)))
    assert not np.array_equal(np.concatenate(order), np.concatenate(batch_order(10, 4, seed=5, epoch=2)))


def test_bad_settings_are_typed_errors(folder):
    enc = SentenceEncoder(folder)
    pairs = Examples([["a", "b"], ["c", "d"]])
    scored = Examples([["a", "b"], ["c", "d"]], np.array([1.0, 0.0]))
    with pytest.raises(InvalidArgumentError):
        enc.fit(pairs, loss="triplet")
    with pytest.raises(InvalidArgumentError):
        enc.fit(pairs, batch_size=0)
    with pytest.raises(DataError):
        enc.fit(pairs, loss="cosent")  # needs scores
    with pytest.raises(InvalidArgumentError, match="min_score"):
        enc.fit(scored, loss="mnrl")
    with pytest.raises(InvalidArgumentError):
        FitConfig(matryoshka_dims=(64, 0))


def test_a_diverging_loss_stops_with_a_typed_error(folder, monkeypatch):
    import npminilm.finetune.fit as fit_module
    from npminilm.errors import TrainingError

    monkeypatch.setattr(fit_module, "train_step", lambda *args: (float("nan"), {}))
    with pytest.raises(TrainingError, match="at step 0"):
        SentenceEncoder(folder).fit(toy_pairs(np.random.default_rng(0), 8), loss="cosent", show_progress_bar=False)
