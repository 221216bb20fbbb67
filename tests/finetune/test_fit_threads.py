"""A fine-tuning run is the same bits on one thread or two (dropout on): each column's dropout masks come from
their own seeded generator, and the columns run with BLAS on one thread each. Needs threadpoolctl."""

import numpy as np

from npminilm import SentenceEncoder
from tests.helpers import toy_pairs, write_random_folder


def test_one_and_two_threads_train_the_same_bits(tmp_path, model_dir, monkeypatch):
    folder = write_random_folder(tmp_path / "base", model_dir)
    train = toy_pairs(np.random.default_rng(4), 32)
    runs = []
    for threads in ("1", "2"):
        monkeypatch.setenv("NPMINILM_NUM_THREADS", threads)
        enc = SentenceEncoder(folder)
        history = enc.fit(train, loss="cosent", max_steps=4, batch_size=8, lr=1e-3, log_steps=1,
                          show_progress_bar=False)
        runs.append((enc.params, [h["loss"] for h in history]))
    (p1, l1), (p2, l2) = runs
    assert l1 == l2
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert not np.array_equal(p1["encoder.layer.0.intermediate.dense.weight"],
                              SentenceEncoder(folder).params["encoder.layer.0.intermediate.dense.weight"])
