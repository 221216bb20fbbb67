"""`npminilm serve` started as a subprocess on 127.0.0.1 and called by real clients: the official `openai` client,
urllib, curl. Results equal SentenceEncoder.encode to the bit (the server runs the deterministic engine); every
error has its status and an OpenAI-style body naming the problem."""

import base64
import concurrent.futures
import http.client
import json
import re
import socket
import subprocess
import sys

import numpy as np
import openai
import pytest

from npminilm import SentenceEncoder
from npminilm.finetune.data import read_examples
from tests.conftest import ROOT
from tests.encoder.test_cross_encoder import write_cross_encoder
from tests.serve.server_process import ServerProcess

MAX_INPUTS = 64


@pytest.fixture(scope="module")
def reranker_dir(model_dir, tmp_path_factory):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    return write_cross_encoder(tmp_path_factory.mktemp("reranker") / "ce", model_dir, 1, seed)


@pytest.fixture(scope="module")
def server(model_dir, reranker_dir, tmp_path_factory):
    with ServerProcess(model_dir, "--max-inputs", str(MAX_INPUTS), "--max-batch-tokens", "2048",
                       "--reranker", str(reranker_dir), log_dir=tmp_path_factory.mktemp("serve")) as proc:
        yield proc


@pytest.fixture(scope="module")
def reference(model_dir):
    return SentenceEncoder(model_dir, deterministic=True)


@pytest.fixture(scope="module")
def sentences(data_dir):
    pairs = read_examples(data_dir / "stsb" / "stsb-en-test.csv").columns
    return sorted(set(pairs[0]) | set(pairs[1]))


