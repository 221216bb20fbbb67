"""Spearman against scipy, with ties."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from npminilm.finetune.evaluation import spearman


@settings(max_examples=50)
@given(seed=st.integers(0, 2**31), n=st.integers(3, 200), ties=st.booleans())
def test_spearman_matches_scipy(seed, n, ties):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, n).astype(float) if ties else rng.standard_normal(n)
    b = a + rng.standard_normal(n)
    if np.ptp(a) == 0:
        return
    assert abs(spearman(a, b) - spearmanr(a, b).statistic) < 1e-12
