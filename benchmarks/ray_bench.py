"""Ray Data with npminilm in 2 actors x 1 CPU, and with sentence-transformers in the same actors, against a plain
in-process `encode(batch_size=32)` of the same texts; each actor's start-up time and RSS. Run by corpus_bench.py.

The cluster is real and on this machine: a head of 2 CPUs and a second node of 1 (one CPU left for Ray Data's
read tasks beside the two actors), everything on 127.0.0.1, started by Ray's cluster_utils and stopped at the end.
Each round runs, in turn: encode in this process, Ray Data + npminilm, Ray Data + sentence-transformers; the
Ray times include starting the actors (a fresh pool per run, as a job would), which is also timed alone.
"""

import os
import sys
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on loopback: tests/corpus/test_ray.py
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


class STEmbedder:
    """sentence-transformers in a Ray Data actor, as people write it: the model once per actor, torch on the
    actor's CPUs."""

    def __init__(self, model, column="text", num_threads=1):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(num_threads)
        self.model, self.column = SentenceTransformer(model, device="cpu"), column

    def __call__(self, batch):
        emb = self.model.encode(list(batch[self.column]), batch_size=32, convert_to_numpy=True)
        return {**batch, "embedding": emb.astype(np.float32)}


def _status_mb(field):
    return int([x for x in open("/proc/self/status") if x.startswith(field)][0].split()[1]) / 1024


def _probe(cls, kwargs, texts):
    """(seconds from asking for the actor to its first embedding, its RSS in MB after `texts`) for one actor."""
    import ray

    @ray.remote(num_cpus=1)
    class Probe:
        def __init__(self):
            self.embedder = cls(**kwargs)

        def run(self, batch):
            self.embedder({"text": np.array(batch, dtype=object)})
            return _status_mb("VmRSS"), _status_mb("VmHWM")

    start = time.perf_counter()
    probe = Probe.remote()
    ray.get(probe.run.remote(texts[:1]))
    startup = time.perf_counter() - start
    rss, hwm = ray.get(probe.run.remote(texts))
    ray.kill(probe)
    return startup, rss, hwm


def run(texts, model_dir, parquet, corpus_txt, rounds=2):
    """A dict of results: seconds per round for each engine, start-up seconds and RSS per actor, max diff.
    parquet: the texts (columns n and text) as a Parquet file or a folder of them; corpus_txt: the same texts a
    line each, for the `--ray` job (embed_corpus with a RayEncoder: a driver-fed pool of the same actors)."""
    import ray
    import ray.data
    from ray.cluster_utils import Cluster

    import npminilm
    from npminilm.corpus.job import embed_corpus
    from npminilm.corpus.ray_data import Embedder, RayEncoder, embed_dataset

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # STEmbedder: this file is not on the workers' path
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 2,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        encoder = npminilm.SentenceEncoder(model_dir)
        encoder.encode(texts[:64])
        times = {"encode": [], "ray-npminilm": [], "ray-st": [], "ray-cli": []}
        diffs = {}

        def ray_data(cls, kwargs):
            # the reader packs small files into one block (one actor's work): 40 blocks share them out
            ds = ray.data.read_parquet(str(parquet)).repartition(40)
            if cls is Embedder:
                ds = embed_dataset(ds, model=str(model_dir), concurrency=2, num_cpus=1, batch_size=256)
            else:
                ds = ds.map_batches(cls, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=2),
                                    num_cpus=1, batch_size=256)
            df = ds.select_columns(["n", "embedding"]).to_pandas()
            return np.stack(df["embedding"].to_list())[np.argsort(df["n"].to_numpy())]

        for _ in range(rounds):
            start = time.perf_counter()
            reference = encoder.encode(texts, batch_size=32)
            times["encode"].append(time.perf_counter() - start)
            for name, cls, kwargs in (("ray-npminilm", Embedder, {}),
                                      ("ray-st", STEmbedder, {"model": str(model_dir)})):
                start = time.perf_counter()
                emb = ray_data(cls, kwargs)
                times[name].append(time.perf_counter() - start)
                diffs[name] = float(np.abs(emb - reference).max())
            start = time.perf_counter()
            pool = RayEncoder(cluster.address, model=str(model_dir), actors=2)
            out = Path(corpus_txt).with_suffix(".ray.npy")
            embed_corpus(encoder, corpus_txt, out, chunk_size=10_000, encode=pool.encode)
            pool.close()
            times["ray-cli"].append(time.perf_counter() - start)
            diffs["ray-cli"] = float(np.abs(np.load(out) - reference).max())
            out.unlink()
        probes = {"ray-npminilm": _probe(Embedder, {"model": str(model_dir)}, texts[:2000]),
                  "ray-st": _probe(STEmbedder, {"model": str(model_dir)}, texts[:2000])}
        return {"times": times, "diffs": diffs, "probes": probes, "ray": ray.__version__}
    finally:
        ray.shutdown()
        cluster.shutdown()
