"""The kernels compiled for real GPUs on a machine without one.

Each launcher runs on `meta` tensors, so it takes its GPU branch and nothing is allocated or launched; every
launch it makes is recorded, then bound and specialised by Triton's own binder for the target (as a launch on
that GPU would be) and compiled to PTX and a cubin with `triton.compile`. ptxas's `-v` log gives registers and
spills, the compiled kernel's metadata its shared memory, and the PTX its tensor-core instructions.

    python tools/kernel_compile.py [--md FILE] [--json FILE]    # every configuration, both targets

It needs torch and triton, no GPU, and TRITON_INTERPRET unset (the interpreter wraps kernels so that they cannot
be compiled); tests/kernels/test_compile.py runs it so and checks its results.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import triton
from npminilm.kernels import attention, embeddings_layernorm, ffn_gelu, linear_residual_layernorm, pool_normalize
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

TARGETS = {"sm_80": GPUTarget("cuda", 80, 32), "sm_90": GPUTarget("cuda", 90, 32)}
MODULES = (attention, embeddings_layernorm, ffn_gelu, linear_residual_layernorm, pool_normalize)


def kernels():
    """Every @triton.jit kernel the launchers start: {name: JITFunction}."""
    return {name: obj for m in MODULES for name, obj in vars(m).items()
            if isinstance(obj, JITFunction) and name.startswith("_") and name.endswith("_kernel")}


@dataclass
class Launch:
    name: str
    kernel: JITFunction
    args: tuple
    kwargs: dict


def record_launches(call):
    """Run `call()` with every kernel's launch replaced by a note of its arguments: returns the Launches."""
    launches = []
    patched = kernels()

    def recorder(name, kernel):
        def run(*args, grid, warmup, **kwargs):
            launches.append(Launch(name, kernel, args, kwargs))

        return run

    for name, kernel in patched.items():
        kernel.run = recorder(name, kernel)
    try:
        call()
    finally:
        for kernel in patched.values():
            del kernel.run
    return launches


@dataclass
class Compiled:
    kernel: str
    target: str
    dtype: str          # the storage dtype of the launch's tensors (fp16, bf16 or fp32)
    config: str         # the constexprs and launch options that select this code
    registers: int
    spill_bytes: int    # spill stores + spill loads
    shared: int         # bytes
    tensor_cores: str   # "wgmma", "mma" or "-" (no tensor-core instruction in the PTX)


def bind(launch, target):
    """(signature, constexprs, attrs, options) of `launch` on `target`, as Triton's JIT would specialise it."""
    backend = make_backend(TARGETS[target])
    binder = create_function_from_signature(launch.kernel.signature, launch.kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = launch.kernel._pack_args(backend, launch.kwargs, bound, specialization,
                                                                     options)
    return signature, constexprs, attrs, options


def config_key(launch, target):
    """What selects the generated code, short of the divisibility of integer arguments: the argument types,
    the constexprs and the launch options."""
    signature, constexprs, _, options = bind(launch, target)
    consts = {launch.kernel.arg_names[path[0]]: value for path, value in constexprs.items()}
    floats = [t[1:] for t in signature.values() if t in ("*fp16", "*bf16", "*fp32")]
    dtype = next((t for t in floats if t != "fp32"), "fp32")  # the storage dtype; fp32 scratch does not count
    config = ", ".join([f"{k}={v}" for k, v in consts.items() if k[0].isupper()]
                       + [f"num_warps={options.num_warps}", f"num_stages={options.num_stages}"])
    return launch.name, target, tuple(signature.values()), dtype, config


_REGISTERS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_usage(ptx, target):
    """(registers, spill bytes) that ptxas -v reports for `ptx` on `target`, with the flags Triton uses."""
    capability = TARGETS[target].arch
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        run = subprocess.run([get_ptxas(capability).path, "-v", "--regAllocOptLevel=2",
                              f"--gpu-name={sm_arch_from_capability(capability)}", str(src), "-o", str(src) + ".o"],
                             capture_output=True, text=True, check=True)
    log = run.stdout + run.stderr
    registers = [int(n) for n in _REGISTERS.findall(log)]
    spills = [int(a) + int(b) for a, b in _SPILLS.findall(log)]
    if not registers or not spills:
        raise RuntimeError(f"no register count in the ptxas log for {target}:\n{log[-2000:]}")
    return max(registers), max(spills)


def compile_launch(launch, target):
    """Compile `launch` for `target` (sm_80 or sm_90) and read what the compiler made of it."""
    signature, constexprs, attrs, options = bind(launch, target)
    compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=TARGETS[target],
                              options=options.__dict__)
    ptx = compiled.asm["ptx"]
    registers, spills = ptxas_usage(ptx, target)
    cores = "wgmma" if "wgmma.mma_async" in ptx else "mma" if re.search(r"\bmma\.sync", ptx) else "-"
    _, _, _, dtype, config = config_key(launch, target)
    return Compiled(launch.name, target, dtype, config, registers, spills, compiled.metadata.shared, cores)


def compile_all(launches, targets=tuple(TARGETS), threads=2):
    """Every distinct configuration among `launches` compiled for each target, in a stable order."""
    unique = {}
    for launch in launches:
        for target in targets:
            unique.setdefault(config_key(launch, target), (launch, target))
    with ThreadPoolExecutor(threads) as pool:  # ptxas runs as a subprocess: two compiles overlap well
        results = list(pool.map(lambda lt: compile_launch(*lt), unique.values()))
    return sorted(results, key=lambda c: (c.kernel, c.dtype, c.config, c.target))


