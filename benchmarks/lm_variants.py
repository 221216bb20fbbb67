"""The decoder variants side by side on Tiny Shakespeare: the GPT-2 baseline, a Llama-style decoder, a
Mixtral-style mixture of experts with the Llama one's active parameters, and a Mamba decoder, each trained by
`npminilm lm train` with the same batches (the seed draws every batch) and the same evaluation batches, then one
table (final train/val loss, parameters, time) against the unigram entropy of the characters, and one plot.

    python benchmarks/lm_variants.py [--data ../shared/data/tinyshakespeare/input.txt] [--iters 4000]
        [--runs /tmp/lm_variants] [--only gpt2,llama] [--out-prefix benchmarks/results/lm/lm_variants-DATE]

Each run's log goes to RUNS/NAME.log and its checkpoint to RUNS/NAME; a run whose log already reaches --iters is
not trained again (so the script can be stopped and started), a partial one is resumed from its checkpoint.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_bench import machine  # noqa: E402

# name -> (description, extra `lm train` flags); every run also gets COMMON
VARIANTS = {
    "gpt2": ("GPT-2 (layernorm, learned positions, gelu, 4 heads, biases)", []),
    "llama": ("Llama-style (rmsnorm, rope, swiglu 384, 2 kv heads, no biases)",
              ["--norm", "rmsnorm", "--pos", "rope", "--ffn", "swiglu", "--n-inner", "384", "--n-kv-head", "2",
               "--no-bias"]),
    "moe": ("Mixtral-style (the Llama one with 4 swiglu-192 experts, top 2: its active parameters)",
            ["--norm", "rmsnorm", "--pos", "rope", "--ffn", "swiglu", "--n-inner", "192", "--n-kv-head", "2",
             "--no-bias", "--moe-experts", "4", "--moe-top-k", "2"]),
    "mamba": ("Mamba (rmsnorm, 3 selective-scan mixers, d_state 16, expand 2, no biases)",
              ["--norm", "rmsnorm", "--mixer", "mamba", "--n-layer", "3", "--no-bias"]),
}
COMMON = ["--tokenizer", "char", "--n-embd", "128", "--n-layer", "2", "--n-head", "4", "--block-size", "64",
          "--dropout", "0.2", "--batch-size", "32", "--lr", "1e-3", "--eval-interval", "250", "--eval-iters", "50",
          "--log-interval", "50", "--seed", "1337"]
EVAL = re.compile(r"step\s+(\d+) \| eval train ([\d.]+) \| val ([\d.]+)")
PARAMS = re.compile(r"([\d,]+) parameters")
RATE = re.compile(r"\| ([\d,]+) tok/s")


def read_log(path):
    text = path.read_text() if path.exists() else ""
    evals = [(int(s), float(t), float(v)) for s, t, v in EVAL.findall(text)]
    params = PARAMS.search(text)
    rates = [float(r.replace(",", "")) for r in RATE.findall(text)]
    return {"evals": evals, "params": int(params.group(1).replace(",", "")) if params else None, "rates": rates}


def active_params(total, flags):
    """Parameters a token passes through: a mixture of experts' total less its E - k unused experts per layer."""
    def flag(name, default):
        return int(flags[flags.index(name) + 1]) if name in flags else default

    experts = flag("--moe-experts", 0)
    if not experts:
        return total
    unused = (experts - flag("--moe-top-k", 2)) * flag("--n-layer", 2)
    return total - unused * 3 * flag("--n-embd", 128) * flag("--n-inner", 0)  # gate, up, down: C x H each


