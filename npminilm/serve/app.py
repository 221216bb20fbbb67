"""The Starlette application: the endpoints, the API key, and every error as an OpenAI-style JSON body.

    POST /v1/embeddings   OpenAI's schema          POST /embed       TEI's schema
    POST /tokenize        TEI's schema             POST /similarity  TEI's schema
    POST /rerank          TEI's schema (with a cross-encoder loaded)
    GET  /v1/models       GET /health              GET  /metrics     Prometheus text

An error is {"error": {"message", "type", "param", "code"}} with a 4xx status naming the problem, 503 with
Retry-After when the queue is full, and 500 (logged with its traceback, which never goes in the body) for a bug.
"""

import base64
import hmac
import logging
import sys
import time
from contextlib import asynccontextmanager

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidArgumentError, OverloadedError, RequestError
from ..nn.ops import l2_normalize_forward
from . import schema
from .batcher import Batcher
from .metrics import Metrics

log = logging.getLogger("npminilm.serve")

OPEN_PATHS = ("/health",)  # answered without the API key (liveness probes)
INLINE_BYTES = 1 << 16  # bodies up to this size are tokenised on the event loop, larger ones on a thread
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 500: "server_error",
               503: "server_overloaded"}


def error_response(status, message, param=None, headers=None):
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(encoder, config, model_name, reranker=None):
    """The ASGI app serving `encoder` (a SentenceEncoder with `token_ids` and `encode_ids`) under `config`, and
    `reranker` (a CrossEncoder) on /rerank when given."""
    service = EmbeddingService(encoder, config, model_name, reranker)
    middleware = [Middleware(Observed, metrics=service.metrics)]
    if config.api_key is not None:
        middleware.append(Middleware(ApiKey, key=config.api_key))
    routes = [
        Route("/v1/embeddings", service.openai_embeddings, methods=["POST"]),
        Route("/embed", service.embed, methods=["POST"]),
        Route("/tokenize", service.tokenize, methods=["POST"]),
        Route("/similarity", service.similarity, methods=["POST"]),
        Route("/rerank", service.rerank, methods=["POST"]),
        Route("/v1/models", service.models, methods=["GET"]),
        Route("/health", service.health, methods=["GET"]),
        Route("/metrics", service.render_metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=service.lifespan,
                    exception_handlers={HTTPException: _http_error})
    app.state.service = service
    return app


async def _http_error(request, exc):  # the router's 404 and 405
    return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                          headers=getattr(exc, "headers", None))


def _endpoint(handler):
    """Turn RequestError and OverloadedError into their status codes, and anything else into a logged 500."""

    async def run(self, request):
        try:
            return await handler(self, request)
        except RequestError as exc:
            return error_response(exc.status, str(exc), exc.param)
        except OverloadedError as exc:
            return error_response(503, f"{exc}; retry later", headers={"Retry-After": "1"})
        except Exception:
            log.exception("internal error on %s %s", request.method, request.url.path)
            return error_response(500, "internal server error")

    return run


