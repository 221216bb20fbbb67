"""Load the model, bind the socket, run uvicorn until SIGTERM or Ctrl-C, answering what is in flight first."""

import logging
import signal
import socket
import sys
import time

from ..encoder.sentence_encoder import SentenceEncoder
from ..errors import InvalidArgumentError
from ..runtime.parallel import blas_pinnable
from .app import create_app

log = logging.getLogger("npminilm.serve")
DRAIN_SECONDS = 30  # how long SIGTERM waits for in-flight requests before closing their connections


def load_encoder(model, backend="numpy"):
    """The model to serve. The NumPy engine runs deterministic when it can (threadpoolctl, in the serve extra):
    a text's embedding is then the same bytes whatever it is batched with."""
    if backend == "numpy":
        return SentenceEncoder(model, deterministic=blas_pinnable())
    return SentenceEncoder(model, backend=backend)


def bind(host, port):
    """A listening TCP socket on (host, port); port 0 takes a free one. OSError when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from None  # the CLI prints "reason: address"
    sock.set_inheritable(True)
    return sock


def serve(config, model, backend="numpy", reranker=None):
    """Serve `model` under `config` until SIGTERM (drain, then return) or SIGINT (drain, then KeyboardInterrupt)."""
    import uvicorn

    start = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    sock = bind(config.host, config.port)  # first: a taken address fails before the model loads
    try:
        encoder = load_encoder(model, backend)
        cross_encoder = None
        if reranker is not None:
            from ..encoder.cross_encoder import CrossEncoder

            cross_encoder = CrossEncoder(reranker)
            if cross_encoder.num_labels != 1:
                raise InvalidArgumentError(f"--reranker needs a one-label cross-encoder; {reranker} has "
                                           f"{cross_encoder.num_labels} labels")
        if config.max_batch_tokens < encoder.max_seq_length:
            raise InvalidArgumentError(f"max_batch_tokens ({config.max_batch_tokens}) must hold one text of the "
                                       f"model's {encoder.max_seq_length} tokens")
        host, port = sock.getsockname()[:2]
        name = str(model).rstrip("/").rsplit("/", 1)[-1]
        server = uvicorn.Server(uvicorn.Config(create_app(encoder, config, name, cross_encoder), log_level="info",
                                               access_log=False, lifespan="on",
                                               timeout_graceful_shutdown=DRAIN_SECONDS, server_header=False))
        log.info("npminilm serve: %s (%s, deterministic=%s) on http://%s:%d, loaded in %.2f s", name, backend,
                 getattr(encoder, "deterministic", False), f"[{host}]" if ":" in host else host, port,
                 time.perf_counter() - start)
        # uvicorn drains on SIGTERM, then raises it again: a handler that ignores it lets us return 0 after that
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
        try:
            server.run(sockets=[sock])
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        sock.close()
    log.info("npminilm serve: stopped")
