"""npminilm.util against brute-force NumPy: scores, top-k search and paraphrase mining, chunking invariance."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npminilm.util import (
    cos_sim,
    dot_score,
    normalize_embeddings,
    paraphrase_mining,
    paraphrase_mining_embeddings,
    semantic_search,
)

TOLERANCES = [(np.float64, 1e-12, 1e-12), (np.float32, 1e-5, 1e-5)]


def assert_close(actual, expected, atol, rtol, what="values"):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    bad = ~np.isclose(actual, expected, atol=atol, rtol=rtol)
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        diff = np.abs(actual.astype(np.float64) - expected)
        raise AssertionError(f"{what}: max abs diff {diff.max():.3g}; first bad indices {idx}")


def brute_force_search(q, c, top_k, scores_fn):
    scores = scores_fn(np.atleast_2d(q).astype(np.float64), np.atleast_2d(c).astype(np.float64))
    out = []
    for row in scores:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:top_k]
        out.append([(j, row[j]) for j in order])
    return out


def cos64(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def rand(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("na, nb, dim", [(1, 1, 1), (7, 13, 384), (31, 5, 17)])
def test_cos_sim_and_dot_score_match_formula(dtype, atol, rtol, na, nb, dim):
    rng = np.random.default_rng(na * 1000 + nb)
    a, b = rand(rng, na, dim, dtype=dtype), rand(rng, nb, dim, dtype=dtype)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cs, ds = cos_sim(a, b), dot_score(a, b)
    assert cs.dtype == dtype and ds.dtype == dtype
    assert_close(cs, cos64(a64, b64), atol, rtol, "cos_sim")
    assert_close(ds, a64 @ b64.T, atol * dim, rtol, "dot_score")


def test_one_dimensional_inputs_are_one_row_and_lists_work():
    rng = np.random.default_rng(0)
    a, b = rand(rng, 5), rand(rng, 3, 5)
    assert cos_sim(a, b).shape == (1, 3)
    assert cos_sim(a, a).shape == (1, 1)
    assert_close(cos_sim(a.tolist(), b.tolist()), cos_sim(a, b), 1e-12, 1e-12)
    assert_close(dot_score(list(b), a), b @ a[:, None], 1e-12, 1e-12)
    with pytest.raises(ValueError):
        cos_sim(np.zeros((2, 2, 2)), b)


def test_half_precision_and_integers_are_upcast():
    rng = np.random.default_rng(1)
    a = rand(rng, 4, 8).astype(np.float16)
    assert cos_sim(a, a).dtype == np.float32
    assert dot_score(np.arange(6).reshape(2, 3), np.ones((1, 3), dtype=np.int64)).tolist() == [[3.0], [12.0]]


def test_normalize_embeddings_unit_rows_and_zero_row_stays_zero():
    rng = np.random.default_rng(2)
    x = rand(rng, 6, 10)
    x[3] = 0.0
    y = normalize_embeddings(x)
    norms = np.linalg.norm(y, axis=1)
    assert_close(np.delete(norms, 3), np.ones(5), 1e-12, 1e-12)
    assert not np.isnan(y).any() and (y[3] == 0).all()
    assert normalize_embeddings(x[0]).shape == (10,)


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize(
    "nq, nc, top_k, qcs, ccs",
    [(1, 1, 10, 100, 500000), (3, 50, 5, 2, 7), (17, 101, 10, 4, 13), (5, 23, 40, 100, 3), (9, 64, 1, 1, 1)],
)
def test_semantic_search_matches_brute_force(dtype, atol, rtol, nq, nc, top_k, qcs, ccs):
    rng = np.random.default_rng(nq * 7 + nc)
    q, c = rand(rng, nq, 24, dtype=dtype), rand(rng, nc, 24, dtype=dtype)
    hits = semantic_search(q, c, query_chunk_size=qcs, corpus_chunk_size=ccs, top_k=top_k)
    expected = brute_force_search(q, c, top_k, cos64)
    assert len(hits) == nq
    for got, want in zip(hits, expected):
        assert len(got) == min(top_k, nc)
        assert all(set(h) == {"corpus_id", "score"} for h in got)
        assert all(type(h["corpus_id"]) is int and type(h["score"]) is float for h in got)
        scores = [h["score"] for h in got]
        assert scores == sorted(scores, reverse=True)
        assert [h["corpus_id"] for h in got] == [j for j, _ in want]
        assert_close(scores, [s for _, s in want], atol, rtol, "scores")


def test_semantic_search_dot_score_and_custom_function():
    rng = np.random.default_rng(3)
    q, c = rand(rng, 4, 6), rand(rng, 30, 6)
    hits = semantic_search(q, c, top_k=3, score_function=dot_score, corpus_chunk_size=7)
    want = brute_force_search(q, c, 3, lambda a, b: a @ b.T)
    assert [[h["corpus_id"] for h in row] for row in hits] == [[j for j, _ in row] for row in want]
    neg = semantic_search(q, c, top_k=3, score_function=lambda a, b: -dot_score(a, b))
    want = brute_force_search(q, c, 3, lambda a, b: -(a @ b.T))
    assert [[h["corpus_id"] for h in row] for row in neg] == [[j for j, _ in row] for row in want]


def test_semantic_search_edge_cases():
    rng = np.random.default_rng(4)
    c = rand(rng, 5, 3)
    one = semantic_search(c[2], c, top_k=2)  # a 1-D query is one query
    assert len(one) == 1 and one[0][0]["corpus_id"] == 2 and abs(one[0][0]["score"] - 1.0) < 1e-12
    assert semantic_search(c[:2], np.empty((0, 3)), top_k=3) == [[], []]
    assert semantic_search(np.empty((0, 3)), c) == []
    assert semantic_search(c, c, top_k=0) == [[] for _ in range(5)]
    # Exact ties go to the lower corpus id.
    dup = np.stack([c[0], c[1], c[0], c[0]])
    assert [h["corpus_id"] for h in semantic_search(c[0], dup, top_k=4)[0]] == [0, 2, 3, 1]
    with pytest.raises(ValueError):
        semantic_search(c, c, query_chunk_size=0)


@settings(max_examples=40, deadline=None)
@given(
    nq=st.integers(1, 12),
    nc=st.sampled_from([1, 2, 3, 7, 31, 64]),
    top_k=st.integers(1, 70),
    qcs=st.integers(1, 13),
    ccs=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_semantic_search_chunking_never_changes_the_result(nq, nc, top_k, qcs, ccs, seed):
    rng = np.random.default_rng(seed)
    q, c = rand(rng, nq, 5), rand(rng, nc, 5)
    chunked = semantic_search(q, c, query_chunk_size=qcs, corpus_chunk_size=ccs, top_k=top_k)
    whole = semantic_search(q, c, top_k=top_k)
    # BLAS may round a row differently inside a different-sized block: ids must agree, scores to the last bits.
    assert [[h["corpus_id"] for h in row] for row in chunked] == [[h["corpus_id"] for h in row] for row in whole]
    for got, want in zip(chunked, whole):
        assert_close([h["score"] for h in got], [h["score"] for h in want], 1e-13, 1e-13, "scores")


def brute_force_pairs(emb, top_k, max_pairs):
    """Each row's top_k neighbours (self excluded) as unordered pairs, best max_pairs of them."""
    s = cos64(emb, emb)
    pairs = {}
    for i in range(len(emb)):
        order = sorted((j for j in range(len(emb)) if j != i), key=lambda j: (-s[i, j], j))[:top_k]
        for j in order:
            pairs[(min(i, j), max(i, j))] = s[i, j]
    ranked = sorted(pairs.items(), key=lambda kv: -kv[1])[:max_pairs]
    return [[score, i, j] for (i, j), score in ranked]


