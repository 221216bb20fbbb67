"""Plot the train/val evaluation curves of an `npminilm lm train` log against lm_torch_reference.py's JSON.

    python benchmarks/lm_plot.py --ours ours.log --torch torch.json --png out.png
"""

from __future__ import annotations

import argparse
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EVAL = re.compile(r"step\s+(\d+) \| eval train ([\d.]+) \| val ([\d.]+)")


def read_log(path):
    rows = [tuple(map(float, m.groups())) for m in map(EVAL.search, open(path)) if m]
    return [{"step": int(s), "train_loss": t, "val_loss": v} for s, t, v in rows]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True, help="npminilm lm train log")
    ap.add_argument("--torch", default=None, help="lm_torch_reference.py --json output")
    ap.add_argument("--title", default="tiny Shakespeare, char, 128-dim x 2 blocks x 4 heads, ctx 64")
    ap.add_argument("--png", required=True)
    a = ap.parse_args(argv)
    curves = {"npminilm": read_log(a.ours)}
    if a.torch:
        curves["PyTorch"] = json.load(open(a.torch))["history"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for (name, hist), color in zip(curves.items(), ("tab:blue", "tab:orange")):
        steps = [h["step"] for h in hist]
        ax.plot(steps, [h["train_loss"] for h in hist], "--", color=color, label=f"{name} train")
        ax.plot(steps, [h["val_loss"] for h in hist], "-o", color=color, ms=3, label=f"{name} val")
        print(f"{name}: final step {steps[-1]} train {hist[-1]['train_loss']:.4f} val {hist[-1]['val_loss']:.4f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_ylim(1.3, 3.0)
    ax.set_title(a.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)


if __name__ == "__main__":
    main()
