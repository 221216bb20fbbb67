"""Typed exceptions: every error npminilm raises on purpose is one of these."""


class NpMiniLMError(Exception):
    """Base class of every npminilm error."""


class ModelNotFoundError(NpMiniLMError, LookupError):
    """A model name or path that resolves to no folder."""


class ModelLoadError(NpMiniLMError, ValueError):
    """A model folder or file that is broken: bad JSON, bad safetensors, missing or misshapen tensors."""


class FetchError(NpMiniLMError):
    """Downloading or unpacking a model package failed."""


class InvalidInputError(NpMiniLMError, TypeError):
    """An input of the wrong type (None, a number, bytes, a nested list), naming the index of the bad item."""


class TokenizerError(NpMiniLMError, ValueError):
    """A vocabulary or tokenizer file that cannot be used."""


class InvalidArgumentError(NpMiniLMError, ValueError):
    """An argument with an acceptable type but an unusable value (a dtype, a length, an output name)."""


class UnknownCharacterError(NpMiniLMError, ValueError):
    """Text holding a character that a character-level vocabulary does not have."""


class DataError(NpMiniLMError, ValueError):
    """Training data that cannot be used: a bad row (named by file and line), an empty corpus, a corpus shorter
    than a block, or examples of the wrong kind for the loss."""


class TrainingError(NpMiniLMError, ArithmeticError):
    """A training run that cannot go on: the loss stopped being a finite number."""


class UsageError(NpMiniLMError, ValueError):
    """Command-line arguments that parse but cannot work together: the CLI prints one line and exits with 2."""


class RequestError(NpMiniLMError, ValueError):
    """A request the server refuses: malformed JSON, a field of the wrong type or value, too many inputs or
    tokens. `status` is the HTTP status it answers with (400, 401, 404, 413), `param` the field at fault."""

    def __init__(self, message, status=400, param=None):
        super().__init__(message)
        self.status, self.param = status, param


class OverloadedError(NpMiniLMError, RuntimeError):
    """The server's queue is full: the request is refused (HTTP 503 with Retry-After), never queued unbounded."""


class ClusterError(NpMiniLMError, RuntimeError):
    """A Ray cluster that cannot run the job: none at the given address, or actors that failed for good."""