@pytest.fixture
def draw(sentences):
    """Fresh random STSb sentences each run (the seed is in the assertion message through `rng`)."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)

    def texts(n):
        return [sentences[i] for i in rng.choice(len(sentences), n, replace=False)]

    texts.seed, texts.rng = seed, rng
    return texts


def client(server, key="unused"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


# ---------------------------------------------------------------------------------------------- the openai client


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_client_equals_encode(server, reference, draw, encoding_format):
    """Unasked, the client asks for base64 and decodes it; asked for base64, it hands the string over."""
    texts = draw(int(draw.rng.integers(1, 20))) + ["  Ünïcødé and emoji 🙂 text, with CJK 漢字.  "]
    fmt = {} if encoding_format is None else {"encoding_format": encoding_format}
    out = client(server).embeddings.create(model="all-MiniLM-L6-v2", input=texts, **fmt)
    if encoding_format == "base64":
        emb = np.stack([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in out.data])
    else:
        emb = np.array([d.embedding for d in out.data], dtype=np.float32)
    np.testing.assert_array_equal(emb, reference.encode(texts), err_msg=f"seed {draw.seed}")
    assert [d.index for d in out.data] == list(range(len(texts)))
    assert out.model == "all-MiniLM-L6-v2"
    tokens = sum(len(r) for r in reference.token_ids(texts))
    assert out.usage.prompt_tokens == out.usage.total_tokens == tokens


def test_raw_base64_is_little_endian_float32(server, reference, draw):
    texts = draw(3)
    status, _, body = server.post("/v1/embeddings", {"input": texts, "encoding_format": "base64"})
    assert status == 200
    emb = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in body["data"]])
    np.testing.assert_array_equal(emb, reference.encode(texts))


def test_single_string_and_dimensions(server, reference, draw):
    text = draw(1)[0]
    one = client(server).embeddings.create(model="m", input=text)
    np.testing.assert_array_equal(np.float32(one.data[0].embedding), reference.encode(text))
    d = int(draw.rng.integers(1, reference.dim))
    cut = client(server).embeddings.create(model="m", input=[text], dimensions=d, encoding_format="float")
    raw = reference.encode(text, normalize_embeddings=False).astype(np.float64)[:d]
    got = np.array(cut.data[0].embedding)
    assert got.shape == (d,)
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw), atol=1e-6, err_msg=f"dimensions={d}")


def test_token_id_inputs_equal_texts(server, reference, draw):
    texts = draw(4)
    _, _, tokens = server.post("/tokenize", {"inputs": texts, "add_special_tokens": False})
    ids = [[t["id"] for t in row] for row in tokens]
    out = client(server).embeddings.create(model="m", input=ids, encoding_format="float")
    np.testing.assert_array_equal(np.float32([d.embedding for d in out.data]), reference.encode(texts))
    assert out.usage.prompt_tokens == sum(len(i) + 2 for i in ids)
    one = client(server).embeddings.create(model="m", input=ids[0], encoding_format="float")  # one text as ids
    np.testing.assert_array_equal(np.float32(one.data[0].embedding), reference.encode(texts[0]))


def test_over_long_text_truncated_on_request(server, reference, draw):
    long = " ".join(draw(40))  # far past 256 tokens
    out = client(server).embeddings.create(model="m", input=[long], extra_body={"truncate": True})
    np.testing.assert_array_equal(np.float32(out.data[0].embedding), reference.encode(long))
    assert out.usage.prompt_tokens == reference.max_seq_length
    with pytest.raises(openai.APIStatusError) as err:
        client(server).embeddings.create(model="m", input=["short", long])
    assert err.value.status_code == 413 and "input[1]" in err.value.message


def test_concurrent_requests_are_batched_and_bit_identical(server, reference, draw):
    """Many clients at once: requests merge into shared batches (the metrics show more texts than batches), and
    one text comes back the same bytes wherever it sat, next to whatever texts."""
    probe = draw(1)[0]
    requests = []
    for _ in range(48):
        others = draw(int(draw.rng.integers(0, 12)))
        others.insert(int(draw.rng.integers(0, len(others) + 1)), probe)
        requests.append(others)
    before = _batch_counts(server)

    def send(texts):
        return server.post("/v1/embeddings", {"input": texts, "encoding_format": "base64"})

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(send, requests))
    expected = reference.encode(probe)
    for texts, (status, _, body) in zip(requests, answers):
        assert status == 200
        emb = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in body["data"]]
        np.testing.assert_array_equal(emb[texts.index(probe)], expected, err_msg=f"seed {draw.seed}")
    batches, texts = (after - b for after, b in zip(_batch_counts(server), before))
    assert texts == sum(len(r) for r in requests)
    assert batches < len(requests), f"{len(requests)} requests ran as {batches} batches: none were merged"


def _batch_counts(server):
    """(batches, texts) so far, from /metrics."""
    _, _, text = server.get("/metrics")
    count = float(re.search(r"^npminilm_batch_inputs_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^npminilm_batch_inputs_sum (\S+)$", text, re.M).group(1))
    return count, total


# ---------------------------------------------------------------------------------------------- TEI's endpoints


def test_tei_embed(server, reference, draw):
    texts = draw(5)
    status, _, body = server.post("/embed", {"inputs": texts})
    assert status == 200
    np.testing.assert_array_equal(np.float32(body), reference.encode(texts))
    _, _, raw = server.post("/embed", {"inputs": texts[0], "normalize": False})
    np.testing.assert_array_equal(np.float32(raw), reference.encode(texts[:1], normalize_embeddings=False))


def test_tei_similarity_and_tokenize(server, reference, draw):
    source, *others = draw(4)
    status, _, scores = server.post("/similarity", {"inputs": {"source_sentence": source, "sentences": others}})
    assert status == 200
    emb = reference.encode([source, *others]).astype(np.float64)
    np.testing.assert_allclose(scores, emb[1:] @ emb[0], atol=1e-6)

    status, _, tokens = server.post("/tokenize", {"inputs": others[0]})
    assert status == 200 and len(tokens) == 1
    ids = reference.tokenize([others[0]])["input_ids"][0]
    assert [t["id"] for t in tokens[0]] == ids.tolist()
    assert [t["text"] for t in tokens[0]] == reference.tokenizer.convert_ids_to_tokens(ids)
    assert [t["special"] for t in tokens[0]] == [True] + [False] * (len(ids) - 2) + [True]


def test_models_health_metrics(server):
    status, _, models = server.get("/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["all-MiniLM-L6-v2"]
    assert [m.id for m in client(server).models.list()] == ["all-MiniLM-L6-v2"]
    assert server.get("/health")[:1] == (200,)
    status, headers, text = server.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("npminilm_requests_total", "npminilm_inputs_total", "npminilm_tokens_total",
                 "npminilm_batch_inputs_bucket", "npminilm_queue_depth", "npminilm_request_duration_seconds_bucket"):
        assert name in text, name


def test_tei_rerank(server, reranker_dir, draw):
    """TEI's /rerank: the cross-encoder's scores (sigmoid, or raw logits), best first, texts when asked."""
    from npminilm import CrossEncoder

    ce = CrossEncoder(reranker_dir)
    # pairs that fit the reranker's 64 positions (8 sentences drawn as they come held a pair too long 2.4% of the
    # time, and the server answered 413); the 413 itself is checked below
    query, *pool = draw(40)
    texts = [t for t in pool if len(ce.tokenizer.encode(query, pair=t)) <= ce.max_length][:7]
    assert len(texts) == 7, (draw.seed, query)
    status, _, hits = server.post("/rerank", {"query": query, "texts": texts, "return_text": True})
    assert status == 200
    expected = ce.rank(query, texts)
    assert [h["index"] for h in hits] == [e["corpus_id"] for e in expected]
    assert [h["text"] for h in hits] == [texts[e["corpus_id"]] for e in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [e["score"] for e in expected], atol=1e-6)
    status, _, raw = server.post("/rerank", {"query": query, "texts": texts, "raw_scores": True})
    logits = ce.predict([(query, t) for t in texts], activation_fn="identity")
    assert status == 200 and "text" not in raw[0]
    np.testing.assert_allclose([h["score"] for h in raw], logits[[h["index"] for h in raw]], atol=1e-5)
    long = " ".join(draw(40))
    status, _, answer = server.post("/rerank", {"query": query, "texts": ["short", long]})
    assert status == 413 and "texts[1]" in answer["error"]["message"]
    assert server.post("/rerank", {"query": query, "texts": [long], "truncate": True})[0] == 200


def test_prompts_as_encode_applies_them(model_dir, tmp_path):
    """A model with a default prompt that pooling leaves out: the server embeds as encode does, the default
    prompt unasked, another by TEI's prompt_name; an unknown prompt_name is a 400."""
    from tests.encoder.test_sentence_encoder_features import PROMPT, TEXTS, with_st_config
    from tests.helpers import write_random_folder

    folder = with_st_config(write_random_folder(tmp_path / "m", model_dir, normalize=True), include_prompt=False,
                            prompts={"query": PROMPT, "passage": "passage: "}, default_prompt_name="query")
    reference = SentenceEncoder(folder, deterministic=True)
    with ServerProcess(folder, log_dir=tmp_path) as server:
        _, _, body = server.post("/v1/embeddings", {"input": TEXTS, "encoding_format": "base64", "truncate": True})
        emb = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in body["data"]])
        np.testing.assert_array_equal(emb, reference.encode(TEXTS))
        _, _, body = server.post("/embed", {"inputs": TEXTS, "prompt_name": "passage", "truncate": True})
        np.testing.assert_array_equal(np.float32(body), reference.encode(TEXTS, prompt_name="passage"))
        status, _, answer = server.post("/embed", {"inputs": TEXTS, "prompt_name": "document2"})
        assert status == 400 and answer["error"]["param"] == "prompt_name"
        assert "unknown prompt_name 'document2'" in answer["error"]["message"]