@pytest.mark.parametrize(
    "n, top_k, max_pairs, qcs, ccs",
    [(2, 100, 500000, 5000, 100000), (23, 3, 500000, 4, 5), (40, 100, 17, 7, 9), (31, 1, 1000, 1, 1)],
)
def test_paraphrase_mining_embeddings_matches_brute_force(n, top_k, max_pairs, qcs, ccs):
    emb = rand(np.random.default_rng(n), n, 12)
    kwargs = dict(query_chunk_size=qcs, corpus_chunk_size=ccs, max_pairs=max_pairs, top_k=top_k)
    got = paraphrase_mining_embeddings(emb, **kwargs)
    want = brute_force_pairs(emb, top_k, max_pairs)
    assert [p[1:] for p in got] == [p[1:] for p in want]
    assert_close([p[0] for p in got], [p[0] for p in want], 1e-12, 1e-12, "pair scores")
    assert all(i < j for _, i, j in got)
    assert all(type(s) is float and type(i) is int for s, i, _ in got)


class FakeModel:
    """Stands in for an encoder: records how encode was called, returns fixed embeddings."""

    def __init__(self, embeddings):
        self.embeddings = embeddings
        self.calls = []

    def encode(self, sentences, **kwargs):
        self.calls.append((list(sentences), kwargs))
        return self.embeddings[: len(sentences)]


