"""The backend registry: SentenceEncoder(..., backend=NAME) builds the engine registered or installed as NAME."""

import numpy as np
import pytest

from npminilm import SentenceEncoder
from npminilm.encoder import backends
from npminilm.errors import InvalidArgumentError


def test_unknown_backend_names_the_known_ones(model_dir):
    with pytest.raises(InvalidArgumentError, match=r"backend 'tpu' is not available; use backend='numpy' or 'triton'"):
        SentenceEncoder(model_dir, backend="tpu")


def test_a_registered_backend_is_built(model_dir, encoder64, monkeypatch):
    class Float64Encoder(SentenceEncoder):
        def __init__(self, name_or_path, dtype="float32", backend="float64", device=None):
            super().__init__(name_or_path, dtype="float64")

    monkeypatch.setitem(backends._registered, "float64", Float64Encoder)
    assert "float64" in backends.backend_names()
    enc = SentenceEncoder(model_dir, backend="float64")
    assert type(enc) is Float64Encoder and enc.dtype == np.float64
    texts = ["A man plays guitar.", "Open-source LLMs rock."]
    assert np.array_equal(enc.encode(texts), encoder64.encode(texts))


def test_the_gpu_package_plugs_in_through_its_entry_point(model_dir):
    from npminilm.gpu.encoder import TritonSentenceEncoder  # importable without torch: it imports torch lazily

    assert backends.backend_class("triton") is TritonSentenceEncoder
    # a device it cannot run on is a clear error on every machine (without torch: the extra to install)
    with pytest.raises(InvalidArgumentError, match=r"backend='triton' needs torch|device must be 'cuda'"):
        SentenceEncoder(model_dir, backend="triton", device="tpu")