# ---------------------------------------------------------------------------------------------- bad input

BAD_REQUESTS = [
    # (path, body as bytes or JSON, status, words of the message, param)
    ("/v1/embeddings", b"{not json", 400, "not valid JSON", None),
    ("/v1/embeddings", b"\xff\xfe", 400, "not valid JSON", None),
    ("/v1/embeddings", [1, 2], 400, "must be a JSON object", None),
    ("/v1/embeddings", {"model": "m"}, 400, "'input' is required", "input"),
    ("/v1/embeddings", {"input": 5}, 400, "input must be", "input"),
    ("/v1/embeddings", {"input": None}, 400, "input must be", "input"),
    ("/v1/embeddings", {"input": []}, 400, "must not be empty", "input"),
    ("/v1/embeddings", {"input": ["fine", "   "]}, 400, "input[1] is empty", "input"),
    ("/v1/embeddings", {"input": ["fine", 3.5]}, 400, "input[1] must be a string", "input"),
    ("/v1/embeddings", {"input": [[101, 2], []]}, 400, "input[1] must be a non-empty list", "input"),
    ("/v1/embeddings", {"input": [[5, 10 ** 9]]}, 400, "outside the vocabulary", "input"),
    ("/v1/embeddings", {"input": "x", "model": 3}, 400, "model must be a string", "model"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 400, "encoding_format", "encoding_format"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 400, "dimensions must be", "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": 385}, 400, "from 1 to 384", "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": "8"}, 400, "dimensions must be", "dimensions"),
    ("/v1/embeddings", {"input": "x", "truncate": "yes"}, 400, "truncate must be true or false", "truncate"),
    ("/v1/embeddings", {"input": ["x"] * (MAX_INPUTS + 1)}, 413, f"limit of {MAX_INPUTS}", "input"),
    ("/v1/embeddings", {"input": ["word " * 400]}, 413, "longer than the model's 256 tokens", "input"),
    ("/embed", {"inputs": [[101, 102]]}, 400, "inputs[0] must be a string", "inputs"),
    ("/embed", {"inputs": "x", "normalize": 1}, 400, "normalize must be true or false", "normalize"),
    ("/embed", {"inputs": "x", "prompt_name": 1}, 400, "prompt_name must be a string", "prompt_name"),
    ("/embed", {"inputs": ["word " * 400], "truncate": False}, 413, "send truncate: true", "inputs"),
    ("/similarity", {"inputs": ["a", "b"]}, 400, "source_sentence and sentences", "inputs"),
    ("/similarity", {"inputs": {"source_sentence": ["a"], "sentences": ["b"]}}, 400, "must be a string",
     "inputs.source_sentence"),
    ("/tokenize", {"inputs": {"a": 1}}, 400, "inputs must be a string or a list of strings", "inputs"),
    ("/rerank", {"texts": ["a"]}, 400, "'query' is required", "query"),
    ("/rerank", {"query": ["q"], "texts": ["a"]}, 400, "query must be a string", "query"),
    ("/rerank", {"query": "q", "texts": "a"}, 400, "texts must be a list of strings", "texts"),
    ("/rerank", {"query": "q", "texts": []}, 400, "texts must not be empty", "texts"),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, 400, "raw_scores must be true or false",
     "raw_scores"),
    ("/rerank", {"query": "q", "texts": ["a"] * (MAX_INPUTS + 1)}, 413, f"limit of {MAX_INPUTS}", "texts"),
]


