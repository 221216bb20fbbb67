"""Losses on cases worked out by hand: uniform logits, ignored rows, orthogonal and identical embeddings."""

import math

import numpy as np
import pytest

from npminilm.nn.losses import (
    cosine_mse_backward,
    cosine_mse_forward,
    cross_entropy_backward,
    cross_entropy_forward,
    mnrl_backward,
    mnrl_forward,
)
from tests.helpers import assert_close


@pytest.mark.parametrize("V", [1, 2, 7, 30522])
def test_uniform_logits_cost_log_V(V):
    logits = np.full((3, V), 2.5)
    loss, cache = cross_entropy_forward(logits, np.array([0, V - 1, V // 2]))
    assert loss.shape == () and math.isclose(float(loss), math.log(V), rel_tol=1e-12, abs_tol=1e-15)
    # dlogits = (softmax - onehot) / N: 1 / (N V) everywhere, minus 1 / N at each target
    (d,) = cross_entropy_backward(np.float64(1.0), cache)
    expected = np.full((3, V), 1.0 / (3 * V))
    expected[[0, 1, 2], [0, V - 1, V // 2]] -= 1.0 / 3
    assert_close(d, expected, atol=1e-15, name="dlogits")


def test_ignored_rows_count_nowhere_and_3d_logits_work():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 5))
    targets = np.array([[1, -100, 4], [-100, -100, 0]])
    loss, cache = cross_entropy_forward(logits, targets)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert math.isclose(float(loss), -(logp[0, 0, 1] + logp[0, 2, 4] + logp[1, 2, 0]) / 3, rel_tol=1e-13)
    (d,) = cross_entropy_backward(np.float64(2.0), cache)
    assert d.shape == logits.shape and not d[0, 1].any() and not d[1, :2].any()
    assert_close(d.sum(axis=-1), np.zeros((2, 3)), atol=1e-15, name="rows of dlogits sum to 0")


def test_a_confident_right_answer_costs_nothing_and_a_huge_logit_stays_finite():
    loss, _ = cross_entropy_forward(np.array([[1e4, 0.0, -1e4]]), np.array([0]))
    assert float(loss) == 0.0
    loss, _ = cross_entropy_forward(np.array([[1e4, 0.0, -1e4]]), np.array([2]))
    assert float(loss) == 2e4


def test_all_rows_ignored_is_nan_with_a_zero_gradient_as_in_torch():
    loss, cache = cross_entropy_forward(np.zeros((2, 3)), np.array([-100, -100]))
    assert np.isnan(loss)
    assert not cross_entropy_backward(np.float64(1.0), cache)[0].any()


def test_targets_out_of_range_are_refused():
    with pytest.raises(ValueError, match="targets must lie in"):
        cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        cross_entropy_forward(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_mnrl_with_orthogonal_embeddings():
    # a_i = p_i = e_i (scaled, to check the normalisation): scores are s on the diagonal, 0 elsewhere, so each row
    # costs -log(e^s / (e^s + B' - 1)) = log(1 + (B' - 1) e^-s)
    B, extra, C, s = 3, 2, 6, 20.0
    anchors = np.eye(C)[:B] * np.array([[1.0], [5.0], [0.25]])
    positives = np.eye(C)[: B + extra] * 3.0
    loss, cache = mnrl_forward(anchors, positives, scale=s)
    # log-sum-exp forms log(1 + 8e-9), so the answer is good to float64's 1e-16 absolute, not relative
    assert math.isclose(float(loss), math.log1p((B + extra - 1) * math.exp(-s)), rel_tol=0, abs_tol=1e-15)
    loss1, _ = mnrl_forward(anchors, positives, scale=1.0)
    assert math.isclose(float(loss1), math.log1p((B + extra - 1) * math.exp(-1.0)), rel_tol=1e-12)
    # moving a_i along itself or p_j along itself changes no cosine: the gradient is orthogonal to each row
    da, dp = mnrl_backward(np.float64(1.0), cache)
    assert_close(np.sum(da * anchors, axis=-1), np.zeros(B), atol=1e-15, name="da . a")
    assert_close(np.sum(dp * positives, axis=-1), np.zeros(B + extra), atol=1e-15, name="dp . p")


def test_mnrl_identical_rows_cost_log_B():
    # every anchor equals every positive: all scores tie, the loss is log B' whatever the scale
    a = np.ones((4, 3))
    loss, _ = mnrl_forward(a, np.ones((6, 3)) * 2.0)
    assert math.isclose(float(loss), math.log(6), rel_tol=1e-12)


def test_mnrl_needs_enough_positives():
    with pytest.raises(ValueError, match="at least as many positives"):
        mnrl_forward(np.ones((3, 2)), np.ones((2, 2)))


def test_cosine_mse_hand_cases():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])  # cosines 1, 0, -1
    labels = np.array([1.0, 0.5, 0.0])
    loss, cache = cosine_mse_forward(a, b, labels)
    assert math.isclose(float(loss), (0.0 + 0.25 + 1.0) / 3, rel_tol=1e-14)
    da, db = cosine_mse_backward(np.float64(1.0), cache)
    # row 1: dL/dcos = 2 (0 - 0.5) / 3; dcos/da = (b/|b| - cos a/|a|) / |a| = (1, 0) / 2
    assert_close(da[1], np.array([-1.0 / 6, 0.0]), atol=1e-15, name="da[1]")
    assert_close(db[1], np.array([0.0, -1.0 / 3]), atol=1e-15, name="db[1]")
    # rows 0 and 2 are parallel: the cosine is at an extremum, the gradient is zero
    assert_close(np.concatenate([da[[0, 2]], db[[0, 2]]]), np.zeros((4, 2)), atol=1e-15, name="parallel rows")


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4, 5)).astype(np.float32)
    for loss, cache, backward in [
        (*cross_entropy_forward(a, np.array([0, 1, 2, 3])), cross_entropy_backward),
        (*mnrl_forward(a, b), mnrl_backward),
        (*cosine_mse_forward(a, b, np.zeros(4)), cosine_mse_backward),
    ]:
        assert loss.dtype == np.float32
        assert all(g.dtype == np.float32 for g in backward(np.float32(1.0), cache))
