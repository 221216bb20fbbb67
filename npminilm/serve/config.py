"""The server's settings: what `npminilm serve` takes on its command line, with their defaults and limits."""

from dataclasses import dataclass

from ..errors import InvalidArgumentError

GPU_BATCH_TOKENS = 16384  # text-embeddings-inference's default


@dataclass(frozen=True)
class ServeConfig:
    """Limits are per request (max_inputs, max_body_bytes), per batch (max_batch_tokens) and for the whole queue
    (max_queued_requests: requests admitted and not yet answered; one more is a 503).

    max_batch_tokens: on CPU a batch of about 2048 tokens (a second or so on two cores) keeps the worker busy
    while the event loop answers the last batch and reads the next; serve_bench measured 0.96x encode's rate at
    64 clients with it, against 0.83x with 16384 (one batch at a time, the loop and the worker taking turns).
    A GPU wants bigger batches: the triton backend's default is GPU_BATCH_TOKENS."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_tokens: int = 2048  # tokens of one batch, [CLS] and [SEP] included; no padding
    max_wait_ms: float = 2.0  # how long a batch waits for more requests once the worker is free
    max_inputs: int = 512  # texts per request
    max_queued_requests: int = 512
    max_body_bytes: int = 8 << 20
    api_key: str | None = None
    auto_truncate: bool = False  # the default of `truncate`: cut an over-long text instead of answering 413

    def __post_init__(self):
        for name in ("max_batch_tokens", "max_inputs", "max_queued_requests", "max_body_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        if type(self.port) is not int or not 0 <= self.port <= 65535:
            raise InvalidArgumentError(f"port must be 0 to 65535, got {self.port!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise InvalidArgumentError(f"max_wait_ms must be 0 to 10000, got {self.max_wait_ms!r}")
        if self.api_key is not None and not self.api_key:
            raise InvalidArgumentError("api_key must not be empty")
