"""Training data: (anchor, positive[, negative]) texts or (sentence1, sentence2, score) pairs, from CSV or JSONL.

CSV rows are read as they are (the shared STSb files: headerless `sentence1,sentence2,score`); a first row naming
the columns (anchor, positive, negative / sentence1, sentence2, score / label) is a header. A row with a number
in its third column is a scored pair; two columns are a pair, three texts a triplet. JSONL lines are objects
with those keys. All rows of a file must have one shape. A bad row is a DataError naming the file and line.
"""

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io.jsonl import json_lines

TEXT_KEYS = (("anchor", "positive", "negative"), ("sentence1", "sentence2"), ("query", "positive", "negative"))
SCORE_KEYS = ("score", "label")


@dataclass
class Examples:
    """Columns of texts (2 or 3, each of n rows) and, for scored pairs, the scores (n,) as given."""

    columns: list
    scores: np.ndarray | None = None
    source: str = ""

    def __len__(self):
        return len(self.columns[0])

    @property
    def kind(self):
        if self.scores is not None:
            return "scored pairs"
        return "triplets" if len(self.columns) == 3 else "pairs"

    def take(self, idx):
        """The examples at positions idx, in that order."""
        return Examples([[c[i] for i in idx] for c in self.columns],
                        None if self.scores is None else self.scores[idx], self.source)

    def positive_pairs(self, min_score):
        """Scored pairs with score >= min_score, as (sentence1, sentence2) pairs (MNRL on a scored dataset)."""
        if self.scores is None:
            raise DataError(f"{self.source}: --min-score needs scored pairs, this file has {self.kind}")
        keep = np.flatnonzero(self.scores >= min_score)
        if not len(keep):
            raise DataError(f"{self.source}: no pair has a score >= {min_score}")
        return Examples([[c[i] for i in keep] for c in self.columns], None, self.source)

    def unit_scores(self):
        """Scores in [0, 1]: divided by 5 when any exceeds 1 (the STSb 0-5 scale), as CosineSimilarityLoss wants."""
        if self.scores is None:
            raise DataError(f"{self.source}: this loss needs scored pairs, this file has {self.kind}")
        return self.scores / 5.0 if self.scores.max(initial=0.0) > 1.0 else self.scores


def read_examples(path):
    """Examples from a .csv/.tsv or .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = _read_jsonl(path) if path.suffix.lower() in (".jsonl", ".json") else _read_csv(path)
    if not rows:
        raise DataError(f"{path}: no examples")
    shape = _shape(*rows[0][1])
    columns = [[] for _ in range(shape[0])]
    scores = [] if shape[1] else None
    for line, (texts, score) in rows:
        if _shape(texts, score) != shape:
            raise DataError(f"{path}:{line}: expected {_describe(shape)}, got {_describe(_shape(texts, score))}")
        for column, text in zip(columns, texts):
            column.append(text)
        if scores is not None:
            scores.append(score)
    return Examples(columns, None if scores is None else np.array(scores, dtype=np.float64), str(path))


def _shape(texts, score):
    return len(texts), score is not None


def _describe(shape):
    texts, scored = shape
    return f"{texts} texts" + (" and a score" if scored else "")


def _read_csv(path):
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.reader(f, delimiter=delimiter)):
                line = i + 1
                if not row or all(not cell.strip() for cell in row):
                    continue
                if not rows and _is_header(row):
                    continue
                rows.append((line, _parse_row(path, line, row)))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: {e}") from None
    return rows


def _is_header(row):
    names = {cell.strip().lower() for cell in row}
    return bool(names) and names <= {k for keys in TEXT_KEYS for k in keys} | set(SCORE_KEYS)


def _parse_row(path, line, row):
    if len(row) not in (2, 3):
        raise DataError(f"{path}:{line}: expected 2 or 3 columns, got {len(row)}")
    if len(row) == 3:
        score = _number(row[2])
        if score is not None:
            return _texts(path, line, row[:2]), score
    return _texts(path, line, row), None


def _number(cell):
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _texts(path, line, cells):
    for cell in cells:
        if not cell.strip():
            raise DataError(f"{path}:{line}: an empty text")
    return list(cells)


def _read_jsonl(path):
    return [(line, _parse_object(path, line, obj)) for line, obj in json_lines(path)]


def _parse_object(path, line, obj):
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{line}: expected a JSON object")
    for keys in TEXT_KEYS:
        present = [k for k in keys if k in obj]
        if present[:2] == list(keys[:2]):
            texts = [obj[k] for k in present]
            if not all(isinstance(t, str) for t in texts):
                raise DataError(f"{path}:{line}: {', '.join(present)} must be strings")
            score = next((obj[k] for k in SCORE_KEYS if k in obj), None)
            if score is not None:
                if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                    raise DataError(f"{path}:{line}: the score must be a number, got {score!r}")
                if len(texts) != 2:
                    raise DataError(f"{path}:{line}: a scored example has two texts")
                score = float(score)
            return _texts(path, line, texts), score
    raise DataError(f"{path}:{line}: expected keys anchor/positive[/negative] or sentence1/sentence2/score")
