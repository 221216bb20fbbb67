"""The kernels compiled for AVX2 where the CPU has AVX-512 (`isa.without_avx512` as NUMBA_CPU_FEATURES): the
tiles take AVX2's shapes, their code holds no 512-bit register, and the tile, linear-layer, attention and
bit-identity tests pass with them. On an AVX2-only CPU the other tests already run the AVX2 tiles."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from npminilm.cpu import isa

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["tests/cpu/test_small_gemm.py", "tests/cpu/test_tiled_linear.py", "tests/cpu/test_attention.py",
         "tests/encoder/test_deterministic.py"]
SHAPES = """
import numpy as np
from npminilm.cpu import isa, small_gemm, tiled_linear
a, b, c = np.ones((6, 5), np.float32), np.ones((5, 16), np.float32), np.zeros((6, 16), np.float32)
small_gemm.small_gemm(a, b, c, np.float32(1.0), False)
tiled_linear.matmul_t(np.ones((9, 5), np.float32), np.ones((24, 5), np.float32))
code = "".join(small_gemm.small_gemm.inspect_asm().values()) + "".join(tiled_linear._linear.inspect_asm().values())
print(isa.has_avx512(), small_gemm.TILE_ROWS, small_gemm.TILE_COLS, tiled_linear.ROWS, tiled_linear.PANEL_COLS,
      "zmm" in code, "ymm" in code)
"""


def test_without_avx512_turns_off_every_avx512_feature_and_keeps_the_rest():
    features = dict((f[1:], f[0] == "+") for f in isa.without_avx512().split(","))
    host = isa._host_features()
    assert features.keys() == host.keys() and "avx512f" in features
    wide = ("avx512", "amx", "avx10", "evex512")  # LLVM's names for AVX-512 and what needs its registers
    assert all(not on for name, on in features.items() if name.startswith(wide))
    assert all(on == host[name] for name, on in features.items() if not name.startswith(wide))


@pytest.fixture(scope="module")
def avx2_env(tmp_path_factory):
    if not isa.has_avx512():
        pytest.skip("this CPU has no AVX-512: the rest of tests/cpu runs the AVX2 tiles")
    return dict(os.environ, NUMBA_CPU_FEATURES=isa.without_avx512(),
                NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("numba-avx2")))


def test_avx2_code_takes_avx2_shapes_and_no_512_bit_registers(avx2_env):
    out = subprocess.run([sys.executable, "-c", SHAPES], env=avx2_env, cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "6", "16", "4", "24", "False", "True"]


def test_the_tile_attention_and_bit_identity_tests_pass_with_avx2_code(avx2_env):
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], env=avx2_env,
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " skipped" not in out.stdout and " failed" not in out.stdout, out.stdout[-2000:]
