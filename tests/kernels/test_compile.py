"""Every kernel configuration the launchers can choose, compiled for real GPUs (sm_80 and sm_90) without one.

tools/kernel_compile.py runs each launcher over the sweep (sequence lengths 1 to 512, hidden 384 and 768, FFN 1536
and 3072, head sizes 32 and 64, packed and padded, causal, every pooling mode, fp16 / bf16 / fp32) on meta tensors
and compiles every distinct launch to a cubin. It runs in a subprocess without TRITON_INTERPRET: the interpreter
wraps the kernels so that they cannot be compiled.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

TARGETS = ("sm_80", "sm_90")
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}  # bytes one block may use, opt-in (A100, H100)
WITH_DOTS = {"_attention_fwd_kernel", "_linear_gelu_kernel", "_linear_residual_layernorm_kernel",
             "_linear_residual_kernel"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "kernel_compile.py"), "--json", str(out)], env=env,
                         capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def setting(row, name):
    return int(re.search(rf"\b{name}=(\d+)", row["config"]).group(1))


def test_every_kernel_compiles_for_both_targets(compiled):
    assert set(compiled["kernels"]) >= WITH_DOTS | {"_embeddings_layernorm_kernel", "_pool_normalize_kernel",
                                                     "_l2_normalize_kernel", "_layernorm_kernel"}
    only = {"_l2_normalize_kernel": ("fp32",),  # it normalises the fp32 concatenation of several poolings
            "_linear_residual_layernorm_kernel": ("fp16", "bf16")}  # on a GPU fp32 always takes the split path
    for target in TARGETS:
        built = {(r["kernel"], r["dtype"]) for r in compiled["results"] if r["target"] == target}
        wanted = {(k, d) for k in compiled["kernels"] for d in only.get(k, ("fp16", "bf16", "fp32"))}
        assert wanted <= built, f"{target}: never compiled: {sorted(wanted - built)}"
        assert {k for k, _ in built} == set(compiled["kernels"])


def test_no_register_spills_in_half_precision(compiled):
    spills = [f"{r['kernel']} {r['dtype']} {r['target']}: {r['spill_bytes']} B ({r['config']})"
              for r in compiled["results"] if r["dtype"] in ("fp16", "bf16") and r["spill_bytes"]]
    assert not spills, "\n".join(spills)


def test_shared_memory_within_each_targets_limit(compiled):
    over = [f"{r['kernel']} {r['dtype']} {r['target']}: {r['shared']} B ({r['config']})"
            for r in compiled["results"] if r["shared"] > SHARED_LIMIT[r["target"]]]
    assert not over, "\n".join(over)


def test_half_precision_dots_run_on_tensor_cores(compiled):
    """mma.sync on sm_80; on sm_90 wgmma wherever a warp group (4 warps) has a 64-row tile, mma.sync below."""
    wrong = []
    for r in compiled["results"]:
        if r["kernel"] not in WITH_DOTS:
            continue
        if r["dtype"] == "fp32":  # ieee fp32 dots: FMAs, by design (tf32 would miss the fp32 parity targets)
            expected = "-"
        elif r["target"] == "sm_90" and setting(r, "BLOCK_M") >= 64 and setting(r, "num_warps") % 4 == 0:
            expected = "wgmma"
        else:
            expected = "mma"
        if r["tensor_cores"] != expected:
            wrong.append(f"{r['kernel']} {r['dtype']} {r['target']}: {r['tensor_cores']}, expected {expected} "
                         f"({r['config']})")
    assert not wrong, "\n".join(wrong)
