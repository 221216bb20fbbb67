"""Ray Data and `npminilm encode --ray` on a real two-node Ray cluster on this machine (the `ray` extra): a 10,000-
text Parquet corpus embedded by Embedder actors equals SentenceEncoder.encode, every id exactly once, also when an
actor is killed mid-job; the batch formats Ray hands over; an actor's threads pinned to its CPUs."""

import os
import signal
import threading
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: see ray_cluster
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import ray  # noqa: E402
import ray.data  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from npminilm.corpus.job import embed_corpus  # noqa: E402
from npminilm.corpus.ray_data import Embedder, RayEncoder, embed_dataset  # noqa: E402
from npminilm.errors import DataError  # noqa: E402
from tests.cli.test_embed import assert_one_line_error, run_cli  # noqa: E402
from tests.helpers import assert_close  # noqa: E402

N_TEXTS = 10_000
WORDS = ["cat", "sits", "on", "the", "mat", "Ünïcödé", "東京", "quickly", "river", "model", "embeds", "text",
         "naïve"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray cluster of two nodes on this machine: a head of 2 CPUs and a second node of 1 (Ray's own
    cluster_utils starts each as processes: GCS, raylets, object stores, workers), with this process as the
    driver. Every node and the driver are on 127.0.0.1: Ray turns 127.0.0.1 into the machine's outward address
    unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with it every socket stays on loopback. The 3 CPUs leave one
    for Ray Data's read tasks beside two 1-CPU actors. Token authentication is off (RAY_AUTH_MODE=disabled): a
    loopback-only test cluster, whose nodes cluster_utils starts without a token that other drivers (the CLI's
    process) could find. Stopped after the module, also when a test fails."""
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 2,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        assert ray.cluster_resources()["CPU"] == 3 and len(ray.nodes()) == 2
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, encoder):
    """A 10,000-text Parquet corpus (ids and texts in random order) as one file and as ten, and its
    SentenceEncoder.encode embeddings."""
    rng = np.random.default_rng(int(np.random.SeedSequence().entropy % 2**31))
    texts = [" ".join(rng.choice(WORDS, rng.integers(1, 13))) for _ in range(N_TEXTS)]
    ids = [f"doc-{i}" for i in rng.permutation(N_TEXTS)]
    folder = tmp_path_factory.mktemp("ray")
    table = pa.table({"id": ids, "text": texts, "n": np.arange(N_TEXTS)})
    pq.write_table(table, folder / "corpus.parquet")  # one file, for the CLI
    (folder / "shards").mkdir()
    for k in range(10):  # ten files, as corpora are kept (Ray's reader packs small ones into one block, so the
        # tests repartition them: ten blocks, shared by the two actors)
        pq.write_table(table.slice(k * 1000, 1000), folder / "shards" / f"part-{k:02d}.parquet")
    return folder, ids, texts, encoder.encode(texts)


def by_id(ids, emb, expected_ids, expected):
    """Check every expected id is there exactly once and its embedding equals the reference."""
    assert len(ids) == len(expected_ids), f"{len(ids)} rows for {len(expected_ids)} texts"
    assert sorted(ids) == sorted(expected_ids), "ids lost or duplicated"
    order = {key: i for i, key in enumerate(ids)}
    assert_close(np.asarray(emb)[[order[key] for key in expected_ids]], expected, 1e-6, name="Ray vs encode")


def test_ray_data_parquet_corpus_equals_encode(ray_cluster, corpus, model_dir):
    path, ids, _, expected = corpus
    shards = ray.data.read_parquet(str(path / "shards")).repartition(10)
    ds = embed_dataset(shards, column="text", model=str(model_dir), concurrency=2, num_cpus=1, batch_size=500)
    df = ds.select_columns(["id", "embedding"]).to_pandas()
    by_id(df["id"].tolist(), np.stack(df["embedding"].to_list()), ids, expected)


def test_an_actor_killed_mid_job_is_retried(ray_cluster, corpus, model_dir, tmp_path):
    """An Embedder actor SIGKILLs itself on its third batch (once): Ray restarts it and retries the batch."""
    path, ids, _, expected = corpus
    marker = tmp_path / "killed"

    class DiesOnce(Embedder):  # defined here, so Ray ships it by value
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 3 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    ds = ray.data.read_parquet(str(path / "shards")).repartition(10).map_batches(
        DiesOnce, fn_constructor_kwargs={"model": str(model_dir)}, compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=1, batch_size=500)
    df = ds.select_columns(["id", "embedding"]).to_pandas()
    assert marker.exists(), "no actor was killed"
    by_id(df["id"].tolist(), np.stack(df["embedding"].to_list()), ids, expected)


def test_cli_ray_equals_the_local_command(ray_cluster, corpus, model_dir, tmp_path):
    """`npminilm encode --input --ray auto` (the cluster this module started) writes what the local run does."""
    path, ids, _, expected = corpus
    out = tmp_path / "out.parquet"
    result = run_cli("encode", "--model", str(model_dir), "--input", str(path / "corpus.parquet"), "--id-column",
                     "id", "--output", str(out), "--ray", "auto", "--ray-actors", "2", "--chunk-size", "3000",
                     env_extra={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"npminilm: {N_TEXTS} texts embedded into {out}"
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ids  # in input order, as the local command writes them
    by_id(ids, np.array(table.column("embedding").to_pylist(), np.float32), ids, expected)


def test_ray_encoder_survives_a_killed_actor(ray_cluster, corpus, encoder, model_dir, tmp_path):
    """The --ray job's actor pool: one actor is killed (ray.kill, restart allowed) while a chunk is on the
    cluster; the output is still complete, in order and equal to encode."""
    path, ids, texts, expected = corpus
    n = 4000
    pq.write_table(pa.table({"id": ids[:n], "text": texts[:n]}), tmp_path / "c.parquet")
    pool = RayEncoder(ray_cluster.address, model=str(model_dir), actors=2, rows_per_call=100)
    kills = []

    def encode(chunk):
        if not kills:  # the first chunk: kill actor 0 once its work is under way
            timer = threading.Timer(0.5, lambda: (ray.kill(pool._actors[0], no_restart=False),
                                                  kills.append(time.monotonic())))
            timer.start()
            emb = pool.encode(chunk)
            done = time.monotonic()
            timer.join()
            assert kills and kills[0] < done, "the actor was killed after the chunk was done"
            return emb
        return pool.encode(chunk)

    try:
        counts = embed_corpus(encoder, tmp_path / "c.parquet", tmp_path / "o.parquet", id_column="id",
                              chunk_size=2000, encode=encode)
    finally:
        pool.close()
    assert counts == {"rows": n, "skipped": 0} and len(kills) == 1
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column("id").to_pylist() == ids[:n]
    by_id(ids[:n], np.array(table.column("embedding").to_pylist(), np.float32), ids[:n], expected[:n])


@pytest.mark.parametrize("batch_format", ["numpy", "pandas", "pyarrow"])
def test_batch_formats_come_back_in_their_own_format(ray_cluster, encoder, model_dir, batch_format):
    texts = [" ".join(WORDS[i % 7:i % 7 + 1 + i % 5]) for i in range(120)]
    ds = ray.data.from_items([{"k": i, "body": t} for i, t in enumerate(texts)])
    seen = []

    def check(batch):  # the format the Embedder got back, by the next stage
        seen.append(type(batch).__module__.split(".")[0])
        return batch

    out = embed_dataset(ds, column="body", model=str(model_dir), output_column="vec", concurrency=1,
                        batch_size=32, batch_format=batch_format).map_batches(check, batch_format=batch_format)
    rows = sorted(out.take_all(), key=lambda r: r["k"])
    assert [r["body"] for r in rows] == texts
    assert_close(np.stack([np.asarray(r["vec"], np.float32) for r in rows]), encoder.encode(texts), 1e-6,
                 name=f"{batch_format} batches")


def test_embedder_outside_ray_in_each_format(encoder, model_dir):
    """The callable class itself, as map_batches calls it: dict of arrays, pandas and pyarrow in, same out."""
    import pandas as pd

    texts = ["a girl styles her hair", "東京 river", "x"]
    embedder = Embedder(model=str(model_dir), column="t")
    expected = encoder.encode(texts)
    out = embedder({"t": np.array(texts, dtype=object), "n": np.arange(3)})
    assert set(out) == {"t", "n", "embedding"} and out["embedding"].dtype == np.float32
    assert_close(out["embedding"], expected, 1e-6, name="numpy batch")
    df = embedder(pd.DataFrame({"t": texts}))
    assert isinstance(df, pd.DataFrame)
    assert_close(np.stack(df["embedding"].to_list()), expected, 1e-6, name="pandas batch")
    table = embedder(pa.table({"t": texts}))
    assert isinstance(table, pa.Table) and table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert_close(np.array(table.column("embedding").to_pylist()), expected, 1e-6, name="pyarrow batch")
    with pytest.raises(DataError, match=r"no column 't' \(it has \['body'\]\)"):
        embedder({"body": np.array(texts, dtype=object)})
    with pytest.raises(DataError, match="row 1 of a batch: 't' is NoneType, not a string"):
        embedder(pa.table({"t": ["ok", None]}))


def test_an_actor_encodes_on_its_own_cpus(ray_cluster, model_dir):
    @ray.remote(num_cpus=1)
    class Probe:
        def threads(self):
            from threadpoolctl import threadpool_info

            Embedder(model=str(model_dir))
            from npminilm.runtime.parallel import default_workers

            return default_workers(), [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    probe = Probe.remote()
    workers, blas = ray.get(probe.threads.remote())
    ray.kill(probe)
    assert workers == 1 and blas and set(blas) == {1}


def test_bad_rows_and_addresses(ray_cluster, model_dir, tmp_path):
    ds = ray.data.from_items([{"text": "fine"}, {"text": None}])
    with pytest.raises(Exception, match="not a string"):
        embed_dataset(ds, model=str(model_dir), concurrency=1).take_all()
    (tmp_path / "c.txt").write_text("one\ntwo\n")
    result = run_cli("encode", "--model", str(model_dir), "--input", str(tmp_path / "c.txt"), "--output",
                     str(tmp_path / "o.npy"), "--ray", "127.0.0.1:9")
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "no Ray cluster at '127.0.0.1:9'" in result.stderr
    assert not (tmp_path / "o.npy").exists()


def descendants(root):
    """The pids of `root`'s child processes, theirs, and so on (from /proc, Linux)."""
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent[int(pid)] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def listening_sockets(pids):
    """{(local address, port): process name} of the listening TCP sockets of processes `pids`, from /proc."""
    names = {}
    for pid in pids:
        try:
            name = open(f"/proc/{pid}/comm").read().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    names[link[8:-1]] = name
        except OSError:  # a process gone, or not ours to read
            continue
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host-endian
            ip = ".".join(map(str, words)) if width == 8 else (
                ".".join(map(str, words[12:])) if words[:12] == b"\0" * 10 + b"\xff\xff" else words.hex())
            if fields[9] in names:
                found[(ip, int(port, 16))] = names[fields[9]]
    return found


def test_the_cluster_listens_on_loopback_only(ray_cluster):
    ours = listening_sockets(descendants(os.getpid()))  # the cluster's processes are this one's children
    assert any(name == "gcs_server" for name in ours.values()) and any(name == "raylet" for name in ours.values())
    outward = {key: name for key, name in ours.items() if not key[0].startswith("127.")}
    assert not outward, f"Ray sockets listening beyond loopback: {outward}"