def test_paraphrase_mining_encodes_with_model_and_forwards_options():
    emb = rand(np.random.default_rng(5), 9, 8).astype(np.float32)
    model = FakeModel(emb)
    sentences = [f"s{i}" for i in range(9)]
    got = paraphrase_mining(model, sentences, batch_size=4, top_k=2, max_pairs=5)
    assert model.calls == [(sentences, {"show_progress_bar": False, "batch_size": 4})]
    assert [p[1:] for p in got] == [p[1:] for p in brute_force_pairs(emb.astype(np.float64), 2, 5)]
    assert paraphrase_mining(FakeModel(emb[:1]), ["only"]) == []


# ---------------------------------------------------------------------------------------------- distances


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("na, nb, dim", [(1, 1, 1), (7, 13, 384), (40, 3, 17)])
def test_distances_and_pairwise_match_formula(dtype, atol, rtol, na, nb, dim, monkeypatch):
    from npminilm import util

    monkeypatch.setattr(util, "_DIFF_ELEMENTS", 100)  # many row blocks
    rng = np.random.default_rng()
    a, b = rand(rng, na, dim, dtype=dtype), rand(rng, nb, dim, dtype=dtype)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = a64[:, None, :] - b64[None, :, :]
    assert_close(util.euclidean_sim(a, b), -np.sqrt((diff**2).sum(-1)), atol * dim, rtol, "euclidean_sim")
    assert_close(util.manhattan_sim(a, b), -np.abs(diff).sum(-1), atol * dim, rtol, "manhattan_sim")
    assert util.euclidean_sim(a, a).diagonal().max() == 0  # from differences: no cancellation
    m = min(na, nb)
    a, b, a64, b64 = a[:m], b[:m], a64[:m], b64[:m]
    assert_close(util.pairwise_cos_sim(a, b), np.diag(cos64(a64, b64)), atol, rtol, "pairwise_cos_sim")
    assert_close(util.pairwise_dot_score(a, b), (a64 * b64).sum(-1), atol * dim, rtol, "pairwise_dot_score")
    assert_close(util.pairwise_euclidean_sim(a, b), -np.linalg.norm(a64 - b64, axis=1), atol * dim, rtol,
                 "pairwise_euclidean_sim")
    assert_close(util.pairwise_manhattan_sim(a, b), -np.abs(a64 - b64).sum(1), atol * dim, rtol,
                 "pairwise_manhattan_sim")


# ---------------------------------------------------------------------------------------------- quantization


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), dim=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       calibrate=st.sampled_from(["self", "calibration", "ranges"]))
def test_scalar_quantization_buckets_each_value(n, dim, seed, calibrate):
    """uint8: x lies in its bucket [start + q step, start + (q + 1) step) (clipped at both ends); int8 is q - 128."""
    from npminilm.util import quantize_embeddings

    rng = np.random.default_rng(seed)
    x = rand(rng, n, dim, dtype=np.float32)
    calibration = rand(rng, 20, dim, dtype=np.float32)
    source = x if calibrate == "self" else calibration
    lo, hi = source.min(0).astype(np.float64), source.max(0).astype(np.float64)
    kwargs = {"self": {}, "calibration": {"calibration_embeddings": calibration},
              "ranges": {"ranges": np.vstack([lo, hi])}}[calibrate]
    q = quantize_embeddings(x, "uint8", **kwargs)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(quantize_embeddings(x, "int8", **kwargs).astype(int), q.astype(int) - 128)
    step = np.where(hi > lo, (hi - lo) / 255, 1)
    bucket_lo, bucket_hi = lo + q * step, lo + (q + 1) * step
    slack = 1e-3 * step  # float32 rounding of (x - start) / step, up to ~3e-5 of a step at 255
    inside = ((x >= bucket_lo - slack) | (q == 0)) & ((x < bucket_hi + slack) | (q == 255))
    assert inside.all(), np.argwhere(~inside)[:5]