def unigram_entropy(text):
    """Entropy of the character distribution, in nats: the loss of a model that ignores the context."""
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def train(name, flags, a):
    log, out = Path(a.runs) / f"{name}.log", Path(a.runs) / name
    done = read_log(log)["evals"]
    if done and done[-1][0] >= a.iters:
        print(f"{name}: done ({log})", flush=True)
        return
    resume = ["--resume"] if (out / "train_state.json").exists() else []
    cmd = [sys.executable, "-m", "npminilm", "lm", "train", "--data", a.data, "--out", str(out),
           "--iters", str(a.iters), *COMMON, *flags, *resume]
    print(f"{name}: {' '.join(cmd[1:])}", flush=True)
    with open(log, "a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def plot(logs, entropy, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (name, info), color in zip(logs.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        steps = [e[0] for e in info["evals"]]
        ax.plot(steps, [e[1] for e in info["evals"]], "--", color=color, alpha=0.6, label=f"{name} train")
        ax.plot(steps, [e[2] for e in info["evals"]], "-o", color=color, ms=3, label=f"{name} val")
    ax.axhline(entropy, color="gray", ls=":", label=f"unigram entropy {entropy:.2f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_ylim(1.3, 3.6)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/tinyshakespeare/input.txt"))
    ap.add_argument("--iters", type=int, default=4000)
    ap.add_argument("--runs", default="/tmp/lm_variants")
    ap.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants to train")
    ap.add_argument("--out-prefix", default=None,
                    help="results prefix (default benchmarks/results/lm/lm_variants-DATE): writes .md and .png")
    a = ap.parse_args(argv)
    a.data = str(Path(a.data).resolve())
    Path(a.runs).mkdir(parents=True, exist_ok=True)
    for name in a.only.split(","):
        train(name, VARIANTS[name][1], a)

    text = open(a.data, encoding="utf-8").read()
    entropy = unigram_entropy(text[: int(round(len(text) * 0.9))])  # the training split's, as the model sees it
    logs = {name: read_log(Path(a.runs) / f"{name}.log") for name in VARIANTS}
    logs = {k: v for k, v in logs.items() if v["evals"]}
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    prefix = Path(a.out_prefix or ROOT / f"benchmarks/results/lm/lm_variants-{stamp}")
    title = f"Tiny Shakespeare, char, ctx 64, {a.iters} steps of 32 x 64 tokens, lr 1e-3 cosine"
    plot(logs, entropy, prefix.with_suffix(".png"), title)
    rows = ["| decoder | parameters | active | final train | final val | best val | val - unigram entropy | tok/s (median) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, info in logs.items():
        step, tr, va = info["evals"][-1]
        best = min(e[2] for e in info["evals"])
        rate = sorted(info["rates"])[len(info["rates"]) // 2] if info["rates"] else float("nan")
        rows.append(f"| {VARIANTS[name][0]} | {info['params']:,} | {active_params(info['params'], VARIANTS[name][1]):,} | {tr:.4f} | {va:.4f} | {best:.4f} | "
                    f"{va - entropy:+.3f} | {rate:,.0f} |" + ("" if step >= a.iters else f" (at step {step})"))
    cpu, isa, blas, _ = machine()
    report = "\n".join([
        f"# Decoder variants on Tiny Shakespeare ({datetime.date.today()})", "",
        f"Machine: {cpu}, {isa}, {blas}; numpy worker threads: 2 (batch shards side by side).", "",
        "Every run: `npminilm lm train " + " ".join(COMMON) + f" --iters {a.iters}` plus its flags below; the same "
        "seed draws the same batches for all four (batch shards of 512 tokens, dropout generators seeded from the "
        "run's), and evaluation uses the same 50 fixed batches per split. Warm-up 100 steps, cosine to 1e-4, "
        "AdamW (0.9, 0.99), weight decay 0.1 on matrices, clipping at 1.0, the 90/10 split. The MoE's loss "
        "includes its load-balancing term (0.01); the table's losses are cross-entropy only (eval).", "",
        f"Unigram entropy of the training split's characters: **{entropy:.4f}** nats.", "",
        *rows, "",
        "Flags per variant:", "",
        *[f"- {name}: `{' '.join(VARIANTS[name][1]) or '(defaults)'}`" for name in logs], "",
        f"Curves: {prefix.with_suffix('.png').name}. Logs: {a.runs}/NAME.log, copied beside this file.",
    ])
    prefix.with_suffix(".md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
