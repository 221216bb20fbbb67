"""CPU throughput, side by side in one process: npminilm vs sentence-transformers (torch CPU), alternating rounds.

    python benchmarks/cpu_bench.py [--rounds 3] [--out benchmarks/results/cpu_bench-DATE.md]

Workloads: the 2,758 STSb test sentences and 200 passages of 200 words from Tiny Shakespeare (truncated at
256 tokens), at batch sizes 32 and 128. Prints sentences/s per engine and the ratio npminilm / ST (the
median over rounds), and writes the table with the machine, versions and date to benchmarks/results/.
"""

import argparse
import csv
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NPMINILM_DATA_DIR", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))  # measure the checkout this script sits in, installed or not


def workloads():
    with open(DATA / "stsb" / "stsb-en-test.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    sentences = [r[0] for r in rows] + [r[1] for r in rows]
    words = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split()
    passages = [" ".join(words[i * 200:(i + 1) * 200]) for i in range(200)]
    return {"stsb-sentences": sentences, "passages-200w": passages}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / f"cpu_bench-{datetime.date.today()}.md")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    import npminilm

    ours = npminilm.SentenceEncoder()
    peer = SentenceTransformer(str(ours.folder), device="cpu")
    lines = ["| workload | batch | npminilm sent/s | ST sent/s | ratio | max abs diff |", "|---|---|---|---|---|---|"]
    for name, texts in workloads().items():
        for batch in (32, 128):
            ours_t, peer_t = [], []
            for _ in range(args.rounds):  # alternate A/B so drift in machine load hits both engines alike
                t, a = timed(lambda: ours.encode(texts, batch_size=batch))
                ours_t.append(t)
                t, b = timed(lambda: peer.encode(texts, batch_size=batch))
                peer_t.append(t)
            o, p = len(texts) / statistics.median(ours_t), len(texts) / statistics.median(peer_t)
            row = f"| {name} ({len(texts)}) | {batch} | {o:.1f} | {p:.1f} | {o / p:.2f} | {np.abs(a - b).max():.1e} |"
            print(row, flush=True)
            lines.append(row)

    header = [
        f"# CPU benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        f"- python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), npminilm {npminilm.__version__}",
        f"- median of {args.rounds} alternating rounds; ratio = npminilm / sentence-transformers",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
