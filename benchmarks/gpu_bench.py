"""GPU throughput: sentence-transformers (fp32, fp16; SDPA) vs npminilm's Triton backend (fp16, bf16, fp32).

    python benchmarks/gpu_bench.py [--rounds 3] [--out benchmarks/results/gpu_bench-DATE.md]

Workloads: the 2,758 STSb test sentences and 256-token passages (220 words of Tiny Shakespeare each,
truncated at 256 tokens), at batch sizes 128 and 512. Prints sentences/s, the ratio to sentence-transformers
fp16, and the share of the H100 compute floor (22.4 MFLOP per token at length 128: 989 TFLOP/s dense for
fp16/bf16, 67 TFLOP/s for fp32 without tf32). Then a kernel table (our attention vs
torch.nn.functional.scaled_dot_product_attention at head size 32, lengths 32/128/256; our FFN kernels vs torch
linear+gelu and linear+add+layer_norm) and the cosine of each engine's embeddings to the fp32 NumPy engine
(required: >= 0.9999 for fp16/bf16, >= 0.999999 for fp32). Exits with a message when there is no CUDA GPU.
"""

import argparse
import csv
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NPMINILM_DATA_DIR", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))  # measure the checkout this script sits in, installed or not

FLOP_PER_TOKEN = 22.4e6
PEAK = {"float16": 989e12, "bfloat16": 989e12, "float32": 67e12}  # H100 SXM dense
MIN_COS = {"float16": 0.9999, "bfloat16": 0.9999, "float32": 0.999999}


def require_gpu():
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as e:
        sys.exit(f"gpu_bench: needs torch and triton ({e}); pip install 'npminilm[gpu]'")
    if not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA GPU is available (torch.cuda.is_available() is False); nothing to measure")
    return torch


def workloads():
    with open(DATA / "stsb" / "stsb-en-test.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    sentences = [r[0] for r in rows] + [r[1] for r in rows]
    words = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split()
    passages = [" ".join(words[i * 220:(i + 1) * 220]) for i in range(min(2048, len(words) // 220))]
    return {"stsb-sentences": sentences, "passages-256tok": passages}


def bench(torch, fn, rounds):
    fn()  # warm-up: compiles kernels, fills caches
    times = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def kernel_table(torch, rounds):
    import torch.nn.functional as F
    from triton.testing import do_bench

    from kernels.attention import attention
    from kernels.ffn_gelu import linear_gelu
    from kernels.linear_residual_layernorm import linear_residual_layernorm

    lines = ["| op | shape | ours ms | torch ms | torch / ours |", "|---|---|---|---|---|"]
    B, NH, hs = 128, 12, 32
    for T in (32, 128, 256):
        q, k, v = (torch.randn(B * T, NH * hs, device="cuda", dtype=torch.float16) for _ in range(3))
        cu = torch.arange(0, (B + 1) * T, T, device="cuda", dtype=torch.int32)
        qh, kh, vh = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
        ours = do_bench(lambda: attention(q, k, v, NH, cu_seqlens=cu, max_seqlen=T))
        ref = do_bench(lambda: F.scaled_dot_product_attention(qh, kh, vh))
        lines.append(f"| attention fp16 | B={B} T={T} NH={NH} hs={hs} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f} |")
    M, C, I = 128 * 128, 384, 1536
    x, r = torch.randn(M, C, device="cuda", dtype=torch.float16), torch.randn(M, C, device="cuda", dtype=torch.float16)
    wi, bi = torch.randn(I, C, device="cuda", dtype=torch.float16) * C ** -0.5, torch.zeros(I, device="cuda",
                                                                                          dtype=torch.float16)
    f = torch.randn(M, I, device="cuda", dtype=torch.float16)
    wd, bd = torch.randn(C, I, device="cuda", dtype=torch.float16) * I ** -0.5, torch.zeros(C, device="cuda",
                                                                                          dtype=torch.float16)
    g, beta = torch.ones(C, device="cuda", dtype=torch.float16), torch.zeros(C, device="cuda", dtype=torch.float16)
    ours = do_bench(lambda: linear_gelu(x, wi, bi))
    ref = do_bench(lambda: F.gelu(F.linear(x, wi, bi)))
    lines.append(f"| linear+GELU fp16 | M={M} K={C} N={I} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f} |")
    ours = do_bench(lambda: linear_residual_layernorm(f, wd, bd, r, g, beta, 1e-12))
    ref = do_bench(lambda: F.layer_norm(F.linear(f, wd, bd) + r, (C,), g, beta, 1e-12))
    lines.append(f"| linear+residual+LayerNorm fp16 | M={M} K={I} N={C} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / f"gpu_bench-{datetime.date.today()}.md")
    args = parser.parse_args()
    torch = require_gpu()
    from sentence_transformers import SentenceTransformer

    import npminilm

    reference = npminilm.SentenceEncoder()  # the fp32 NumPy engine: the accuracy yardstick
    folder = str(reference.folder)
    engines = {}
    for dt in ("float32", "float16"):
        st = SentenceTransformer(folder, device="cuda", model_kwargs={"attn_implementation": "sdpa",
                                                                       "torch_dtype": getattr(torch, dt)})
        engines[f"ST {dt}"] = (st, dt)
    for dt in ("float16", "bfloat16", "float32"):
        engines[f"npminilm triton {dt}"] = (npminilm.SentenceEncoder(folder, backend="triton", device="cuda",
                                                                     dtype=dt), dt)

    lines = [f"# GPU benchmark, {datetime.date.today()}", "",
             f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
             f"triton {__import__('triton').__version__}, median of {args.rounds} rounds", "",
             "| workload | batch | engine | sent/s | vs ST fp16 | % of compute floor | min cosine vs NumPy fp32 |",
             "|---|---|---|---|---|---|---|"]
    failures = []
    for wname, texts in workloads().items():
        tokens = int(reference.tokenize(texts)["attention_mask"].sum())  # real tokens, truncation included
        check = texts[:256]
        ref_emb = reference.encode(check, batch_size=64)
        for batch in (128, 512):
            rates, cos = {}, {}
            for name, (engine, dt) in engines.items():
                def run(engine=engine):
                    return engine.encode(texts, batch_size=batch, convert_to_numpy=True)
                seconds = bench(torch, run, args.rounds)
                rates[name] = len(texts) / seconds
                floor = tokens * FLOP_PER_TOKEN / PEAK[dt]
                cos[name] = (cosines(engine.encode(check, batch_size=batch), ref_emb).min(), floor / seconds)
            for name, (_, dt) in engines.items():
                c, share = cos[name]
                if name.startswith("npminilm") and c < MIN_COS[dt]:
                    failures.append(f"{wname} batch {batch} {name}: cosine {c:.7f} < {MIN_COS[dt]}")
                lines.append(f"| {wname} | {batch} | {name} | {rates[name]:.0f} | "
                             f"{rates[name] / rates['ST float16']:.2f} | {100 * share:.1f}% | {c:.7f} |")
            print("\n".join(lines[-len(engines):]), flush=True)
    lines += ["", "## Kernels", ""] + kernel_table(torch, args.rounds)
    if failures:
        lines += ["", "## Accuracy failures", ""] + [f"- {f}" for f in failures]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