# ------------------------------------------------------------------------------------------- the sweep

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LENGTHS = (1, 7, 16, 31, 32, 48, 64, 100, 128, 300, 512)  # tokens per sequence: each block-size class, 1 to 512
ENCODERS = ((384, 12, 1536), (768, 12, 3072))  # (C, NH, I): MiniLM-L6 (head size 32) and BERT-base (64)
ROWS = (1, 7, 64, 100, 800, 4096, 16384)  # tokens in a packed batch: one, a few, one sentence, 32 sentences, ...
POOLINGS = (("mean",), ("cls",), ("max",), ("mean_sqrt_len_tokens",), ("cls", "mean", "max"))


def meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def sweep_calls():
    """Every launcher call the encoder (and the attention API's other options) can make over the sweep."""
    for dtype in DTYPES:
        for C, NH, inner in ENCODERS:
            for T in LENGTHS:  # attention: packed, padded with and without a mask, causal, with the LSE
                packed = meta(T, 3 * C, dtype=dtype)  # q, k, v: column slices of one fused QKV tensor
                padded = meta(3, T, 3 * C, dtype=dtype)
                for causal in (False, True):
                    for lse in (False, True):
                        yield partial(attention.attention, packed[:, :C], packed[:, C:2 * C], packed[:, 2 * C:], NH,
                                      cu_seqlens=meta(2, dtype=torch.int32), max_seqlen=T, causal=causal,
                                      return_lse=lse)
                        for mask in (None, meta(3, T, dtype=torch.int64)):
                            yield partial(attention.attention, padded[..., :C], padded[..., C:2 * C],
                                          padded[..., 2 * C:], NH, key_padding_mask=mask, causal=causal,
                                          return_lse=lse)
            for M in ROWS:
                x, h = meta(M, C, dtype=dtype), meta(M, inner, dtype=dtype)
                b, g = meta(C, dtype=dtype), meta(C, dtype=dtype)
                yield partial(ffn_gelu.linear_gelu, x, meta(3 * C, C, dtype=dtype), meta(3 * C, dtype=dtype),
                              gelu=False)  # the fused QKV projection
                yield partial(ffn_gelu.linear_gelu, x, meta(inner, C, dtype=dtype), meta(inner, dtype=dtype))
                for stats in (False, True):  # attention output, then FFN down-projection
                    yield partial(linear_residual_layernorm.linear_residual_layernorm, x, meta(C, C, dtype=dtype), b,
                                  x, g, b, 1e-12, return_stats=stats)
                    yield partial(linear_residual_layernorm.linear_residual_layernorm, h, meta(C, inner, dtype=dtype),
                                  b, x, g, b, 1e-12, return_stats=stats)
                ids = meta(M, dtype=torch.int32)
                yield partial(embeddings_layernorm.embeddings_layernorm, ids, ids, ids, meta(30522, C, dtype=dtype),
                              meta(512, C, dtype=dtype), meta(2, C, dtype=dtype), g, b, 1e-12)
                for modes in POOLINGS:
                    for normalize in (False, True):
                        yield partial(pool_normalize.pool_normalize, x, meta(33, dtype=torch.int32), modes, normalize)


def sweep_launches():
    return [launch for call in sweep_calls() for launch in record_launches(call)]


def format_summary(results):
    """One row per kernel, dtype and target: how many configurations, the most registers, spilled bytes and
    shared memory among them, and the tensor-core instructions they use."""
    groups = {}
    for c in results:
        groups.setdefault((c.kernel, c.dtype, c.target), []).append(c)
    lines = ["| kernel | dtype | target | configurations | max registers | max spills (B) | max shared (B) | "
             "tensor cores |", "|---|---|---|---:|---:|---:|---:|---|"]
    for (kernel, dtype, target), cs in groups.items():
        cores = ", ".join(sorted({c.tensor_cores for c in cs}))
        lines.append(f"| {kernel} | {dtype} | {target} | {len(cs)} | {max(c.registers for c in cs)} | "
                     f"{max(c.spill_bytes for c in cs)} | {max(c.shared for c in cs)} | {cores} |")
    return "\n".join(lines)


def format_table(results):
    lines = ["| kernel | dtype | configuration | target | registers | spills (B) | shared (B) | tensor cores |",
             "|---|---|---|---|---:|---:|---:|---|"]
    lines += [f"| {c.kernel} | {c.dtype} | {c.config} | {c.target} | {c.registers} | {c.spill_bytes} | {c.shared} "
              f"| {c.tensor_cores} |" for c in results]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--md", help="write the table here")
    ap.add_argument("--json", help="write the results here, one object per compile")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if knobs.runtime.interpret:
        sys.exit("kernel_compile: TRITON_INTERPRET is set; unset it to compile for GPUs")
    t0 = time.perf_counter()
    launches = sweep_launches()
    results = compile_all(launches, threads=a.threads)
    summary = (f"{len(launches)} launches, {len(results)} compiles in {time.perf_counter() - t0:.0f} s; "
               f"triton {triton.__version__}, torch {torch.__version__}")
    text = "\n\n".join([summary, format_summary(results), "Every configuration:", format_table(results)])
    print(text)
    if a.md:
        Path(a.md).write_text(f"# Kernels compiled for sm_80 and sm_90, {time.strftime('%Y-%m-%d')}\n\n{text}\n")
    if a.json:
        Path(a.json).write_text(json.dumps({"launches": len(launches), "kernels": sorted(kernels()),
                                            "results": [asdict(c) for c in results]}))


if __name__ == "__main__":
    main()
