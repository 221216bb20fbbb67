"""The encoder's float32 linear layers through the register tiles (`small_gemm.tile`) where MKL does not run
(AMD CPUs), on one thread per call, each weight packed once into panels of TILE_COLS output columns.

    TiledWeight(w).panels              w (out, in) -> (out / TILE_COLS, in, TILE_COLS): w^T a panel of columns at a time
    out = matmul_t(x, *ws)             x @ [w_1; w_2; ...].T from their pack (`packs.get`), (M, in) -> (M, out)

    for each block of K_BLOCK inputs, each panel p, each TILE_ROWS rows i:
        out[i rows, p columns] (+)= x[i rows, block] @ panels[p, block]   the panel's block (K_BLOCK x TILE_COLS
                                                                           floats, 48 KB) stays in cache while
                                                                           the rows go by

numpy's OpenBLAS packs the weight again in every call and runs its own kernels; here the weight is packed once and
each tile's accumulators stay in registers over a whole block. On an AMD EPYC Zen 4, one core, 512 rows
(2026-12-07): Q/K/V as one GEMM 109.6 GFLOP/s against OpenBLAS's 102.4, the attention output 111.4 / 103.1, FFN up
109.5 / 101.2, FFN down 108.7 / 100.1.

A row's product depends on the row alone (its own FMA chains, blocks in a fixed order), so a row has the same bits
at any row count and position; the rows past the last whole tile go through a zero-padded copy, and a weight whose
out is not a multiple of TILE_COLS gets zero columns up to its last whole panel (their products dropped).
"""

import numpy as np
from numba import njit

from ..errors import InvalidInputError
from . import packs
from .kernels import prefer_512_bit_vectors
from .small_gemm import TILE_COLS, TILE_ROWS, tile, tile_add

K_BLOCK = 384  # inputs a pass over the panels: 384 ran 1-5% faster than 128, 256 or 768 on Zen 4


class TiledWeight:
    """A float32 weight (out, in) held as panels of w^T for products x @ w.T, out padded with zero rows of w to a
    multiple of TILE_COLS."""

    def __init__(self, w):
        self.out_features, self.in_features = w.shape
        n_panels = -(-self.out_features // TILE_COLS)
        padded = np.zeros((n_panels * TILE_COLS, self.in_features), np.float32)
        padded[:self.out_features] = w
        self.panels = np.ascontiguousarray(padded.reshape(n_panels, TILE_COLS, self.in_features).transpose(0, 2, 1))

    def matmul_t(self, x):
        """x @ w.T: x (M, in) float32 with unit column stride -> (M, out), a new array."""
        M, K = x.shape
        if (K != self.in_features or x.dtype != np.float32 or (M and K > 1 and x.strides[1] != 4)
                or x.strides[0] % 4 or (M > 1 and x.strides[0] < 4 * K)):
            raise InvalidInputError(f"x must be float32 (M, {self.in_features}) with contiguous rows, got {x.dtype} "
                                    f"{x.shape} strides {x.strides}")
        out = np.empty((M, self.panels.shape[0] * TILE_COLS), np.float32)
        if M and K:
            _linear(np.ascontiguousarray(x) if M == 1 else x, self.panels, out, K_BLOCK)
        else:
            out.fill(0.0)  # an empty sum
        return out if out.shape[1] == self.out_features else np.ascontiguousarray(out[:, :self.out_features])


@njit(nogil=True, cache=True, error_model="numpy")
def _linear(x, panels, out, k_block):
    """out = x @ w.T from w's panels (P, K, TILE_COLS); x (M, K), out (M, P * TILE_COLS) float32, unit column
    strides."""
    prefer_512_bit_vectors()
    M, K = x.shape
    whole = M // TILE_ROWS * TILE_ROWS
    x_tail = np.zeros((TILE_ROWS, K), np.float32)  # the last M - whole rows, padded with zeros to a tile
    out_tail = np.empty((TILE_ROWS, out.shape[1]), np.float32)
    x_tail[:M - whole] = x[whole:]
    lda, ldc = x.strides[0] // 4, out.strides[0] // 4
    a0, b0, c0 = x.ctypes.data, panels.ctypes.data, out.ctypes.data
    for k0 in range(0, K, k_block):
        kc = min(k_block, K - k0)
        for p in range(panels.shape[0]):
            b = b0 + 4 * (p * K + k0) * TILE_COLS  # panels[p, k0]
            for i in range(0, whole, TILE_ROWS):
                a, c = a0 + 4 * (i * lda + k0), c0 + 4 * (i * ldc + p * TILE_COLS)
                if k0:
                    tile_add(a, lda, b, TILE_COLS, c, ldc, kc, np.float32(1.0))
                else:
                    tile(a, lda, b, TILE_COLS, c, ldc, kc, np.float32(1.0))
            if whole < M:
                a, c = x_tail.ctypes.data + 4 * k0, out_tail.ctypes.data + 4 * p * TILE_COLS
                if k0:
                    tile_add(a, K, b, TILE_COLS, c, out.shape[1], kc, np.float32(1.0))
                else:
                    tile(a, K, b, TILE_COLS, c, out.shape[1], kc, np.float32(1.0))
    out[whole:] = out_tail[:M - whole]


def matmul_t(x, *ws):
    """x @ w.T for float32 x (M, in) and weights ws (out_i, in), stacked by rows (the query, key and value weights
    as one product), from their pack."""
    return packs.get(TiledWeight, *ws).matmul_t(x)
