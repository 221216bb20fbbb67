"""Spearman and MRR@10 on hand-checkable cases (the comparison with scipy is in the oracle file)."""

import numpy as np

from npminilm.finetune.evaluation import mrr_at_k, rankdata, spearman


def test_ranks_average_ties():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_of_monotone_and_reversed_orders():
    rng = np.random.default_rng()
    x = rng.standard_normal(50)
    assert abs(spearman(x, np.exp(x)) - 1.0) < 1e-12
    assert abs(spearman(x, -x ** 3) + 1.0) < 1e-12
    assert spearman(np.ones(5), x[:5]) == 0.0


def test_mrr_counts_the_rank_of_each_positive():
    q = np.eye(3)
    corpus = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0]])  # query 1 finds its positive second
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    # query 0: corpus 0 (1.0) beats corpus 1 (0.994): rank 1; query 1: corpus 1 (0.110) is its best: rank 1;
    # query 2: rank 1. Then move query 1's positive below another document.
    assert abs(mrr_at_k(q, corpus, 10) - 1.0) < 1e-12
    corpus[1] = [0.0, -1.0, 0.0]  # query 1 now scores corpus 0 and 2 (0) above its positive (-1): rank 3
    assert abs(mrr_at_k(q, corpus, 10) - (1 + 1 / 3 + 1) / 3) < 1e-12
    assert abs(mrr_at_k(q, corpus, 2) - 2 / 3) < 1e-12
