"""CPU throughput, side by side in one process, in alternating rounds: npminilm (default: the numba kernels and
MKL's packed GEMMs when the `fast` extra is installed; the numba kernels with their register-tile GEMMs,
NPMINILM_MKL=0, or, on a CPU not Intel's, where the tiles are the default, with MKL, NPMINILM_MKL=1; the NumPy
ops alone, NPMINILM_NUMBA=0; and deterministic=True), sentence-transformers (torch CPU), onnxruntime on a fused
ONNX graph and OpenVINO fp32 on the same export: the fp32 engines people pick.

    pip install -e ".[test,bench]"      # the peers: sentence-transformers, onnxruntime, onnx, openvino
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cpu_bench.py [--rounds 3] [--out FILE.md]
    python benchmarks/cpu_bench.py --avx2-code      # on an AVX-512 CPU: every engine's AVX2 code (AVX2_CODE)

Workloads: the 2,758 STSb test sentences and 200 passages of 200 words from Tiny Shakespeare (truncated at
256 tokens), at batch sizes 32 and 128. Prints sentences/s per engine, the ratio to ST (the median over rounds;
each round's rate is listed too, as the engines' speeds drift over a run), and the achieved GFLOP/s (real tokens
only: L * n * (8C^2 + 4CI + 4nC) for a text of n tokens, 22.4 MFLOP per token at n = 128) as a share of the sgemm
rate measured in the same run. Then npminilm's per-stage profile for
each kernel set (GEMMs, attention, GELU, LayerNorm, the rest; one worker with BLAS on one thread, so the stages
add up to the wall time and show one core's), the tokenizer
against the HF fast tokenizer called one text at a time (and a check that the ids agree), cold start (a fresh
process: import, load, first embedding) and peak RSS (a fresh process encoding the STSb sentences). Writes the
tables with the machine (CPU model, ISA, the BLAS library and kernel numpy runs, from threadpoolctl), versions,
load, the CPU time a hypervisor gave other guests during the rounds (steal), and date to
benchmarks/results/cpu_bench/. A peer that is not installed is reported as skipped; a peer that fails is reported
with its error, and the script then exits with status 1.
"""

import argparse
import contextlib
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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


def stolen_seconds():
    """CPU seconds the hypervisor has run other guests while this machine's vCPUs were ready to run (the steal
    column of /proc/stat, all CPUs together), or None where the kernel does not count it (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def sgemm_gflops(repeats=10):
    """Best-of rate of numpy's float32 GEMM on the FFN's shape (4096 x 384 @ 384 x 1536), default threads."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4096, 384), dtype=np.float32), rng.standard_normal((384, 1536), dtype=np.float32)
    best = min(timed(lambda: x @ w)[0] for _ in range(repeats))
    return 2 * 4096 * 384 * 1536 / best / 1e9


def flops(n_tokens, config):
    """Forward FLOPs of one text of n tokens: the six GEMMs per layer plus the two attention products."""
    C, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = np.asarray(n_tokens, dtype=np.float64)
    return float(np.sum(L * n * (8 * C * C + 4 * C * I + 4 * n * C)))


