"""npminilm.util against sentence_transformers.util on fresh random float64/float32 embeddings."""

import numpy as np
import pytest

import sentence_transformers.util as st_util
import torch

from npminilm import util

# (dtype, atol, rtol): float32 scores from two BLAS libraries differ in the last few bits.
TOLERANCES = [(np.float64, 1e-12, 1e-12), (np.float32, 2e-6, 1e-5)]
SHAPES = [(1, 1, 384), (7, 13, 384), (33, 101, 17), (5, 257, 3)]


def assert_close(actual, expected, atol, rtol, what="values"):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    bad = ~np.isclose(actual, expected, atol=atol, rtol=rtol)
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        worst = np.unravel_index(np.argmax(np.abs(actual - expected)), actual.shape)
        raise AssertionError(
            f"{what}: max abs diff {np.abs(actual - expected).max():.3g} at {list(worst)}; first bad indices {idx}"
        )


def fresh(seed, *shape, dtype):
    # Gaussian rows, not zeros: a zero row would make cosine meaningless and hide normalisation bugs.
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_same_ranking(ours, theirs, atol, what):
    """Same scores rank by rank; same ids too, except where two neighbouring scores are within tolerance."""
    assert len(ours) == len(theirs), f"{what}: {len(ours)} rows != {len(theirs)}"
    for q, (got, want) in enumerate(zip(ours, theirs)):
        assert len(got) == len(want), f"{what}[{q}]: {len(got)} hits != {len(want)}"
        scores = [h["score"] for h in want]
        assert_close([h["score"] for h in got], scores, atol, 0, f"{what}[{q}] scores")
        for r, (g, w) in enumerate(zip(got, want)):
            near_tie = any(abs(scores[r] - scores[o]) <= 2 * atol for o in (r - 1, r + 1) if 0 <= o < len(scores))
            assert near_tie or g["corpus_id"] == w["corpus_id"], f"{what}[{q}] rank {r}: id {g} != {w}"


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("na, nb, dim", SHAPES)
def test_cos_sim_and_dot_score_match(dtype, atol, rtol, na, nb, dim):
    a, b = fresh(na + 10 * nb, na, dim, dtype=dtype), fresh(na + 11 * nb, nb, dim, dtype=dtype)
    for ours, theirs in [(util.cos_sim, st_util.cos_sim), (util.dot_score, st_util.dot_score)]:
        got, want = ours(a, b), theirs(a, b).numpy()
        assert got.dtype == want.dtype
        assert_close(got, want, atol * np.sqrt(dim), rtol, ours.__name__)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_dimensional_and_list_inputs_match(dtype):
    a, b = fresh(1, 16, dtype=dtype), fresh(2, 4, 16, dtype=dtype)
    for ours, theirs in [(util.cos_sim, st_util.cos_sim), (util.dot_score, st_util.dot_score)]:
        assert_close(ours(a, b), theirs(a, b).numpy(), 1e-5, 1e-5, f"{ours.__name__} 1-D")
        assert_close(ours(list(b), a), theirs(list(b), a).numpy(), 1e-5, 1e-5, f"{ours.__name__} list")
    assert_close(
        util.normalize_embeddings(b), st_util.normalize_embeddings(torch.from_numpy(b)).numpy(), 1e-6, 1e-6, "norm"
    )


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize(
    "nq, nc, top_k, qcs, ccs",
    [(1, 10, 10, 100, 500000), (9, 200, 5, 4, 37), (40, 123, 11, 100, 500000), (3, 7, 20, 1, 2), (6, 300, 1, 5, 300)],
)
@pytest.mark.parametrize("score_name", ["cos_sim", "dot_score"])
def test_semantic_search_matches(dtype, atol, rtol, nq, nc, top_k, qcs, ccs, score_name):
    q, c = fresh(nq * 31 + nc, nq, 48, dtype=dtype), fresh(nq * 37 + nc, nc, 48, dtype=dtype)
    kwargs = dict(query_chunk_size=qcs, corpus_chunk_size=ccs, top_k=top_k)
    ours = util.semantic_search(q, c, score_function=getattr(util, score_name), **kwargs)
    theirs = st_util.semantic_search(
        torch.from_numpy(q), torch.from_numpy(c), score_function=getattr(st_util, score_name), **kwargs
    )
    scale = 1.0 if score_name == "cos_sim" else 48.0
    assert_same_ranking(ours, theirs, atol * scale, f"semantic_search/{score_name}")


