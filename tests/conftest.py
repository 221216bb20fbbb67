"""Shared fixtures: the default model folder, the shared data folder, the Hypothesis profiles.

Tests mirror the package: tests/<subpackage>/test_<module>.py. A test that compares with torch, transformers,
sentence-transformers or tokenizers is in a file ending `_oracle.py`; tests/kernels and tests/gpu need torch and
triton; NEEDS_THREADPOOLCTL need the `fast` extra (BLAS pinned to one thread per call), NEEDS_SERVE the `serve`
extra, NEEDS_PYARROW the `corpus` extra, NEEDS_RAY the `ray`
extra, NEEDS_NUMBA the `fast` extra's numba and MKL. The core environment (numpy + safetensors only, NPMINILM_CORE_ONLY=1)
does not collect those, and runs every other test.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=200, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev", deadline=None, max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]

NEEDS_THREADPOOLCTL = ["encoder/test_deterministic.py", "runtime/test_blas_rows.py", "runtime/test_parallel_pinning.py",
                       "finetune/test_fit_threads.py"]
NEEDS_SERVE = ["serve/test_server.py", "serve/test_app.py"]  # the `serve` extra, the openai client, threadpoolctl
NEEDS_PYARROW = ["corpus/test_parquet.py"]  # the `corpus` extra
NEEDS_RAY = ["corpus/test_ray.py"]  # the `ray` extra: a real local cluster
NEEDS_NUMBA = ["cpu/*", "encoder/test_fused.py"]  # the `fast` extra's numba kernels and MKL

if os.environ.get("NPMINILM_CORE_ONLY") == "1":
    collect_ignore_glob = ["*_oracle.py", "kernels/*", "gpu/*", *NEEDS_THREADPOOLCTL, *NEEDS_SERVE, *NEEDS_PYARROW,
                           *NEEDS_RAY, *NEEDS_NUMBA]


@pytest.fixture(scope="session")
def model_dir():
    """The default all-MiniLM-L6-v2 folder. A missing model fails the tests that need it: it never skips them."""
    explicit = os.environ.get("NPMINILM_MODEL_DIR")
    if explicit:
        return Path(explicit)
    from npminilm.io.hub import resolve_model_path

    return resolve_model_path("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def data_dir():
    path = Path(os.environ.get("NPMINILM_DATA_DIR", ROOT.parent / "shared" / "data"))
    assert (path / "stsb" / "stsb-en-test.csv").exists(), f"shared data not found at {path}"
    return path


@pytest.fixture(scope="session")
def encoder(model_dir):
    from npminilm import SentenceEncoder

    return SentenceEncoder(model_dir)


@pytest.fixture(scope="session")
def encoder64(model_dir):
    from npminilm import SentenceEncoder

    return SentenceEncoder(model_dir, dtype="float64")


@pytest.fixture(scope="module", params=["numpy", "numba", "numba+mkl"])
def kernels(request):
    """The module's tests once with the NumPy ops, once with the numba kernels and numpy's GEMMs, and once with
    the numba kernels and MKL's packed GEMMs (NPMINILM_NUMBA, NPMINILM_MKL). Only the full environment, which has
    numba and MKL (x86-64), collects the modules that use it: no run falls back silently."""
    from npminilm import cpu
    from npminilm.cpu import mkl

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NPMINILM_NUMBA", "0" if request.param == "numpy" else "1")
        mp.setenv("NPMINILM_MKL", "1" if request.param == "numba+mkl" else "0")
        assert cpu.available() == (request.param != "numpy"), "numba is not installed here"
        assert mkl.available() == (request.param == "numba+mkl"), "MKL (the mkl wheel) is not installed here"
        yield request.param
