"""Small float32 GEMMs from register tiles, for attention's q k^T and P v per head where MKL does not run: numba
writes the loops, and one LLVM intrinsic holds the tile, so the accumulators stay in vector registers.

    C = alpha A B            A (m, k), B (k, n), C (m, n): m a multiple of TILE_ROWS, n of TILE_COLS, k >= 1
    C += alpha A B           the same, added to C (a long k in blocks: each block's sum, then the blocks')

    for each tile (i0, j0) of TILE_ROWS x TILE_COLS:
        acc = 0                                         TILE_ROWS x TILE_COLS floats, in registers
        for d in range(k):
            acc += A[i0:i0+R, d, None] * B[d, j0:j0+W]  one broadcast per row, one FMA per vector of B
        C[i0:i0+R, j0:j0+W] = alpha acc

A tile's accumulators, its vectors of B and the broadcast must all fit the vector registers, or LLVM spills
accumulators to memory and the tile runs at half speed: `tile_kernels(rows, vectors)` makes a tile of any shape,
and each ISA gets the shapes that ran fastest on an AMD EPYC Zen 4 (one core, 2026-12-07, the AVX2 code with
AVX-512 off: `isa.without_avx512`):

    ISA (`isa.has_avx512`)   registers      attention's tile (here)           the linear layers' (`tiled_linear`)
    AVX-512                  32 of 16 f     4 x 32 (8 x 32 ran alike)         8 x 32
    AVX2                     16 of 8 f      6 x 16                            4 x 24

In cache, (256, 32) @ (32, 256) and (256, 128) @ (128, 32) ran at 108 and 114 GFLOP/s with the AVX-512 tile
(numpy's OpenBLAS on attention's shapes: 88 and 92). Compiled for AVX2, the 4 x 32 tile (16 ymm accumulators)
ran at 64 and 64, the 6 x 16 at 108 and 116: attention per (2, 256) texts 4.85 -> 3.57 ms, per (32, 12) 0.76
-> 0.57 ms.

The caller pads its operands to whole tiles (zeros where they add nothing). Each element of C is summed over d in
order, one FMA at a time, whatever the shapes: a text's product has the same bits in any batch, and with any tile.
"""

import functools

from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from . import isa

VECTOR = 16 if isa.has_avx512() else 8  # floats a vector register holds: a zmm, else a ymm
TILE_ROWS, TILE_VECTORS = (4, 2) if isa.has_avx512() else (6, 2)  # attention's tile: rows, vectors of columns
TILE_COLS = TILE_VECTORS * VECTOR


@functools.cache
def tile_kernels(rows, vectors):
    """(tile, tile_add): C[:rows, :vectors * VECTOR] (+)= alpha A[:rows, :k] B[:k, :vectors * VECTOR], row-major
    float32 at the addresses a, b, c (ints) with row strides lda, ldb, ldc in floats; k >= 1. Called from numba
    code as tile(a, lda, b, ldb, c, ldc, k, alpha)."""
    return _tile_intrinsic(rows, vectors, False), _tile_intrinsic(rows, vectors, True)


def _tile_intrinsic(rows, vectors, add):
    def tile(typingctx, a, lda, b, ldb, c, ldc, k, alpha):
        return types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp,
                          types.float32), codegen

    def codegen(context, builder, signature, args):
        a_, lda_, b_, ldb_, c_, ldc_, k_, alpha_ = args
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        vec = ir.VectorType(f32, VECTOR)
        name = f"llvm.fma.v{VECTOR}f32"
        fma = builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(vec, [vec] * 3), name)
        a_p, b_p, c_p = (builder.inttoptr(x, f32.as_pointer()) for x in (a_, b_, c_))

        def splat(x):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(i32, VECTOR),
                                                                                         [0] * VECTOR))

        def at(base, row, ld, col):  # &base[row * ld + col] as a pointer to a vector
            return builder.bitcast(builder.gep(base, [builder.add(builder.mul(row, ld), col)]), vec.as_pointer())

        entry, loop, done = builder.block, builder.append_basic_block("tile"), builder.append_basic_block("tile_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        d = builder.phi(i64)
        acc = [[builder.phi(vec) for _ in range(vectors)] for _ in range(rows)]
        d.add_incoming(ir.Constant(i64, 0), entry)
        for x in sum(acc, []):
            x.add_incoming(ir.Constant(vec, [0.0] * VECTOR), entry)
        bs = [builder.load(at(b_p, d, ldb_, ir.Constant(i64, w * VECTOR)), align=4) for w in range(vectors)]
        summed = []
        for r in range(rows):
            x = splat(builder.load(builder.gep(a_p, [builder.add(builder.mul(ir.Constant(i64, r), lda_), d)])))
            summed.append([builder.call(fma, [x, bs[w], acc[r][w]]) for w in range(vectors)])
        d_next = builder.add(d, ir.Constant(i64, 1))
        d.add_incoming(d_next, builder.block)
        for r in range(rows):
            for w in range(vectors):
                acc[r][w].add_incoming(summed[r][w], builder.block)
        builder.cbranch(builder.icmp_signed("<", d_next, k_), loop, done)
        builder.position_at_end(done)
        scale = splat(alpha_)
        for r in range(rows):
            for w in range(vectors):
                ptr = at(c_p, ir.Constant(i64, r), ldc_, ir.Constant(i64, w * VECTOR))
                value = builder.fmul(summed[r][w], scale)
                builder.store(builder.fadd(builder.load(ptr, align=4), value) if add else value, ptr, align=4)
        return context.get_dummy_value()

    tile.__name__ = f"tile_add_{rows}x{vectors}" if add else f"tile_{rows}x{vectors}"
    return intrinsic(tile)


tile, tile_add = tile_kernels(TILE_ROWS, TILE_VECTORS)


@njit(nogil=True, cache=True, error_model="numpy")
def small_gemm(a, b, c, alpha, add):
    """c = alpha a b, or c += alpha a b if add, for float32 a (m, k), b (k, n), c (m, n) with unit column strides:
    m a multiple of TILE_ROWS, n of TILE_COLS, k >= 1 (the caller checks)."""
    m, k = a.shape
    n = b.shape[1]
    lda, ldb, ldc = a.strides[0] // 4, b.strides[0] // 4, c.strides[0] // 4
    a0, b0, c0 = a.ctypes.data, b.ctypes.data, c.ctypes.data
    for i in range(0, m, TILE_ROWS):
        for j in range(0, n, TILE_COLS):
            if add:
                tile_add(a0 + 4 * i * lda, lda, b0 + 4 * j, ldb, c0 + 4 * (i * ldc + j), ldc, k, alpha)
            else:
                tile(a0 + 4 * i * lda, lda, b0 + 4 * j, ldb, c0 + 4 * (i * ldc + j), ldc, k, alpha)
