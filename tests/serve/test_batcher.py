"""Dynamic batching on its own: requests merged by token budget, answered in order, bounded, cancellable."""

import asyncio
import threading

import numpy as np
import pytest

from npminilm.errors import OverloadedError
from npminilm.serve.batcher import Batcher
from tests.helpers import assert_close

TEXTS = ["A man is playing a guitar.", "Hi", "The quick brown fox jumps over the lazy dog near the river.",
         "Two dogs run.", "Ünïcødé 漢字 text", "a b c d e f g h i j k l m n o p"]


def run(coroutine):
    return asyncio.run(coroutine)


async def started(batcher):
    batcher.start()
    return batcher


def test_requests_merge_into_batches_and_match_encode(encoder):
    """Twelve requests at once: fewer batches than requests, none over the budget (unless one text is), and
    each request gets its own texts' embeddings, as encode gives them."""
    rng = np.random.default_rng()
    requests = [[TEXTS[i] for i in rng.choice(len(TEXTS), rng.integers(1, 5))] for _ in range(12)]
    batches = []

    async def main():
        b = await started(Batcher(lambda rows, skips: encoder.encode_ids(rows, skip=skips), encoder.dim, np.float32, 48, 1.0, 64,
                                  on_batch=lambda n, tokens: batches.append((n, tokens))))
        out = await asyncio.gather(*(b.submit(encoder.token_ids(r)) for r in requests))
        await b.stop()
        return out

    answers = run(main())
    assert len(batches) < len(requests) and sum(n for n, _ in batches) == sum(len(r) for r in requests)
    assert all(tokens <= 48 or n == 1 for n, tokens in batches), batches
    for texts, emb in zip(requests, answers):
        assert_close(emb, encoder.encode(texts), 1e-6, name="batched embeddings")


def test_full_queue_refuses_and_cancelled_requests_are_dropped():
    gate, seen = threading.Event(), []

    def embed(rows, skips):
        gate.wait(10)
        seen.append([int(r[0]) for r in rows])
        return np.stack([np.full(4, r[0], np.float32) for r in rows])

    async def main():
        b = await started(Batcher(embed, 4, np.float32, 100, 0.0, 3))
        first = asyncio.create_task(b.submit([np.array([1, 2])]))
        await asyncio.sleep(0.05)  # the first is on the worker, held by the gate
        gone = asyncio.create_task(b.submit([np.array([2])]))
        kept = asyncio.create_task(b.submit([np.array([3]), np.array([4, 5])]))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await b.submit([np.array([9])])
        gone.cancel()
        gate.set()
        a, c = await first, await kept
        await b.stop()
        return a, c

    a, c = run(main())
    assert a[:, 0].tolist() == [1] and c[:, 0].tolist() == [3, 4]
    assert seen == [[1], [3, 4]]  # the cancelled request's text never ran


def test_a_failing_batch_fails_its_requests_only():
    calls = []

    def embed(rows, skips):
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.ones((len(rows), 2), np.float32)

    async def main():
        b = await started(Batcher(embed, 2, np.float32, 100, 5.0, 8))
        results = await asyncio.gather(b.submit([np.array([1])]), b.submit([np.array([2])]),
                                       return_exceptions=True)
        after = await b.submit([np.array([3])])
        await b.stop()
        return results, after, b.unanswered

    results, after, unanswered = run(main())
    assert [type(r) for r in results] == [RuntimeError, RuntimeError] and calls[0] == 2
    assert after.shape == (1, 2) and unanswered == 0
