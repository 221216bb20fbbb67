"""Dev-set evaluation as sentence-transformers' evaluators report it: Spearman correlation of cosine similarity
with the gold scores (EmbeddingSimilarityEvaluator) for scored pairs, MRR@10 of each anchor's positive among
all the positives (InformationRetrievalEvaluator) for pairs."""

import numpy as np


def rankdata(x):
    """Ranks from 1, ties sharing their average rank (scipy.stats.rankdata's "average")."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0  # the mean of ranks s+1 .. e
    return ranks


def spearman(a, b):
    """Spearman's rank correlation: Pearson's correlation of the ranks."""
    ra, rb = rankdata(a) - (len(a) + 1) / 2.0, rankdata(b) - (len(b) + 1) / 2.0
    denom = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    return float(np.sum(ra * rb) / denom) if denom > 0 else 0.0


def evaluate(model, examples, batch_size=32):
    """{"metric": name, "score": value} on a dev set of scored pairs (Spearman) or pairs/triplets (MRR@10)."""
    first = model.encode(examples.columns[0], batch_size=batch_size, normalize_embeddings=True)
    second = model.encode(examples.columns[1], batch_size=batch_size, normalize_embeddings=True)
    if examples.scores is not None:
        cos = np.sum(first * second, axis=1)
        return {"metric": "spearman_cosine", "score": spearman(cos, examples.scores)}
    return {"metric": "mrr@10", "score": mrr_at_k(first, second, 10)}


def mrr_at_k(queries, corpus, k=10):
    """Mean reciprocal rank of corpus[i] for query i among all of corpus (unit rows), 0 past rank k."""
    scores = queries @ corpus.T  # (n, n)
    own = np.diagonal(scores)[:, None]
    rank = 1 + np.sum(scores > own, axis=1)  # ties rank the positive first
    return float(np.mean(np.where(rank <= k, 1.0 / rank, 0.0)))
