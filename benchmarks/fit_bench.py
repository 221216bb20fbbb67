"""Training-step speed: npminilm vs sentence-transformers (torch CPU), alternating rounds in one process.

    python benchmarks/fit_bench.py [--steps 20] [--rounds 3] [--loss cosent] [--out FILE.md]

A step is what both trainers do per batch: tokenise the two columns of 16 STSb train pairs, the forward pass
(dropout on), the loss, the backward pass, gradient clipping and an AdamW update. Both engines start from
all-MiniLM-L6-v2 and use the same threads (torch's default, BLAS's default). Prints steps/s and sentences/s per
engine (median over rounds) and their ratio, and each engine's peak RSS over `--steps` steps in a fresh process.
"""

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NPMINILM_DATA_DIR", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from npminilm.finetune.data import read_examples  # noqa: E402
from npminilm.finetune.fit import FitConfig, batch_order, decays, train_step, trainable_params  # noqa: E402
from npminilm.runtime.parallel import worker_pool  # noqa: E402


class Npminilm:
    def __init__(self, config):
        from npminilm import SentenceEncoder
        from npminilm.nn.optim import AdamW

        self.model = SentenceEncoder()
        self.config, self.objective = config, config.objective
        self.trainable = trainable_params(self.model)
        self.optimizer = AdamW(self.trainable, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8,
                               decay=decays)
        self._pool = worker_pool(2, pin_blas=True)  # fit's two columns side by side, held open for the run
        self.pool = self._pool.__enter__()

    def step(self, batch, scores, step):
        from npminilm.nn.optim import clip_grad_norm

        rngs = [np.random.default_rng([0, step, j]) for j in range(len(batch.columns))]
        loss, grads = train_step(self.model, self.objective, batch, scores, rngs, self.pool)
        clip_grad_norm(grads, self.config.max_grad_norm)
        self.optimizer.step(self.trainable, grads, self.config.lr)
        return loss


class SentenceTransformers:
    def __init__(self, config):
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer import losses

        from npminilm.io.hub import resolve_model_path

        self.torch = torch
        self.model = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")
        self.model.train()
        self.loss = {"cosent": losses.CoSENTLoss, "cosine": losses.CosineSimilarityLoss}[config.loss](self.model)
        named = [(n, p) for n, p in self.model.named_parameters() if "pooler" not in n]
        groups = [{"params": [p for n, p in named if decays(n)], "weight_decay": config.weight_decay},
                  {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
        self.config = config

    def step(self, batch, scores, step):
        features = [self.model.preprocess(column) for column in batch.columns]
        loss = self.loss(features, self.torch.tensor(scores, dtype=self.torch.float32))
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()


ENGINES = {"npminilm": Npminilm, "sentence-transformers": SentenceTransformers}


def batches(config, steps):
    from npminilm.finetune.fit import training_data

    train, scores = training_data(read_examples(DATA / "stsb" / "stsb-en-train.csv"), config)
    order = batch_order(len(train), config.batch_size, config.seed, 0)
    return [(train.take(idx), scores[idx]) for idx in order[:steps]]


def run_steps(engine, work):
    start = time.perf_counter()
    for i, (batch, scores) in enumerate(work):
        engine.step(batch, scores, i)
    return time.perf_counter() - start


def peak_rss(name, loss, steps):
    """Peak RSS (MB) of a fresh process that builds the engine and runs `steps` steps."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import fit_bench as b; "
            f"c = b.FitConfig(loss={loss!r}); e = b.ENGINES[{name!r}](c); b.run_steps(e, b.batches(c, {steps})); "
            # VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss into a forked-and-exec'd child
            "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loss", default="cosent", choices=("cosent", "cosine"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fit_bench"
                        / f"fit_bench-{datetime.datetime.now():%Y-%m-%d-%H%M}.md")
    args = parser.parse_args()
    import torch

    config = FitConfig(loss=args.loss)
    work = batches(config, args.steps)
    sentences = sum(2 * len(b) for b, _ in work)
    load_before = os.getloadavg()[0]
    engines = {name: make(config) for name, make in ENGINES.items()}
    for engine in engines.values():
        run_steps(engine, work[:2])  # warm-up
    times = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            times[name].append(run_steps(engine, work))
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    rss = {name: peak_rss(name, args.loss, args.steps) for name in engines}
    med = {name: statistics.median(t) for name, t in times.items()}
    lines = [f"# Training-step benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}", "",
             f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
             f"{torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}",
             f"- {args.loss} on batches of {config.batch_size} STSb train pairs ({args.steps} steps, "
             f"{sentences} sentences), dropout on; median of {args.rounds} alternating rounds",
             f"- load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}", "",
             "| engine | steps/s | sentences/s | vs sentence-transformers | peak RSS (MB) |", "|---|---|---|---|---|"]
    for name in engines:
        lines.append(f"| {name} | {args.steps / med[name]:.2f} | {sentences / med[name]:.1f} | "
                     f"{med['sentence-transformers'] / med[name]:.2f} | {rss[name]:.0f} |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    if not all(math.isfinite(t) for t in med.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
