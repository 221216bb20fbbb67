"""Similarity scores, semantic search and paraphrase mining in NumPy, with sentence_transformers.util semantics."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import numpy as np

ScoreFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]

# torch.nn.functional.normalize clamps the norm at this value, so an all-zero row stays zero instead of NaN.
_NORM_EPS = 1e-12


def _as_float_array(a) -> np.ndarray:
    """Any list, array or CPU tensor as a float ndarray; sub-float32 and non-float dtypes become float32."""
    a = np.asarray(a)
    # sentence-transformers upcasts half precision because a float16 matmul rounds nearby scores into ties;
    # integers and bools become float32 too, torch's default float.
    if a.dtype.kind != "f" or a.dtype.itemsize < 4:
        a = a.astype(np.float32)
    return a


def _as_batch(a) -> np.ndarray:
    a = _as_float_array(a)
    if a.ndim == 1:
        a = a[None, :]  # [C] -> [1, C]
    if a.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D array of embeddings, got shape {a.shape}")
    return a


def normalize_embeddings(embeddings) -> np.ndarray:
    """Scale each row (the last axis) to unit L2 norm; zero rows stay zero, as in torch's F.normalize."""
    embeddings = _as_float_array(embeddings)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)  # [..., C] -> [..., 1]
    return embeddings / np.maximum(norms, _NORM_EPS).astype(embeddings.dtype)


def cos_sim(a, b) -> np.ndarray:
    """Cosine similarity matrix: ``res[i][j] = cos(a[i], b[j])``; 1-D inputs count as one row."""
    a, b = _as_batch(a), _as_batch(b)
    return normalize_embeddings(a) @ normalize_embeddings(b).T  # [Na, C] @ [C, Nb] -> [Na, Nb]


def dot_score(a, b) -> np.ndarray:
    """Dot-product matrix: ``res[i][j] = a[i] . b[j]``; 1-D inputs count as one row."""
    a, b = _as_batch(a), _as_batch(b)
    return a @ b.T  # [Na, C] @ [C, Nb] -> [Na, Nb]


