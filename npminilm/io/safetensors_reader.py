"""Reading untrusted .safetensors files: validate the header against the file, then memory-map the tensors.

Layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length n, n bytes of JSON
mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte
after the header), then the raw data. Every claim in the header is checked against the file's real size
before any array is created, so a lying header costs nothing but an error message.
"""

import json
import os
from dataclasses import dataclass
from math import prod

import numpy as np

from ..errors import ModelLoadError

MAX_HEADER_BYTES = 100 * 1024 * 1024

FILE_DTYPES = {  # the safetensors dtype codes, as NumPy stores them
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # stored as raw 16-bit words, widened to float32 on load
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple
    begin: int  # absolute byte offset in the file
    nbytes: int

    @property
    def is_float(self):
        return self.dtype in FLOAT_DTYPES


def read_header(path):
    """Parse and validate the header of a safetensors file. Returns {name: TensorInfo}; allocates nothing big."""
    path = os.fspath(path)
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(f"{path}: not a safetensors file (only {file_size} bytes)")
            n = int.from_bytes(prefix, "little")
            if n > MAX_HEADER_BYTES or 8 + n > file_size:
                raise ModelLoadError(
                    f"{path}: header claims {n} bytes but the file has {file_size} (truncated or not safetensors)"
                )
            raw = f.read(n)
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: header is not a JSON object")

    data_start, data_size = 8 + n, file_size - 8 - n
    infos = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        infos[name] = _check_entry(path, name, entry, data_start, data_size)
    _check_no_overlap(path, infos.values())
    return infos


def _check_entry(path, name, entry, data_start, data_size):
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise ModelLoadError(f"{where}: header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in FILE_DTYPES:
        raise ModelLoadError(f"{where}: unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ModelLoadError(f"{where}: bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ModelLoadError(f"{where}: bad data_offsets {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise ModelLoadError(
            f"{where}: data ends at byte {end} but the file holds only {data_size} data bytes (truncated file?)"
        )
    nbytes = prod(shape) * FILE_DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise ModelLoadError(f"{where}: shape {shape} of {dtype} needs {nbytes} bytes, offsets give {end - begin}")
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, nbytes)


def _check_no_overlap(path, infos):
    last_end, last_name = 0, None
    for info in sorted(infos, key=lambda i: i.begin):
        if info.nbytes and info.begin < last_end:
            raise ModelLoadError(f"{path}: tensors {last_name!r} and {info.name!r} overlap")
        if info.nbytes:
            last_end, last_name = info.begin + info.nbytes, info.name


def load_tensor(path, info, dtype=None):
    """Memory-map one validated tensor. Float tensors are cast to `dtype` (a copy only when the dtype changes)."""
    if info.nbytes:
        flat = np.memmap(path, dtype=FILE_DTYPES[info.dtype], mode="r", offset=info.begin, shape=(prod(info.shape),))
        arr = np.asarray(flat).reshape(info.shape)
    else:
        arr = np.zeros(info.shape, FILE_DTYPES[info.dtype])
    if info.dtype == "BF16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    if dtype is not None and info.is_float and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr
