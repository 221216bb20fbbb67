"""Atomic file writes: a temp file beside the target, fsynced, then renamed, so nothing is ever half-written."""

import os
import tempfile
from pathlib import Path


def atomic_write(path, write, binary: bool = False) -> None:
    """Write through ``write(file)`` to a temp file beside ``path``, then rename: never a half-written file."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        # The error would name the random temp file; the user only knows the path they gave.
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give it the permissions open() would
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def replace_dir(built, target) -> None:
    """Put the finished folder ``built`` at ``target`` (a sibling path), replacing any folder there: the old one
    is renamed aside first and removed last, so at every moment one complete folder exists (``target``, or the
    aside ``.<name>.old`` that `previous_dir` finds after an interruption)."""
    import shutil

    built, target = Path(built), Path(target)
    aside = target.with_name(f".{target.name}.old")
    if aside.exists() and target.exists():
        shutil.rmtree(aside)
    if target.exists():
        os.replace(target, aside)
    os.replace(built, target)
    if aside.exists():
        shutil.rmtree(aside)


def previous_dir(target):
    """``target`` when it exists, else the aside copy an interrupted `replace_dir` left, else None."""
    target = Path(target)
    aside = target.with_name(f".{target.name}.old")
    return target if target.exists() else aside if aside.exists() else None
