"""A corpus file streamed as (id, text) rows: .txt (one text a line, id = the line's index from 0), .jsonl (one
object a line: `column` and optional `id_column`) or .parquet (the same columns, read a record batch at a time).

A bad row (not UTF-8, not JSON, a missing column, a text that is not a string) raises DataError naming the file
and row; with on_error="skip" it is skipped and counted in `reader.skipped` instead.
"""

import json
from pathlib import Path

from ..errors import DataError, InvalidArgumentError

FORMATS = (".txt", ".jsonl", ".parquet")
PARQUET_BATCH = 4096  # rows per record batch read


class CorpusReader:
    def __init__(self, path, column="text", id_column=None, on_error="stop"):
        self.path, self.column, self.id_column = Path(path), column, id_column
        if on_error not in ("stop", "skip"):
            raise InvalidArgumentError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.format = self.path.suffix.lower()
        if self.format not in FORMATS:
            raise InvalidArgumentError(f"{self.path}: the input must end in one of {FORMATS}")
        if not self.path.is_file():
            raise FileNotFoundError(2, "No such file", str(self.path))
        if self.format == ".txt" and id_column is not None:
            raise InvalidArgumentError("--id-column needs a .jsonl or .parquet input: a .txt line's id is its index")
        self.skipped = 0

    def count(self):
        """How many rows the file has (bad ones included): for a progress bar's total."""
        if self.format == ".parquet":
            return _parquet(self.path).metadata.num_rows
        n, last = 0, b"\n"
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                n, last = n + block.count(b"\n"), block[-1:]
        return n + (last != b"\n")

    def __iter__(self):
        rows = self._parquet_rows() if self.format == ".parquet" else self._line_rows()
        for where, row in rows:
            try:
                yield self._checked(where, row)
            except DataError:
                if self.on_error == "stop":
                    raise
                self.skipped += 1

    def _checked(self, where, row):
        """(id, text) of one row; `row` is (index, text) for .txt, a dict otherwise."""
        if isinstance(row, DataError):
            raise row
        if self.format == ".txt":
            return row
        if self.column not in row:
            raise DataError(f"{where}: no column {self.column!r} (the row has {sorted(row)[:8]})")
        text = row[self.column]
        if not isinstance(text, str):
            raise DataError(f"{where}: {self.column!r} is {type(text).__name__}, not a string")
        if self.id_column is None:
            return row["_index"], text
        if row.get(self.id_column) is None:
            raise DataError(f"{where}: no id in column {self.id_column!r}")
        return row[self.id_column], text

    def _line_rows(self):
        with open(self.path, "rb") as f:
            for i, raw in enumerate(f):
                where = f"{self.path}:{i + 1}"
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    yield where, DataError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})")
                    continue
                if self.format == ".txt":
                    yield where, (i, line)
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield where, DataError(f"{where}: not JSON ({exc.msg})")
                    continue
                if not isinstance(obj, dict):
                    yield where, DataError(f"{where}: not a JSON object")
                    continue
                yield where, {**obj, "_index": i}

    def _parquet_rows(self):
        pf = _parquet(self.path)
        names = pf.schema_arrow.names
        wanted = [self.column] + ([self.id_column] if self.id_column else [])
        missing = [c for c in wanted if c not in names]
        if missing:
            raise DataError(f"{self.path}: no column {missing[0]!r} (it has {names[:8]})")
        i = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=wanted):
            columns = {name: batch.column(name).to_pylist() for name in wanted}
            for j in range(batch.num_rows):
                yield f"{self.path} row {i}", {**{name: col[j] for name, col in columns.items()}, "_index": i}
                i += 1


def _parquet(path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgumentError("Parquet needs pyarrow: pip install 'npminilm[corpus]'") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's own error types: a corrupt or non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
