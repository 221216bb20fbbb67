"""npminilm.runtime.parallel: batches in order on worker threads, and an iterator prefetched on a thread."""

import threading
import time

import pytest

from npminilm.runtime.parallel import map_batches, prefetched


def test_map_batches_keeps_order():
    assert list(map_batches(lambda b: [x * x for x in b], [[1, 2], [3], [4, 5, 6]], workers=2)) == \
        [[1, 4], [9], [16, 25, 36]]


def test_prefetched_yields_every_item_in_order_from_another_thread():
    producers = []

    def source():
        for i in range(50):
            producers.append(threading.get_ident())
            yield i

    assert list(prefetched(source(), depth=3)) == list(range(50))
    assert set(producers) == {producers[0]} and producers[0] != threading.get_ident()


def test_prefetched_runs_ahead_of_a_slow_consumer():
    made = []

    def source():
        for i in range(4):
            made.append(i)
            yield i

    it = prefetched(source(), depth=2)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(made) < 3 and time.monotonic() < deadline:  # items 1 and 2 wait in the queue, item 3 blocks
        time.sleep(0.01)
    assert made == [0, 1, 2, 3] or made == [0, 1, 2]
    assert list(it) == [1, 2, 3]


def test_prefetched_raises_the_producers_error_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise KeyError("broken batch")

    it = prefetched(source())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(KeyError, match="broken batch"):
        next(it)


def test_a_consumer_that_stops_early_stops_the_producer():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    it = prefetched(endless(), depth=2)
    assert next(it) == 0
    before = threading.active_count()
    it.close()  # the worker is joined, not left running
    assert threading.active_count() <= before - 1