class EmbeddingService:
    def __init__(self, encoder, config, model_name, reranker=None):
        self.encoder, self.config, self.model_name, self.reranker = encoder, config, model_name, reranker
        self.created = int(time.time())
        self.metrics = Metrics()
        self.batcher = None

    @asynccontextmanager
    async def lifespan(self, app):
        self.batcher = Batcher(self._embed_rows, self.encoder.dim, np.float32, self.config.max_batch_tokens,
                               self.config.max_wait_ms, self.config.max_queued_requests, self.metrics.on_batch)
        self.metrics.watch(self.batcher)
        self.batcher.start()
        try:
            yield
        finally:  # uvicorn gets here after the in-flight requests are answered
            await self.batcher.stop()

    def _embed_rows(self, rows, skips):  # on the batcher's worker thread
        return self.encoder.encode_ids(rows, normalize_embeddings=False, skip=skips).astype(np.float32, copy=False)

    # ---------------------------------------------------------------------------------------------- endpoints

    @_endpoint
    async def openai_embeddings(self, request):
        body, n_bytes = await self._json(request)
        req = schema.openai_embeddings(body, self.config.max_inputs, self.encoder.dim, self.config.auto_truncate)
        emb, n_tokens = await self._embed(req, n_bytes)
        encode = _base64 if req.encoding_format == "base64" else np.ndarray.tolist
        data = [{"object": "embedding", "index": i, "embedding": encode(row)} for i, row in enumerate(emb)]
        return JSONResponse({"object": "list", "data": data, "model": self.model_name,
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    @_endpoint
    async def embed(self, request):
        body, n_bytes = await self._json(request)
        req = schema.tei_embed(body, self.config.max_inputs, self.encoder.dim, self.config.auto_truncate)
        emb, _ = await self._embed(req, n_bytes)
        return JSONResponse(emb.tolist())

    @_endpoint
    async def similarity(self, request):
        body, n_bytes = await self._json(request)
        source, sentences = schema.tei_similarity(body, self.config.max_inputs)
        req = schema.EmbedRequest([source, *sentences], None, self.config.auto_truncate, normalize=True,
                                  field="inputs.sentences")
        emb, _ = await self._embed(req, n_bytes)
        return JSONResponse((emb[1:] @ emb[0]).tolist())

    @_endpoint
    async def rerank(self, request):
        if self.reranker is None:
            raise RequestError("this server has no reranker: start it with --reranker NAME_OR_PATH (a "
                               "cross-encoder folder)", 404)
        body, _ = await self._json(request)
        req = schema.tei_rerank(body, self.config.max_inputs, self.config.auto_truncate)
        scores = await self.batcher.run(self._rerank_scores, req)
        order = np.argsort(-scores, kind="stable")
        return JSONResponse([{"index": int(i), "score": float(scores[i]),
                              **({"text": req.texts[i]} if req.return_text else {})} for i in order])

    def _rerank_scores(self, req):  # on the batcher's worker thread
        ce = self.reranker
        if not req.truncate:
            for i, text in enumerate(req.texts):
                if len(ce.tokenizer.encode(req.query, pair=text)) > ce.max_length:
                    raise RequestError(f"texts[{i}] with the query is longer than the reranker's {ce.max_length} "
                                       "tokens; send truncate: true to cut it", 413, "texts")
        pairs = [(req.query, text) for text in req.texts]
        return ce.predict(pairs, activation_fn="identity" if req.raw_scores else None)

    @_endpoint
    async def tokenize(self, request):
        body, n_bytes = await self._json(request)
        texts, special = schema.tei_tokenize(body, self.config.max_inputs)
        out = self._tokens(texts, special) if n_bytes <= INLINE_BYTES else await run_in_threadpool(
            self._tokens, texts, special)
        return JSONResponse(out)

    def _tokens(self, texts, add_special_tokens):
        """Each text's whole tokenisation (not cut at max_seq_length): [{"id", "text", "special"}, ...]."""
        tok = self.encoder.tokenizer
        specials = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id}
        out = []
        for ids in self.encoder.token_ids(texts, max_length=sys.maxsize):
            ids = ids.tolist() if add_special_tokens else ids[1:-1].tolist()
            out.append([{"id": i, "text": t, "special": i in specials}
                        for i, t in zip(ids, tok.convert_ids_to_tokens(ids))])
        return out

    @_endpoint
    async def models(self, request):
        return JSONResponse({"object": "list", "data": [{"id": self.model_name, "object": "model",
                                                          "created": self.created, "owned_by": "npminilm"}]})

    async def health(self, request):
        return JSONResponse({"status": "ok"})

    async def render_metrics(self, request):
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    # ---------------------------------------------------------------------------------------------- helpers

    async def _json(self, request):
        """(the body as a JSON object, its size in bytes), read no further than max_body_bytes."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(f"the body is {declared} bytes, more than this server's limit of {limit}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"the body is more than this server's limit of {limit} bytes", 413)
            chunks.append(chunk)
        return schema.read_json(b"".join(chunks)), size

    async def _embed(self, req, n_bytes):
        """(embeddings (n, d) float32, tokens counted) of an EmbedRequest, batched with other requests."""
        rows, skip = self._rows(req) if n_bytes <= INLINE_BYTES else await run_in_threadpool(self._rows, req)
        emb = await self.batcher.submit(rows, skip)
        normalize = self.encoder.normalize if req.normalize is None else req.normalize
        if req.dimensions is not None:  # keep the first d; OpenAI's schema then renormalises (text-embedding-3)
            emb = emb[:, :req.dimensions]
            if req.normalize is None:
                normalize = True
        if normalize:
            emb, _ = l2_normalize_forward(emb)
        return emb, sum(len(r) for r in rows)

    def _rows(self, req):
        """(each input's token ids as the model takes them ([CLS] ... [SEP]), the prompt's tokens that pooling
        leaves out): texts get the prompt encode would put before them (the named one, or the default); rows are
        cut at max_seq_length when the request says truncate, else a 413 names the first that is too long."""
        limit, tok = self.encoder.max_seq_length, self.encoder.tokenizer
        param, skip = req.field, 0
        if req.ids is not None:
            vocab = len(tok)
            rows = []
            for i, ids in enumerate(req.ids):
                if max(ids) >= vocab:
                    raise RequestError(f"{param}[{i}] has a token id outside the vocabulary (0 to {vocab - 1})",
                                       param=param)
                rows.append(np.array([tok.cls_token_id, *ids[:limit - 1], tok.sep_token_id], dtype=np.int64))
        else:
            try:
                prompt, skip = self.encoder.prompt_and_skip(prompt_name=req.prompt_name)
            except InvalidArgumentError as exc:
                raise RequestError(str(exc), param="prompt_name") from None
            rows = self.encoder.token_ids(req.texts, max_length=limit + 1, prompt=prompt)  # one past: "too long"
        for i, row in enumerate(rows):
            if len(row) > limit:
                if not req.truncate:
                    raise RequestError(f"{param}[{i}] is longer than the model's {limit} tokens; send "
                                       f"truncate: true to cut it", 413, param)
                rows[i] = np.append(row[:limit - 1], tok.sep_token_id)
        return rows, skip


def _base64(row):  # OpenAI's base64: the little-endian float32 bytes
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")


class Observed:
    """ASGI middleware: count each request by route and status, and time it."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe(scope["path"], status[0], time.perf_counter() - start)


class ApiKey:
    """ASGI middleware: every path but OPEN_PATHS needs `Authorization: Bearer KEY`, else 401."""

    def __init__(self, app, key):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                message = "a wrong API key" if given else "no API key (send Authorization: Bearer KEY)"
                response = error_response(401, f"this server needs an API key; the request has {message}")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)
