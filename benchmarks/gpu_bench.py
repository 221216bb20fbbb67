"""GPU throughput: sentence-transformers (fp32, fp16; SDPA) vs npminilm's Triton backend (fp16, bf16, fp32).

    python benchmarks/gpu_bench.py [--rounds 3] [--out benchmarks/results/gpu_bench/gpu_bench-DATE.md]
    python benchmarks/gpu_bench.py --smoke --out /tmp/smoke.md    # no GPU: the whole script, tiny, interpreted

Workloads: the 2,758 STSb test sentences and 256-token passages (220 words of Tiny Shakespeare each,
truncated at 256 tokens), at batch sizes 128 and 512. Prints sentences/s, the ratio to sentence-transformers
fp16, and the share of the H100 compute floor (22.4 MFLOP per token at length 128: 989 TFLOP/s dense for
fp16/bf16, 67 TFLOP/s for fp32 without tf32). Then a kernel table (our attention vs
torch.nn.functional.scaled_dot_product_attention at head size 32, lengths 32/128/256; our FFN kernels vs torch
linear+gelu and linear+add+layer_norm) and the cosine of each engine's embeddings to the fp32 NumPy engine
(required: >= 0.9999 for fp16/bf16, >= 0.999999 for fp32). Exits with a message when there is no CUDA GPU.
`--smoke` runs every step on a handful of texts and small kernel shapes on the CPU in Triton's interpreter, so
the script is known to work before a GPU is at hand (its timings mean nothing). It also splits a Triton
encode into its stages (tokenise and pack, host -> device, kernels, device -> host, each timed alone, beside the
overlapped encode) and measures the tokenizer on one core and on every core: the most sentences per second the
CPU side can feed a GPU.
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


def require_device(smoke):
    if smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as e:
        sys.exit(f"gpu_bench: needs torch and triton ({e}); pip install 'npminilm[gpu]'")
    if smoke:
        return torch, "cpu"
    if not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA GPU is available (torch.cuda.is_available() is False); nothing to measure")
    return torch, "cuda"


def workloads(smoke=False):
    with open(DATA / "stsb" / "stsb-en-test.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    sentences = [r[0] for r in rows] + [r[1] for r in rows]
    words = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split()
    passages = [" ".join(words[i * 220:(i + 1) * 220]) for i in range(min(2048, len(words) // 220))]
    if smoke:
        sentences, passages = sentences[:4], [" ".join(passages[0].split()[:60])]
    return {"stsb-sentences": sentences, "passages-256tok": passages}


def sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def bench(torch, device, fn, rounds):
    if device == "cuda":
        fn()  # warm-up: compiles kernels, fills caches (the interpreter has neither: a smoke run skips it)
    times = []
    for _ in range(rounds):
        sync(torch, device)
        start = time.perf_counter()
        fn()
        sync(torch, device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def milliseconds(torch, device, fn, rounds=3):
    """Kernel time in ms: triton's do_bench on a GPU, a plain median elsewhere."""
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn)
    return 1e3 * bench(torch, device, fn, rounds)


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def kernel_table(torch, device, rounds, smoke=False):
    import torch.nn.functional as F
    from npminilm.kernels.attention import attention
    from npminilm.kernels.ffn_gelu import linear_gelu
    from npminilm.kernels.linear_residual_layernorm import linear_residual_layernorm

    lines = ["| op | shape | ours ms | torch ms | torch / ours |", "|---|---|---|---|---|"]
    B, NH, hs = (2, 12, 32) if smoke else (128, 12, 32)
    for T in ((16, 40) if smoke else (32, 128, 256)):
        q, k, v = (torch.randn(B * T, NH * hs, device=device, dtype=torch.float16) for _ in range(3))
        cu = torch.arange(0, (B + 1) * T, T, device=device, dtype=torch.int32)
        qh, kh, vh = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
        ours = milliseconds(torch, device, lambda: attention(q, k, v, NH, cu_seqlens=cu, max_seqlen=T))
        ref = milliseconds(torch, device, lambda: F.scaled_dot_product_attention(qh, kh, vh))
        lines.append(f"| attention fp16 | B={B} T={T} NH={NH} hs={hs} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f} |")
    M, C, I = (64 if smoke else 128 * 128), 384, 1536
    x, r = torch.randn(M, C, device=device, dtype=torch.float16), torch.randn(M, C, device=device, dtype=torch.float16)
    wi, bi = torch.randn(I, C, device=device, dtype=torch.float16) * C ** -0.5, torch.zeros(I, device=device,
                                                                                          dtype=torch.float16)
    f = torch.randn(M, I, device=device, dtype=torch.float16)
    wd, bd = torch.randn(C, I, device=device, dtype=torch.float16) * I ** -0.5, torch.zeros(C, device=device,
                                                                                          dtype=torch.float16)
    g, beta = torch.ones(C, device=device, dtype=torch.float16), torch.zeros(C, device=device, dtype=torch.float16)
    ours = milliseconds(torch, device, lambda: linear_gelu(x, wi, bi))
    ref = milliseconds(torch, device, lambda: F.gelu(F.linear(x, wi, bi)))
    lines.append(f"| linear+GELU fp16 | M={M} K={C} N={I} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f} |")
    ours = milliseconds(torch, device, lambda: linear_residual_layernorm(f, wd, bd, r, g, beta, 1e-12))
    ref = milliseconds(torch, device, lambda: F.layer_norm(F.linear(f, wd, bd) + r, (C,), g, beta, 1e-12))
    lines.append(f"| linear+residual+LayerNorm fp16 | M={M} K={I} N={C} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f} |")
    return lines


