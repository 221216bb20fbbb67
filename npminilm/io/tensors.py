"""Tensor files: dicts of NumPy arrays to and from safetensors (written atomically), and JSON written atomically."""

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .safetensors_reader import load_tensor, read_header


def save_tensors(path: Path, tensors: dict):
    """{name: array} -> a safetensors file, written to a temporary name and renamed."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    atomic_write(path, lambda f: f.write(data), binary=True)


def load_tensors(path, dtype=np.float32) -> dict[str, np.ndarray]:
    """A safetensors file -> {name: array in dtype}, each tensor's size checked against the file first."""
    infos = read_header(path)
    return {name: np.array(load_tensor(path, info, np.dtype(dtype))) for name, info in infos.items()}


def write_json(path: Path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, ensure_ascii=True))
