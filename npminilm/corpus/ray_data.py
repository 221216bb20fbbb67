"""Corpora on a Ray cluster (the `ray` extra): npminilm inside Ray Data's batch-inference idiom, one model per
actor.

    ds = ray.data.read_parquet("s3://bucket/corpus/")
    ds = ds.map_batches(Embedder, fn_constructor_kwargs={"column": "text"}, num_cpus=1, batch_size=256,
                        compute=ray.data.ActorPoolStrategy(size=4))   # or: embed_dataset(ds, concurrency=4)
    ds.write_parquet("s3://bucket/embeddings/")

An actor loads the model once and encodes on the CPUs Ray gave it (`num_cpus`): npminilm's batches side by side
on that many threads, BLAS limited to as many. A batch comes in whichever format Ray hands over (a dict of numpy
arrays, a pandas DataFrame or a pyarrow Table) and goes back in the same one with an embedding column added:
(n, dim) float32, as a fixed-size float32 list in pyarrow.

`RayEncoder` is what `npminilm encode --input FILE --output FILE --ray ADDRESS` runs: the corpus job of
`corpus.job` (the same reader, chunks, resume and output) with each chunk's texts cut into batches and sent to a
pool of the same Embedder actors, started once for the whole corpus. Ray restarts an actor that dies and retries
its batch (max_restarts, max_task_retries), so a lost node costs time, not rows.
"""

import os

import numpy as np

from ..errors import ClusterError, DataError, InvalidArgumentError, NpMiniLMError
from ..io.hub import DEFAULT_MODEL

DEFAULT_BATCH_SIZE = 256  # rows per map_batches call: a few encode batches, so an actor's threads all have work


class Embedder:
    """A callable class for `ds.map_batches`: embeds `batch[column]` into `batch[output_column]`.

    num_threads: the threads this actor encodes on; None takes the CPUs Ray assigned the actor (`num_cpus`),
    or leaves npminilm's default outside Ray. The other keyword arguments are SentenceEncoder's (model,
    deterministic, truncate_dim, prompts) and encode's (batch_size, normalize_embeddings, prompt_name, prompt).
    """

    def __init__(self, model=DEFAULT_MODEL, column="text", output_column="embedding", batch_size=32,
                 num_threads=None, normalize_embeddings=None, prompt_name=None, prompt=None, deterministic=False,
                 truncate_dim=None):
        from ..encoder.sentence_encoder import SentenceEncoder

        self.column, self.output_column = column, output_column
        self._blas_limits = _pin_threads(_actor_cpus() if num_threads is None else num_threads)
        self.encoder = SentenceEncoder(model, deterministic=deterministic, truncate_dim=truncate_dim)
        self._encode_kwargs = {"batch_size": batch_size, "normalize_embeddings": normalize_embeddings,
                               "prompt_name": prompt_name, "prompt": prompt}

    def __call__(self, batch):
        return _with_column(batch, self.output_column, self.embed(_texts(_column(batch, self.column), self.column)))

    def embed(self, texts):
        """(n, dim) float32 embeddings of a list of strings."""
        return self.encoder.encode(texts, show_progress_bar=False, **self._encode_kwargs).astype(np.float32,
                                                                                               copy=False)


def embed_dataset(ds, column="text", model=DEFAULT_MODEL, output_column="embedding", concurrency=None, num_cpus=1,
                  batch_size=DEFAULT_BATCH_SIZE, batch_format="default", **embedder_kwargs):
    """`ds` with an embedding column: `ds.map_batches(Embedder, ...)` with Ray Data's own arguments.

    concurrency: how many actors (an int), or (min, max) for a pool that grows with the work (given to Ray as
    `compute=ActorPoolStrategy(...)`, which replaced map_batches' `concurrency` in Ray 2.51); num_cpus: CPUs per
    actor, which is also how many threads it encodes on; batch_size: rows per call. Leave the cluster a CPU
    for Ray Data's read tasks: actors holding every CPU wait forever for rows that cannot be read.
    """
    from ray.data import ActorPoolStrategy

    if concurrency is None:
        compute = None
    elif type(concurrency) is int and concurrency >= 1:
        compute = ActorPoolStrategy(size=concurrency)
    elif isinstance(concurrency, tuple) and len(concurrency) == 2 and all(type(n) is int for n in concurrency):
        compute = ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:
        raise InvalidArgumentError(f"concurrency must be a positive integer or a (min, max) pair, got {concurrency!r}")
    kwargs = {"model": model, "column": column, "output_column": output_column, **embedder_kwargs}
    return ds.map_batches(Embedder, fn_constructor_kwargs=kwargs, compute=compute, num_cpus=num_cpus,
                          batch_size=batch_size, batch_format=batch_format)


