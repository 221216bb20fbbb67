"""Fused float32 inference kernels for the encoder's forward, compiled by numba: each does in one pass over a row
what the NumPy ops do in a dozen ufunc calls, and holds no GIL, so the encoder's worker threads run them side by
side.

    gelu_bias(x, b)                          x = GELU(x + b) in place          the FFN's bias and activation
    add_layernorm(x, b, residual, w, beta)   x = LN(x + b + residual) in place  the output bias, residual, LayerNorm
    embed_layernorm(out, rows, ids, ...)     out[rows] = LN(word[ids]           the embeddings
                                             + position + token type)
    exp_shifted(row, top)                    row = exp(row - top) in place,     attention's unnormalised softmax
                                             returns its sum                    (cpu.attention), normalised after P V

Every result depends on its own row alone, and a row runs the same instructions wherever it sits: the sums may be
reassociated (`fastmath={"reassoc"}`, which lets LLVM vectorise them) but in an order fixed by the row's length,
and multiply-adds become FMAs everywhere. So an embedding's bits never depend on its batch (an AVX2 and an
AVX-512 machine may still differ in the last bit, as numpy's own SIMD loops do).

exp is written out (Cephes' expf: k = round(x / ln 2), r = x - k ln 2 in two parts, a degree-7 polynomial, times
2^k built from its exponent bits), because libm's is a scalar call; its relative error is below 1e-7 (numpy's
float32 exp: 2e-7). GELU is NumPy's formula (`nn.ops.gelu_forward`): x Phi(x) = relu(x) - |x| Phi(-|x|), the tail
by Abramowitz & Stegun 7.1.26.

Each kernel asks LLVM for 512-bit vectors (`prefer_512_bit_vectors`): its x86 tuning keeps loops at 256 bits on
AVX-512 CPUs unless told otherwise, and numba can only tell it for the whole process (NUMBA_CPU_FEATURES). On a CPU
without AVX-512 the request changes nothing.
"""

import math

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic

f32 = np.float32
_LOG2E = f32(1.4426950408889634)
_LN2_HI, _LN2_LO = f32(0.693359375), f32(-2.12194440e-4)  # ln 2 = hi + lo, hi with few bits: k * hi is exact
_EXP_C = tuple(f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                1.6666665459e-1, 5.0000001201e-1))
_P = f32(0.3275911 / math.sqrt(2.0))  # A&S's p, with the 1 / sqrt 2 of Phi(-a) = erfc(a / sqrt 2) / 2 folded in
_A = tuple(f32(0.5 * c) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))  # a5..a1 / 2
_EXP = (*_EXP_C, _LOG2E, _LN2_HI, _LN2_LO)  # expf's constants, as `_expf` takes them
_GELU = (*_A, _P, *_EXP)  # GELU's, as `_gelu` takes them

