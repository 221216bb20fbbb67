"""Independent batches on worker threads, BLAS pinned to one thread each (threadpoolctl, optional); and an
iterator run ahead on a worker thread.

numpy's ufuncs run on one thread, so a forward pass leaves all but one core idle during its elementwise work,
and OpenBLAS splits small GEMMs (a few hundred rows) across threads at a loss. Running whole batches side by
side, each with a single-threaded BLAS, keeps every core busy for the whole forward pass. numpy and BLAS release
the GIL while they compute, so plain threads suffice. Without threadpoolctl the batches run one after another.
"""

import functools
import importlib.util
import os
import queue
import threading
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


@functools.cache
def _blas_controller():
    """threadpoolctl's handle on the BLAS libraries loaded when it is first asked for, made once per process. Its
    scan of the process's libraries costs 0.3-1.1 ms, which every pinned call had paid: one sentence in
    deterministic mode took 4.4-4.6 ms, and takes 2.9-3.1 with the handle kept (Zen 4). numpy's BLAS, the one
    npminilm runs, is loaded first; a BLAS that another library loads later is not pinned. None without
    threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    import numpy  # noqa: F401  (loads numpy's BLAS, the one to pin, before the scan)

    return ThreadpoolController()


def _single_threaded_blas():
    """A context that limits BLAS to one thread per call, or None when threadpoolctl is not installed."""
    controller = _blas_controller()
    return None if controller is None else controller.limit(limits=1, user_api="blas")


def blas_pinnable():
    """Whether BLAS can be limited to one thread per call here (threadpoolctl is installed)."""
    return importlib.util.find_spec("threadpoolctl") is not None


@contextmanager
def worker_pool(workers=None, pin_blas=False):
    """A thread pool with BLAS limited to one thread (process-wide) while it is open; None when one worker is
    asked for or threadpoolctl is missing (the work then runs in the calling thread). pin_blas limits BLAS to
    one thread even then. Holding one pool across many small calls saves starting its threads on each."""
    workers = default_workers() if workers is None else workers
    limits = _single_threaded_blas() if workers > 1 or pin_blas else None
    if limits is None:
        yield None
        return
    with limits:
        if workers == 1:
            yield None
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="npminilm") as pool:
            yield pool


def map_batches(fn, batches, workers=None, pin_blas=False):
    """Yield fn(batch) for each batch, in order. With more than one batch and worker, the batches run on worker
    threads while BLAS is limited to one thread (process-wide, for the duration); pin_blas limits it with one
    worker too."""
    batches = list(batches)
    workers = max(1, min(default_workers() if workers is None else workers, len(batches)))
    with worker_pool(workers, pin_blas) as pool:
        yield from map(fn, batches) if pool is None else pool.map(fn, batches)


def prefetched(iterable, depth=2):
    """Yield the items of `iterable`, produced on a worker thread up to `depth` items ahead of the consumer, so
    the producer's Python work (tokenising, packing) overlaps the consumer's waits (a GPU, a copy). Items, and an
    exception raised by the producer, come out in order, as plain iteration would give them; a consumer that
    stops early stops the worker."""
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry):
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((end, exc))

    worker = threading.Thread(target=produce, name="npminilm-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()
