"""Training the small language model: the loss falls on Tiny Shakespeare, a seed reproduces a run, a resumed run
equals the uninterrupted one, checkpoints round-trip, short corpora fail clearly."""

import json

import numpy as np
import pytest

from npminilm.decoder.checkpoint import load_checkpoint
from npminilm.decoder.config import GPTConfig
from npminilm.decoder.model import init_params
from npminilm.decoder.tokenizers import ByteBPETokenizer, CharTokenizer
from npminilm.decoder.train import TrainConfig, get_batch, loss_and_grads, split_data, train
from npminilm.errors import DataError
from npminilm.runtime.parallel import worker_pool


@pytest.fixture(scope="module")
def shakespeare(data_dir):
    return (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20_000]


def small_run(text, tokenizer=None, **overrides):
    tok = tokenizer or CharTokenizer.train(text)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_embd=32, n_layer=2, n_head=4, dropout=0.1)
    tc = TrainConfig(**{"batch_size": 12, "iters": 100, "lr": 3e-3, "eval_interval": 50, "eval_iters": 4,
                        "log_interval": 25, "seed": 3, **overrides})
    return tok, config, tc


def test_hundred_steps_lower_the_loss(shakespeare):
    tok, config, tc = small_run(shakespeare)
    lines = []
    result = train(np.array(tok.encode(shakespeare)), config, tc, tok, log=lines.append)
    first, last = result["history"][0], result["history"][-1]
    assert [h["step"] for h in result["history"]] == [0, 50, 100]
    assert first["val_loss"] == pytest.approx(np.log(tok.vocab_size), abs=0.1)  # uniform at the start
    assert last["val_loss"] < first["val_loss"] - 0.8 and last["train_loss"] < first["train_loss"] - 0.8
    assert np.mean(result["losses"][-10:]) < np.mean(result["losses"][:10]) - 0.8
    progress = [line for line in lines if "tok/s" in line]
    assert len(progress) == 4 and progress[-1].startswith("step   100/100 | loss ")


def test_seed_reproduces_a_run(shakespeare):
    tok, config, tc = small_run(shakespeare, iters=12, eval_interval=100)
    ids = np.array(tok.encode(shakespeare))
    a = train(ids, config, tc, tok, log=lambda s: None)
    b = train(ids, config, tc, tok, log=lambda s: None)
    c = train(ids, config, TrainConfig(**{**tc.to_dict(), "seed": 4}), tok, log=lambda s: None)
    assert a["losses"] == b["losses"] and a["losses"] != c["losses"]
    assert all(np.array_equal(a["params"][k], b["params"][k]) for k in a["params"])


def test_threads_do_not_change_a_run(shakespeare):
    """Shards of a batch run on worker threads; the numbers depend on the shard size, never on the threads."""
    tok, config, tc = small_run(shakespeare, iters=6, eval_interval=3, shard_tokens=100)  # 4 shards of 3 rows of 32
    ids = np.array(tok.encode(shakespeare))
    one = train(ids, config, tc, tok, log=lambda s: None, workers=1)
    two = train(ids, config, tc, tok, log=lambda s: None, workers=2)
    assert one["losses"] == two["losses"] and one["history"] == two["history"]
    assert all(np.array_equal(one["params"][k], two["params"][k]) for k in one["params"])


@pytest.mark.parametrize("shard_tokens", [1, 40, 64, 95, 1000])
def test_shards_add_up_to_the_whole_batch(shard_tokens):
    """Without dropout, sharding a batch (uneven shards included) is only a regrouping of the same sums."""
    rng = np.random.default_rng()
    config = GPTConfig(vocab_size=23, block_size=16, n_embd=12, n_layer=2, n_head=3, dropout=0.0)
    params = init_params(config, seed=int(rng.integers(1 << 30)), dtype=np.float64)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}  # off the symmetric start
    x, y = rng.integers(0, 23, size=(2, 7, 16))
    loss, grads = loss_and_grads(params, config, x, y)
    with worker_pool(2) as pool:
        sharded_loss, sharded = loss_and_grads(params, config, x, y, shard_tokens=shard_tokens, pool=pool)
    assert sharded_loss == pytest.approx(loss, rel=1e-13)
    for k, g in grads.items():
        np.testing.assert_allclose(sharded[k], g, rtol=1e-11, atol=1e-14 * np.abs(g).max(), err_msg=k)


def test_resume_continues_exactly(shakespeare, tmp_path):
    tok = ByteBPETokenizer.train(shakespeare, 300)
    tok, config, tc = small_run(shakespeare, tokenizer=tok, iters=12, eval_interval=5, warmup_iters=3, batch_size=8)
    ids = np.array(tok.encode(shakespeare))
    whole = train(ids, config, tc, tok, out_dir=tmp_path / "whole", log=lambda s: None)
    first = train(ids, config, tc, tok, out_dir=tmp_path / "cut", stop_at=7, log=lambda s: None)
    state = json.loads((tmp_path / "cut" / "train_state.json").read_text())
    assert state["step"] == 7 and state["adamw_step"] == 7
    lines = []
    rest = train(ids, config, tc, None, out_dir=tmp_path / "cut", resume=True, log=lines.append)
    assert lines[0].startswith(f"resumed from {tmp_path / 'cut'} at step 7")
    assert first["losses"] + rest["losses"] == whole["losses"]
    for k, v in whole["params"].items():
        assert np.array_equal(rest["params"][k], v), k
    assert [h for h in rest["history"] if h["step"] != 7] == whole["history"]  # plus the eval at the cut
    params, config2, tok2, stored, _, _ = load_checkpoint(tmp_path / "whole")
    assert config2 == config and tok2.to_dict() == tok.to_dict() and stored == tc.to_dict()
    assert all(np.array_equal(params[k], v) for k, v in whole["params"].items())


def test_batches_and_split():
    data = np.arange(100)
    train_part, val = split_data(data, 0.1, 8)
    assert train_part.size == 90 and val[0] == 90
    x, y = get_batch(train_part, 5, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 8) and np.array_equal(y, x + 1) and x.max() < 89 and y.max() <= 89
    with pytest.raises(DataError, match="empty"):
        split_data([], 0.1, 8)
    with pytest.raises(DataError, match="block size 10 is larger than the data: the held-out split has 10"):
        split_data(data, 0.1, 10)
