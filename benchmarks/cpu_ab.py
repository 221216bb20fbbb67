"""A/B of npminilm checkouts on cpu_bench's workloads: how much one change speeds up `encode`.

    python benchmarks/cpu_ab.py REF_A REF_B [REF_C ...] [--rounds 5] [--workloads passages-200w stsb-sentences]
                                [--options '{"deterministic": true}'] [--one-thread]

Each git ref is checked out into a temporary worktree; every round runs each ref in a fresh process (import,
load, one warm-up batch, then the whole workload timed), the refs alternating so drift in machine load hits
them alike. Prints texts/s per ref (median over rounds) and each ref's ratio to REF_A, with the machine's load.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_bench import workloads  # noqa: E402

CHILD = """
import contextlib, json, sys, time
sys.path.insert(0, {tree!r})
import npminilm
texts = json.load(open({texts!r}))
enc = npminilm.SentenceEncoder(**{options!r})
if {one_thread!r}:  # one worker, BLAS on one thread: the single-core cost
    from threadpoolctl import threadpool_limits
    limits = threadpool_limits(1, "blas")
else:
    limits = contextlib.nullcontext()
with limits:
    enc.encode(texts[:{batch}], batch_size={batch})
    start = time.perf_counter()
    enc.encode(texts, batch_size={batch})
print(time.perf_counter() - start)
"""


def run(tree, texts_path, batch, options, one_thread):
    code = CHILD.format(tree=str(tree), texts=str(texts_path), batch=batch, options=options, one_thread=one_thread)
    env = dict(os.environ, **({"NPMINILM_NUM_THREADS": "1"} if one_thread else {}))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workloads", nargs="+", default=["passages-200w", "stsb-sentences"])
    parser.add_argument("--options", default="{}", help="SentenceEncoder keyword arguments, as JSON")
    parser.add_argument("--one-thread", action="store_true", help="one worker and BLAS on one thread")
    args = parser.parse_args()
    options = json.loads(args.options)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for ref in args.refs:
            trees[ref] = Path(tmp) / f"tree{len(trees)}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[ref]), ref],
                           check=True)
        try:
            all_texts = workloads()
            print(f"load average {os.getloadavg()[0]:.2f}; batch {args.batch}; options {options}; "
                  f"{'one thread' if args.one_thread else 'default threads'}")
            for name in args.workloads:
                path = Path(tmp) / f"{name}.json"
                path.write_text(json.dumps(all_texts[name]))
                times = {ref: [] for ref in args.refs}
                for _ in range(args.rounds):
                    for ref in args.refs:
                        times[ref].append(run(trees[ref], path, args.batch, options, args.one_thread))
                base = len(all_texts[name]) / statistics.median(times[args.refs[0]])
                for ref in args.refs:
                    rate = len(all_texts[name]) / statistics.median(times[ref])
                    print(f"{name:16s} {ref:12s} {rate:8.1f} texts/s  x{rate / base:.3f}  "
                          f"(rounds: {' '.join(f'{t:.2f}' for t in times[ref])} s)", flush=True)
            print(f"load average {os.getloadavg()[0]:.2f}")
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
