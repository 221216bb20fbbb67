"""What every command group of the CLI shares: exit codes, the one-line argparse error, argument types."""

from __future__ import annotations

import argparse

from ..io.hub import DEFAULT_MODEL

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2, like every other error here."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"npminilm: error: {message} (see `{self.prog} --help`)\n")


def model_option() -> argparse.ArgumentParser:
    """The parent parser of every command that loads a model: --model, accepted after the command too."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--model", "-m", metavar="NAME_OR_PATH", default=argparse.SUPPRESS,
        help=f"model name or folder (default: {DEFAULT_MODEL})",
    )  # fmt: skip
    return parent


def _checked(convert, kind, accept, wanted, name):
    """An argparse type: `convert` the text and `accept` the value, else one line saying what was expected."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


positive_int = _checked(int, "a positive integer", lambda v: v >= 1, "a positive integer", "positive_int")
positive_float = _checked(float, "a number", lambda v: v > 0, "a positive number", "positive_float")
unit_float = _checked(float, "a number", lambda v: 0.0 <= v < 1.0, "a number in [0, 1)", "unit_float")


def read_lines(stream) -> list[str]:
    # splitlines, not split("\n"): a final newline adds no empty text, and \r\n files work.
    return stream.read().splitlines()
