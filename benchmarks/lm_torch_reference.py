"""The npminilm GPT (npminilm/decoder/model.py) written compactly in PyTorch, trained as `npminilm lm train` trains it.

Same model: token + learned position embeddings, pre-LN blocks (causal multi-head attention, exact-GELU FFN 4x),
final LayerNorm, LM head tied to the token embedding; dropout on the embeddings, on the merged attention heads
(before c_proj) and on both residual branches; GPT-2 initialisation (N(0, 0.02), c_proj N(0, 0.02/sqrt(2L))).
Same training: char tokenizer (sorted characters), first 90% train / last 10% held out, random windows drawn by
numpy's default_rng(seed) exactly as npminilm.decoder.train.get_batch draws them, AdamW betas (0.9, 0.99),
eps 1e-8, weight decay on matrices only (not biases / LayerNorms), gradient clipping at 1.0, npminilm's warm-up +
cosine schedule (`--warmup-iters 0 --min-lr LR` makes it constant), evaluation on eval_iters batches from
default_rng([seed, 1]) -- the very batches npminilm evaluates on.

    python benchmarks/lm_torch_reference.py --data ../shared/data/tinyshakespeare/input.txt --lr 3e-4 \
        --min-lr 3e-4 --warmup-iters 0 --iters 4000 --eval-interval 500 --eval-iters 50 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH, p):
        super().__init__()
        self.NH, self.p = NH, p
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        y = F.dropout(y, self.p, self.training)
        x = x + F.dropout(self.c_proj(y), self.p, self.training)
        h = self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))
        return x + F.dropout(h, self.p, self.training)


class GPT(nn.Module):
    def __init__(self, V, T, C, L, NH, p):
        super().__init__()
        self.p = p
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, NH, p) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, w in self.named_parameters():
            if w.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight") else 0.02
                nn.init.normal_(w, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(w)

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        x = F.dropout(self.wte(idx) + self.wpe(torch.arange(T)), self.p, self.training)
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def get_batch(data, B, T, rng):
    windows = np.lib.stride_tricks.sliding_window_view(data, T + 1)
    rows = windows[rng.integers(0, windows.shape[0], size=B)]
    return torch.from_numpy(np.ascontiguousarray(rows[:, :-1])), torch.from_numpy(np.ascontiguousarray(rows[:, 1:]))


def lr_at(step, lr, warmup, iters, min_lr):
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= iters:
        return min_lr
    r = (step - warmup) / max(1, iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)


def make_model_and_opt(V, a, seed):
    torch.manual_seed(seed)
    model = GPT(V, a.block_size, a.n_embd, a.n_layer, a.n_head, a.dropout)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.99), eps=1e-8)
    return model, opt


def train_step(model, opt, x, y, lr, grad_clip):
    for g in opt.param_groups:
        g["lr"] = lr
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def estimate_loss(model, data, a):
    model.eval()
    rng = np.random.default_rng([a.seed, 1])
    total = 0.0
    for _ in range(a.eval_iters):
        x, y = get_batch(data, a.batch_size, a.block_size, rng)
        total += model(x, y)[1].item()
    model.train()
    return total / a.eval_iters


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--min-lr", type=float, default=None)
    ap.add_argument("--warmup-iters", type=int, default=None)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=4000)
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--eval-iters", type=int, default=20)
    ap.add_argument("--log-interval", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the eval history and timings here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    min_lr = a.lr / 10 if a.min_lr is None else a.min_lr
    warmup = min(100, a.iters // 10) if a.warmup_iters is None else a.warmup_iters

    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    n = int(round(data.size * 0.9))
    train_data, val_data = data[:n], data[n:]
    model, opt = make_model_and_opt(len(chars), a, a.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vocab {len(chars)}; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    rng = np.random.default_rng(a.seed)
    history, losses = [], []
    t_start = time.perf_counter()
    train_time = 0.0
    for step in range(a.iters + 1):
        if step % a.eval_interval == 0 or step == a.iters:
            tr, va = estimate_loss(model, train_data, a), estimate_loss(model, val_data, a)
            history.append({"step": step, "train_loss": tr, "val_loss": va})
            print(f"step {step:>5} | eval train {tr:.4f} | val {va:.4f}", flush=True)
        if step == a.iters:
            break
        t0 = time.perf_counter()
        x, y = get_batch(train_data, a.batch_size, a.block_size, rng)
        loss = train_step(model, opt, x, y, lr_at(step, a.lr, warmup, a.iters, min_lr), a.grad_clip)
        train_time += time.perf_counter() - t0
        losses.append(loss)
        if (step + 1) % a.log_interval == 0:
            print(f"step {step + 1:>5}/{a.iters} | loss {loss:.4f} | "
                  f"{(step + 1) * a.batch_size * a.block_size / train_time:,.0f} tok/s", flush=True)
    wall = time.perf_counter() - t_start
    print(f"done: wall {wall:.1f} s, training steps {train_time:.1f} s", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "torch": torch.__version__, "history": history, "losses": losses,
                       "wall_s": wall, "train_s": train_time}, f)


if __name__ == "__main__":
    main()
