"""`npminilm serve` under load on loopback, next to `encode(batch_size=32)` in the same run.

    pip install -e ".[serve,fast]"
    python benchmarks/serve_bench.py [--seconds 20] [--rounds 2] [--clients 1,8,64] [--soak 120]
                                     [--format base64|float] [--out FILE.md]

The server is `npminilm serve` with its defaults, in its own process. The clients are keep-alive HTTP/1.1
connections driven by one asyncio loop in this process (a plain client: a request line, headers, a JSON body):
each sends 1 to 16 STSb test sentences (uniform) to /v1/embeddings as fast as answers come back, checks the
status and the number of embeddings, and times it. What is answered in a window that opens 3 s after the clients
start (the queue full, a steady state) counts. In each round, `encode(batch_size=32)` of a default
`SentenceEncoder` in this process embeds the STSb sentences for the same time while the server is idle, then
each client count runs; ratios are against the encode rate of the same round, and the table gives medians over
rounds. Then a soak: 64 clients for --soak seconds without a pause, the server's RSS read every 10 s from
/proc. Cold start is
a fresh `npminilm serve` process to its first 200 on /health and to its first embedding (median of 3).
Results, with the machine, versions, load and date, go to benchmarks/results/serve/.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NPMINILM_DATA_DIR", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_bench import machine  # noqa: E402

from npminilm.finetune.data import read_examples  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port, log, options=()):
    cmd = [sys.executable, "-m", "npminilm", "serve", "--port", str(port), *options]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_health(port, proc, timeout=60):
    """Seconds until /health answers 200 (polled every millisecond)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.001)
    raise RuntimeError("the server did not answer /health")