def pipeline_split(torch, device, engine, texts, rounds):
    """Where a Triton encode's time goes, stage by stage, each stage timed alone over every batch (ms): tokenise
    and pack, host -> device copies, kernels, device -> host copies; then the overlapped encode end to end."""
    batches = list(engine._packed_batches(texts, engine.max_batch_tokens))
    hosts = [torch.from_numpy(b.buffer) for b in batches]
    if device == "cuda":
        hosts = [h.pin_memory() for h in hosts]
    on_device = [h.to(device) for h in hosts]
    outputs = []

    def kernels():
        outputs.clear()
        for b, buf in zip(batches, on_device):
            n = b.n_tokens
            h = engine._hidden(buf[:n], buf[n:2 * n], buf[2 * n:3 * n], {"cu_seqlens": buf[3 * n:],
                                                                         "max_seqlen": b.max_len})
            outputs.append(engine._kernels["pool_normalize"](h, buf[3 * n:], engine.pooling_modes, engine.normalize))

    kernels()
    stages = {
        "tokenise + pack": bench(torch, device, lambda: list(engine._packed_batches(texts, engine.max_batch_tokens)),
                                 rounds),
        "host -> device": bench(torch, device, lambda: [h.to(device, non_blocking=True) for h in hosts], rounds),
        "kernels": bench(torch, device, kernels, rounds),
        "device -> host": bench(torch, device, lambda: [o.cpu() for o in outputs], rounds),
        "encode, overlapped": bench(torch, device, lambda: engine.encode(texts), rounds),
    }
    return {name: 1e3 * seconds for name, seconds in stages.items()}, len(batches)


_tokenizer = None


def _tokenize_chunk(chunk):
    return sum(len(_tokenizer.encode(t, max_length=512)) for t in chunk)


def tokenizer_ceiling(reference, texts, workers):
    """Sentences/s of the pure-Python tokenizer on one core and on `workers` processes: the most texts per second
    the CPU side can hand to a GPU."""
    import multiprocessing

    global _tokenizer
    _tokenizer = reference.tokenizer
    start = time.perf_counter()
    _tokenize_chunk(texts)
    one = len(texts) / (time.perf_counter() - start)
    chunks = [texts[i::workers * 4] for i in range(workers * 4)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_tokenize_chunk, chunks)  # warm-up: the workers start
        start = time.perf_counter()
        pool.map(_tokenize_chunk, chunks)
        many = len(texts) / (time.perf_counter() - start)
    return one, many


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny run on the CPU in Triton's interpreter")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "gpu_bench" / f"gpu_bench-{datetime.date.today()}.md")
    args = parser.parse_args(argv)
    torch, device = require_device(args.smoke)
    from sentence_transformers import SentenceTransformer

    import npminilm

    reference = npminilm.SentenceEncoder()  # the fp32 NumPy engine: the accuracy yardstick
    folder = str(reference.folder)
    engines = {}
    for dt in ("float32", "float16"):
        st = SentenceTransformer(folder, device=device, model_kwargs={"attn_implementation": "sdpa",
                                                                       "torch_dtype": getattr(torch, dt)})
        engines[f"ST {dt}"] = (st, dt)
    for dt in ("float16", "bfloat16", "float32"):
        engines[f"npminilm triton {dt}"] = (npminilm.SentenceEncoder(folder, backend="triton", device=device,
                                                                     dtype=dt), dt)

    lines = [f"# GPU benchmark, {datetime.date.today()}", "",
             f"{torch.cuda.get_device_name() if device == 'cuda' else 'CPU, Triton interpreter (smoke run)'}, "
             f"torch {torch.__version__}, "
             f"triton {__import__('triton').__version__}, median of {args.rounds} rounds", "",
             "| workload | batch | engine | sent/s | vs ST fp16 | % of compute floor | min cosine vs NumPy fp32 |",
             "|---|---|---|---|---|---|---|"]
    failures = []
    for wname, texts in workloads(args.smoke).items():
        tokens = int(reference.tokenize(texts)["attention_mask"].sum())  # real tokens, truncation included
        check = texts[:256]
        ref_emb = reference.encode(check, batch_size=64)
        for batch in ((4,) if args.smoke else (128, 512)):
            rates, cos = {}, {}
            for name, (engine, dt) in engines.items():
                def run(engine=engine):
                    return engine.encode(texts, batch_size=batch, convert_to_numpy=True)
                seconds = bench(torch, device, run, args.rounds)
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
    texts = workloads(args.smoke)["stsb-sentences"]
    lines += ["", "## Where an encode's time goes (STSb sentences, every stage timed alone)", "",
              "| engine | batches | tokenise + pack ms | host -> device ms | kernels ms | device -> host ms | "
              "encode, overlapped ms |", "|---|---|---|---|---|---|---|"]
    for name, (engine, _) in engines.items():
        if name.startswith("npminilm"):
            ms, n = pipeline_split(torch, device, engine, texts, args.rounds)
            lines.append(f"| {name} | {n} | " + " | ".join(f"{v:.1f}" for v in ms.values()) + " |")
    workers = os.cpu_count() or 1
    one, many = tokenizer_ceiling(reference, texts, workers)
    lines += ["", f"Tokenizer (pure Python, the CPU-side ceiling): {one:,.0f} sentences/s on one core, "
              f"{many:,.0f} on {workers} processes."]
    lines += ["", "## Kernels", ""] + kernel_table(torch, device, args.rounds, args.smoke)
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
