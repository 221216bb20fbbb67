"""benchmarks/gpu_bench.py end to end in its --smoke mode (a few texts, small kernel shapes, the Triton
interpreter), so the script a GPU lease will run is known to work: every engine, both workloads, the accuracy
check against the NumPy engine, the stage split of a Triton encode, the tokenizer's ceiling and the kernel
table."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_smoke(tmp_path, model_dir, data_dir):
    out = tmp_path / "smoke.md"
    env = {**os.environ, "TRITON_INTERPRET": "1", "NPMINILM_DATA_DIR": str(data_dir)}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--smoke", "--rounds", "1",
                          "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    text = out.read_text()
    for engine in ("ST float32", "ST float16", "npminilm triton float16", "npminilm triton bfloat16",
                   "npminilm triton float32"):
        assert text.split("## Where")[0].count(f"| {engine} |") == 2, engine  # both workloads
    assert "Accuracy failures" not in text
    for op in ("attention fp16", "linear+GELU fp16", "linear+residual+LayerNorm fp16"):
        assert f"| {op} |" in text
    split = text.split("## Where an encode's time goes")[1].split("##")[0]
    for engine in ("npminilm triton float16", "npminilm triton bfloat16", "npminilm triton float32"):
        assert split.count(f"| {engine} |") == 1, engine
    assert "sentences/s on one core" in text
