"""The encoder's float32 linear layers through the register tiles (`small_gemm.tile_kernels`) where MKL does not run
(AMD CPUs), on one thread per call, each weight packed once into panels of PANEL_COLS output columns.

    TiledWeight(w).panels      w (out, in) -> (out / PANEL_COLS, in, PANEL_COLS): w^T a panel of columns at a time
    out = matmul_t(x, *ws)     x @ [w_1; w_2; ...].T from their pack (`packs.get`), (M, in) -> (M, out)

    for each block of M_BLOCK rows, each block of K_BLOCK inputs, each panel p, each ROWS rows i of the block:
        out[i rows, p columns] (+)= x[i rows, k block] @ panels[p, k block]   the block of x (128 x 384 floats,
                                                                              192 KB) stays in L2 while the
                                                                              panels go by

numpy's OpenBLAS packs the weight again in every call and runs its own kernels; here the weight is packed once and
each tile's accumulators stay in registers over a whole block. The tile is 8 x 32 with AVX-512 and 4 x 24 with AVX2
(`small_gemm`'s table). On an AMD EPYC Zen 4, one core, 512 rows (the encoder's chunk: two 256-token texts), best
of 40, 2026-12-07, GFLOP/s:

    layer (out x in)          AVX-512: OpenBLAS   4 x 32 tile (before)   8 x 32    AVX2: OpenBLAS   4 x 32   4 x 24
    Q/K/V as one (1152 x 384)          100.9      107.1                  113.6           105.8      46.5     112.6
    attention output (384 x 384)       102.3      108.3                  116.4           110.0      47.4     115.1
    FFN up (1536 x 384)                 99.0      102.3                  109.5           106.4      47.6     112.7
    FFN down (384 x 1536)               95.6      101.1                  112.9           107.6      55.8     111.6

(AVX2: the kernels compiled with AVX-512 off, `isa.without_avx512`, and OpenBLAS's Haswell kernels, on the same
core.) With 8192 rows a call, the 4 x 32 tile without row blocks fell to 81-90 GFLOP/s; the 8 x 32 with them ran
at 100-111.

A row's product depends on the row alone (its own FMA chains, blocks in a fixed order), so a row has the same bits
at any row count and position, and with either tile; the rows past the last whole tile go through a zero-padded
copy, and a weight whose out is not a multiple of PANEL_COLS gets zero columns up to its last whole panel (their
products dropped).
"""

import numpy as np
from numba import njit

from ..errors import InvalidInputError
from . import isa, packs
from .kernels import prefer_512_bit_vectors
from .small_gemm import VECTOR, tile_kernels

ROWS, VECTORS = (8, 2) if isa.has_avx512() else (4, 3)  # the tile: rows, vectors of columns (a panel's width)
PANEL_COLS = VECTORS * VECTOR
_tile, _tile_add = tile_kernels(ROWS, VECTORS)
K_BLOCK = 384  # inputs a pass over the panels: 384 ran 1-5% faster than 128, 256 or 768 on Zen 4
M_BLOCK = 128 // ROWS * ROWS  # rows a pass over the panels: 128 and 256 ran alike on Zen 4; Zen 3's L2 is 512 KB


class TiledWeight:
    """A float32 weight (out, in) held as panels of w^T for products x @ w.T, out padded with zero rows of w to a
    multiple of PANEL_COLS."""

    def __init__(self, w):
        self.out_features, self.in_features = w.shape
        n_panels = -(-self.out_features // PANEL_COLS)
        padded = np.zeros((n_panels * PANEL_COLS, self.in_features), np.float32)
        padded[:self.out_features] = w
        self.panels = np.ascontiguousarray(padded.reshape(n_panels, PANEL_COLS, self.in_features).transpose(0, 2, 1))

    def matmul_t(self, x):
        """x @ w.T: x (M, in) float32 with unit column stride -> (M, out), a new array."""
        M, K = x.shape
        if (K != self.in_features or x.dtype != np.float32 or (M and K > 1 and x.strides[1] != 4)
                or x.strides[0] % 4 or (M > 1 and x.strides[0] < 4 * K)):
            raise InvalidInputError(f"x must be float32 (M, {self.in_features}) with contiguous rows, got {x.dtype} "
                                    f"{x.shape} strides {x.strides}")
        out = np.empty((M, self.panels.shape[0] * PANEL_COLS), np.float32)
        if M and K:
            _linear(np.ascontiguousarray(x) if M == 1 else x, self.panels, out, K_BLOCK, M_BLOCK)
        else:
            out.fill(0.0)  # an empty sum
        return out if out.shape[1] == self.out_features else np.ascontiguousarray(out[:, :self.out_features])


@njit(nogil=True, cache=True, error_model="numpy")
def _linear(x, panels, out, k_block, m_block):
    """out = x @ w.T from w's panels (P, K, PANEL_COLS); x (M, K), out (M, P * PANEL_COLS) float32, unit column
    strides."""
    prefer_512_bit_vectors()
    M, K = x.shape
    whole = M // ROWS * ROWS
    lda, ldc = x.strides[0] // 4, out.strides[0] // 4
    for m0 in range(0, whole, m_block):
        _rows(x.ctypes.data + 4 * m0 * lda, lda, panels, out.ctypes.data + 4 * m0 * ldc, ldc,
              min(m_block, whole - m0), K, k_block)
    if whole < M:  # the last M - whole rows, padded with zeros to a tile
        x_tail, out_tail = np.zeros((ROWS, K), np.float32), np.empty((ROWS, out.shape[1]), np.float32)
        x_tail[:M - whole] = x[whole:]
        _rows(x_tail.ctypes.data, K, panels, out_tail.ctypes.data, out.shape[1], ROWS, K, k_block)
        out[whole:] = out_tail[:M - whole]


@njit(inline="always")
def _rows(a0, lda, panels, c0, ldc, m, K, k_block):
    """C = A @ w.T for the m rows (a multiple of ROWS) of A at address a0 into C at c0, row strides lda, ldc."""
    b0 = panels.ctypes.data
    for k0 in range(0, K, k_block):
        kc = min(k_block, K - k0)
        for p in range(panels.shape[0]):
            b = b0 + 4 * (p * K + k0) * PANEL_COLS  # panels[p, k0]
            for i in range(0, m, ROWS):
                a, c = a0 + 4 * (i * lda + k0), c0 + 4 * (i * ldc + p * PANEL_COLS)
                if k0:
                    _tile_add(a, lda, b, PANEL_COLS, c, ldc, kc, np.float32(1.0))
                else:
                    _tile(a, lda, b, PANEL_COLS, c, ldc, kc, np.float32(1.0))


def matmul_t(x, *ws):
    """x @ w.T for float32 x (M, in) and weights ws (out_i, in), stacked by rows (the query, key and value weights
    as one product), from their pack."""
    return packs.get(TiledWeight, *ws).matmul_t(x)
