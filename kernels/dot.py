"""The tile product the GEMM kernels share: tl.dot into an fp32 accumulator, with an interpreter workaround."""

import triton
import triton.language as tl


@triton.jit
def dot_acc(a, b, acc, DOT_PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """acc + a @ b. DOT_F32 widens the operands first: Triton's CPU interpreter multiplies bfloat16 operands
    as raw uint16, so on CPU tensors bf16 tiles are computed in fp32."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)
