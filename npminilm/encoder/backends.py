"""The engines behind SentenceEncoder, by name: "numpy" is SentenceEncoder itself; any other plugs in.

A backend is a SentenceEncoder subclass. An installed package offers one through the `npminilm.backends`
entry-point group (npminilm's own GPU package declares "triton" in pyproject.toml), and code can add one with
`register_backend`. Nothing here imports a backend until it is asked for by name.
"""

from importlib.metadata import entry_points

from ..errors import InvalidArgumentError

ENTRY_POINT_GROUP = "npminilm.backends"

_registered = {}  # name -> SentenceEncoder subclass


def register_backend(name, cls):
    """Make `SentenceEncoder(..., backend=name)` build a `cls`."""
    _registered[name] = cls


def backend_names():
    """Every backend name known now: the registered ones and the installed entry points, "numpy" first."""
    return list(dict.fromkeys(["numpy", *_registered, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))]))


def backend_class(name):
    """The SentenceEncoder subclass registered or installed under `name`, or an InvalidArgumentError."""
    if name not in _registered:
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            _registered[name] = ep.load()
    if name not in _registered:
        known = " or ".join(repr(n) for n in backend_names())
        raise InvalidArgumentError(f"backend {name!r} is not available; use backend={known}")
    return _registered[name]
