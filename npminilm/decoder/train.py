"""Training a language model: data split and batches, the loop (cross-entropy, AdamW, clipping, warm-up + cosine),
periodic held-out evaluation, checkpoints, resume, and one progress line per log interval.

The loop (`fit`) takes its batches from a source: `TextBatches` (random windows of one token stream, for
pre-training) or `sft.ChatBatches` (padded conversations whose targets outside the assistant's turns are
IGNORE, for supervised fine-tuning); a batch's loss is the mean over its targets that are not IGNORE.

Reproducibility: the model's initial weights come from `seed`; one training rng (seeded from `seed`) draws every
batch and every dropout mask (or the seeds of the shards' dropout generators) in a fixed order, whatever the
number of threads, and its state is saved in each checkpoint; evaluation draws its
batches from its own rng, the same batches every time, so evaluating never moves the training stream. A run
resumed from a checkpoint therefore continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..errors import DataError
from ..nn.losses import cross_entropy_backward, cross_entropy_forward
from ..nn.optim import AdamW, clip_grad_norm, lr_at
from ..runtime.parallel import default_workers, worker_pool
from .checkpoint import load_checkpoint, save_checkpoint
from .config import GPTConfig
from .model import gpt_backward, gpt_forward, init_params, is_decayed


IGNORE = -100  # a target that is not trained (cross_entropy's ignore_index): padding, a prompt's tokens


@dataclass
class TrainConfig:
    batch_size: int = 32
    iters: int = 4000
    lr: float = 3e-4
    min_lr: float | None = None  # None: lr / 10
    warmup_iters: int | None = None  # None: min(100, iters // 10)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    val_fraction: float = 0.1
    shard_tokens: int | None = 512  # tokens per shard of a batch (see loss_and_grads); None: one shard

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    @property
    def warmup(self):
        return min(100, self.iters // 10) if self.warmup_iters is None else self.warmup_iters

    @property
    def final_lr(self):
        return self.lr / 10 if self.min_lr is None else self.min_lr


def split_data(ids, val_fraction, block_size):
    """First (1 - val_fraction) of the tokens for training, the rest held out; each must exceed a block."""
    data = np.asarray(ids, dtype=np.int64)
    if data.size == 0:
        raise DataError("the corpus is empty")
    n = int(round(data.size * (1.0 - val_fraction)))
    train, val = data[:n], data[n:]
    for name, split in (("training", train), ("held-out", val)):
        if split.size <= block_size and (split is train or val_fraction > 0):
            raise DataError(f"block size {block_size} is larger than the data: the {name} split has {split.size} "
                            f"tokens ({data.size} in all) and needs more than {block_size}")
    return train, val


def get_batch(data, batch_size, block_size, rng):
    """batch_size random windows: inputs x (B, T) and next-token targets y (B, T)."""
    windows = np.lib.stride_tricks.sliding_window_view(data, block_size + 1)  # (N - T, T + 1), no copy
    rows = windows[rng.integers(0, windows.shape[0], size=batch_size)]
    return rows[:, :-1], rows[:, 1:]


class TextBatches:
    """Pre-training batches: random windows of the training split; for evaluation, eval_iters fixed batches of
    each split, drawn by a fresh rng (the same batches at every evaluation)."""

    def __init__(self, ids, block_size, tc: TrainConfig):
        self.train, self.val = split_data(ids, tc.val_fraction, block_size)
        self.block_size, self.tc = block_size, tc

    def draw(self, rng):
        return get_batch(self.train, self.tc.batch_size, self.block_size, rng)

    def eval_batches(self):
        def fixed(data):
            rng = np.random.default_rng([self.tc.seed, 1])
            return [get_batch(data, self.tc.batch_size, self.block_size, rng) for _ in range(self.tc.eval_iters)]

        return {"train": fixed(self.train), "val": fixed(self.val) if self.val.size else []}


def shard_rows(batch_size, block_size, shard_tokens):
    """Rows per shard of a (batch_size, block_size) batch: about shard_tokens tokens, at least one row."""
    return batch_size if shard_tokens is None else max(1, min(batch_size, shard_tokens // block_size))


def loss_and_grads(params, config, x, y, rng=None, shard_tokens=None, pool=None):
    """Mean cross-entropy of the batch and the gradient of every parameter.

    The batch splits into shards of whole rows, about shard_tokens tokens each (None: one shard). Each shard runs
    forward and backward on its own, with its dlogits scaled by its share of the tokens, so the shards' gradients
    add up to the whole batch's. Small shards keep a layer's activations in cache, and a thread pool (`pool`, from
    `parallel.worker_pool`) runs shards side by side: numpy's elementwise work is single-threaded, so this is what
    keeps a second core busy. Dropout: a lone shard draws from rng itself; several draw from generators seeded
    from rng in shard order, so the numbers depend on the batch and shard_tokens, never on the thread count.
    """
    B, T = x.shape
    n_targets = np.count_nonzero(y != IGNORE)
    if n_targets == 0:
        raise DataError("a batch without a single trained target")
    rows = shard_rows(B, T, shard_tokens)
    starts = list(range(0, B, rows))
    if len(starts) == 1:
        rngs = [rng]
    else:
        rngs = [None] * len(starts) if rng is None else [np.random.default_rng(s) for s in
                                                          rng.integers(0, 2**63, size=len(starts))]

    def shard(i):
        xs, ys = x[starts[i]:starts[i] + rows], y[starts[i]:starts[i] + rows]
        share = np.count_nonzero(ys != IGNORE) / n_targets  # of the batch's mean cross-entropy
        tokens = xs.size / x.size  # of the batch's mean load-balancing loss, which counts every token
        logits, cache = gpt_forward(params, xs, config, rngs[i])
        loss, ce_cache = cross_entropy_forward(logits, ys, IGNORE)
        (dlogits,) = cross_entropy_backward(np.asarray(share, logits.dtype), ce_cache)
        # a mixture of experts adds its load-balancing loss, over this shard's tokens (aux_loss is 0 when dense)
        loss = (share * float(loss) if share else 0.0) + tokens * config.moe_aux_coef * cache["aux_loss"]
        return loss, gpt_backward(dlogits, cache, daux=tokens * config.moe_aux_coef)

    results = list(map(shard, range(len(starts))) if pool is None else pool.map(shard, range(len(starts))))
    loss, grads = results[0]
    for shard_loss, shard_grads in results[1:]:  # in shard order: the same sums whatever the threads
        loss += shard_loss
        for k, g in shard_grads.items():
            grads[k] += g
    return loss, grads


def estimate_loss(params, config, batches, pool=None):
    """Mean cross-entropy over the targets of the batches (each counted once, IGNORE left out)."""
    def batch_loss(xy):
        logits, _ = gpt_forward(params, xy[0], config)
        n = np.count_nonzero(xy[1] != IGNORE)
        return float(cross_entropy_forward(logits, xy[1], IGNORE)[0]) * n if n else 0.0, n

    sums = list(map(batch_loss, batches) if pool is None else pool.map(batch_loss, batches))
    n = sum(k for _, k in sums)
    return sum(total for total, _ in sums) / n if n else float("nan")


def train(ids, model_config: GPTConfig, tc: TrainConfig, tokenizer, out_dir=None, resume=False, stop_at=None,
          log=print, workers=None):
    """Pre-train a new decoder (initial weights from tc.seed) on the token ids: `fit` on their TextBatches."""
    batches = TextBatches(ids, model_config.block_size, tc)
    return fit(batches, init_params(model_config, seed=tc.seed), model_config, tc, tokenizer, out_dir, resume,
               stop_at, log, workers)


def fit(batches, params, model_config: GPTConfig, tc: TrainConfig, tokenizer, out_dir=None, resume=False,
        stop_at=None, log=print, workers=None):
    """Train params on batches (`.draw(rng)` a training batch, `.eval_batches()` the fixed evaluation batches by
    split); checkpoint to out_dir after each evaluation and at the end.

    workers: threads that run a batch's shards side by side (None: one per core, or NPMINILM_NUM_THREADS). The
    numbers a run produces do not depend on it.
    resume: continue from the checkpoint in out_dir (its weights, AdamW moments, rng state and step) instead of
    params.
    stop_at: stop after this step (as an interruption would), leaving a checkpoint there.
    Returns {"params", "history" (evaluations), "losses" (training loss per step)}.
    """
    opt = AdamW(params, tc.weight_decay, (tc.beta1, tc.beta2), decay=is_decayed)
    rng = np.random.default_rng(tc.seed)
    start, history = 0, []
    if resume:
        params, model_config, tokenizer, _, opt_tensors, state = load_checkpoint(out_dir, with_training_state=True)
        opt = AdamW(params, tc.weight_decay, (tc.beta1, tc.beta2), decay=is_decayed)
        opt.load_state_tensors(opt_tensors, state["adamw_step"])
        rng.bit_generator.state = state["rng"]
        start, history = int(state["step"]), list(state.get("history", []))
        log(f"resumed from {out_dir} at step {start}")
    end = tc.iters if stop_at is None else min(tc.iters, stop_at)
    eval_sets = batches.eval_batches()

    def checkpoint(step):
        if out_dir is not None:
            state = {"step": step, "rng": rng.bit_generator.state, "history": history}
            save_checkpoint(out_dir, params, model_config, tokenizer, tc.to_dict(), opt, state)

    def evaluate(step, pool):
        train_loss = estimate_loss(params, model_config, eval_sets["train"], pool)
        val_loss = estimate_loss(params, model_config, eval_sets["val"], pool)
        history.append({"step": step, "train_loss": train_loss, "val_loss": val_loss})
        checkpoint(step)
        log(f"step {step:>5} | eval train {train_loss:.4f} | val {val_loss:.4f}"
            + (f" | saved {out_dir}" if out_dir is not None else ""))

    losses, step = [], start
    rows = shard_rows(tc.batch_size, model_config.block_size, tc.shard_tokens)
    shards = -(-tc.batch_size // rows)
    # one shard: no pool, so BLAS keeps all its threads
    with worker_pool(min(default_workers() if workers is None else workers, shards)) as pool:
        t0, since = time.perf_counter(), 0
        for step in range(start, end):
            if step % tc.eval_interval == 0 and not (resume and step == start):
                evaluate(step, pool)
                t0, since = time.perf_counter(), 0
            lr = lr_at(step, tc.lr, tc.warmup, tc.iters, tc.final_lr)
            x, y = batches.draw(rng)
            loss, grads = loss_and_grads(params, model_config, x, y, rng, tc.shard_tokens, pool)
            clip_grad_norm(grads, tc.grad_clip)
            opt.step(params, grads, lr)
            losses.append(loss)
            since += x.size
            if (step + 1) % tc.log_interval == 0 or step + 1 == end:
                rate = since / max(time.perf_counter() - t0, 1e-9)
                log(f"step {step + 1:>5}/{tc.iters} | loss {loss:.4f} | lr {lr:.2e} | {rate:,.0f} tok/s")
                t0, since = time.perf_counter(), 0
        if end > start or not history or history[-1]["step"] != end:
            evaluate(end, pool)
    return {"params": params, "history": history, "losses": losses, "config": model_config}
