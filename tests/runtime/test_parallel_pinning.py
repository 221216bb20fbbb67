"""npminilm.runtime.parallel with threadpoolctl (the `fast` extra): numpy's BLAS held to one thread while a pinned
pool runs, given back after, from one scan of the process's libraries."""

from pathlib import Path

import numpy
from threadpoolctl import threadpool_info, threadpool_limits

from npminilm.runtime import parallel

NUMPY_LIBS = Path(numpy.__file__).resolve().parent.parent / "numpy.libs"  # where numpy's wheel keeps its BLAS


def numpy_blas_threads():
    """{path: threads} of the BLAS numpy runs (the one its wheel bundles)."""
    threads = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
               if lib["user_api"] == "blas" and Path(lib["filepath"]).resolve().parent == NUMPY_LIBS}
    assert threads, f"numpy's BLAS not found in {NUMPY_LIBS}: {threadpool_info()}"
    return threads


def test_pinned_batches_run_blas_on_one_thread_and_give_the_threads_back():
    seen = []

    def work(batch):
        seen.append(numpy_blas_threads())
        return batch

    with threadpool_limits(limits=2, user_api="blas"):
        before = numpy_blas_threads()
        assert set(before.values()) == {2}
        for workers, pin in ((2, False), (1, True)):  # two workers pin BLAS on their own; one pins when asked
            seen.clear()
            assert list(parallel.map_batches(work, [1, 2, 3], workers=workers, pin_blas=pin)) == [1, 2, 3]
            assert len(seen) == 3 and all(set(s.values()) == {1} for s in seen), seen
            assert numpy_blas_threads() == before
        seen.clear()
        list(parallel.map_batches(work, [1, 2], workers=1))  # one worker, no pin: BLAS keeps its threads
        assert seen == [before, before]


def test_the_libraries_are_scanned_once():
    parallel._blas_controller.cache_clear()
    for _ in range(3):
        list(parallel.map_batches(len, [[1], [2, 3]], workers=2))
    assert parallel._blas_controller.cache_info().misses == 1
