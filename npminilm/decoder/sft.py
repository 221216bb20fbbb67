"""Supervised fine-tuning: a pre-trained decoder learns to answer in the chat template (`chat.py`), its loss on
the assistant's tokens only.

    base checkpoint --(tokenizer + <|im_start|>, <|im_end|>; wte grows a row for each)--> conversations as
    padded batches, targets IGNORE outside the assistant's turns --> `train.fit` --> a chat checkpoint

The new embedding rows start at the mean of the existing ones (as transformers' resize_token_embeddings does by
default), so the new tokens begin as an average token rather than as noise; the tied LM head gives them the same
row. A conversation longer than the context is cut to its first block_size + 1 tokens; one whose cut leaves no
assistant token is dropped. The last val_fraction of the conversations is held out for evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from .chat import chat_tokenizer, read_chats
from .checkpoint import load_checkpoint
from .config import GPTConfig
from .train import IGNORE, TrainConfig, fit


def grow_vocab(params, config: GPTConfig, vocab_size: int):
    """-> (params, config) with wte (V, C) grown to vocab_size rows, the new ones the mean of the old ones."""
    wte = params["wte.weight"]  # (V, C)
    if vocab_size <= wte.shape[0]:
        return params, config
    new = np.repeat(wte.mean(axis=0, keepdims=True), vocab_size - wte.shape[0], axis=0)
    grown = {**params, "wte.weight": np.concatenate([wte, new]).astype(wte.dtype)}
    return grown, GPTConfig.from_dict({**config.to_dict(), "vocab_size": vocab_size})


def to_example(ids, trained, block_size):
    """A conversation as (x, y): inputs ids[:-1] and next-token targets ids[1:], a target IGNORE unless it is an
    assistant token; cut to block_size inputs. None when no target is trained."""
    ids, trained = ids[:block_size + 1], trained[:block_size + 1]
    x = np.asarray(ids[:-1], dtype=np.int64)
    y = np.where(trained[1:], ids[1:], IGNORE).astype(np.int64)
    return (x, y) if np.any(y != IGNORE) else None


def pad(examples):
    """Examples of different lengths as one batch (B, T): inputs padded with id 0, targets with IGNORE. The
    padding is on the right, so a causal model's outputs at the real positions do not see it."""
    T = max(x.size for x, _ in examples)
    X = np.zeros((len(examples), T), np.int64)
    Y = np.full((len(examples), T), IGNORE, np.int64)
    for i, (x, y) in enumerate(examples):
        X[i, :x.size], Y[i, :y.size] = x, y
    return X, Y


class ChatBatches:
    """Batches of conversations for `train.fit`: batch_size drawn at random for each step; for evaluation, up to
    eval_iters fixed batches of each split (the held-out ones in file order, a fixed draw of the training ones)."""

    def __init__(self, chats, block_size, tc: TrainConfig):
        self.tc = tc
        self.cut = sum(len(ids) > block_size + 1 for ids, _ in chats)
        examples = [e for e in (to_example(ids, trained, block_size) for ids, trained in chats) if e is not None]
        self.dropped = len(chats) - len(examples)
        n_val = int(round(len(examples) * tc.val_fraction))
        self.train, self.val = examples[:len(examples) - n_val], examples[len(examples) - n_val:]
        if not self.train:
            raise DataError(f"{len(chats)} conversations, {self.dropped} of them with no assistant token within the "
                            f"context of {block_size}: too few to train on")

    def draw(self, rng):
        return pad([self.train[i] for i in rng.integers(0, len(self.train), size=self.tc.batch_size)])

    def eval_batches(self):
        B, n = self.tc.batch_size, self.tc.eval_iters
        rng = np.random.default_rng([self.tc.seed, 1])
        train = [self.train[i] for i in rng.integers(0, len(self.train), size=B * n)]
        val = self.val[:B * n]
        return {split: [pad(rows[k:k + B]) for k in range(0, len(rows), B)]
                for split, rows in (("train", train), ("val", val))}


def sft(from_dir, data, out_dir, tc: TrainConfig, resume=False, log=print, workers=None, stop_at=None):
    """Fine-tune the checkpoint in from_dir on the chat file `data` (JSON Lines); checkpoints go to out_dir
    (resume: go on from the one there, with its training settings up to tc.iters; stop_at: stop after that step,
    as an interruption would). Returns `fit`'s result."""
    if not resume and Path(from_dir).resolve() == Path(out_dir).resolve():
        raise UsageError("--out must be a new folder: fine-tuning would overwrite the checkpoint it starts from")
    params, config, tok, stored, _, _ = load_checkpoint(out_dir if resume else from_dir)
    if resume:  # the run's own settings, as `lm train --resume` keeps them; only iters may grow
        tc = TrainConfig.from_dict({**stored, "iters": tc.iters})
    tok = chat_tokenizer(tok)
    params, config = grow_vocab(params, config, tok.vocab_size)
    chats = read_chats(data, tok)
    batches = ChatBatches(chats, config.block_size, tc)
    n_trained = sum(int(np.count_nonzero(y != IGNORE)) for _, y in batches.train)
    log(f"{len(chats):,} conversations: {len(batches.train):,} to train on ({n_trained:,} assistant tokens), "
        f"{len(batches.val):,} held out; {batches.cut} cut to the context of {config.block_size} tokens, "
        f"{batches.dropped} dropped (no assistant token left)")
    return fit(batches, params, config, tc, tok, out_dir, resume, stop_at, log, workers)
