"""The tile helpers the kernels share: tl.dot into an fp32 accumulator, and the cast from fp32 to a storage dtype.

Both carry a workaround for bfloat16 in Triton's CPU interpreter (CPU_BF16: bf16 tensors on the interpreter),
which multiplies bf16 dot operands as raw uint16 and casts fp32 to bf16 by truncation where GPUs round to nearest
even. With CPU_BF16 the operands are widened to fp32 (exact) and the rounding is done by hand, so interpreter
tests see the numbers a GPU computes.
"""

import triton
import triton.language as tl


@triton.jit
def dot_acc(a, b, acc, DOT_PRECISION: tl.constexpr, CPU_BF16: tl.constexpr):
    """acc + a @ b."""
    if CPU_BF16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


# Round to nearest even on the bits: add 0x7FFF plus the lowest kept bit, then drop the low 16 bits. A carry out
# of the mantissa moves into the exponent, as rounding up should (max finite rounds to inf).
@triton.jit
def cast_to(x, dtype: tl.constexpr, CPU_BF16: tl.constexpr):
    """fp32 x in `dtype`; with CPU_BF16, `dtype` must be bfloat16."""
    if CPU_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return x.to(dtype)
