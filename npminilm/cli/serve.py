"""The serve command: an OpenAI-compatible embedding server (needs the `serve` extra)."""

from __future__ import annotations

import importlib
import os

from ..errors import UsageError
from .common import EXIT_OK, positive_int

SERVE_MODULES = ("starlette", "uvicorn", "prometheus_client")


def add_commands(sub, model_opt) -> None:
    p = sub.add_parser("serve", parents=[model_opt], help="an OpenAI-compatible embedding server (/v1/embeddings, "
                       "/embed, /tokenize, /similarity, /metrics)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: any free one; default 8080)")
    p.add_argument("--max-batch-tokens", type=positive_int, metavar="N", help="tokens per batch, summed over the "
                   "texts of the requests merged into it (default 2048 on numpy, 16384 on triton)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, metavar="MS",
                   help="how long a batch waits for more requests (default 2)")
    p.add_argument("--max-inputs", type=positive_int, default=512, metavar="N", help="texts per request")
    p.add_argument("--max-queued-requests", type=positive_int, default=512, metavar="N",
                   help="requests waiting at once; beyond them a request gets 503 with Retry-After")
    p.add_argument("--api-key", metavar="KEY", help="require `Authorization: Bearer KEY` (or set "
                   "NPMINILM_API_KEY, which keeps the key out of the process list)")
    p.add_argument("--auto-truncate", action="store_true", help="cut over-long texts at the model's limit when "
                   "a request does not say `truncate` (default: answer 413)")
    p.add_argument("--reranker", metavar="NAME_OR_PATH", help="a cross-encoder folder to serve on /rerank too")
    p.add_argument("--backend", choices=("numpy", "triton"), default="numpy")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    missing = [m for m in SERVE_MODULES if not _importable(m)]
    if missing:
        raise UsageError(f"npminilm serve needs {', '.join(missing)}: pip install 'npminilm[serve]'")
    from ..serve.config import GPU_BATCH_TOKENS, ServeConfig
    from ..serve.server import serve

    try:
        batch_tokens = args.max_batch_tokens or (GPU_BATCH_TOKENS if args.backend == "triton" else
                                                 ServeConfig.max_batch_tokens)
        config = ServeConfig(host=args.host, port=args.port, max_batch_tokens=batch_tokens,
                             max_wait_ms=args.max_wait_ms, max_inputs=args.max_inputs,
                             max_queued_requests=args.max_queued_requests,
                             api_key=args.api_key or os.environ.get("NPMINILM_API_KEY") or None,
                             auto_truncate=args.auto_truncate)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    serve(config, args.model, args.backend, args.reranker)
    return EXIT_OK


def _importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
