"""Which GEMM rows BLAS computes alike: the row classes that make a row's product independent of its batch.

BLAS computes a GEMM's rows in register tiles, and not every row of a tile the same way: OpenBLAS's Haswell
sgemm runs a 12-row tile as two halves of 6 whose sums round differently, and the rows of a last, partial tile
go through other kernels again. So `x @ W.T` gives a row different last bits at different positions. What is
stable is a period P and a class for each position modulo P: in a GEMM of a multiple of P rows, rows in the
same class get the same bits.

`row_classes` finds them by asking BLAS itself: one GEMM whose rows are all the same vector shows, in one call,
the result at every position. That holds whatever the BLAS, the ISA or the kernel (AVX2, AVX-512, ...). It
needs BLAS on one thread per call: a multi-threaded GEMM splits its rows at other boundaries.
"""

from functools import lru_cache

import numpy as np

PERIODS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96)
MULTIPLES = (1, 2, 3, 5, 8, 100)  # row counts probed for each candidate period, as multiples of it
# The 100-fold GEMM (past OpenBLAS's row blocking) is most of the probe's time: only the first vector runs it.
FEW_MULTIPLES = MULTIPLES[:-1]


def numpy_matmul_t(x, w):
    """x @ w.T through numpy's BLAS: the GEMM the NumPy ops' linear layers run."""
    return x @ w.T


@lru_cache(maxsize=None)
def row_classes(dtype, shapes, matmul_t=None):
    """(class of each position 0..P-1), for the smallest period P in PERIODS such that in GEMMs of a multiple of
    P rows, rows at positions equal modulo P get identical bits, for every (in_features, out_features) in
    `shapes`; positions are in one class when they give identical bits too. Classes are numbered from 0 in order
    of first position. Raises RuntimeError when no period holds (a BLAS whose rows depend on something else).
    matmul_t(x, w) is the GEMM probed, x @ w.T; None probes numpy's (e.g. `cpu.mkl.matmul_t` instead)."""
    matmul_t = numpy_matmul_t if matmul_t is None else matmul_t
    rng = np.random.default_rng(0)
    probes = [(rng.standard_normal((n_out, n_in)).astype(dtype), rng.standard_normal((3, n_in)).astype(dtype))
              for n_in, n_out in shapes]
    for period in PERIODS:
        signatures = [_signatures(matmul_t, period, w, v, MULTIPLES if i == 0 else FEW_MULTIPLES)
                      for w, vectors in probes for i, v in enumerate(vectors)]
        if all(s is not None for s in signatures):
            keys = list(zip(*signatures))  # per position: its result in every probe
            first = {}
            return tuple(first.setdefault(k, len(first)) for k in keys)
    raise RuntimeError(f"this BLAS gives GEMM rows no period among {PERIODS}; deterministic mode cannot hold")


def _signatures(matmul_t, period, weight, v, multiples):
    """The bytes of each position's result when `period` holds for this probe, else None."""
    reference = None
    for m in multiples:
        out = matmul_t(np.repeat(v[None], period * m, axis=0), weight)  # (rows, out): every row the same input
        reference = out[:period] if reference is None else reference
        if not np.array_equal(out.reshape(m, period, -1), np.broadcast_to(reference, (m,) + reference.shape)):
            return None
    return [row.tobytes() for row in reference]