def test_semantic_search_one_dimensional_query_matches():
    q, c = fresh(5, 32, dtype=np.float32), fresh(6, 50, 32, dtype=np.float32)
    ours = util.semantic_search(q, c, top_k=4)
    theirs = st_util.semantic_search(torch.from_numpy(q), torch.from_numpy(c), top_k=4)
    assert_same_ranking(ours, theirs, 2e-6, "semantic_search 1-D")


class _Fixed:
    """An encoder stand-in returning fixed embeddings, so both implementations mine the same vectors."""

    def __init__(self, embeddings):
        self.embeddings = embeddings

    def encode(self, sentences, convert_to_tensor=False, **kwargs):
        out = self.embeddings[: len(sentences)]
        return torch.from_numpy(out) if convert_to_tensor else out


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize(
    "n, top_k, max_pairs, qcs, ccs",
    [(2, 100, 500000, 5000, 100000), (57, 5, 500000, 8, 19), (80, 100, 40, 13, 100000), (33, 2, 1000, 1, 3)],
)
def test_paraphrase_mining_matches(dtype, atol, rtol, n, top_k, max_pairs, qcs, ccs):
    emb = fresh(n * 3 + top_k, n, 24, dtype=dtype)
    sentences = [f"text {i}" for i in range(n)]
    kwargs = dict(query_chunk_size=qcs, corpus_chunk_size=ccs, max_pairs=max_pairs, top_k=top_k)
    ours = util.paraphrase_mining(_Fixed(emb), sentences, **kwargs)
    theirs = st_util.paraphrase_mining(_Fixed(emb), sentences, **kwargs)
    assert len(ours) == len(theirs)
    assert_close([p[0] for p in ours], [p[0] for p in theirs], atol, 0, "pair scores")
    scores = [p[0] for p in theirs]
    for r, (got, want) in enumerate(zip(ours, theirs)):
        near_tie = any(abs(scores[r] - scores[o]) <= 2 * atol for o in (r - 1, r + 1) if 0 <= o < len(scores))
        assert near_tie or got[1:] == want[1:], f"pair rank {r}: {got} != {want}"


@pytest.mark.parametrize("precision", ["ubinary", "uint8"])
def test_quantized_search_equals_semantic_search_faiss(precision):
    """sentence-transformers' exact faiss search over a quantized corpus: with rescoring over every candidate the
    same ids and scores; without it the same scores (Hamming distances tie, so ids are compared for uint8 only)."""
    from sentence_transformers.quantization import quantize_embeddings, semantic_search_faiss

    from npminilm.util import quantized_search

    rng = np.random.default_rng()
    queries = rng.standard_normal((4, 40)).astype(np.float32)
    corpus = rng.standard_normal((int(rng.integers(30, 80)), 40)).astype(np.float32)
    kwargs = {} if precision == "ubinary" else {"ranges": np.vstack([corpus.min(0), corpus.max(0)])}
    quantized = quantize_embeddings(corpus, precision, **kwargs)
    for rescore, multiplier in ((True, 20), (False, 1)):
        theirs, _ = semantic_search_faiss(queries, corpus_embeddings=quantized, corpus_precision=precision, top_k=5,
                                          rescore=rescore, rescore_multiplier=multiplier, **kwargs)
        ours = quantized_search(queries, quantized, precision, top_k=5, rescore=rescore,
                                rescore_multiplier=multiplier, **kwargs)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose([h["score"] for h in a], [h["score"] for h in b], rtol=1e-5, atol=1e-5)
            if rescore or precision == "uint8":
                assert [h["corpus_id"] for h in a] == [h["corpus_id"] for h in b]