def export_onnx(peer, path):
    """BertModel -> ONNX (last_hidden_state), called with keywords: transformers 5 moved the positional arguments.
    Exported with eager attention: onnxruntime's optimizer fuses that graph into its Attention op, not SDPA's."""
    import torch
    from transformers import AutoModel

    class LastHidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 8), dtype=torch.int64)
    with torch.no_grad():
        model = AutoModel.from_pretrained(peer[0].auto_model.name_or_path, attn_implementation="eager").eval()
        torch.onnx.export(LastHidden(model), (ids, ids, torch.zeros_like(ids)), str(path),
                          dynamo=False, input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17,
                          dynamic_axes={k: {0: "B", 1: "T"} for k in
                                        ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")})
    return path


class ExportedEngine:
    """An engine over the ONNX export: the HF fast tokenizer, the runtime's forward, mean pooling and
    normalisation in NumPy (as sentence-transformers and fastembed do around onnxruntime)."""

    def __init__(self, peer, forward):
        self.tokenizer, self.max_length, self.forward = peer.tokenizer, peer.max_seq_length, forward
        self.dim = peer[0].auto_model.config.hidden_size  # mean pooling keeps the hidden size

    def encode(self, texts, batch_size):
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            f = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="np")
            feeds = {k: f[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            h = self.forward(feeds)
            m = feeds["attention_mask"][:, :, None].astype(np.float32)
            emb = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            out[idx] = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return out


def onnxruntime_fused(peer, threads, tmp):
    """onnxruntime on the export fused by onnxruntime.transformers.optimizer (model_type "bert": embeddings +
    LayerNorm, attention, bias + GELU, skip + LayerNorm), fp32."""
    import onnxruntime as ort
    from onnxruntime.transformers import optimizer

    config = peer[0].auto_model.config
    fused = optimizer.optimize_model(str(export_onnx(peer, tmp / "model.onnx")), model_type="bert",
                                     num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
    fused.save_model_to_file(str(tmp / "fused.onnx"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not spin while
    # the other engines of the same process run
    session = ort.InferenceSession(str(tmp / "fused.onnx"), opts, providers=["CPUExecutionProvider"])
    return ExportedEngine(peer, lambda feeds: session.run(None, feeds)[0]).encode, ort.__version__


def openvino_fp32(peer, threads, tmp):
    """OpenVINO's CPU plugin on the same export, inference precision pinned to fp32."""
    import openvino as ov

    path = tmp / "model.onnx"
    if not path.exists():
        export_onnx(peer, path)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                           "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return ExportedEngine(peer, lambda feeds: request.infer(feeds)[0]).encode, ov.__version__


PEERS = {"onnxruntime fused": (onnxruntime_fused, "onnxruntime onnx"), "OpenVINO": (openvino_fp32, "openvino")}


CODE_PATH_SETTINGS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",  # numpy's OpenBLAS kernel and blocking
                      "MKL_ENABLE_INSTRUCTIONS",  # the widest ISA MKL dispatches to (npminilm's and torch's MKL)
                      "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",  # torch's oneDNN and vectorised kernels
                      "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")  # what npminilm's kernels are compiled for

AVX2_CODE = {"OPENBLAS_CORETYPE": "Haswell", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "ATEN_CPU_CAPABILITY": "avx2"}  # and NUMBA_CPU_FEATURES: the host's with AVX-512 off (`cpu.isa`)


def avx2_code_environment():
    """The environment that makes numpy's OpenBLAS, MKL, torch, OpenVINO's oneDNN and npminilm's numba kernels run
    their AVX2 code on an AVX-512 CPU (onnxruntime's MLAS has no such setting). NUMBA_CPU_NAME alone would not do
    it for numba: its features, the host's, win over the CPU name."""
    from npminilm.cpu import isa

    return dict(AVX2_CODE, NUMBA_CPU_FEATURES=isa.without_avx512())


def machine():
    """CPU model (with family, model, stepping and L2 size), its widest vector ISA, the BLAS numpy runs (library,
    version, kernel, threads) and the code-path settings in the environment."""
    fields, flags = {}, set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first CPU's
        flags = set(fields.get("flags", "").split())
    except OSError:
        pass
    model = fields.get("model name", platform.processor())
    if "cpu family" in fields:  # VMs show a bare model name: the family, model and L2 tell hosts apart
        model += (f" ({fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields.get('model', '?')} "
                  f"stepping {fields.get('stepping', '?')}")
        try:
            with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
                model += f", L2 {f.read().strip()} per core"
        except OSError:
            pass
        model += ")"
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE/other"
    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture')}, "
                         f"{i.get('num_threads')} threads" for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        blas = "unknown (threadpoolctl is not installed)"
    env = {k: os.environ[k] for k in CODE_PATH_SETTINGS if k in os.environ}
    if "NUMBA_CPU_FEATURES" in env and "-avx512f" in env["NUMBA_CPU_FEATURES"].split(","):
        env["NUMBA_CPU_FEATURES"] = "the host's, AVX-512 off"
    return model, isa, blas, env


GEMMS = "the linear layers' GEMMs (Q, K, V, output, FFN up and down)"
FUSED_GEMMS = "the linear layers' GEMMs (Q, K and V as one, output, FFN up and down)"
STAGES = {  # per kernel set: its environment, the functions timed ("module:name": stage) and the remainder's name
    "numpy": ({"NPMINILM_NUMBA": "0"}, {
        "npminilm.encoder.packed:linear_forward": GEMMS + " and their biases",
        "npminilm.encoder.packed:attention_forward": "attention (scores, softmax, P V), per run of equal-length texts",
        "npminilm.encoder.packed:gelu_forward": "GELU",
        "npminilm.encoder.packed:layernorm_forward": "LayerNorm",
    }, "the rest of encode (tokenising, embedding lookups, residual sums, pooling)"),
    "numba + tiles": ({"NPMINILM_NUMBA": "1", "NPMINILM_MKL": "0"}, {
        "npminilm.cpu.tiled_linear:matmul_t": FUSED_GEMMS + ", register tiles from packed panels",
        "npminilm.encoder.fused:attention_heads": "attention (Q/K/V biases, bounds, scores, exp, P V), one kernel "
                                                  "per run of equal-length texts, register-tile GEMMs inside",
        "npminilm.encoder.fused:gelu_bias": "GELU with the FFN's bias (one kernel)",
        "npminilm.encoder.fused:add_layernorm": "bias + residual + LayerNorm (one kernel)",
    }, "the rest: tokenising, embedding lookups, pooling"),
    "numba + MKL": ({"NPMINILM_NUMBA": "1", "NPMINILM_MKL": "1"}, {
        "npminilm.cpu.mkl:matmul_t": FUSED_GEMMS + ", MKL's packed sgemm",
        "npminilm.encoder.fused:attention_heads": "attention (Q/K/V biases, bounds, scores, exp, P V), one kernel "
                                                  "per run of equal-length texts, MKL's JIT sgemm inside",
        "npminilm.encoder.fused:gelu_bias": "GELU with the FFN's bias (one kernel)",
        "npminilm.encoder.fused:add_layernorm": "bias + residual + LayerNorm (one kernel)",
    }, "the rest: tokenising, embedding lookups, pooling"),
}


def kernel_sets():
    """The kernel sets that run here: the NumPy ops always; numba's with register tiles, and with MKL, when
    installed."""
    from npminilm import cpu
    from npminilm.cpu import mkl

    sets = ["numpy"]
    if cpu.available():
        sets.insert(0, "numba + tiles")
        with environment(NPMINILM_MKL="1"):
            if mkl.available():
                sets.insert(0, "numba + MKL")
    return sets


def stage_profile(encoder, texts, batch_size, kernels):
    """Where npminilm's encode spends its time on `texts`, by stage: each op of the BERT forward wrapped in a
    timer (one worker, BLAS on one thread: the sum of the stages is then the forward's wall time on one core),
    the rest of encode (tokenising, residual sums, pooling, batching) as the remainder. Returns rows of (stage,
    seconds, share) and the total."""
    import importlib

    from threadpoolctl import threadpool_limits

    env, stages, rest_name = STAGES[kernels]
    spent = dict.fromkeys(stages, 0.0)
    targets = {key: importlib.import_module(key.split(":")[0]) for key in stages}
    originals = {key: getattr(targets[key], key.split(":")[1]) for key in stages}

    def timer(key, fn):
        def timed_op(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        return timed_op

    try:
        for key, fn in originals.items():
            setattr(targets[key], key.split(":")[1], timer(key, fn))
        with environment(NPMINILM_NUM_THREADS="1", **env), threadpool_limits(1, user_api="blas"):
            encoder.encode(texts[:8], batch_size=batch_size)  # numba's and MKL's first calls out of the timing
            spent.update(dict.fromkeys(stages, 0.0))
            total, _ = timed(lambda: encoder.encode(texts, batch_size=batch_size))
    finally:
        for key, fn in originals.items():
            setattr(targets[key], key.split(":")[1], fn)
    rows = [(stages[key], t, t / total) for key, t in spent.items()]
    rest = total - sum(spent.values())
    return rows + [(rest_name, rest, rest / total)], total


@contextlib.contextmanager
def environment(**values):
    """Set environment variables for the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def with_environment(encode, **values):
    """encode with environment variables set for each call (e.g. NPMINILM_NUMBA="0": the NumPy ops alone)."""
    def run(*args, **kwargs):
        with environment(**values):
            return encode(*args, **kwargs)

    return run


COLD = {
    "npminilm": "import npminilm; e = npminilm.SentenceEncoder(); e.encode('A man is playing a guitar.')",
    "npminilm tiles": "import os; os.environ['NPMINILM_MKL'] = '0'; import npminilm; e = npminilm.SentenceEncoder(); "
                      "e.encode('A man is playing a guitar.')",
    "npminilm numpy": "import os; os.environ['NPMINILM_NUMBA'] = '0'; import npminilm; e = npminilm.SentenceEncoder(); "
                      "e.encode('A man is playing a guitar.')",
    "sentence-transformers": "from sentence_transformers import SentenceTransformer; "
                             "m = SentenceTransformer(FOLDER, device='cpu'); m.encode('A man is playing a guitar.')",
}
RSS = {
    "npminilm": "import npminilm; e = npminilm.SentenceEncoder(); e.encode(TEXTS, batch_size=32)",
    "npminilm tiles": "import os; os.environ['NPMINILM_MKL'] = '0'; import npminilm; e = npminilm.SentenceEncoder(); "
                      "e.encode(TEXTS, batch_size=32)",
    "npminilm numpy": "import os; os.environ['NPMINILM_NUMBA'] = '0'; import npminilm; e = npminilm.SentenceEncoder(); "
                      "e.encode(TEXTS, batch_size=32)",
    "sentence-transformers": "from sentence_transformers import SentenceTransformer; "
                             "m = SentenceTransformer(FOLDER, device='cpu'); m.encode(TEXTS, batch_size=32)",
}


def fresh_process(body, folder, texts=None):
    """Run `body` in a new interpreter; returns (seconds inside it from before the first import, whole process
    wall seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts or [], f)
    code = (f"import time; t0 = time.perf_counter(); import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"FOLDER = {str(folder)!r}; TEXTS = json.load(open({f.name!r})); {body}; "
            "t1 = time.perf_counter(); "
            # VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss into a forked-and-exec'd child
            "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
            "import resource; print(t1 - t0, (hwm or [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss])[0])")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    wall = time.perf_counter() - start
    os.unlink(f.name)
    return float(out[-2]), wall, int(out[-1]) / 1024


def tokenizer_rows(ours, texts_by_name, rounds):
    """Ours vs the tokenizers crate, one text at a time, as sentence-transformers' tokenizer sees them."""
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(ours.transformer_path / "tokenizer.json"))
    hf.enable_truncation(ours.max_seq_length)
    hf.no_padding()
    rows = []
    for name, texts in texts_by_name.items():
        texts = [t.strip().lower() if ours.do_lower_case else t.strip() for t in texts]
        same = all(hf.encode(t).ids == ours.tokenizer.encode(t, max_length=ours.max_seq_length) for t in texts)
        a, b = [], []
        for _ in range(rounds * 3):
            a.append(timed(lambda: [ours.tokenizer.encode(t, max_length=ours.max_seq_length) for t in texts])[0])
            b.append(timed(lambda: [hf.encode(t) for t in texts])[0])
        o, p = len(texts) / statistics.median(a), len(texts) / statistics.median(b)
        rows.append(f"| {name} ({len(texts)}) | {o:,.0f} | {p:,.0f} | {o / p:.2f} | {'yes' if same else 'NO'} |")
    return rows


def steal_line(steal):
    """What the hypervisor took from the timed rounds (`stolen_seconds`): other guests' work on these cores."""
    if not steal:
        return "CPU time stolen by the hypervisor during the rounds: not counted here (no /proc/stat)"
    stolen, timed_s = sum(s for s, _, _ in steal), sum(t for _, t, _ in steal)
    worst, worst_t, worst_round = max(steal, key=lambda x: x[0] / x[1])
    return (f"CPU time stolen by the hypervisor (steal, /proc/stat) during the timed rounds: {stolen:.1f} s of "
            f"{timed_s:.0f} s x {os.cpu_count()} cores ({100 * stolen / timed_s / os.cpu_count():.2f}%); the most in "
            f"one round: {worst:.2f} s of {worst_t:.1f} s ({worst_round})")


def kernels_line(sets):
    """What npminilm runs here, for the results' header."""
    from importlib.metadata import version

    if sets == ["numpy"]:
        return "the NumPy ops (numba is not installed: pip install '.[fast]')"
    from npminilm.cpu import isa, mkl, small_gemm, tiled_linear

    line = (f"numba {version('numba')} kernels (npminilm.cpu), compiled for {'AVX-512' if isa.has_avx512() else 'AVX2'}"
            f" (register tiles {tiled_linear.ROWS} x {tiled_linear.PANEL_COLS} for the linear layers, "
            f"{small_gemm.TILE_ROWS} x {small_gemm.TILE_COLS} for attention)")
    if "numba + MKL" in sets:
        if mkl.available():
            line += (f"; the linear layers through MKL {version('mkl')}'s packed sgemm by default, through the "
                     "register tiles as `npminilm tiles`")
        else:
            line += (f"; the linear layers through the register tiles by default (not an Intel CPU), through MKL "
                     f"{version('mkl')}'s packed sgemm as `npminilm MKL` (NPMINILM_MKL=1)")
    return line + "; the NumPy ops alone as `npminilm numpy`"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--avx2-code", action="store_true",
                        help="run every engine's AVX2 code paths (on an AVX-512 CPU): restarts with AVX2_CODE set")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.avx2_code and os.environ.get("NPMINILM_BENCH_AVX2_CODE") != "1":
        env = dict(os.environ, **avx2_code_environment(), NPMINILM_BENCH_AVX2_CODE="1")
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    stamp = f"{datetime.datetime.now():%Y-%m-%d-%H%M}" + ("-avx2-code" if args.avx2_code else "")
    args.out = args.out or ROOT / "benchmarks" / "results" / "cpu_bench" / f"cpu_bench-{stamp}.md"
    load_before = os.getloadavg()

    import torch
    from sentence_transformers import SentenceTransformer

    import npminilm

    ours = npminilm.SentenceEncoder()
    deterministic = npminilm.SentenceEncoder(deterministic=True)
    peer = SentenceTransformer(str(ours.folder), device="cpu")
    sets = kernel_sets()
    kernels = kernels_line(sets)
    engines = {"npminilm": ours.encode}
    if "numba + MKL" in sets:  # the GEMM library that is not the default gets a column: one run can decide it
        from npminilm.cpu import mkl

        if mkl.available():
            engines["npminilm tiles"] = with_environment(ours.encode, NPMINILM_MKL="0")
        else:  # not an Intel CPU, where MKL is unmeasured and off
            engines["npminilm MKL"] = with_environment(ours.encode, NPMINILM_MKL="1")
    if len(sets) > 1:
        engines["npminilm numpy"] = with_environment(ours.encode, NPMINILM_NUMBA="0")
    engines.update({"npminilm deterministic": deterministic.encode, "ST": peer.encode})
    peers, failed = {}, []
    tmp = tempfile.TemporaryDirectory()
    for name, (make, packages) in PEERS.items():
        try:
            engines[name], version = make(peer, torch.get_num_threads(), Path(tmp.name))
            peers[name] = version
        except ImportError as e:
            peers[name] = f"skipped: not installed ({e.name}; pip install {packages})"
        except Exception as e:  # a peer that breaks is reported, never silently dropped
            peers[name] = f"FAILED: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            failed.append(name)
        print(f"{name}: {peers[name]}", flush=True)
    gemm = max(sgemm_gflops(), sgemm_gflops())  # a cold first reading (threads starting) once came out at half
    print(f"sgemm: {gemm:.0f} GFLOP/s", flush=True)

    cols = " | ".join(f"{e} sent/s | {e} / ST | {e} % sgemm" for e in engines if e != "ST")
    lines = [f"| workload | batch | ST sent/s | ST % sgemm | {cols} | max abs diff |",
             "|---|---|" + "---|" * (2 + 3 * (len(engines) - 1)) + "---|"]
    texts_by_name = workloads()
    spread = ["| workload | batch | " + " | ".join(engines) + " |", "|---|---|" + "---|" * len(engines)]
    steal = []  # (seconds stolen, seconds timed, what ran) for each engine's round
    for name, texts in texts_by_name.items():
        n_tokens = [len(ours.tokenizer.encode(t.strip().lower(), max_length=ours.max_seq_length)) for t in texts]
        total = flops(n_tokens, ours.bert_config)
        for batch in (32, 128):
            times, outs = {e: [] for e in engines}, {}
            for round_ in range(args.rounds):  # alternate so drift in machine load hits every engine alike
                for e, encode in engines.items():
                    before = stolen_seconds()
                    t, outs[e] = timed(lambda: encode(texts, batch_size=batch))
                    times[e].append(t)
                    if before is not None:
                        steal.append((stolen_seconds() - before, t, f"{e}, {name} batch {batch} round {round_ + 1}"))
            rate = {e: len(texts) / statistics.median(t) for e, t in times.items()}
            share = {e: total / statistics.median(t) / 1e9 / gemm * 100 for e, t in times.items()}
            cells = " | ".join(f"{rate[e]:.1f} | {rate[e] / rate['ST']:.2f} | {share[e]:.0f}%" for e in engines
                               if e != "ST")
            diff = max(np.abs(outs[e] - outs["ST"]).max() for e in engines)
            row = f"| {name} ({len(texts)}) | {batch} | {rate['ST']:.1f} | {share['ST']:.0f}% | {cells} | {diff:.1e} |"
            print(row, flush=True)
            lines.append(row)
            spread.append(f"| {name} | {batch} | " + " | ".join(" ".join(f"{len(texts) / t:.1f}" for t in times[e])
                                                                for e in engines) + " |")
    gemm_after = sgemm_gflops()

    profile = []
    for name, texts in texts_by_name.items():
        for kernel_set in sets:
            rows, total = stage_profile(ours, texts, 32, kernel_set)
            profile += [f"### {name}, batch 32, one worker, {kernel_set} kernels: {total:.2f} s", "",
                        "| stage | s | share |", "|---|---|---|"]
            profile += [f"| {stage} | {t:.3f} | {100 * share:.1f}% |" for stage, t, share in rows] + [""]
    print("\n".join(profile), flush=True)

    tok = ["| texts | npminilm texts/s | HF fast (one at a time) texts/s | ratio | same ids |", "|---|---|---|---|---|"]
    tok += tokenizer_rows(ours, texts_by_name, args.rounds)
    print("\n".join(tok), flush=True)

    sts = texts_by_name["stsb-sentences"]
    proc = ["| engine | cold start: import + load + first embedding (s) | whole process (s) | "
            "peak RSS encoding STSb (MB) |", "|---|---|---|---|"]
    for e in COLD:
        cold, wall, _ = fresh_process(COLD[e], ours.folder)
        _, _, rss = fresh_process(RSS[e], ours.folder, sts)
        proc.append(f"| {e} | {cold:.2f} | {wall:.2f} | {rss:.0f} |")
        print(proc[-1], flush=True)

    model, isa, blas, blas_env = machine()
    header = [
        f"# CPU benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}",
        "",
        f"- machine: {model}, {isa}, {os.cpu_count()} cores ({platform.machine()})",
        f"- BLAS libraries loaded (threadpoolctl; numpy's is the openblas with its kernel): {blas}; code-path "
        f"settings in the environment: {blas_env or 'none'}",
        f"- npminilm's kernels: {kernels}",
        f"- python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), npminilm {npminilm.__version__}, "
        + ", ".join(f"{name} {version}" for name, version in peers.items()),
        f"- sgemm (float32, 4096x384 @ 384x1536): {gemm:.0f} GFLOP/s before (the higher of two readings), "
        f"{gemm_after:.0f} after; % sgemm uses the one before",
        f"- load average (1 min) before {load_before[0]:.2f} (whatever ran in the minute before), after "
        f"{os.getloadavg()[0]:.2f} (this benchmark's own threads included)",
        f"- {steal_line(steal)}",
        f"- median of {args.rounds} alternating rounds; ratios are to sentence-transformers",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + lines + ["", "## Each round (sentences/s, in the order run)", ""] + spread
                                   + ["", "## Where npminilm's time goes (per-stage profile)", ""]
                                   + profile + ["## Tokenizer", ""] + tok
                                   + ["", "## Cold start and memory (fresh processes)", ""] + proc) + "\n")
    print(f"written to {args.out}")
    if failed:
        sys.exit(f"cpu_bench: peers failed: {', '.join(failed)} (see the header of {args.out})")


if __name__ == "__main__":
    main()
