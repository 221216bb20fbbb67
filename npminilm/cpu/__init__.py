"""CPU kernels compiled by numba (the `fast` extra): the encoder's inference forward fused into fewer passes.

`available()` says whether they run here: numba is installed and NPMINILM_NUMBA is not "0". Without them the
encoder runs the NumPy ops, with the same results to float32 rounding.
"""

import importlib.util
import os


def available():
    return os.environ.get("NPMINILM_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None
