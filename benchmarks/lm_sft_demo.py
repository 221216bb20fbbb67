"""The supervised fine-tuning demo, measured: pre-train a char decoder on Tiny Shakespeare, fine-tune it on the
dialogue chats of tools/shakespeare_chats.py (who speaks next -> the reply), and sample replies to the held-out
conversations' user turns. Reports how many replies follow the template: close with <|im_end|> within the token
budget, open as "NAME: words", and name the speaker the user asked for; and the held-out loss on the assistant's tokens
before and after fine-tuning.

    python benchmarks/lm_sft_demo.py [--data ../shared/data/tinyshakespeare/input.txt] [--runs /tmp/lm_sft_demo]
        [--pretrain-iters 2000] [--sft-iters 600] [--samples 100] [--out FILE.md]

Runs through the CLI (`npminilm lm train`, `lm sft`) as the README's commands do; a finished step is not run
again when its checkpoint is there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tools"))

import shakespeare_chats  # noqa: E402
from cpu_bench import machine  # noqa: E402

from npminilm.decoder.chat import IM_END, render  # noqa: E402
from npminilm.decoder.checkpoint import load_checkpoint  # noqa: E402
from npminilm.decoder.sampling import generate  # noqa: E402

PRETRAIN = ["--tokenizer", "char", "--n-embd", "128", "--n-layer", "2", "--n-head", "4", "--block-size", "192",
            "--dropout", "0.2", "--batch-size", "12", "--lr", "1e-3", "--eval-interval", "500", "--eval-iters", "20",
            "--log-interval", "100"]
SHAPE = re.compile(r"[A-Z][A-Za-z' ]*: \S")  # a reply in the template's shape: "NAME: words"
SFT = ["--batch-size", "16", "--lr", "1e-3", "--val-fraction", "0.05", "--eval-interval", "100", "--eval-iters", "20",
       "--log-interval", "50"]


def cli(args, log):
    t0 = time.perf_counter()
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-m", "npminilm", *args], check=True, stdout=f, stderr=subprocess.STDOUT,
                       cwd=ROOT)
    return time.perf_counter() - t0


def last_eval(log):
    evals = [line for line in Path(log).read_text().splitlines() if "| eval train" in line]
    return evals[0], evals[-1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/tinyshakespeare/input.txt"))
    ap.add_argument("--runs", default="/tmp/lm_sft_demo")
    ap.add_argument("--pretrain-iters", type=int, default=2000)
    ap.add_argument("--sft-iters", type=int, default=600)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    chats_path, base, chat = runs / "chats.jsonl", runs / "base", runs / "chat"
    with open(a.data, encoding="utf-8") as f:
        chats = shakespeare_chats.conversations(f.read())
    chats_path.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")

    wall = {}
    if not (base / "train_state.json").exists():
        wall["pre-training"] = cli(["lm", "train", "--data", a.data, "--out", str(base),
                                    "--iters", str(a.pretrain_iters), *PRETRAIN], runs / "base.log")
    if not (chat / "train_state.json").exists():
        wall["fine-tuning"] = cli(["lm", "sft", "--data", str(chats_path), "--from", str(base), "--out", str(chat),
                                   "--iters", str(a.sft_iters), *SFT], runs / "chat.log")

    params, config, tok, _, _, _ = load_checkpoint(chat)
    held_out = chats[len(chats) - int(round(len(chats) * 0.05)):]  # lm sft's held-out split: the file's last 5%
    rng = np.random.default_rng(0)
    picks = rng.choice(len(held_out), size=min(a.samples, len(held_out)), replace=False)
    end = tok.special_id(IM_END)
    closed = shaped = named = 0
    shown = []
    t0 = time.perf_counter()
    for k, i in enumerate(picks):
        user = held_out[i]["messages"][0]["content"]
        speaker = user.rsplit("Reply as ", 1)[1][:-1]
        prompt, _ = render([{"role": "user", "content": user}], tok, add_generation_prompt=True)
        reply = generate(params, config, prompt, a.max_new_tokens, a.temperature, seed=k, stop=(end,))
        text = tok.decode(reply)
        closed += reply[-1] == end
        shaped += SHAPE.match(text) is not None
        named += text.startswith(f"{speaker}: ")
        if len(shown) < 8:
            shown.append((user, text))
    sample_s = time.perf_counter() - t0
    n = len(picks)
    cpu, isa, blas, _ = machine()
    first, last = last_eval(runs / "chat.log")
    report = "\n".join([
        f"# Supervised fine-tuning demo: Tiny Shakespeare dialogue ({datetime.date.today()})", "",
        f"Machine: {cpu}, {isa}, {blas}.", "",
        f"1. `python tools/shakespeare_chats.py` -> {len(chats):,} conversations (user: a speaker's last line and "
        "\"Reply as NAME.\"; assistant: \"NAME: \" and the first line of that speaker's answer).",
        f"2. `npminilm lm train {' '.join(PRETRAIN)} --iters {a.pretrain_iters}` on the plain text "
        f"({last_eval(runs / 'base.log')[1].strip()}).",
        f"3. `npminilm lm sft {' '.join(SFT)} --iters {a.sft_iters}`: the loss on the assistant's tokens of the "
        "held-out conversations (the file's last 5%):",
        f"   - before: `{first.strip()}`", f"   - after: `{last.strip()}`",
        f"4. {n} replies sampled (temperature {a.temperature}, seeds 0..{n - 1}, at most {a.max_new_tokens} tokens) "
        "to held-out user turns, with the template's generation prompt:", "",
        "| replies that | count | share |", "|---|---:|---:|",
        f"| close with <\\|im_end\\|> | {closed} | {closed / n:.0%} |",
        f"| open as \"NAME: \" and words (a capitalised name, a colon) | {shaped} | {shaped / n:.0%} |",
        f"| open as \"NAME: \" for the speaker asked for | {named} | {named / n:.0%} |", "",
        "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()) + f"; sampling {sample_s:.1f} s.", "",
        "Samples (user turn -> reply):", "", "```",
        *[f"{u!r}\n  -> {r!r}" for u, r in shown], "```",
    ])
    out = Path(a.out or ROOT / f"benchmarks/results/lm/lm_sft_demo-{datetime.datetime.now():%Y-%m-%d-%H%M}.md")
    out.write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