def test_binary_quantization_packs_signs():
    from npminilm.util import quantize_embeddings

    rng = np.random.default_rng()
    x = rand(rng, 9, 37, dtype=np.float32)
    packed = quantize_embeddings(x, "ubinary")
    assert packed.shape == (9, 5) and packed.dtype == np.uint8
    np.testing.assert_array_equal(np.unpackbits(packed, axis=1)[:, :37], x > 0)
    signed = quantize_embeddings(x, "binary")
    assert signed.dtype == np.int8
    np.testing.assert_array_equal(signed.astype(int), packed.astype(int) - 128)
    np.testing.assert_array_equal(quantize_embeddings(x, "float32"), x)


@pytest.mark.parametrize("bad, words", [
    (dict(precision="int4"), "precision must be one of"), (dict(precision="int8", ranges=np.zeros((2, 3))), "shape"),
    (dict(precision="int8", x=np.ones((1, 5))), "more than one embedding"),
    (dict(precision="uint8", x=np.ones((2, 5), np.uint8)), "must be floats"),
])  # fmt: skip
def test_quantization_errors(bad, words):
    from npminilm.errors import InvalidArgumentError
    from npminilm.util import quantize_embeddings

    x = bad.pop("x", np.ones((4, 5), np.float32))
    with pytest.raises(InvalidArgumentError, match=words):
        quantize_embeddings(x, **bad)


@pytest.mark.parametrize("precision", ["ubinary", "binary", "uint8", "int8"])
def test_quantized_search_matches_brute_force(precision):
    """Without rescoring: Hamming distance (binary) or the quantized dot product, best first. With rescoring over
    every candidate (multiplier >= corpus / top_k): the float query against the unpacked / dequantized corpus."""
    from npminilm.util import quantize_embeddings, quantized_search

    rng = np.random.default_rng()
    queries, corpus = rand(rng, 3, 40, dtype=np.float32), rand(rng, 60, 40, dtype=np.float32)
    ranges = np.vstack([corpus.min(0), corpus.max(0)])
    kwargs = {} if precision.endswith("binary") else {"ranges": ranges}
    qc, qq = quantize_embeddings(corpus, precision, **kwargs), quantize_embeddings(queries, precision, **kwargs)
    if precision.endswith("binary"):
        bits = np.unpackbits(qc.view(np.uint8), axis=1)[:, :40].astype(np.float64)
        differ = np.unpackbits(qq.view(np.uint8), axis=1)[:, None, :] != np.unpackbits(qc.view(np.uint8), axis=1)[None]
        raw = -differ.sum(-1).astype(np.float64)  # minus the Hamming distance
        values = bits
    else:
        raw = qq.astype(np.float64) @ qc.astype(np.float64).T
        step = np.where(ranges[1] > ranges[0], (ranges[1] - ranges[0]).astype(np.float32) / 255, 1)
        values = (qc.astype(np.float64) + (128 if precision == "int8" else 0)) * step + ranges[0]
    plain = quantized_search(queries, qc, precision, top_k=5, rescore=False, **kwargs)
    rescored = quantized_search(queries, qc, precision, top_k=5, rescore_multiplier=12, **kwargs)
    for i in range(3):
        got = [hit["score"] for hit in plain[i]]
        expected = sorted(raw[i], reverse=True)[:5]
        assert_close(got, [-s for s in expected] if precision.endswith("binary") else expected, 1e-9, 0, "scores")
        exact = queries[i].astype(np.float64) @ values.T
        assert [hit["corpus_id"] for hit in rescored[i]] == list(np.argsort(-exact, kind="stable")[:5])
        assert_close([hit["score"] for hit in rescored[i]], np.sort(exact)[::-1][:5], 1e-9, 1e-9, "rescored")
