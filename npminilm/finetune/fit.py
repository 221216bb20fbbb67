"""The fine-tuning loop, with sentence-transformers' trainer defaults: AdamW (lr 2e-5, weight decay 0.01 except
biases and LayerNorm weights), linear warm-up over 10 % of the steps then linear decay to 0, gradient clipping
at norm 1, shuffled batches of 16; dropout as HF BERT has it in training.

A run is a pure function of its data, config and seed: epoch e's batch order comes from a generator seeded
(seed, e), step s's dropout masks for column j from one seeded (seed, s, j). The columns of a batch run side by
side on the cores, BLAS on one thread each (with threadpoolctl), so the bits do not depend on the thread count
either, and a checkpoint (parameters, AdamW moments, the step) resumes exactly. Checkpoints and the output are
sentence-transformers folders built beside their target and renamed into place: an interrupted run leaves the
last complete one.
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, InvalidArgumentError, ModelLoadError, TrainingError
from ..io.atomic import previous_dir
from ..io.tensors import load_tensors, save_tensors, write_json
from ..nn.optim import AdamW, clip_grad_norm, writable
from ..runtime.parallel import blas_pinnable, default_workers, worker_pool
from ..runtime.progress import progress_bar
from .evaluation import evaluate
from .folder import model_card, write_model_folder
from .objective import Objective


@dataclass
class FitConfig:
    loss: str = "cosent"  # mnrl | mnrl-symmetric | cosent | cosine
    matryoshka_dims: tuple = ()  # e.g. (384, 256, 128, 64): MatryoshkaLoss around `loss`
    matryoshka_weights: tuple | None = None  # 1 each by default
    epochs: int = 1
    max_steps: int | None = None  # when set, the run's length in optimizer steps instead of epochs
    batch_size: int = 16
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    scale: float = 20.0  # MNRL's and CoSENT's inverse temperature
    min_score: float | None = None  # MNRL on scored pairs: those scored at least this are the positives
    seed: int = 0
    dropout: bool = True
    eval_steps: int | None = None  # evaluate on the dev set every this many steps (and at the end)
    save_steps: int | None = None  # checkpoint every this many steps (and at each evaluation and the end)
    log_steps: int | None = None  # add the mean training loss to the history every this many steps

    def __post_init__(self):
        self.matryoshka_dims = tuple(self.matryoshka_dims)
        if self.matryoshka_weights is not None:
            self.matryoshka_weights = tuple(self.matryoshka_weights)
        for name in ("epochs", "batch_size"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("max_steps", "eval_steps", "save_steps", "log_steps"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and 0 <= self.warmup_ratio < 1 and self.weight_decay >= 0 and self.max_grad_norm >= 0):
            raise InvalidArgumentError("need lr > 0, warmup_ratio in [0, 1), weight_decay >= 0, max_grad_norm >= 0")
        self.objective  # checks the loss and the Matryoshka settings

    @property
    def objective(self):
        return Objective(self.loss, self.scale, self.matryoshka_dims, self.matryoshka_weights)

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def linear_lr(step, lr, warmup, total):
    """The learning rate of optimizer step `step` (from 0) under transformers' linear schedule with warm-up:
    lr * step / warmup during the warm-up (0 at the first step), then down linearly to 0 at `total`."""
    if step < warmup:
        return lr * step / max(1, warmup)
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def trainable_params(model):
    """The parameters training updates, by name: all but the pooler's (sentence embeddings never use it). Weights
    read from a file may be read-only views of it: those are copied first, in model.params too."""
    for name, p in model.params.items():
        if not p.flags.writeable:
            model.params[name] = p.copy()
    return {k: v for k, v in model.params.items() if not k.startswith("pooler.")}


def decays(name):
    """transformers' Trainer decays every weight but the biases and the LayerNorm weights."""
    return not name.endswith("bias") and "LayerNorm" not in name


def batch_order(n, batch_size, seed, epoch):
    """Epoch `epoch`'s batches: a permutation of range(n) from a generator seeded (seed, epoch), in batch_size
    pieces (the last one smaller)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def train_step(model, objective, batch, scores, rngs, pool=None):
    """One step's loss and gradients: each column embedded on its own (as sentence-transformers does) with its
    own dropout generator (rngs[j], or None), the loss over the columns, the columns' gradients summed in
    order. With `pool` (`runtime.parallel.worker_pool`, BLAS on one thread) the columns run side by side, and
    the result is the same bits as without. -> (loss, {name: gradient})."""
    run = map if pool is None else pool.map
    j = range(len(batch.columns))
    forwards = list(run(lambda i: model.forward_train(model.tokenize(batch.columns[i]), rng=rngs[i]), j))
    embeddings = [emb for emb, _ in forwards]
    loss, d_embeddings = objective(embeddings, scores)
    dtype = embeddings[0].dtype
    column_grads = list(run(lambda i: model.backward(d_embeddings[i].astype(dtype, copy=False), forwards[i][1]), j))
    grads = {}
    for column in column_grads:
        for name, g in column.items():
            grads[name] = g if name not in grads else grads[name] + g
    return loss, grads


def training_data(train, config):
    """(examples, scores or None) as the loss takes them: scored pairs above min_score become MNRL's pairs;
    the cosine loss's scores are scaled to [0, 1]."""
    objective = config.objective
    if config.min_score is not None:
        train = train.positive_pairs(config.min_score)
    if objective.needs_scores:
        if train.scores is None:
            raise DataError(f"{train.source or 'the training data'}: {objective.describe()} trains on scored pairs, "
                            f"not {train.kind}")
        return train, train.unit_scores() if config.loss == "cosine" else train.scores
    if train.scores is not None:
        raise InvalidArgumentError(f"{objective.describe()} trains on pairs or triplets; for scored pairs give "
                                   "min_score (the pairs scored at least that are the positives)")
    return train, None