class RayEncoder:
    """Encode lists of texts on a Ray cluster: `actors` Embedder actors of `num_cpus` CPUs each, sent
    `rows_per_call` texts at a time; embedder_kwargs go to each Embedder.

    address: Ray's meaning ("auto": the running cluster, e.g. one started with `ray start --head`;
    "host:port"; "local": a new one in this process). actors None: as many as the cluster's CPUs allow.
    """

    def __init__(self, address, model=DEFAULT_MODEL, actors=None, num_cpus=1, rows_per_call=DEFAULT_BATCH_SIZE,
                 **embedder_kwargs):
        ray = _ray()
        if type(rows_per_call) is not int or rows_per_call < 1:
            raise InvalidArgumentError(f"rows_per_call must be a positive integer, got {rows_per_call!r}")
        if not ray.is_initialized():
            _check_reachable(address)
            try:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            except ConnectionError as exc:
                raise ClusterError(f"no Ray cluster at {address!r} ({_first_line(exc)})") from None
        cpus = int(ray.cluster_resources().get("CPU", 0))
        actors = max(1, cpus // max(1, num_cpus)) if actors is None else actors
        if type(actors) is not int or actors < 1:
            raise InvalidArgumentError(f"actors must be a positive integer, got {actors!r}")
        remote = ray.remote(num_cpus=num_cpus, max_restarts=-1, max_task_retries=-1)(Embedder)
        kwargs = {"model": model, **embedder_kwargs}
        self._actors = [remote.remote(**kwargs) for _ in range(actors)]
        self._pool = ray.util.ActorPool(self._actors)
        self.rows_per_call = rows_per_call

    def encode(self, texts):
        """(n, dim) float32 embeddings of `texts`, in order."""
        step = self.rows_per_call
        batches = [texts[i:i + step] for i in range(0, len(texts), step)]
        ray = _ray()
        try:
            parts = list(self._pool.map(lambda actor, batch: actor.embed.remote(batch), batches))
        except ray.exceptions.RayTaskError as exc:  # an error raised in the actor: ours is re-raised as it was
            if isinstance(exc.cause, NpMiniLMError):
                raise exc.cause from None
            raise ClusterError(f"an Embedder actor failed: {_first_line(exc)}") from None
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"the Ray cluster could not run the job: {_first_line(exc)}") from None
        return np.concatenate(parts)

    def close(self):
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []


def _ray():
    try:
        import ray
        import ray.util
    except ImportError:
        raise InvalidArgumentError("Ray needs the ray extra: pip install 'npminilm[ray]'") from None
    return ray


def _check_reachable(address, timeout=5.0):
    """A HOST:PORT address with nothing listening fails here at once: ray.init would retry it for minutes."""
    import socket

    host, sep, port = str(address).split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray's own to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"no Ray cluster at {address!r} ({exc.strerror or exc})") from None


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ------------------------------------------------------------------------------------------ batch formats

def _column(batch, name):
    if isinstance(batch, dict):
        names = list(batch)
        values = batch.get(name)
    elif hasattr(batch, "column_names") and hasattr(batch, "num_rows"):  # pyarrow.Table
        names = batch.column_names
        values = batch.column(name).to_pylist() if name in names else None
    elif hasattr(batch, "columns") and hasattr(batch, "iloc"):  # pandas.DataFrame
        names = list(batch.columns)
        values = batch[name].tolist() if name in names else None
    else:
        raise InvalidArgumentError(f"a batch must be a dict of arrays, a pandas DataFrame or a pyarrow Table, "
                                   f"got {type(batch).__name__}")
    if values is None:
        raise DataError(f"the batch has no column {name!r} (it has {names[:8]})")
    return values


def _texts(values, name):
    texts = values.tolist() if isinstance(values, np.ndarray) else list(values)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"row {i} of a batch: {name!r} is {type(text).__name__}, not a string")
    return texts


def _with_column(batch, name, emb):
    """The batch, in its own format, with `emb` (n, dim) added as column `name`."""
    if isinstance(batch, dict):
        return {**batch, name: emb}
    if hasattr(batch, "column_names") and hasattr(batch, "num_rows"):
        import pyarrow as pa

        column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1])
        if name in batch.column_names:
            batch = batch.drop_columns([name])
        return batch.append_column(name, column)
    out = batch.copy(deep=False)
    out[name] = list(emb)
    return out


# ------------------------------------------------------------------------------------------ threads

def _actor_cpus():
    """The CPUs Ray assigned this actor or task (at least one), or None outside a Ray worker (in a driver,
    whose threads are its own to choose)."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    cpus = context.get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus))


def _pin_threads(n):
    """Encode on n threads with BLAS limited to n (kept for the process's life: an actor is its own process)."""
    if n is None:
        return None
    if type(n) is not int or n < 1:
        raise InvalidArgumentError(f"num_threads must be a positive integer, got {n!r}")
    os.environ["NPMINILM_NUM_THREADS"] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")
