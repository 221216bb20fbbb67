"""Similarity scores, semantic search, paraphrase mining and embedding quantization in NumPy, with
sentence_transformers.util semantics."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import numpy as np

from .errors import InvalidArgumentError

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


_DIFF_ELEMENTS = 1 << 22  # a (rows, Nb, C) block of differences at a time


def _distances(a, b, reduce):
    """reduce(a[i] - b[j]) over the last axis for every (i, j), a block of rows of a at a time. From the
    differences, not |a|^2 - 2 a.b + |b|^2, which cancels to ~1e-4 instead of 0 for equal float32 rows."""
    a, b = _as_batch(a), _as_batch(b)
    out = np.empty((len(a), len(b)), np.result_type(a, b))
    rows = max(1, _DIFF_ELEMENTS // max(1, b.size))
    for s in range(0, len(a), rows):
        out[s:s + rows] = reduce(a[s:s + rows, None, :] - b[None, :, :])  # [r, 1, C] - [1, Nb, C] -> [r, Nb]
    return out


def manhattan_sim(a, b) -> np.ndarray:
    """Negative L1 distance matrix: ``res[i][j] = -sum |a[i] - b[j]|``."""
    return -_distances(a, b, lambda d: np.abs(d).sum(axis=-1))


def euclidean_sim(a, b) -> np.ndarray:
    """Negative L2 distance matrix: ``res[i][j] = -|a[i] - b[j]|``."""
    return -_distances(a, b, lambda d: np.sqrt(np.square(d).sum(axis=-1)))


def pairwise_cos_sim(a, b) -> np.ndarray:
    """``res[i] = cos(a[i], b[i])``."""
    return pairwise_dot_score(normalize_embeddings(a), normalize_embeddings(b))


def pairwise_dot_score(a, b) -> np.ndarray:
    """``res[i] = a[i] . b[i]``."""
    return (_as_float_array(a) * _as_float_array(b)).sum(axis=-1)


def pairwise_manhattan_sim(a, b) -> np.ndarray:
    """``res[i] = -sum |a[i] - b[i]|``."""
    return -np.abs(_as_float_array(a) - _as_float_array(b)).sum(axis=-1)


def pairwise_euclidean_sim(a, b) -> np.ndarray:
    """``res[i] = -|a[i] - b[i]|``."""
    return -np.linalg.norm(_as_float_array(a) - _as_float_array(b), axis=-1)


SIMILARITY_FUNCTIONS = {  # similarity_fn_name -> (matrix, pairwise), as sentence-transformers names them
    "cosine": (cos_sim, pairwise_cos_sim),
    "dot": (dot_score, pairwise_dot_score),
    "euclidean": (euclidean_sim, pairwise_euclidean_sim),
    "manhattan": (manhattan_sim, pairwise_manhattan_sim),
}


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


# ---------------------------------------------------------------------------------------------- quantization

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize_embeddings(embeddings, precision, ranges=None, calibration_embeddings=None) -> np.ndarray:
    """Embeddings (n, d) in a smaller type, as sentence_transformers.quantize_embeddings gives them.

    - "int8" / "uint8": each dimension cut into 255 equal steps between its min and max (`ranges`, shape (2, d);
      else those of `calibration_embeddings`; else of `embeddings` themselves, which needs more than one row):
      floor((x - min) / step), clipped to 0..255; int8 is that minus 128.
    - "ubinary": one bit per dimension (x > 0), packed 8 to a byte: (n, ceil(d / 8)) uint8; "binary" is the same
      bytes minus 128, as int8.
    """
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    x = np.asarray(embeddings)
    if x.dtype in (np.int8, np.uint8):
        raise InvalidArgumentError("embeddings to quantize must be floats, not int8 or uint8")
    if precision == "float32":
        return x.astype(np.float32)
    if precision.endswith("binary"):
        bits = np.packbits(x > 0, axis=-1)
        return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)
    starts, steps = _steps(_quantization_ranges(x, precision, ranges, calibration_embeddings))
    q = np.clip(np.floor((x - starts) / steps), 0, 255)
    return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)


def _quantization_ranges(x, precision, ranges, calibration_embeddings):
    if ranges is not None:
        ranges = np.asarray(ranges)
        if ranges.shape != (2, x.shape[-1]):
            raise InvalidArgumentError(f"ranges must have shape (2, {x.shape[-1]}), got {ranges.shape}")
        return ranges
    calibration = x if calibration_embeddings is None else np.asarray(calibration_embeddings)
    if calibration.ndim != 2 or len(calibration) < 2:
        raise InvalidArgumentError(f"{precision} needs the ranges of more than one embedding: pass ranges= or "
                                   "calibration_embeddings= from a representative set")
    return np.vstack((calibration.min(axis=0), calibration.max(axis=0)))


def _steps(ranges):
    """(starts, steps) of 255 steps per dimension; a dimension with no range gets step 1."""
    ranges = ranges.astype(np.float32, copy=False)
    steps = (ranges[1] - ranges[0]) / 255
    return ranges[0], np.where(steps == 0, 1, steps)


def _dequantize(q, precision, ranges):
    starts, steps = _steps(ranges)
    q = q.astype(np.float64) + (128 if precision == "int8" else 0)
    return q * steps + starts


def quantized_search(query_embeddings, corpus_embeddings, corpus_precision="ubinary", top_k=10, ranges=None,
                     calibration_embeddings=None, rescore=True, rescore_multiplier=2):
    """Exact search over a quantized corpus, as sentence-transformers' semantic_search_faiss / _usearch do it.

    The float queries are quantized like the corpus. Binary corpora are searched by Hamming distance (smaller is
    better), int8/uint8 ones by the dot product of the quantized vectors. With `rescore` (and float queries),
    top_k * rescore_multiplier candidates are rescored by the float query against each candidate (its bits 0/1,
    or its dequantized values) and the best top_k kept. Returns, per query, [{"corpus_id", "score"}, ...] best
    first: Hamming distances (ints) without rescoring on binary, dot products otherwise.
    """
    if corpus_precision not in PRECISIONS[1:]:
        raise InvalidArgumentError(f"corpus_precision must be one of {PRECISIONS[1:]}, got {corpus_precision!r}")
    if np.asarray(query_embeddings).dtype.kind != "f":
        raise InvalidArgumentError("query_embeddings must be floats: they are quantized here, and rescored")
    queries = _as_batch(query_embeddings)
    corpus = np.asarray(corpus_embeddings)
    if corpus.ndim != 2:
        raise InvalidArgumentError(f"corpus_embeddings must be (n, d), got shape {corpus.shape}")
    binary = corpus_precision.endswith("binary")
    if not binary and ranges is None:
        ranges = _quantization_ranges(queries, corpus_precision, None, calibration_embeddings)
    q = quantize_embeddings(queries, corpus_precision, ranges=ranges)
    k = min(top_k * (rescore_multiplier if rescore else 1), len(corpus))
    if binary:  # XOR of the bytes: int8's -128 flips the same top bit in both
        distance = np.bitwise_count(q.view(np.uint8)[:, None, :] ^ corpus.view(np.uint8)[None, :, :]).sum(-1)
        scores = -distance.astype(np.int64)  # (nq, n): larger is better
    else:
        scores = q.astype(np.float64) @ corpus.astype(np.float64).T
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (nq, k) candidates
    if rescore:
        picked = corpus[idx]  # (nq, k, bytes or d)
        if binary:
            values = np.unpackbits(picked.view(np.uint8), axis=-1)[..., :queries.shape[1]]
        else:
            values = _dequantize(picked, corpus_precision, ranges)
        rescored = np.einsum("qd,qkd->qk", queries.astype(np.float64), values.astype(np.float64))
        order = np.argsort(-rescored, axis=1, kind="stable")[:, :top_k]
        idx, best = np.take_along_axis(idx, order, 1), np.take_along_axis(rescored, order, 1)
    else:
        idx = idx[:, :top_k]
        best = -np.take_along_axis(scores, idx, 1) if binary else np.take_along_axis(scores, idx, 1)
    return [[{"corpus_id": int(i), "score": s.item()} for i, s in zip(row_idx, row_best)]
            for row_idx, row_best in zip(idx, best)]
