"""A progress bar on stderr for long inputs: tqdm when it is installed, else a plain one-line bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

_BAR_WIDTH = 24
# Redrawing on every update would cost more than a small batch takes to encode.
_MIN_REDRAW_SECONDS = 0.1


def wants_progress(show_progress_bar: bool | None, stream: TextIO | None = None) -> bool:
    """``None`` means: only when the stream (stderr by default) is a terminal, so logs and pipes stay clean."""
    if show_progress_bar is None:
        stream = sys.stderr if stream is None else stream
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError):  # a replaced or closed stream
            return False
    return bool(show_progress_bar)


def _tqdm_class():
    # Imported lazily: tqdm is optional, and importing it would slow down `npminilm --help`.
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlainBar:
    """``desc:  42%|##########          | 42/100 [1.3s, 31.2 it/s]`` redrawn in place with a carriage return."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", stream: TextIO | None = None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_draw = float("-inf")
        self._closed = False
        self._draw()

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        prefix = f"{self.desc}: " if self.desc else ""
        stats = f"[{elapsed:.1f}s, {rate:.1f} {self.unit}/s{', ' + self.postfix if self.postfix else ''}]"
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(frac * _BAR_WIDTH)
            bar = "#" * filled + " " * (_BAR_WIDTH - filled)
            return f"{prefix}{frac * 100:3.0f}%|{bar}| {self.n}/{self.total} {stats}"
        return f"{prefix}{self.n} {self.unit} {stats}"

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        try:
            self.stream.write("\r" + self._line())
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone: progress is never worth failing the work for
            pass

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last_draw >= _MIN_REDRAW_SECONDS:
            self._draw()

    def set_postfix_str(self, text: str) -> None:
        """Text shown after the rate (tqdm's method of that name), e.g. the current loss."""
        self.postfix = text

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._draw()
        try:
            self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    show_progress_bar: bool | None = None,
    stream: TextIO | None = None,
):
    """A bar with ``update(n)``, ``set_postfix_str(text)`` and ``close()``, usable as a context manager; a no-op
    one when disabled."""
    stream = sys.stderr if stream is None else stream
    if not wants_progress(show_progress_bar, stream):
        return _NullBar()
    tqdm = _tqdm_class()
    if tqdm is not None:
        return tqdm(total=total, desc=desc or None, unit=unit, file=stream)
    return PlainBar(total, desc=desc, unit=unit, stream=stream)


def track(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    show_progress_bar: bool | None = None,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yield from ``iterable``, advancing a bar by one per item; ``total`` defaults to ``len(iterable)``."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with progress_bar(total, desc=desc, unit=unit, show_progress_bar=show_progress_bar, stream=stream) as bar:
        for item in iterable:
            yield item
            bar.update(1)
