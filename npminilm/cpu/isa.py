"""What numba compiles npminilm's kernels for: the x86 features of its target, which pick the register tiles'
shapes (`small_gemm`).

    features()          numba's target features: NUMBA_CPU_FEATURES where set, else the host CPU's (llvmlite)
    has_avx512()        whether they include AVX-512F: 32 vector registers of 16 floats, else AVX2's 16 of 8
    without_avx512()    the host's features with every AVX-512 (and AMX, AVX10) extension off: set as
                        NUMBA_CPU_FEATURES, an AVX-512 CPU compiles the kernels as an AVX2 one would

NUMBA_CPU_NAME alone does not take AVX-512 away: numba passes the host's features with any CPU name, and the
features win.
"""

import functools

from numba.core import config

_WIDE = ("avx512", "amx", "avx10", "evex512")  # the feature names that come with 512-bit or AVX-512 registers


def _host_features():
    """{feature: on} of the host CPU; empty where LLVM cannot tell (some non-x86 hosts)."""
    import llvmlite.binding as ll

    try:
        return dict(ll.get_host_cpu_features())
    except RuntimeError:
        return {}


def features():
    if config.CPU_FEATURES is not None:
        return config.CPU_FEATURES
    return ",".join(("+" if on else "-") + name for name, on in _host_features().items())


@functools.cache
def has_avx512():
    return "+avx512f" in features().split(",")


def without_avx512():
    return ",".join(("-" if name.startswith(_WIDE) or not on else "+") + name
                    for name, on in _host_features().items())