def embed_once(port, text):
    body = json.dumps({"input": [text], "model": "all-MiniLM-L6-v2"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200 and len(json.loads(r.read())["data"][0]["embedding"]) == 384


def cold_start(text, runs=3):
    """Median seconds from spawning `npminilm serve` to the first 200 on /health, and to the first embedding."""
    health, first = [], []
    for _ in range(runs):
        port = free_port()
        start = time.perf_counter()
        proc = start_server(port, subprocess.DEVNULL)
        try:
            wait_health(port, proc)
            health.append(time.perf_counter() - start)
            embed_once(port, text)
            first.append(time.perf_counter() - start)
        finally:
            proc.terminate()
            proc.wait(30)
    return statistics.median(health), statistics.median(first)


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------------ load


class Tally:
    def __init__(self):
        self.sentences, self.requests, self.errors, self.latencies = 0, 0, [], []


async def one_client(port, texts, seed, window, tally, fmt):
    rng = np.random.default_rng(seed)
    opens, deadline = window
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            batch = [texts[i] for i in rng.integers(0, len(texts), rng.integers(1, 17))]
            body = json.dumps({"input": batch, "model": "all-MiniLM-L6-v2", "encoding_format": fmt}).encode()
            start = time.perf_counter()
            writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = json.loads(await reader.readexactly(length))
            if not opens <= time.perf_counter() <= deadline:
                continue  # answered during the ramp-up, or after the window: not counted
            tally.requests += 1
            if status == 200 and len(answer["data"]) == len(batch):
                tally.sentences += len(batch)
                tally.latencies.append(time.perf_counter() - start)
            else:
                tally.errors.append(status)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        tally.errors.append(type(exc).__name__)
    finally:
        writer.close()


def load(port, texts, clients, seconds, fmt, seed, ramp_up=3.0):
    """Sentences/s, p50 and p99 latency (ms), errors, with `clients` concurrent clients: what is answered in a
    window of `seconds` that opens `ramp_up` seconds after they start (a steady state: the queue has filled)."""
    tally = Tally()

    async def main():
        opens = time.perf_counter() + ramp_up
        window = (opens, opens + seconds)
        await asyncio.gather(*(one_client(port, texts, [seed, c], window, tally, fmt) for c in range(clients)))

    asyncio.run(main())
    lat = np.array(tally.latencies) * 1000 if tally.latencies else np.array([np.nan])
    return tally.sentences / seconds, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), tally.errors


def encode_rate(encoder, texts, seconds):
    """Sentences/s of encode(batch_size=32) over the texts, repeated for about `seconds`."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encoder.encode(texts, batch_size=32)
        done += len(texts)
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--soak", type=float, default=120)
    parser.add_argument("--format", choices=("base64", "float"), default="base64",
                        help="encoding_format (the openai client asks for base64 unless told otherwise)")
    parser.add_argument("--server-options", default="", metavar="'--max-batch-tokens 2048 ...'",
                        help="options for the load server, e.g. a batch budget to compare")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    from npminilm import SentenceEncoder

    cols = read_examples(DATA / "stsb" / "stsb-en-test.csv").columns
    texts = sorted(set(cols[0]) | set(cols[1]))
    load_before = os.getloadavg()[0]
    cold_health, cold_first = cold_start(texts[0])
    print(f"cold start: /health {cold_health:.3f} s, first embedding {cold_first:.3f} s", flush=True)

    encoder = SentenceEncoder()
    encoder.encode(texts[:64])
    port, log = free_port(), open(os.devnull, "wb")
    server = start_server(port, log, args.server_options.split())
    results = {c: [] for c in clients}
    encode_rates = []
    try:
        wait_health(port, server)
        load(port, texts, 8, 2, args.format, 0)  # warm-up
        rss_start = rss_mb(server.pid)
        for r in range(args.rounds):
            base = encode_rate(encoder, texts, args.seconds)
            encode_rates.append(base)
            print(f"round {r}: encode(batch_size=32) {base:.0f} sentences/s", flush=True)
            for c in clients:
                rate, p50, p99, errors = load(port, texts, c, args.seconds, args.format, r)
                results[c].append((rate / base, rate, p50, p99, len(errors)))
                print(f"  {c:3d} clients: {rate:7.0f} sentences/s ({rate / base:.2f}x encode), p50 {p50:.1f} ms, "
                      f"p99 {p99:.1f} ms, errors {len(errors)} {sorted(set(map(str, errors)))[:5]}", flush=True)
        soak = None
        if args.soak > 0:
            samples, stop = [], threading.Event()

            def sample():
                start = time.perf_counter()
                while not stop.wait(10):
                    samples.append((time.perf_counter() - start, rss_mb(server.pid)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            rate, p50, p99, errors = load(port, texts, 64, args.soak, args.format, 100, ramp_up=0.0)
            stop.set()
            sampler.join()
            soak = (rate, p50, p99, len(errors), samples)
            print(f"soak: {args.soak:.0f} s at 64 clients, {rate:.0f} sentences/s, errors {len(errors)}, RSS "
                  f"{', '.join(f'{m:.1f}' for _, m in samples)} MB", flush=True)
        rss_end = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)

    write_results(args, clients, results, encode_rates, soak, rss_start, rss_end, cold_health, cold_first,
                  load_before)


def write_results(args, clients, results, encode_rates, soak, rss_start, rss_end, cold_health, cold_first,
                  load_before):
    import starlette
    import uvicorn

    cpu, isa, blas, env = machine()
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"# npminilm serve under load, {now:%Y-%m-%d %H:%M} UTC", "",
             f"- machine: {cpu} ({isa}), {os.cpu_count()} cores; BLAS: {blas}; env {env or 'default'}",
             f"- python {platform.python_version()}, numpy {np.__version__}, starlette {starlette.__version__}, "
             f"uvicorn {uvicorn.__version__}",
             f"- load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}",
             f"- {args.rounds} rounds of {args.seconds:.0f} s per client count; 1-16 STSb test sentences per "
             f"request, encoding_format {args.format}; server `npminilm serve {args.server_options}` "
             "(deterministic); the clients run in the benchmark's process on the same cores", "",
             f"encode(batch_size=32), same rounds: {statistics.median(encode_rates):.0f} sentences/s (median; "
             f"rounds {', '.join(f'{r:.0f}' for r in encode_rates)})", "",
             "| clients | sentences/s | / encode | p50 ms | p99 ms | errors |", "|---:|---:|---:|---:|---:|---:|"]
    for c in clients:
        rows = results[c]
        med = [statistics.median(x[i] for x in rows) for i in range(4)]
        lines.append(f"| {c} | {med[1]:.0f} | {med[0]:.2f} | {med[2]:.1f} | {med[3]:.1f} | "
                     f"{sum(x[4] for x in rows)} |")
    lines += ["", f"Cold start (fresh process, median of 3): first 200 on /health {cold_health:.3f} s, first "
              f"embedding {cold_first:.3f} s.", ""]
    if soak:
        rate, p50, p99, errors, samples = soak
        lines += [f"Soak: 64 clients for {args.soak:.0f} s without a pause: {rate:.0f} sentences/s, p50 {p50:.0f} ms, "
                  f"p99 {p99:.0f} ms, errors {errors}. Server RSS {rss_start:.1f} MB after warm-up, {rss_end:.1f} "
                  "MB at the end; every 10 s of the soak (MB): " + ", ".join(f"{m:.1f}" for _, m in samples) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / "serve" / f"serve_bench-{now:%Y-%m-%d-%H%M}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
