"""kernels/dot.py: the fp32 -> storage-dtype cast rounds to nearest even (as torch and GPUs do, not as the
interpreter's own bf16 cast, which truncates) and the dot accumulates exactly-widened operands."""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from npminilm.kernels.dot import cast_to, dot_acc
from tests.kernels import DEVICE, f64, torch_dtype


@triton.jit
def _cast_kernel(X, Y, N, BLOCK: tl.constexpr, CPU_BF16: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    tl.store(Y + offs, cast_to(tl.load(X + offs, mask=ok, other=0.0), Y.dtype.element_ty, CPU_BF16), mask=ok)


@triton.jit
def _dot_kernel(A, B, C, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, CPU_BF16: tl.constexpr):
    m, k, n = tl.arange(0, M), tl.arange(0, K), tl.arange(0, N)
    a = tl.load(A + m[:, None] * K + k[None, :])
    b = tl.load(B + k[:, None] * N + n[None, :])
    acc = tl.load(C + m[:, None] * N + n[None, :])
    tl.store(C + m[:, None] * N + n[None, :], dot_acc(a, b, acc, "ieee", CPU_BF16))


def _cpu_bf16(dtype):
    return dtype == torch.bfloat16 and DEVICE == "cpu"


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 3.4e38 -> float16 inf, as in torch
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_cast_rounds_to_nearest_even(name):
    dtype = torch_dtype(name)
    rng = np.random.default_rng()
    n = 3001  # not a multiple of the block
    x = rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))
    # halfway cases (ties go to the even neighbour), just above and below them, and the largest finite values
    top = 1.0 + np.arange(1, 65) * 2.0**-8  # 1 + k 2^-8: bf16 keeps 7 mantissa bits, so odd k are ties
    specials = np.concatenate([top, -top, top + 2.0**-20, top - 2.0**-20, [3.3895313892515355e38, 6.55e4, 0.0]])
    x[:specials.size] = specials
    xt = torch.from_numpy(x.astype(np.float32)).to(DEVICE)
    y = torch.empty(n, dtype=dtype, device=DEVICE)
    _cast_kernel[(triton.cdiv(n, 512),)](xt, y, n, BLOCK=512, CPU_BF16=_cpu_bf16(dtype))
    expected = xt.to(dtype)
    mismatched = (y.view(torch.int16) != expected.view(torch.int16)).sum().item()
    assert mismatched == 0, f"{mismatched} of {n} values rounded differently from torch"


def test_dot_acc_bf16_operands():
    dtype = torch_dtype("bfloat16")
    rng = np.random.default_rng()
    a, b, c = (torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in ((16, 32), (32, 16), (16, 16)))
    a, b = a.to(DEVICE, dtype), b.to(DEVICE, dtype)
    c = c.to(DEVICE)
    expected = f64(c) + f64(a) @ f64(b)  # bf16 products are exact in fp32; only the fp32 sum rounds
    _dot_kernel[(1,)](a, b, c, M=16, K=32, N=16, CPU_BF16=_cpu_bf16(dtype))
    np.testing.assert_allclose(f64(c), expected, rtol=1e-5, atol=1e-5)
