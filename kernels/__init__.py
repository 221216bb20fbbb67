"""Triton kernels for the GPU path, shipped as ``npminilm.kernels``: one file per fused op, each kernel beside
its launcher. Importing a module here imports torch and triton; npminilm's NumPy core never does."""

import sys
from importlib.machinery import PathFinder
from importlib.util import module_from_spec
from pathlib import Path

# Imported as a top-level `kernels`, this folder is in the way of Hugging Face's `kernels` package, which
# transformers imports: pytest and the benchmarks put the checkout's root on sys.path. It hands the name to that
# package where one is installed (the import statement returns whatever sys.modules holds once this file ran).
if __name__ == "kernels":
    _root = Path(__file__).resolve().parents[1]
    _spec = PathFinder.find_spec("kernels", [p for p in sys.path if Path(p or ".").resolve() != _root])
    if _spec is not None:
        sys.modules["kernels"] = module_from_spec(_spec)
        _spec.loader.exec_module(sys.modules["kernels"])