def fit(model, train, out=None, config=None, dev=None, resume=False, show_progress_bar=None, data_name=None):
    """Fine-tune `model` in place on `train` (`data.Examples`); returns the history (a dict per log step,
    evaluation or checkpoint, and at the end: step, epoch, mean training loss since the last, dev metric and
    score).

    With `out`, writes checkpoints to out/checkpoints/last (resumable with resume=True), the best model by the
    dev score to out/best, and the final model to out: sentence-transformers folders with a model card."""
    config = FitConfig() if config is None else config
    examples, scores = training_data(train, config)
    objective = config.objective
    n = len(examples)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.max_steps or config.epochs * steps_per_epoch
    warmup = math.ceil(config.warmup_ratio * total)
    trainable = trainable_params(model)
    optimizer = AdamW(trainable, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8, decay=decays)
    out = None if out is None else Path(out)
    state = {"step": 0, "history": [], "best": None}
    if resume:
        state = _load_checkpoint(model, optimizer, out, config)
    step, history = state["step"], state["history"]
    losses = []

    def record(evaluated):
        entry = {"step": step, "epoch": step / steps_per_epoch, "loss": float(np.mean(losses)) if losses else math.nan}
        if evaluated:
            entry.update(evaluate(model, dev))
        losses.clear()
        history.append(entry)
        return entry

    def card():
        return model_card(Path(model.folder).name, {**config.to_dict(), "loss": objective.describe(), "steps": total},
                          data_name or getattr(train, "source", "") or "(in memory)", history, _version())

    columns = len(examples.columns)
    with progress_bar(total - step, desc="Steps", unit="step", show_progress_bar=show_progress_bar) as bar, \
            worker_pool(min(default_workers(), columns), pin_blas=blas_pinnable()) as pool:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            idx = batch_order(n, config.batch_size, config.seed, epoch)[k]
            rngs = [np.random.default_rng([config.seed, step, j]) if config.dropout else None for j in range(columns)]
            loss, grads = train_step(model, objective, examples.take(idx), None if scores is None else scores[idx],
                                     rngs, pool)
            if not math.isfinite(loss):
                raise TrainingError(f"the loss became {loss} at step {step} (try a lower lr)")
            clip_grad_norm(grads, config.max_grad_norm)
            optimizer.step(trainable, grads, linear_lr(step, config.lr, warmup, total))
            step += 1
            losses.append(loss)
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.4f}")
            evaluate_now = dev is not None and (step == total or _every(step, config.eval_steps))
            save_now = out is not None and (step == total or evaluate_now or _every(step, config.save_steps))
            if step == total or evaluate_now or save_now or _every(step, config.log_steps):
                entry = record(evaluate_now)
                if evaluate_now and out is not None and (state["best"] is None or entry["score"] > state["best"]):
                    state["best"] = entry["score"]
                    write_model_folder(model, out / "best", card())
                if save_now:
                    state.update(step=step, history=history)
                    _save_checkpoint(model, optimizer, out, config, state, card())
    if out is not None:
        write_model_folder(model, out, card(), merge=True)
    return history


def _every(step, period):
    return period is not None and step % period == 0


def _save_checkpoint(model, optimizer, out, config, state, card):
    def extra(folder):
        save_tensors(folder / "optimizer.safetensors", optimizer.state_tensors())
        write_json(folder / "trainer_state.json", {"step": state["step"], "adamw_step": optimizer.t,
                                                   "history": state["history"], "best": state["best"],
                                                   "config": config.to_dict()})

    write_model_folder(model, out / "checkpoints" / "last", card, extra=extra)


def _load_checkpoint(model, optimizer, out, config):
    folder = None if out is None else previous_dir(out / "checkpoints" / "last")
    if folder is None:
        raise InvalidArgumentError(f"nothing to resume: no checkpoint under {out}/checkpoints")
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{folder}: unreadable trainer_state.json ({e})") from None
    if state.get("config") != config.to_dict():
        raise InvalidArgumentError(f"{folder} was trained with another config; resume needs the same one")
    weights = load_tensors(folder / Path(model.transformer_path).relative_to(model.folder) / "model.safetensors",
                           model.dtype)
    for name, p in model.params.items():
        writable(p)[...] = weights[name]
    optimizer.load_state_tensors(load_tensors(folder / "optimizer.safetensors", model.dtype), state["adamw_step"])
    return state


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("npminilm")
    except PackageNotFoundError:
        return "(not installed)"
