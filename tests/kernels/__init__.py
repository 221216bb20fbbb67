"""Shared settings of the GPU-path tests (the kernels here, the Triton encoder in tests/gpu): the device, the
(dtype, atol, rtol) table, reference conversions. They run on a CUDA device when there is one, else in Triton's CPU
interpreter on CPU tensors. They need torch and triton (the oracle environment); the core environment leaves both
folders out (tests/conftest.py)."""

import os

import numpy as np
import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module applies @triton.jit

# max |ours - reference| <= atol + rtol |reference|, the reference in float64 on the same rounded inputs;
# half-precision rows allow for the output's own rounding (2^-11, 2^-8 relative) and rounded intermediates
DTYPES = [
    pytest.param("float32", 2e-5, 1e-5, id="fp32"),
    pytest.param("float16", 2e-3, 4e-3, id="fp16"),
    pytest.param("bfloat16", 1.6e-2, 2e-2, id="bf16"),
]


def torch_dtype(name):
    if name == "bfloat16" and DEVICE == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip("bfloat16 is not supported on this GPU")
    return getattr(torch, name)


def randn(rng, shape, dtype, scale=1.0):
    """A random tensor on DEVICE in `dtype`, drawn in float32."""
    return torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32)).to(DEVICE, torch_dtype(dtype))


def f64(t):
    """The tensor's exact values as a float64 NumPy array (the reference works on the rounded inputs)."""
    return t.detach().to("cpu", torch.float64).numpy()
