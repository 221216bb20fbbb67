"""Embed a corpus file in chunks with bounded memory, resumably, into one .npy or .parquet file.

    rows ──chunk of `chunk_size` texts──> encode ──> <output>.parts/part-000000.{npy,ids.npy,json}
                                                             (the .json, written last, marks the part done)
    all parts done ──> <output> written part by part to a temp file, renamed into place, parts removed

Memory is one chunk's texts and embeddings plus one part at a time when putting them together: independent of
the corpus size. `resume=True` skips the parts an earlier run finished (the chunk boundaries depend only on the
input, so the result equals an uninterrupted run's); the parts' manifest must match this run's settings.
"""

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, InvalidArgumentError
from ..io.atomic import atomic_write
from ..runtime.progress import progress_bar
from .readers import CorpusReader

OUTPUT_FORMATS = (".npy", ".parquet")


@dataclass(frozen=True)
class Manifest:
    """What the parts were made from: a resumed run must match it."""

    input: str
    input_bytes: int
    input_mtime_ns: int
    model: str
    column: str
    id_column: str | None
    on_error: str
    chunk_size: int
    dim: int
    normalize_embeddings: bool | None


def embed_corpus(encoder, input_path, output_path, column="text", id_column=None, chunk_size=10_000,
                 batch_size=32, resume=False, on_error="stop", show_progress_bar=None, normalize_embeddings=None,
                 encode=None):
    """Embed every row of `input_path` into `output_path` (.npy: the (n, dim) float32 embeddings in row order;
    .parquet: columns id and embedding, a fixed-size float32 list). Returns {"rows", "skipped"}.

    encode: what embeds a chunk's list of texts into (n, dim) float32 (default: `encoder.encode` here; the
    `--ray` command passes a `ray_data.RayEncoder`'s); `encoder` still names the model and its dimension."""
    if encode is None:
        def encode(texts):
            return encoder.encode(texts, batch_size=batch_size, normalize_embeddings=normalize_embeddings,
                                  show_progress_bar=False)
    output = Path(output_path)
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise InvalidArgumentError(f"{output}: the output must end in one of {OUTPUT_FORMATS}")
    if type(chunk_size) is not int or chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if output.suffix.lower() == ".parquet":
        _pyarrow()  # fail before any work
    reader = CorpusReader(input_path, column, id_column, on_error)
    stat = reader.path.stat()
    manifest = Manifest(str(reader.path.resolve()), stat.st_size, stat.st_mtime_ns, str(encoder.folder), column,
                        id_column, on_error, chunk_size, encoder.dim, normalize_embeddings)
    parts = _parts_dir(output, manifest, resume)

    total = reader.count()
    with progress_bar(total, desc="Texts", unit="text", show_progress_bar=show_progress_bar) as bar:
        for index, (ids, texts, consumed) in enumerate(_chunks(reader, chunk_size)):
            if not (parts / f"part-{index:06d}.json").exists():
                emb = encode(texts) if texts else np.zeros((0, encoder.dim), np.float32)
                if emb.shape != (len(texts), encoder.dim):  # never a row lost or doubled on the way
                    raise RuntimeError(f"chunk {index}: {len(texts)} texts gave embeddings of shape {emb.shape}")
                _write_part(parts, index, np.asarray(ids), emb.astype(np.float32, copy=False), len(texts))
            bar.update(consumed)
    n_rows = _assemble(parts, output, encoder.dim)
    shutil.rmtree(parts)
    return {"rows": n_rows, "skipped": reader.skipped}


def _chunks(reader, chunk_size):
    """(ids, texts, rows read including skipped ones) per chunk of chunk_size good rows."""
    ids, texts, before = [], [], 0
    for row_id, text in reader:
        ids.append(row_id)
        texts.append(text)
        if len(texts) == chunk_size:
            read = len(texts) + reader.skipped - before
            before = reader.skipped
            yield ids, texts, read
            ids, texts = [], []
    if texts:
        yield ids, texts, len(texts) + reader.skipped - before
    elif reader.skipped > before:
        yield [], [], reader.skipped - before


def _parts_dir(output, manifest, resume):
    parts = output.with_name(output.name + ".parts")
    recorded = parts / "manifest.json"
    if parts.exists():
        if not resume:
            raise InvalidArgumentError(f"{parts} holds an unfinished run: pass --resume to continue it, or remove it")
        try:
            old = json.loads(recorded.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != asdict(manifest):
            raise InvalidArgumentError(f"{parts} was made from another input, model or settings: remove it to "
                                       "start over")
        return parts
    parts.mkdir(parents=True)
    atomic_write(recorded, lambda f: json.dump(asdict(manifest), f), binary=False)
    return parts


def _write_part(parts, index, ids, emb, n):
    stem = parts / f"part-{index:06d}"
    if ids.dtype == object:
        raise DataError(f"chunk {index}: ids of mixed types cannot be stored; give every row the same id type")
    atomic_write(stem.with_suffix(".npy"), lambda f: np.save(f, emb, allow_pickle=False), binary=True)
    atomic_write(Path(f"{stem}.ids.npy"), lambda f: np.save(f, ids, allow_pickle=False), binary=True)
    atomic_write(stem.with_suffix(".json"), lambda f: json.dump({"rows": n}, f), binary=False)


def _part_files(parts):
    return sorted(p.with_suffix("") for p in parts.glob("part-*.json"))


def _assemble(parts, output, dim):
    """Write the parts, in order, into `output` through a temp file beside it; returns the number of rows."""
    stems = _part_files(parts)
    n_rows = sum(json.loads(s.with_suffix(".json").read_text())["rows"] for s in stems)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        if output.suffix.lower() == ".npy":  # the header, then each part's rows: no memory map, whose pages count
            with open(tmp, "wb") as f:      # in the RSS until the whole file is written
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                          "shape": (n_rows, dim)}
                np.lib.format.write_array_header_1_0(f, header)
                for stem in stems:
                    f.write(np.load(stem.with_suffix(".npy"), allow_pickle=False).astype("<f4", copy=False).tobytes())
                f.flush()
                os.fsync(f.fileno())
        else:
            _write_parquet(tmp, stems, dim)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n_rows


def _write_parquet(tmp, stems, dim):
    pa, pq = _pyarrow()
    writer = None
    try:
        for stem in stems:
            emb = np.load(stem.with_suffix(".npy"), allow_pickle=False)
            if not len(emb):
                continue  # a last chunk of skipped rows only
            ids = np.load(Path(f"{stem}.ids.npy"), allow_pickle=False)
            column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)
            table = pa.table({"id": pa.array(ids.tolist()), "embedding": column})
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is None:  # no rows at all: an empty table of the same shape
            empty = pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), dim)
            writer = pq.ParquetWriter(tmp, pa.schema([("id", pa.int64()), ("embedding", empty.type)]))
    finally:
        if writer is not None:
            writer.close()


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgumentError("Parquet needs pyarrow: pip install 'npminilm[corpus]'") from None
    return pa, pq
