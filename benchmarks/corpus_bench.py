"""The streaming corpus command (`npminilm encode --input FILE --output FILE`) against a plain in-process
`encode(batch_size=32)` of the same texts, and its peak RSS at two corpus sizes (it should not grow with them);
then Ray Data on a local two-node cluster (`ray_bench.py`: 2 actors x 1 CPU, npminilm and sentence-transformers
in them) against encode over the same --ray-texts texts.

    python benchmarks/corpus_bench.py [--small 4000] [--large 40000] [--chunk-size 2000] [--ray-texts 20000]
                                      [--rounds 2] [--out FILE.md]

Corpora are STSb test sentences, shuffled and repeated, one a line (.txt). Each command run is a fresh process
whose peak RSS (VmHWM) is read from /proc at its end; the in-process encode runs on the small corpus, between
the command runs. Both sizes span several chunks, so their peak RSS should match. Results, with the machine, versions, load and date, go to benchmarks/results/corpus/.
"""

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NPMINILM_DATA_DIR", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_bench import machine, workloads  # noqa: E402

CHILD = """
import sys, time
from npminilm import cli
start = time.perf_counter()
status = cli.main(sys.argv[1:])
seconds = time.perf_counter() - start
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(f"RESULT {status} {seconds:.3f} {int(hwm) / 1024:.1f}", file=sys.stderr)
"""


def write_corpus(path, sentences, n, seed):
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sentences), n)
    path.write_text("\n".join(sentences[i] for i in picks) + "\n", encoding="utf-8")
    return [sentences[i] for i in picks]


def run_command(corpus, output, chunk_size):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", CHILD, "encode", "--input", str(corpus), "--output", str(output),
                          "--chunk-size", str(chunk_size)],
                         capture_output=True, text=True, env=env, timeout=3600)
    line = [x for x in run.stderr.splitlines() if x.startswith("RESULT")]
    if run.returncode or not line:
        raise RuntimeError(run.stderr)
    _, status, seconds, rss = line[0].split()
    return float(seconds), float(rss)


def ray_section(tmp, sentences, args, model_dir):
    """Markdown lines for the Ray Data comparison over --ray-texts texts (or why it was skipped)."""
    header = ["", f"## Ray Data, 2 actors x 1 CPU, {args.ray_texts} texts", ""]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
        import ray_bench
    except ImportError as exc:
        return header + [f"skipped: {exc} (pip install '.[ray]')"]
    texts = write_corpus(tmp / "ray.txt", sentences, args.ray_texts, 2)
    table = pa.table({"n": np.arange(len(texts)), "text": texts})
    (tmp / "shards").mkdir()
    step = -(-len(texts) // 40)
    for k in range(0, len(texts), step):  # 40 files, as corpora are kept
        pq.write_table(table.slice(k, step), tmp / "shards" / f"part-{k // step:03d}.parquet")
    t_stream, rss_stream = run_command(tmp / "ray.txt", tmp / "ray.npy", args.chunk_size)
    result = ray_bench.run(texts, model_dir, tmp / "shards", tmp / "ray.txt", rounds=args.rounds)
    times, n = result["times"], len(texts)
    rate = {name: n / np.median(ts) for name, ts in times.items()}
    lines = header + [
        f"Ray {result['ray']}; a real cluster on 127.0.0.1 (head 2 CPUs, second node 1 CPU), read_parquet of 40 "
        "files, repartitioned into 40 blocks, map_batches batch_size 256, a fresh actor pool per run (its start-up "
        f"counted); {args.rounds} "
        "alternating rounds, median.",
        "",
        "| engine | seconds per round | texts/s | / encode | actor start-up (s) | actor RSS (MB) now / peak | "
        "max abs diff vs encode |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| `encode(batch_size=32)` in process | {', '.join(f'{t:.1f}' for t in times['encode'])} | "
        f"{rate['encode']:.0f} | 1.00 | | | |",
        f"| `npminilm encode --input` (fresh process) | {t_stream:.1f} | {n / t_stream:.0f} | "
        f"{n / t_stream / rate['encode']:.2f} | | {rss_stream:.0f} peak (whole process) | |",
    ]
    lines.append(f"| `--ray` job: embed_corpus + RayEncoder (2 actors, driver-fed) | "
                 f"{', '.join(f'{t:.1f}' for t in times['ray-cli'])} | {rate['ray-cli']:.0f} | "
                 f"{rate['ray-cli'] / rate['encode']:.2f} | | | {result['diffs']['ray-cli']:.1e} |")
    for name, label in (("ray-npminilm", "Ray Data + npminilm `Embedder`"),
                        ("ray-st", "Ray Data + sentence-transformers actor")):
        startup, rss, hwm = result["probes"][name]
        lines.append(f"| {label} | {', '.join(f'{t:.1f}' for t in times[name])} | {rate[name]:.0f} | "
                     f"{rate[name] / rate['encode']:.2f} | {startup:.2f} | {rss:.0f} / {hwm:.0f} | "
                     f"{result['diffs'][name]:.1e} |")
    ratio = rate["ray-npminilm"] / rate["ray-st"]
    lines += ["", f"Ray Data + npminilm / Ray Data + sentence-transformers: {ratio:.2f}x "
              "texts/s. Start-up: from asking Ray for one actor to its first embedding (a new worker process, "
              "imports, model load); RSS: that actor's after embedding 2,000 texts."]
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=4000)
    parser.add_argument("--large", type=int, default=40000)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--ray-texts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the Ray comparison")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import tempfile

    import npminilm

    sentences = workloads()["stsb-sentences"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = write_corpus(tmp / "small.txt", sentences, args.small, 0)
        write_corpus(tmp / "large.txt", sentences, args.large, 1)
        t_small, rss_small = run_command(tmp / "small.txt", tmp / "small.npy", args.chunk_size)
        encoder = npminilm.SentenceEncoder()
        encoder.encode(small[:64])
        start = time.perf_counter()
        reference = encoder.encode(small, batch_size=32)
        t_encode = time.perf_counter() - start
        t_large, rss_large = run_command(tmp / "large.txt", tmp / "large.npy", args.chunk_size)
        diff = float(np.abs(np.load(tmp / "small.npy") - reference).max())
        ray_lines = ray_section(tmp, sentences, args, encoder.folder)
    cpu, isa, blas, _ = machine()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# Streaming corpus command, {stamp:%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {cpu} ({isa}), {os.cpu_count()} cores; BLAS: {blas}",
        f"- python {sys.version.split()[0]}, numpy {np.__version__}, npminilm {npminilm.__version__}",
        f"- load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}",
        f"- corpus: STSb test sentences drawn at random, one a line (.txt), to .npy; --chunk-size {args.chunk_size}",
        "",
        "| run | texts | seconds | texts/s | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|",
        f"| `npminilm encode --input` (fresh process: import, load, read, embed, write) | {args.small} | "
        f"{t_small:.1f} | {args.small / t_small:.0f} | {rss_small:.0f} |",
        f"| `npminilm encode --input` | {args.large} | {t_large:.1f} | {args.large / t_large:.0f} | {rss_large:.0f} |",
        f"| `encode(batch_size=32)` in process (model loaded) | {args.small} | {t_encode:.1f} | "
        f"{args.small / t_encode:.0f} | |",
        "",
        f"Streaming / in-process encode, texts/s: {args.small / t_small / (args.small / t_encode):.2f} at "
        f"{args.small} texts, {args.large / t_large / (args.small / t_encode):.2f} at {args.large}. Peak RSS "
        f"{rss_small:.0f} MB at {args.small} texts, {rss_large:.0f} MB at {args.large} ({args.large // args.small}x "
        f"the texts). Max abs difference from encode: {diff:.1e}.",
    ]
    text = "\n".join(lines + ray_lines) + "\n"
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / "corpus" / f"corpus_bench-{stamp:%Y-%m-%d-%H%M}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