@pytest.mark.parametrize("path, body, status, words, param", BAD_REQUESTS)
def test_bad_requests(server, path, body, status, words, param):
    got, _, answer = server.post(path, body if not isinstance(body, bytes) else None,
                                 raw=body if isinstance(body, bytes) else None)
    assert got == status, answer
    error = answer["error"]
    assert words in error["message"], error
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_body_too_large_wrong_method_unknown_path(server):
    # the answer comes before the body is read (the server does not take 9 MiB in to refuse it)
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    connection.putrequest("POST", "/v1/embeddings")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(9 << 20))
    connection.endheaders(b'{"input": "aaaa')
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 413 and "limit of 8388608" in answer["error"]["message"]
    status, _, answer = server.get("/v1/embeddings")
    assert status == 405 and answer["error"]["message"] == "GET /v1/embeddings: Method Not Allowed"
    status, _, answer = server.get("/v2/nothing")
    assert status == 404 and answer["error"]["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError, match="input must not be empty"):
        client(server).embeddings.create(model="m", input=[])


# ---------------------------------------------------------------------------------------------- server options


def test_api_key(model_dir, tmp_path):
    with ServerProcess(model_dir, env={"NPMINILM_API_KEY": "s3cret"}, log_dir=tmp_path) as server:
        assert "s3cret" not in " ".join(server.proc.args)
        for headers, reason in (({}, "no API key"), ({"Authorization": "Bearer wrong"}, "wrong API key")):
            status, _, answer = server.post("/v1/embeddings", {"input": "x"}, headers=headers)
            assert status == 401 and reason in answer["error"]["message"]
            assert answer["error"]["type"] == "authentication_error"
        assert server.get("/metrics")[0] == 401
        assert server.get("/health")[0] == 200  # liveness probes need no key
        status, _, answer = server.post("/rerank", {"query": "q", "texts": ["a"]},
                                        headers={"Authorization": "Bearer s3cret"})
        assert status == 404 and "start it with --reranker" in answer["error"]["message"]
        with pytest.raises(openai.AuthenticationError):
            client(server, "wrong").embeddings.create(model="m", input="x")
        out = client(server, "s3cret").embeddings.create(model="m", input="x")
        assert len(out.data[0].embedding) == 384


def test_full_queue_is_503_with_retry_after(model_dir, tmp_path, sentences):
    """A queue of 2 requests under 24 concurrent ones: the rest get 503 and Retry-After, nothing else fails, and
    the server serves again afterwards."""
    with ServerProcess(model_dir, "--max-queued-requests", "2", log_dir=tmp_path) as server:
        body = {"input": sentences[:48]}
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: server.post("/v1/embeddings", body), range(24)))
        statuses = [status for status, _, _ in answers]
        assert set(statuses) == {200, 503}, statuses
        for status, headers, answer in answers:
            if status == 503:
                assert headers["retry-after"] == "1" and answer["error"]["type"] == "server_overloaded"
        assert server.post("/v1/embeddings", {"input": "again"})[0] == 200


