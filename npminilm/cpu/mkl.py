"""The encoder's linear layers through oneMKL's packed sgemm (the `fast` extra's `mkl` wheel, x86-64), on one
thread per call.

    w_packed = pack(w)                  once per weight: MKL's own tile layout of B = w^T, (out, in) weight
    out = matmul_t(x, w)                (M, in) @ (in, out) -> (M, out), i.e. x @ w.T, from the packed copy
    out = matmul_t(x, wq, wk, wv)       x @ [wq; wk; wv].T: weights stacked by rows, packed as one
    jitter, kernel = jit_sgemm(..)      an sgemm compiled for one shape, for attention's q k^T and P v per head

numpy's OpenBLAS packs the weight again in every call; MKL packs it once (`cblas_sgemm_pack`) and then computes
straight from its tiles (`cblas_sgemm_compute`), as OpenVINO and onnxruntime do with their own GEMMs. In the
forward, with weights coming from L3, that runs 512-row GEMMs at about 165 GFLOP/s on one core against
OpenBLAS's 127 (Xeon, AVX-512, 2026-12-02). The weight is read-only while its packed copy is current (`pack`).

A row's product does not depend on the others: from a pack made for PACK_ROWS rows, every row of a product of
any row count, at any position and alignment, has the same bits (a pack made for one row takes another path,
gemv's). `runtime.blas_rows` checks that on the machine before deterministic mode relies on it.

MKL runs its sequential layer: the encoder's worker threads share the cores (`runtime.parallel`), each GEMM
on the thread that calls it. `available()` says whether it runs here: the library is installed, NPMINILM_MKL
is not "0", and the CPU is Intel's (NPMINILM_MKL=1 turns it on elsewhere). On AMD CPUs the register tiles
(`tiled_linear`, `small_gemm`) run instead: there MKL's packed GEMMs only matched OpenBLAS (Zen 3: the encoder
0.95x OpenBLAS's speed, 2026-12-02; Zen 4, one core, 512 rows: 95-104 GFLOP/s against the tiles' 110-116,
2026-12-07).
"""

import ctypes
import functools
import importlib.metadata
import os
import threading

import numpy as np

from ..errors import InvalidInputError
from . import packs

PACK_ROWS = 512  # the row count the packs are made for (a product of any other count reads them as well)
_ROW_MAJOR, _NO_TRANS, _TRANS, _PACKED, _B_MATRIX = 101, 111, 112, 151, 162  # CBLAS enums
_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL
_JIT_ERROR = 2  # mkl_jit_status_t: 0 a kernel made for the shape, 1 MKL's ordinary sgemm behind the same call


@functools.cache
def _library_path():
    """The path of libmkl_rt from the installed `mkl` distribution, or None."""
    try:
        files = importlib.metadata.distribution("mkl").files or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if f.name.startswith("libmkl_rt.so")]
    return str(found[0].locate()) if found else None


@functools.cache
def _intel_cpu():
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return "GenuineIntel" in f.read(4096)
    except OSError:
        return False


@functools.cache
def _load():
    """libmkl_rt with its sequential layer and the three packed-GEMM calls typed, or None."""
    path = _library_path()
    if path is None:
        return None
    lib = ctypes.CDLL(path)  # RTLD_LOCAL: no symbol of it shadows another library's BLAS
    if lib.MKL_Set_Threading_Layer(_SEQUENTIAL) != _SEQUENTIAL:
        return None  # MKL was started with another layer by someone else in this process
    i, p, f = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
    lib.cblas_sgemm_pack_get_size.argtypes = [i, i, i, i]
    lib.cblas_sgemm_pack_get_size.restype = ctypes.c_size_t
    lib.cblas_sgemm_pack.argtypes = [i, i, i, i, i, i, f, p, i, p]
    lib.cblas_sgemm_compute.argtypes = [i, i, i, i, i, i, p, i, p, i, f, p, i]
    lib.mkl_cblas_jit_create_sgemm.argtypes = [ctypes.POINTER(p), i, i, i, i, i, i, f, i, i, f, i]
    lib.mkl_cblas_jit_create_sgemm.restype = i
    lib.mkl_jit_get_sgemm_ptr.argtypes = [p]
    lib.mkl_jit_get_sgemm_ptr.restype = p
    return lib


