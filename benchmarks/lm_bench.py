"""Training-step time of npminilm's GPT vs the same model in PyTorch eager (benchmarks/lm_torch_reference.py).

One step = forward, cross-entropy, backward, gradient clipping and an AdamW update, on a batch drawn from
tiny Shakespeare (char tokenizer), the published configuration by default (128-dim, 2 blocks, 4 heads, context 64,
dropout 0.2, batch 32). Both run on the same threads (OpenBLAS via threadpoolctl, torch.set_num_threads), after
warm-up steps, in alternating rounds (A/B/A/B...) so drift on the machine falls on both. Reports steps/s,
tokens/s and the ratio npminilm / torch (>= 1.0: not slower), and writes benchmarks/results/lm_bench/lm_bench-DATE.md.

    python benchmarks/lm_bench.py --data ../shared/data/tinyshakespeare/input.txt --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lm_torch_reference as ref  # noqa: E402

import npminilm  # noqa: E402
from npminilm.decoder.config import GPTConfig  # noqa: E402
from npminilm.decoder.model import init_params, is_decayed  # noqa: E402
from npminilm.decoder.train import TrainConfig, get_batch, loss_and_grads  # noqa: E402
from npminilm.nn.optim import AdamW, clip_grad_norm  # noqa: E402
from npminilm.runtime.parallel import worker_pool  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shard-tokens", type=int, default=TrainConfig.shard_tokens,
                    help="npminilm's tokens per batch shard (0: the whole batch as one)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="results markdown (default benchmarks/results/lm_bench/lm_bench-DATE.md)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)[: int(round(len(text) * 0.9))]
    B, T = a.batch_size, a.block_size
    lr, wd, clip = 3e-4, 0.1, 1.0

    cfg = GPTConfig(vocab_size=len(chars), block_size=T, n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head,
                    dropout=a.dropout)
    params = init_params(cfg, seed=1337)
    opt = AdamW(params, wd, (0.9, 0.99), decay=is_decayed)
    rng_np = np.random.default_rng(1337)

    shard_tokens = a.shard_tokens or None
    pool = None  # npminilm's worker pool, open during its rounds

    def ours_step():
        x, y = get_batch(data, B, T, rng_np)
        _, grads = loss_and_grads(params, cfg, x, y, rng_np, shard_tokens, pool)
        clip_grad_norm(grads, clip)
        opt.step(params, grads, lr)

    targs = SimpleNamespace(block_size=T, n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head, dropout=a.dropout,
                            weight_decay=wd, lr=lr)
    model, topt = ref.make_model_and_opt(len(chars), targs, 1337)
    rng_t = np.random.default_rng(1337)

    def torch_step():
        x, y = ref.get_batch(data, B, T, rng_t)
        ref.train_step(model, topt, x, y, lr, clip)

    # npminilm runs its shards on a.threads workers, each with a one-thread BLAS; torch on a.threads intra-op
    # threads. Each engine's thread setup is entered once per round, outside the per-step timings.
    @contextlib.contextmanager
    def ours_threads():
        with threadpool_limits(limits=a.threads), worker_pool(a.threads) as workers:  # one thread: BLAS on 1
            yield workers

    engines = {"npminilm": (ours_step, ours_threads),
               "torch eager": (torch_step, lambda: threadpool_limits(limits=a.threads))}
    times = {k: [] for k in engines}

    def run(name, steps, record):
        nonlocal pool
        fn, threads = engines[name]
        with threads() as pool:
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                if record:
                    times[name].append(time.perf_counter() - t0)

    for name in engines:
        run(name, a.warmup, record=False)
    for _ in range(a.rounds):
        for name in engines:
            run(name, a.steps, record=True)

    tokens = B * T
    rows = []
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        rows.append((name, 1000 * med[name], 1000 * statistics.mean(v), 1 / med[name], tokens / med[name]))
    ratio = med["torch eager"] / med["npminilm"]
    for r in rows:
        print(f"{r[0]:12s} median {r[1]:7.1f} ms  mean {r[2]:7.1f} ms  {r[3]:6.2f} steps/s  {r[4]:9,.0f} tok/s")
    print(f"ratio npminilm / torch (steps/s, medians): {ratio:.2f}")

    now = datetime.datetime.now(datetime.timezone.utc)
    results = Path(__file__).resolve().parent / "results" / "lm_bench"
    out = Path(a.out) if a.out else results / f"lm_bench-{now:%Y-%m-%d}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        f"# LM training-step benchmark ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__}, npminilm {npminilm.__version__}.",
        f"Threads: {a.threads}. npminilm: batch shards of {shard_tokens or B * T} tokens on {a.threads} worker "
        f"threads, OpenBLAS pinned to one thread each (threadpoolctl); torch: torch.set_num_threads({a.threads}).",
        f"Model: char vocab {len(chars)}, n_embd {a.n_embd}, {a.n_layer} blocks, {a.n_head} heads, context {T}, "
        f"dropout {a.dropout}; batch {B} ({tokens} tokens/step). Step = forward + cross-entropy + backward + "
        f"grad clip 1.0 + AdamW.",
        f"Protocol: {a.warmup} warm-up steps each, then {a.rounds} alternating rounds of {a.steps} steps "
        f"(npminilm, torch, npminilm, ...); per-step times, median reported.",
        "",
        "| engine | median ms/step | mean ms/step | steps/s | tokens/s |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f} | {r[4]:,.0f} |" for r in rows],
        "",
        f"**Ratio npminilm / torch eager (steps/s): {ratio:.2f}** (target >= 1.0).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