def test_sigterm_drains_in_flight_requests(model_dir, tmp_path, sentences, reference):
    server = ServerProcess(model_dir, "--max-batch-tokens", "512", log_dir=tmp_path)
    texts = [" ".join(sentences[i:i + 12]) for i in range(0, 12 * 64, 12)]  # 64 texts of 150-256 tokens
    body = {"input": texts, "encoding_format": "base64", "truncate": True}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.post, "/v1/embeddings", body)
        _wait_for_queued(server, pending)
        server.proc.send_signal(15)
        status, _, body = pending.result(timeout=120)
    assert server.stop() == 0, server.log()
    assert status == 200
    emb = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in body["data"]])
    np.testing.assert_array_equal(emb, reference.encode(texts))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5).close()
    assert "Traceback" not in server.log()


def _wait_for_queued(server, pending, timeout=30):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pending.done():
        _, _, text = server.get("/metrics")
        if float(re.search(r"^npminilm_queue_requests (\S+)$", text, re.M).group(1)) >= 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"the request never waited in the queue: {pending.result() if pending.done() else ''}")


@pytest.mark.parametrize("args, words", [(["--port", "70000"], "port must be 0 to 65535"),
                                         (["--max-batch-tokens", "100"], "must hold one text"),
                                         (["--max-wait-ms", "-1"], "max_wait_ms must be")])
def test_bad_options_are_one_line(model_dir, args, words):
    run = subprocess.run([sys.executable, "-m", "npminilm", "serve", "--model", str(model_dir), *args],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode in (1, 2) and run.stdout == ""
    assert run.stderr.count("\n") == 1 and words in run.stderr, run.stderr


def test_address_in_use_is_one_line(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "npminilm", "serve", "--model", str(model_dir), "--port",
                              str(port)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].startswith("npminilm: error: Address already in use"), run.stderr


# ---------------------------------------------------------------------------------------------- the README


def test_readme_curl_examples(server, reference):
    """Every curl line of the README's serve section runs against the test server and answers JSON."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Serve", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in
                block.replace("\\\n", " ").splitlines() if line.startswith("curl ")]
    assert len(commands) >= 4, commands
    for command in commands:
        command = command.replace("http://127.0.0.1:8080", server.url)
        run = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, (command, run.stderr)
        if "/metrics" not in command:
            answer = json.loads(run.stdout)
            assert "error" not in answer, (command, answer)
