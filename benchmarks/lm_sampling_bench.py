"""Sampling speed with and without the KV cache (a Mamba decoder's: its recurrent state): tokens/s for 256 new
tokens from a short prompt, for the GPT-2 baseline, the Llama-, Mixtral- and Mamba-style decoders, in alternating
rounds (median), one thread (sampling is one token at a time).

    python benchmarks/lm_sampling_bench.py [--new-tokens 256] [--rounds 3] [--block-size 64] [--out FILE.md]

Weights are random (speed does not depend on them); the sizes are those of the README's Tiny Shakespeare runs.
"""

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_bench import machine  # noqa: E402

from npminilm.decoder.config import GPTConfig  # noqa: E402
from npminilm.decoder.model import init_params, param_shapes  # noqa: E402
from npminilm.decoder.sampling import generate  # noqa: E402

VARIANTS = {"GPT-2 (layernorm, learned, gelu)": {},
            "Llama-style (rmsnorm, rope, swiglu, 2 kv heads)": dict(norm="rmsnorm", pos="rope", ffn="swiglu",
                                                                    n_kv_head=2),
            "Mixtral-style (the same, 4 experts, top 2, no biases)": dict(norm="rmsnorm", pos="rope", ffn="swiglu",
                                                                          n_kv_head=2, moe_experts=4, moe_top_k=2,
                                                                          bias=False),
            "Mamba (rmsnorm, the selective-scan mixer, no biases)": dict(norm="rmsnorm", pos="none", mixer="mamba",
                                                                          bias=False)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(1, user_api="blas")
    except ImportError:
        limits = None
    rows = []
    for name, extra in VARIANTS.items():
        config = GPTConfig(vocab_size=65, block_size=args.block_size, n_embd=128, n_layer=4, n_head=4, **extra)
        params = init_params(config, seed=0)
        prompt = list(np.random.default_rng(0).integers(0, 65, 8))
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for cached in (True, False):
                start = time.perf_counter()
                generate(params, config, prompt, args.new_tokens, temperature=1.0, top_k=20, seed=1,
                         use_cache=cached)
                times[cached].append(time.perf_counter() - start)
        n_params = sum(int(np.prod(s)) for s in param_shapes(config).values())
        rate = {k: args.new_tokens / np.median(v) for k, v in times.items()}
        speedup = rate[True] / rate[False]
        rows.append(f"| {name} | {n_params:,} | {rate[True]:.0f} | {rate[False]:.0f} | {speedup:.1f}x |")
    if limits is not None:
        limits.restore_original_limits()
    cpu, isa, blas, _ = machine()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"# Sampling with and without the KV cache, {stamp:%Y-%m-%d %H:%M} UTC", "",
             f"- machine: {cpu} ({isa}), {os.cpu_count()} cores; BLAS: {blas} (limited to 1 thread here)",
             f"- python {sys.version.split()[0]}, numpy {np.__version__}; load average {os.getloadavg()[0]:.2f}",
             f"- {args.new_tokens} new tokens from an 8-token prompt, context {args.block_size} (so the window "
             f"fills and the cache shifts), n_embd 128, 4 layers, 4 heads, vocabulary 65; top-k 20 sampling; "
             f"median of {args.rounds} alternating rounds", "",
             "| decoder | parameters | tokens/s with the KV cache | tokens/s without | speed-up |",
             "|---|---:|---:|---:|---:|", *rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / "lm" / f"lm_sampling_bench-{stamp:%Y-%m-%d-%H%M}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