# error_model="numpy": no division checks (they stop vectorising); "contract": multiply-adds fused into FMAs (GELU
# 1.4x faster); "reassoc" on the kernels with sums, so that LLVM vectorises them
ELEMENTWISE = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
REDUCING = dict(ELEMENTWISE, fastmath={"reassoc", "contract"})


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 `bits` (a bitcast, free in vector code)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@intrinsic
def prefer_512_bit_vectors(typingctx):
    """Marks the kernel that calls it "prefer-vector-width"="512", the function attribute of clang's
    -mprefer-vector-width=512, so that LLVM vectorises its loops 16 floats wide where the CPU has AVX-512 (GELU
    1.4x faster on a Xeon with AVX-512, bits unchanged). llvmlite's attribute set takes only the names it knows,
    so the string goes in as a plain set item, as it prints; a llvmlite without that set leaves the kernel as it
    was."""
    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        if isinstance(attributes, set):
            set.add(attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.void(), codegen


@njit(inline="always", **ELEMENTWISE)
def expf(x):
    """e^x for float32 x, clamped to [-86.6, 88.3]: below, 2.3e-38 in place of smaller; above, 2.1e38 in place
    of larger (the kernels call it on x <= 40 only)."""
    return _expf(x, _EXP)


@njit(inline="always", **ELEMENTWISE)
def _expf(x, constants):
    """expf with its constants (`_EXP`) as a value: see `gelu_bias` for why a kernel may pass them in."""
    c1, c2, c3, c4, c5, c6, log2e, ln2_hi, ln2_lo = constants
    x = min(max(x, f32(-86.6)), f32(88.3))  # 2^k stays normal (no slow denormals) and finite (k <= 127)
    k = np.floor(x * log2e + f32(0.5))  # np.floor keeps float32 (math.floor gives an int64)
    r = x - k * ln2_hi - k * ln2_lo  # |r| <= ln 2 / 2
    p = (((((c1 * r + c2) * r + c3) * r + c4) * r + c5) * r + c6) * (r * r) + r + f32(1.0)
    return p * _float32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(inline="always", **ELEMENTWISE)
def _gelu(v, constants):
    """GELU(v), its constants (`_GELU`) as a value."""
    a5, a4, a3, a2, a1, p = constants[:6]
    a = abs(v)
    t = f32(1.0) / (f32(1.0) + p * a)
    tail = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t * _expf(f32(-0.5) * a * a, constants[6:])  # Phi(-|x|)
    return f32(0.5) * (v + a) - a * tail


def gelu_bias(x, b):
    """x = GELU(x + b) in place. x (N, I) float32, C-contiguous; b (I,).

    The kernel takes GELU's 15 constants as an argument. Compiled as AVX2 code, a loop has only 16 vector registers,
    too few to keep them all. Constants of the kernel's own were then reloaded every iteration, each through a
    64-bit address load (numba's code model). Constants from an argument are spilled to the stack, and the
    multiply-adds read them from there. The bits are the same. 512 x 1536, one core, Zen 4, 2026-12-08, median of
    300 interleaved calls, two processes each: AVX2 code 0.703 -> 0.582 ms (1.22x), AVX-512 0.400 -> 0.382 ms
    (1.05x)."""
    _gelu_bias(x, b, _GELU)


@njit(**ELEMENTWISE)
def _gelu_bias(x, b, constants):
    prefer_512_bit_vectors()
    n, m = x.shape
    for i in range(n):
        row = x[i]
        for j in range(m):
            row[j] = _gelu(row[j] + b[j], constants)


@njit(**REDUCING)
def add_layernorm(x, b, residual, w, beta, eps):
    """x = LayerNorm(x + b + residual) in place, over each row: (v - mean) / sqrt(var + eps) * w + beta, var the
    mean squared deviation. x, residual (N, C) float32; b, w, beta (C,)."""
    prefer_512_bit_vectors()
    for i in range(x.shape[0]):
        row = x[i]
        pivot, total = _sum_into(row, row, b, residual[i])
        _normalize(row, pivot, total, w, beta, eps)


@njit(**REDUCING)
def embed_layernorm(out, rows, ids, positions, types, word, position, token_type, w, beta, eps):
    """out[rows[t]] = LayerNorm(word[ids[t]] + position[positions[t]] + token_type[types[t]]) for each token t: BERT's
    embeddings in one pass a token. out (R, C) float32; rows, ids, positions, types (N,) int64, each within its
    table (the caller checks); word, position, token_type (n_i, C); w, beta (C,)."""
    prefer_512_bit_vectors()
    for t in range(ids.size):
        row = out[rows[t]]
        pivot, total = _sum_into(row, word[ids[t]], position[positions[t]], token_type[types[t]])
        _normalize(row, pivot, total, w, beta, eps)


@njit(inline="always", **REDUCING)
def _sum_into(row, a, b, c):
    """row = a + b + c (row may be a); returns (pivot, sum(row - pivot)), pivot the row's first value, for
    `_normalize`."""
    pivot = a[0] + b[0] + c[0]
    total = f32(0.0)
    for j in range(row.size):
        v = a[j] + b[j] + c[j]
        row[j] = v
        total += v - pivot
    return pivot, total


@njit(inline="always", **REDUCING)
def _normalize(row, pivot, total, w, beta, eps):
    """row = (row - mean) / sqrt(var + eps) * w + beta, given total = sum(row - pivot), pivot one of the row's values:
    the mean is summed about it (mean = pivot + mean(row - pivot)), so a row far from zero loses no more than one
    near it."""
    m = f32(row.size)
    mean = pivot + total / m
    squares = f32(0.0)
    for j in range(row.size):
        d = row[j] - mean
        squares += d * d
    rstd = f32(1.0) / np.sqrt(squares / m + f32(eps))
    for j in range(row.size):
        row[j] = (row[j] - mean) * rstd * w[j] + beta[j]


@njit(inline="always", **REDUCING)
def _row_max(row):
    """max(row) in 8 running maxima over blocks of 8 (a fixed order for a row's length): LLVM vectorises these,
    where it leaves a single running max scalar."""
    n = row.size
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = row[0]
    for j in range(0, n // 8 * 8, 8):
        m0, m1, m2, m3 = max(m0, row[j]), max(m1, row[j + 1]), max(m2, row[j + 2]), max(m3, row[j + 3])
        m4, m5, m6, m7 = max(m4, row[j + 4]), max(m5, row[j + 5]), max(m6, row[j + 6]), max(m7, row[j + 7])
    top = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(n // 8 * 8, n):
        top = max(top, row[j])
    return top


@njit(inline="always", **REDUCING)
def exp_shifted(row, top):
    """row = exp(row - top) in place; returns the row's sum, in an order fixed by its length."""
    total = f32(0.0)
    for j in range(row.size):
        e = expf(row[j] - top)
        row[j] = e
        total += e
    return total
