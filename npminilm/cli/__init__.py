"""The `npminilm` command line: encode, similarity, search, fetch, info, fit, serve, gradcheck, trace, lm, bpe.

One module per command group (`embed`, `train`, `serve`, `glassbox`, `lm`), each adding its commands to the
parser built here, over `common` (exit codes, the usage error, argument types). `main` turns every failure into
one line on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import NpMiniLMError, UsageError
from ..io.hub import DEFAULT_MODEL
from . import embed, glassbox, lm, serve, train
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    Parser,
    model_option,
)

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE"]


def build_parser() -> argparse.ArgumentParser:
    # --model is accepted before or after the command: the top-level one is the default, a later one wins.
    model_opt = model_option()
    parser = Parser(prog="npminilm", description="Sentence embeddings in NumPy, matching sentence-transformers.")
    parser.add_argument("--model", "-m", metavar="NAME_OR_PATH", default=DEFAULT_MODEL, help="model name or folder")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    embed.add_commands(sub, model_opt)
    train.add_commands(sub, model_opt)
    glassbox.add_commands(sub, model_opt)
    serve.add_commands(sub, model_opt)
    lm.add_commands(sub)  # their models are checkpoint folders: no --model
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("npminilm")
    except Exception:  # not installed, e.g. run from a checkout
        return "0.1.0"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.strerror}: {exc.filename}"
    return text


def _silence_stdout() -> None:
    # After EPIPE the interpreter would fail again flushing stdout at exit; point it at /dev/null instead.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by something without a descriptor
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 runtime error, 2 usage error, 130 interrupted)."""
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, usage errors: argparse has already printed
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        try:
            status = args.func(args)
            sys.stdout.flush()
            return status
        except UsageError as exc:
            print(f"npminilm: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        except Exception as exc:  # every failure is one line, never a traceback
            if os.environ.get("NPMINILM_DEBUG"):
                raise
            expected = isinstance(exc, (NpMiniLMError, OSError, ValueError, MemoryError))
            prefix = "" if expected else f"internal error: {type(exc).__name__}: "
            print(f"npminilm: error: {prefix}{_one_line(exc)}", file=sys.stderr)
            return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
