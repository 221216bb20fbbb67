"""Independent batches on worker threads, BLAS pinned to one thread each (threadpoolctl, optional).

numpy's ufuncs run on one thread, so a forward pass leaves all but one core idle during its elementwise work,
and OpenBLAS splits small GEMMs (a few hundred rows) across threads at a loss. Running whole batches side by
side, each with a single-threaded BLAS, keeps every core busy for the whole forward pass. numpy and BLAS release
the GIL while they compute, so plain threads suffice. Without threadpoolctl the batches run one after another.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager


def default_workers():
    """The cores this process may use, or NPMINILM_NUM_THREADS when set."""
    env = os.environ.get("NPMINILM_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _single_threaded_blas():
    """A context that limits BLAS to one thread per call, or None when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1, user_api="blas")


@contextmanager
def worker_pool(workers=None):
    """A thread pool with BLAS limited to one thread (process-wide) while it is open; None when one worker is
    asked for or threadpoolctl is missing (the work then runs in the calling thread). Holding one pool across
    many small calls saves threadpoolctl's library scan on each."""
    workers = default_workers() if workers is None else workers
    limits = _single_threaded_blas() if workers > 1 else None
    if limits is None:
        yield None
        return
    with limits, ThreadPoolExecutor(workers, thread_name_prefix="npminilm") as pool:
        yield pool


def map_batches(fn, batches, workers=None):
    """Yield fn(batch) for each batch, in order. With more than one batch and worker, the batches run on worker
    threads while BLAS is limited to one thread (process-wide, for the duration)."""
    batches = list(batches)
    workers = min(default_workers() if workers is None else workers, len(batches))
    with worker_pool(workers) as pool:
        yield from map(fn, batches) if pool is None else pool.map(fn, batches)
