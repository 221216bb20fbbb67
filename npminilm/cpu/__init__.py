"""CPU kernels compiled by numba (the `fast` extra): the encoder's float32 inference forward fused into fewer
passes (`kernels.py`, composed in `npminilm.encoder.fused`), attention in one kernel per run of equal-length texts
(`attention.py`), and the GEMMs: oneMKL's packed and JIT sgemms on Intel CPUs (`mkl.py`; NPMINILM_MKL=1 or 0
turns MKL on or off anywhere), else register tiles that LLVM compiles (`small_gemm.py`), for attention's products
and, over weights packed once, the linear layers (`tiled_linear.py`), each shaped for the vector registers of the
ISA numba compiles for (`isa.py`). Weights are packed once (`packs.py`).

`available()` says whether they run here: numba is installed and NPMINILM_NUMBA is not "0" (read at each call,
so a process can switch). Without them the encoder runs the NumPy ops, with the same results to float32 rounding.
"""

import functools
import importlib.util
import os


@functools.cache
def _numba_installed():
    return importlib.util.find_spec("numba") is not None


def available():
    return os.environ.get("NPMINILM_NUMBA", "1") != "0" and _numba_installed()
