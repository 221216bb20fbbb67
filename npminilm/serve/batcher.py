"""Dynamic batching: the texts of requests that arrive together are embedded in one batch.

Requests put their texts (token id rows) in one queue and wait. One loop task takes texts from the front,
up to `max_batch_tokens` tokens, and embeds them on a worker thread while the event loop goes on accepting and
parsing requests; a request's texts may span batches, and it is answered when its last one is done. After the
worker frees up, the loop waits `max_wait_ms` for more texts unless a full batch is already waiting. The queue
is bounded: past `max_queued` unanswered requests, `submit` refuses with OverloadedError.

A text's embedding does not depend on its batch when the encoder is deterministic (`SentenceEncoder
(deterministic=True)`, the server's default): BLAS computes each token's row the same way in any batch.
"""

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import OverloadedError


class _Job:
    """One request's texts and its embeddings as they come back."""

    __slots__ = ("rows", "skip", "out", "left", "future")

    def __init__(self, rows, skip, dim, dtype, future):
        self.rows, self.skip, self.left, self.future = rows, skip, len(rows), future
        self.out = np.empty((len(rows), dim), dtype)


class Batcher:
    """`await batcher.submit(rows, skip)` -> (n, dim) embeddings of token id rows, batched with other requests'.

    embed: (rows, skips) -> (n, dim) array, run on the worker thread, skips being each row's leading tokens left
    out of pooling (its request's `skip`); on_batch(n_texts, n_tokens), if given, is called on the event loop for
    each batch (metrics)."""

    def __init__(self, embed, dim, dtype, max_batch_tokens, max_wait_ms, max_queued, on_batch=None):
        self.embed, self.dim, self.dtype, self.on_batch = embed, dim, dtype, on_batch
        self.max_batch_tokens, self.max_wait, self.max_queued = max_batch_tokens, max_wait_ms / 1000, max_queued
        self._waiting = collections.deque()  # (job, index of the text in its request)
        self.waiting_tokens = 0
        self.unanswered = 0  # requests admitted and not answered
        self._arrived = asyncio.Event()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="npminilm-batch")
        self._task = None

    @property
    def waiting_texts(self):
        return len(self._waiting)

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self._run(), name="npminilm-batcher")

    async def stop(self):
        """Stop taking batches (call once no request is in flight) and let the worker thread go."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._worker.shutdown(wait=True)

    async def submit(self, rows, skip=0):
        if self.unanswered >= self.max_queued:
            raise OverloadedError(f"the queue is full ({self.max_queued} requests waiting)")
        job = _Job(rows, skip, self.dim, self.dtype, asyncio.get_running_loop().create_future())
        self.unanswered += 1
        try:
            for i, row in enumerate(rows):
                self._waiting.append((job, i))
                self.waiting_tokens += len(row)
            self._arrived.set()
            return await job.future  # a client that goes away cancels it: its texts are dropped from the queue
        finally:
            self.unanswered -= 1

    async def run(self, fn, *args):
        """fn(*args) on the worker thread, between batches (BLAS settings stay the batches' own), counted in the
        queue's bound like a request."""
        if self.unanswered >= self.max_queued:
            raise OverloadedError(f"the queue is full ({self.max_queued} requests waiting)")
        self.unanswered += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)
        finally:
            self.unanswered -= 1

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if self.max_wait and self.waiting_tokens < self.max_batch_tokens:
                await asyncio.sleep(self.max_wait)
            batch = self._take()
            if not self._waiting:
                self._arrived.clear()
            if not batch:
                continue
            rows, skips = [job.rows[i] for job, i in batch], [job.skip for job, _ in batch]
            if self.on_batch is not None:
                self.on_batch(len(rows), sum(len(r) for r in rows))
            try:
                emb = await loop.run_in_executor(self._worker, self.embed, rows, skips)
            except Exception as exc:  # every request in the batch fails with it (the app answers 500 and logs)
                for job in {id(job): job for job, _ in batch}.values():
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for (job, i), vector in zip(batch, emb):
                job.out[i] = vector
                job.left -= 1
                if job.left == 0 and not job.future.done():
                    job.future.set_result(job.out)

    def _take(self):
        """Texts from the front of the queue, up to max_batch_tokens tokens (at least one), skipping those of
        requests already gone."""
        batch, tokens = [], 0
        while self._waiting:
            job, i = self._waiting[0]
            n = len(job.rows[i])
            if job.future.done():
                self._waiting.popleft()
                self.waiting_tokens -= n
                continue
            if batch and tokens + n > self.max_batch_tokens:
                break
            self._waiting.popleft()
            self.waiting_tokens -= n
            batch.append((job, i))
            tokens += n
        return batch
