"""Result parity: fine-tune all-MiniLM-L6-v2 on the STSb train split with npminilm and with sentence-transformers
(the same settings, dropout on in both), and compare their STSb test Spearman with the untouched model's.

    python benchmarks/fit_stsb.py --loss cosent [--epochs 2] [--batch-size 16] [--lr 2e-5] [--seed 0]
    python benchmarks/fit_stsb.py --loss mnrl --min-score 4      # MNRL on the pairs scored >= 4

sentence-transformers trains through `npminilm.finetune.st_reference` (its loss classes, torch AdamW over
transformers' decay groups, the linear warm-up schedule, clipping at 1) on the same batches; dropout masks
differ (each engine draws its own). Writes a table and the loss curves to benchmarks/results/fit_stsb/.
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NPMINILM_DATA_DIR", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from npminilm import SentenceEncoder  # noqa: E402
from npminilm.finetune.data import read_examples  # noqa: E402
from npminilm.finetune.evaluation import spearman  # noqa: E402
from npminilm.finetune.fit import FitConfig  # noqa: E402
from npminilm.finetune.st_reference import train_sentence_transformers  # noqa: E402

LOG_EVERY = 20


def test_spearman(encode, test):
    a, b = encode(test.columns[0]), encode(test.columns[1])
    return spearman(np.sum(a * b, axis=1), test.scores)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="cosent", choices=("cosent", "cosine", "mnrl", "mnrl-symmetric"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-score", type=float)
    parser.add_argument("--max-steps", type=int, help="a shorter run, for trying the script")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fit_stsb")
    args = parser.parse_args()
    import torch

    train = read_examples(DATA / "stsb" / "stsb-en-train.csv")
    test = read_examples(DATA / "stsb" / "stsb-en-test.csv")
    config = FitConfig(loss=args.loss, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       min_score=args.min_score, max_steps=args.max_steps, log_steps=LOG_EVERY)
    rows, curves = [], {}
    base = SentenceEncoder()
    rows.append(("untouched all-MiniLM-L6-v2", test_spearman(lambda t: base.encode(t, batch_size=64), test), 0.0))

    ours = SentenceEncoder()
    start = time.perf_counter()
    history = ours.fit(train, **config.to_dict(), show_progress_bar=False)
    rows.append(("npminilm", test_spearman(lambda t: ours.encode(t, batch_size=64), test), time.perf_counter() - start))
    curves["npminilm"] = [h["loss"] for h in history]
    print(rows[-1], flush=True)

    start = time.perf_counter()
    model, theirs = train_sentence_transformers(base.folder, train, config, log_every=LOG_EVERY)
    wall = time.perf_counter() - start
    rows.append(("sentence-transformers", test_spearman(
        lambda t: model.encode(t, batch_size=64, normalize_embeddings=True), test), wall))
    curves["sentence-transformers"] = theirs
    print(rows[-1], flush=True)

    stamp = f"{datetime.datetime.now():%Y-%m-%d-%H%M}"
    name = f"fit_stsb-{args.loss}-{stamp}"
    args.out.mkdir(parents=True, exist_ok=True)
    settings = ", ".join(f"{k} {v}" for k, v in config.to_dict().items() if v not in (None, (), []))
    lines = [f"# Fine-tuning all-MiniLM-L6-v2 on STSb train, {config.objective.describe()}, {stamp}", "",
             f"- {settings}; dropout on in both engines",
             f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
             f"{torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}",
             f"- mean training loss every {LOG_EVERY} steps: {name}.png", "",
             "| model | STSb test Spearman (cosine) | training wall time (s) |", "|---|---|---|"]
    lines += [f"| {m} | {s:.4f} | {w:.0f} |" for m, s, w in rows]
    diff = rows[1][1] - rows[2][1]
    lines += ["", f"npminilm - sentence-transformers: {diff:+.4f}"]
    print("\n".join(lines))
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for label, curve in curves.items():
            ax.plot(np.arange(1, len(curve) + 1) * LOG_EVERY, curve, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(f"training loss (mean of {LOG_EVERY} steps)")
        ax.set_title(f"STSb train, {config.objective.describe()}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / f"{name}.png", dpi=100)
    except ImportError:
        print("matplotlib is not installed: no plot")


if __name__ == "__main__":
    main()
