"""JSON Lines files, read line by line with errors that name the line."""

import json

from ..errors import DataError


def json_lines(path):
    """Yield (line number, value) for each non-blank line of a JSON Lines file. A line that is not UTF-8 or not
    JSON stops the reading with a DataError "{path}:{n}: ...", and so does a file that cannot be opened."""
    try:
        f = open(path, "rb")  # decoded line by line, so that bad UTF-8 is named by its line too
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror}") from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{n}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not JSON ({exc.msg} at column {exc.colno})") from None