def _scores(score_function: ScoreFunction, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # A user's score function may be torch-based (e.g. sentence_transformers.util.cos_sim): take what it returns.
    scores = score_function(a, b)
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu()
    return np.asarray(scores)


def _top_k_sorted(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest scores and their columns, best first; ties go to the lower column."""
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0:
        empty = np.empty((n_rows, 0), dtype=np.int64)
        return scores[:, :0], empty
    if k < n_cols:
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [N, M] -> [N, k], unordered
    else:
        idx = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    vals = np.take_along_axis(scores, idx, axis=1)
    # lexsort's last key is the primary one: score descending, then column ascending for ties.
    order = np.lexsort((idx, -vals), axis=1)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _merge_top_k(vals_a, idx_a, vals_b, idx_b, k: int) -> tuple[np.ndarray, np.ndarray]:
    vals = np.concatenate([vals_a, vals_b], axis=1)
    idx = np.concatenate([idx_a, idx_b], axis=1)
    best_vals, pos = _top_k_sorted(vals, k)
    return best_vals, np.take_along_axis(idx, pos, axis=1)


def semantic_search(
    query_embeddings,
    corpus_embeddings,
    query_chunk_size: int = 100,
    corpus_chunk_size: int = 500000,
    top_k: int = 10,
    score_function: ScoreFunction = cos_sim,
) -> list[list[dict[str, int | float]]]:
    """For each query, the ``top_k`` best corpus entries as ``{"corpus_id", "score"}`` dicts, best first.

    Chunks bound memory to ``query_chunk_size x corpus_chunk_size`` scores at a time and never change the result.
    """
    if query_chunk_size < 1 or corpus_chunk_size < 1:
        raise ValueError("query_chunk_size and corpus_chunk_size must be positive")
    queries = _as_batch(query_embeddings)
    corpus = _as_batch(corpus_embeddings)
    n_queries, n_corpus = len(queries), len(corpus)
    top_k = max(int(top_k), 0)
    if n_queries == 0:
        return []

    # Running best per query, merged after every corpus chunk; at most top_k columns.
    best_vals = np.empty((n_queries, 0), dtype=np.float64)
    best_idx = np.empty((n_queries, 0), dtype=np.int64)
    # cos_sim would renormalise the same corpus chunk once per query chunk; normalising each chunk once and taking
    # dot products gives the same scores.
    normalize_chunks = score_function is cos_sim

    for corpus_start in range(0, n_corpus, corpus_chunk_size):
        corpus_chunk = corpus[corpus_start : corpus_start + corpus_chunk_size]
        if normalize_chunks:
            corpus_chunk = normalize_embeddings(corpus_chunk)
        chunk_vals, chunk_idx = [], []
        for query_start in range(0, n_queries, query_chunk_size):
            query_chunk = queries[query_start : query_start + query_chunk_size]
            if normalize_chunks:
                scores = dot_score(normalize_embeddings(query_chunk), corpus_chunk)
            else:
                scores = _scores(score_function, query_chunk, corpus_chunk)
            vals, idx = _top_k_sorted(scores, top_k)  # [nq, nc] -> [nq, k]
            chunk_vals.append(vals)
            chunk_idx.append(idx + corpus_start)
        best_vals, best_idx = _merge_top_k(
            best_vals, best_idx, np.concatenate(chunk_vals), np.concatenate(chunk_idx), top_k
        )

    return [
        [{"corpus_id": int(i), "score": float(s)} for s, i in zip(vals, idx)]
        for vals, idx in zip(best_vals.tolist(), best_idx.tolist())
    ]


def paraphrase_mining(
    model,
    sentences: Sequence[str],
    show_progress_bar: bool = False,
    batch_size: int = 32,
    query_chunk_size: int = 5000,
    corpus_chunk_size: int = 100000,
    max_pairs: int = 500000,
    top_k: int = 100,
    score_function: ScoreFunction = cos_sim,
) -> list[list[float | int]]:
    """Encode ``sentences`` with ``model.encode`` and return the most similar pairs as ``[score, i, j]``, best first."""
    embeddings = model.encode(sentences, show_progress_bar=show_progress_bar, batch_size=batch_size)
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().cpu()
    return paraphrase_mining_embeddings(
        np.asarray(embeddings),
        query_chunk_size=query_chunk_size,
        corpus_chunk_size=corpus_chunk_size,
        max_pairs=max_pairs,
        top_k=top_k,
        score_function=score_function,
    )


def paraphrase_mining_embeddings(
    embeddings,
    query_chunk_size: int = 5000,
    corpus_chunk_size: int = 100000,
    max_pairs: int = 500000,
    top_k: int = 100,
    score_function: ScoreFunction = cos_sim,
) -> list[list[float | int]]:
    """The ``max_pairs`` best pairs ``[score, i, j]`` (i < j) among each row's ``top_k`` neighbours, best first.

    ``score_function`` is assumed symmetric: only one direction of each pair is kept.
    """
    if query_chunk_size < 1 or corpus_chunk_size < 1:
        raise ValueError("query_chunk_size and corpus_chunk_size must be positive")
    embeddings = _as_batch(embeddings)
    n = len(embeddings)
    top_k = max(int(top_k), 0)
    pairs: list[tuple[float, int, int]] = []  # min-heap, at most max_pairs entries
    queued = set()  # the (i, j) of every pair now in `pairs`
    min_score = float("-inf")

    for query_start in range(0, n, query_chunk_size):
        query_chunk = embeddings[query_start : query_start + query_chunk_size]
        # top_k + 1 because each row's best neighbour is usually itself; kept across corpus chunks so the
        # candidates do not depend on corpus_chunk_size.
        best_vals = np.empty((len(query_chunk), 0), dtype=np.float64)
        best_idx = np.empty((len(query_chunk), 0), dtype=np.int64)
        for corpus_start in range(0, n, corpus_chunk_size):
            scores = _scores(score_function, query_chunk, embeddings[corpus_start : corpus_start + corpus_chunk_size])
            vals, idx = _top_k_sorted(scores, top_k + 1)
            best_vals, best_idx = _merge_top_k(best_vals, best_idx, vals, idx + corpus_start, top_k + 1)

        for row, (vals, idx) in enumerate(zip(best_vals.tolist(), best_idx.tolist())):
            i = query_start + row
            neighbours = [(j, score) for j, score in zip(idx, vals) if j != i][:top_k]
            for j, score in neighbours:
                if score <= min_score:
                    continue
                pair = (i, j) if i < j else (j, i)
                if pair in queued:
                    continue
                queued.add(pair)
                if len(pairs) < max_pairs:
                    heapq.heappush(pairs, (score, *pair))
                else:
                    evicted = heapq.heappushpop(pairs, (score, *pair))
                    queued.discard(evicted[1:])
                    min_score = evicted[0]

    return sorted(([score, i, j] for score, i, j in pairs), key=lambda p: p[0], reverse=True)