def available():
    """Whether the encoder's float32 linear layers run through MKL here (read at each call)."""
    flag = os.environ.get("NPMINILM_MKL", "")
    if flag == "0" or (flag != "1" and not _intel_cpu()):
        return False
    return _load() is not None


class PackedWeight:
    """A float32 weight (out, in) held as MKL's packed B = w^T, for products x @ w.T."""

    def __init__(self, w):
        lib = _load()
        w = np.ascontiguousarray(w, dtype=np.float32)
        self.out_features, self.in_features = w.shape
        size = lib.cblas_sgemm_pack_get_size(_B_MATRIX, PACK_ROWS, self.out_features, self.in_features)
        self.buffer = np.empty(-(-size // 4), np.float32)  # bytes -> float32 slots, rounded up
        lib.cblas_sgemm_pack(_ROW_MAJOR, _B_MATRIX, _TRANS, PACK_ROWS, self.out_features, self.in_features,
                             1.0, w.ctypes.data, self.in_features, self.buffer.ctypes.data)

    def matmul_t(self, x, out=None):
        """x @ w.T: x (M, in) float32 with unit column stride -> out (M, out), a new array unless given."""
        M, K = x.shape
        lda = x.strides[0] // 4 if M > 1 else K  # numpy's strides along a dimension of one element are arbitrary
        if (K != self.in_features or x.dtype != np.float32 or (M and K > 1 and x.strides[1] != 4)
                or x.strides[0] % 4 or lda < K):
            raise InvalidInputError(f"x must be float32 (M, {self.in_features}) with contiguous rows, got {x.dtype} "
                                    f"{x.shape} strides {x.strides}")
        out = np.empty((M, self.out_features), np.float32) if out is None else out
        if M:
            _load().cblas_sgemm_compute(_ROW_MAJOR, _NO_TRANS, _PACKED, M, self.out_features, K, x.ctypes.data,
                                        lda, self.buffer.ctypes.data, self.out_features, 0.0, out.ctypes.data,
                                        self.out_features)
        return out


def pack(*ws):
    """The PackedWeight of the float32 weight arrays ws (out_i, in) stacked by rows, made on first use and current
    while every w stays read-only (`packs.get`)."""
    return packs.get(PackedWeight, *ws)


def matmul_t(x, *ws):
    """x @ w.T for float32 x (M, in) and weights ws (out_i, in), stacked by rows (the query, key and value
    weights as one product), from their pack."""
    return pack(*ws).matmul_t(x)


_jits, _jits_lock = {}, threading.Lock()  # shape -> (jitter, kernel), kept for the process


def jit_sgemm(trans_b, m, n, k, alpha, lda, ldb, ldc):
    """MKL's sgemm compiled for one shape (`mkl_cblas_jit_create_sgemm`): C = alpha A op(B), row-major float32, A
    (m, k) as it is, op(B) (k, n) = B^T if trans_b, beta 0. Returns the addresses (jitter, kernel), ints, for code
    that calls kernel(jitter, a, b, c) (`cpu.attention`). Made on first use (0.06-0.1 ms) and kept for the process:
    attention makes two per text length it sees."""
    key = (bool(trans_b), m, n, k, float(np.float32(alpha)), lda, ldb, ldc)
    made = _jits.get(key)  # the hot path: attention asks for its four on every call
    if made is not None:
        return made
    with _jits_lock:
        if key not in _jits:
            lib, jitter = _load(), ctypes.c_void_p()
            status = lib.mkl_cblas_jit_create_sgemm(ctypes.byref(jitter), _ROW_MAJOR, _NO_TRANS,
                                                    _TRANS if trans_b else _NO_TRANS, m, n, k, key[4], lda, ldb,
                                                    0.0, ldc)
            if status == _JIT_ERROR:  # the shape is valid (the callers check it): MKL ran out of memory
                raise MemoryError(f"MKL could not make its sgemm for (trans_b, m, n, k, alpha, lda, ldb, ldc) {key}")
            _jits[key] = (jitter.value, lib.mkl_jit_get_sgemm_ptr(jitter))
        return _jits[key]
