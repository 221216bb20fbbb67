"""STSb test split: Spearman of cosine similarity reproduces the published 0.8203 for all-MiniLM-L6-v2."""

import csv

import numpy as np


def rankdata(x):
    """Average ranks with ties (what scipy.stats.rankdata does by default), in NumPy."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(a, b):
    ra, rb = rankdata(np.asarray(a, float)), rankdata(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_rankdata_handles_ties():
    assert rankdata(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_stsb_spearman(encoder, data_dir):
    with open(data_dir / "stsb" / "stsb-en-test.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1379
    a = encoder.encode([r[0] for r in rows], batch_size=64)
    b = encoder.encode([r[1] for r in rows], batch_size=64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rho = spearman(cos, [float(r[2]) for r in rows])
    print(f"STSb test Spearman (cosine): {rho:.7f}")
    assert rho >= 0.8200, rho
    assert abs(rho - 0.8203247) < 5e-5, rho
