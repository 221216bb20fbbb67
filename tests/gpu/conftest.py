"""GPU-path tests run on a CUDA device when there is one, else in Triton's CPU interpreter on CPU tensors."""

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module applies @triton.jit
pytest.importorskip("triton")


@pytest.fixture(scope="session")
def device():
    from tests.gpu import DEVICE

    return DEVICE
