"""CPU kernels compiled by numba (the `fast` extra): the encoder's float32 inference forward fused into fewer
passes (`kernels.py`, composed in `npminilm.encoder.fused`), its linear layers through oneMKL's packed sgemm
(`mkl.py`, on Intel CPUs by default; NPMINILM_MKL=0 keeps numpy's BLAS), and, with MKL, attention in one kernel
that calls MKL's sgemm (`attention.py`).

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
