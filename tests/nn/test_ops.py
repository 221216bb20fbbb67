"""Every op's backward against float64 central finite differences, over random shapes, masks and values.

Shapes come from awkward sizes (1, primes, lengths off any block); masks from random padding patterns, left and
right padding, all-padding-but-one and (where the op defines it) rows with no real token at all.
"""

from functools import partial

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from npminilm.encoder.gradcheck import check_encoder
from npminilm.nn import losses, ops
from npminilm.nn.gradcheck import OPS, THRESHOLD, OpCase, check, check_op
from tests.helpers import assert_close, make_mask, pool_op

SIZES = st.sampled_from([1, 2, 3, 5, 7, 11])
LENGTHS = st.sampled_from([1, 2, 3, 5, 7, 9, 17])
SEEDS = st.integers(0, 2**32 - 1)
SCALES = st.sampled_from([0.3, 1.0, 3.0])
MASKS = st.sampled_from(["random", "right", "left", "one", "full", "empty_row"])

FAST = settings(max_examples=100)
SLOW = settings(max_examples=80)


def assert_grads_ok(case, rng):
    rows = check(case, rng)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, f"backward disagrees with finite differences: {bad}"


@FAST
@given(lead=st.lists(SIZES, min_size=1, max_size=2), n_in=SIZES, n_out=SIZES, bias=st.booleans(), seed=SEEDS,
       scale=SCALES)
def test_linear(lead, n_in, n_out, bias, seed, scale):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal((*lead, n_in)) * scale, "weight": rng.standard_normal((n_out, n_in))}
    if bias:
        inputs["bias"] = rng.standard_normal(n_out)
        case = OpCase(ops.linear_forward, ops.linear_backward, inputs)
    else:
        case = OpCase(lambda x, w: ops.linear_forward(x, w), lambda d, c: ops.linear_backward(d, c)[:2], inputs)
    assert_grads_ok(case, rng)


@FAST
@given(B=SIZES, T=LENGTHS, V=SIZES, C=SIZES, seed=SEEDS)
def test_embedding_scatter_adds_repeated_ids(B, T, V, C, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(B, T))  # V small against B * T: most ids repeat
    assert_grads_ok(OpCase(lambda w: ops.embedding_forward(ids, w), ops.embedding_backward,
                           {"weight": rng.standard_normal((V, C))}), rng)


@FAST
@given(lead=st.lists(SIZES, min_size=1, max_size=2), C=st.sampled_from([1, 3, 7, 13, 32]),
       eps=st.sampled_from([1e-12, 1e-5]), seed=SEEDS, scale=SCALES)
def test_layernorm(lead, C, eps, seed, scale):
    # with C = 2 the normalised row is about (+-1, -+1) whatever x is: dx is O(eps / var^1.5), next to nothing,
    # and the finite difference sees mostly rounding, so a relative error means nothing there (C = 1: dx is 0)
    rng = np.random.default_rng(seed)
    case = OpCase(lambda x, w, b: ops.layernorm_forward(x, w, b, eps), ops.layernorm_backward,
                  {"x": rng.standard_normal((*lead, C)) * scale + rng.standard_normal(),
                   "weight": rng.standard_normal(C), "bias": rng.standard_normal(C)})
    assert_grads_ok(case, rng)


@FAST
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, scale=st.sampled_from([0.3, 1.0, 3.0, 8.0]),
       save_derivative=st.booleans())
def test_gelu(shape, seed, scale, save_derivative):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    # far in the left tail gelu' is ~1e-10 and 1 + erf(x) cancels, so only an absolute check means anything
    # there: one element in the body gives the tensor an O(1) gradient scale to measure the tails against
    x.reshape(-1)[0] = rng.uniform(-2.0, 2.0)
    forward = partial(ops.gelu_forward, save_derivative=save_derivative)
    assert_grads_ok(OpCase(forward, ops.gelu_backward, {"x": x}), rng)


@FAST
@given(shape=st.lists(SIZES, min_size=1, max_size=3), axis_pick=st.integers(0, 2), seed=SEEDS,
       scale=st.sampled_from([0.3, 1.0, 3.0, 10.0]))
def test_softmax_any_axis(shape, axis_pick, seed, scale):
    rng = np.random.default_rng(seed)
    axis = -1 - axis_pick % len(shape)
    case = OpCase(lambda x: ops.softmax_forward(x, axis=axis), ops.softmax_backward,
                  {"x": rng.standard_normal(shape) * scale})
    assert_grads_ok(case, rng)


@SLOW
@given(B=st.sampled_from([1, 2, 3]), T=LENGTHS, NH=st.sampled_from([1, 2, 3]), hs=st.sampled_from([1, 2, 5]),
       kind=st.one_of(st.none(), MASKS), causal=st.booleans(), seed=SEEDS, scale=SCALES)
def test_attention(B, T, NH, hs, kind, causal, seed, scale):
    rng = np.random.default_rng(seed)
    mask = None if kind is None else make_mask(kind, B, T, rng)
    C = NH * hs
    case = OpCase(lambda q, k, v: ops.attention_forward(q, k, v, NH, mask, causal=causal), ops.attention_backward,
                  {n: rng.standard_normal((B, T, C)) * scale for n in ("q", "k", "v")})
    assert_grads_ok(case, rng)


@FAST
@given(B=st.sampled_from([1, 2, 5]), T=st.sampled_from([1, 3, 17, 40]), NH=st.sampled_from([1, 3, 4]),
       hs=st.sampled_from([2, 8]), dtype=st.sampled_from([np.float32, np.float64]), seed=SEEDS,
       scale=st.sampled_from([0.125, 1.0]))
def test_inference_attention_bounded_and_unbounded_heads(B, T, NH, hs, dtype, seed, scale, monkeypatch):
    """keep_cache=False shifts only the (text, head) pairs whose scores may leave exp's safe range: some heads
    here have scores in the hundreds (shifted), the rest small ones (unshifted); both match a float64 softmax."""
    monkeypatch.setattr(ops, "EXP_FREE_MIN_LENGTH", 1)  # every length takes the bound
    rng = np.random.default_rng(seed)
    C = NH * hs
    size = rng.choice([0.2, 6.0], size=(B, 1, NH, 1))  # per text and head: scores up to ~1000
    q, k, v = (rng.standard_normal((B, T, NH, hs)) * size for _ in range(3))
    q, k, v = (x.reshape(B, T, C).astype(dtype) for x in (q, k, v))
    y, _ = ops.attention_forward(q, k, v, NH, scale=scale, keep_cache=False)
    heads = [x.astype(np.float64).reshape(B, T, NH, hs).transpose(0, 2, 1, 3) for x in (q, k, v)]
    s = heads[0] @ heads[1].transpose(0, 1, 3, 2) * scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    expected = ((p / p.sum(axis=-1, keepdims=True)) @ heads[2]).transpose(0, 2, 1, 3).reshape(B, T, C)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert_close(y, expected, tol * np.abs(expected).max(), name=f"attention {np.dtype(dtype).name}")
    free = ops._exp_free_heads(*(h.astype(dtype) for h in heads), scale)  # (B, NH)
    assert free[size[:, 0, :, 0] < 1].all()  # small scores take the unshifted path
    assert not free[np.abs(s).max(axis=(2, 3)) > ops.EXP_FREE].any()  # a score past the bound is always shifted


def test_attention_fully_masked_rows_pass_no_gradient_to_q_and_k():
    # causal + left padding: query 0 of row 0 sees only a padding key, so its scores are all constants
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 6)) for _ in range(3))
    mask = np.array([[0, 1, 1, 1], [0, 0, 0, 0]])
    out, cache = ops.attention_forward(q, k, v, 2, mask, causal=True)
    dq, dk, _ = ops.attention_backward(rng.standard_normal(out.shape), cache)
    assert not dq[0, 0].any() and not dq[1].any() and not dk[1].any()


@FAST
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS)
def test_add(shape, seed):
    rng = np.random.default_rng(seed)
    assert_grads_ok(OpCase(ops.add_forward, ops.add_backward,
                           {"a": rng.standard_normal(shape), "b": rng.standard_normal(shape)}), rng)


@FAST
@given(B=SIZES, T=LENGTHS, C=SIZES, kind=MASKS, pool=st.sampled_from(["mean", "mean_sqrt_len", "cls", "max"]),
       seed=SEEDS)
def test_pooling(B, T, C, kind, pool, seed):
    rng = np.random.default_rng(seed)
    # a row with no real token has no max (it is -inf): max pooling is checked on rows with one at least
    mask = make_mask(kind, B, T, rng, allow_empty=pool != "max")
    forward, backward = pool_op(pool, mask)
    assert_grads_ok(OpCase(forward, backward, {"h": rng.standard_normal((B, T, C))}), rng)


@FAST
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, scale=st.sampled_from([0.01, 1.0, 100.0]))
def test_l2_normalize(shape, seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x += np.where(x >= 0, 0.1, -0.1)  # away from the kink of |x| at 0 when the last axis has length 1
    assert_grads_ok(OpCase(ops.l2_normalize_forward, ops.l2_normalize_backward, {"x": x * scale}), rng)


@FAST
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, scale=SCALES)
def test_tanh(shape, seed, scale):
    rng = np.random.default_rng(seed)
    assert_grads_ok(OpCase(ops.tanh_forward, ops.tanh_backward, {"x": rng.standard_normal(shape) * scale}), rng)


@FAST
@given(lead=st.lists(SIZES, min_size=1, max_size=2), V=st.sampled_from([1, 2, 3, 7, 13, 50]),
       ignore=st.floats(0.0, 0.9), seed=SEEDS, scale=st.sampled_from([0.3, 1.0, 5.0]))
def test_cross_entropy(lead, V, ignore, seed, scale):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, V, size=lead)
    targets[rng.random(lead) < ignore] = -100
    targets.reshape(-1)[0] = 0  # one row counted at least: an all-ignored mean is NaN
    case = OpCase(lambda x: losses.cross_entropy_forward(x, targets), losses.cross_entropy_backward,
                  {"logits": rng.standard_normal((*lead, V)) * scale})
    assert_grads_ok(case, rng)


@FAST
@given(B=SIZES, extra=st.sampled_from([0, 1, 4]), C=st.sampled_from([2, 3, 7, 16]),
       scale=st.sampled_from([1.0, 20.0]), seed=SEEDS)
def test_mnrl(B, extra, C, scale, seed):
    rng = np.random.default_rng(seed)
    case = OpCase(lambda a, p: losses.mnrl_forward(a, p, scale=scale), losses.mnrl_backward,
                  {"anchors": rng.standard_normal((B, C)), "positives": rng.standard_normal((B + extra, C))})
    assume_not_saturated(case)
    assert_grads_ok(case, rng)


def assume_not_saturated(case):
    """At scale 20 a softmax can saturate: the loss is a difference of terms of size ~20 whose float64 rounding
    (~2e-15) central differences turn into a ~2e-9 gradient error, so a loss of 1e-5 (gradients ~1e-4) already
    fails a 1e-6 relative check on rounding alone. Draws with a loss under 1e-3 say nothing either way; Hypothesis
    draws others (Hypothesis also mines the package's literals, so its draws move when the code does)."""
    assume(float(case.forward(*case.inputs.values())[0]) > 1e-3)


@FAST
@given(B=SIZES, extra=st.sampled_from([0, 1, 4]), C=st.sampled_from([2, 3, 7, 16]),
       scale=st.sampled_from([1.0, 20.0]), seed=SEEDS)
def test_mnrl_symmetric(B, extra, C, scale, seed):
    rng = np.random.default_rng(seed)
    case = OpCase(lambda a, p: losses.mnrl_forward(a, p, scale=scale, symmetric=True), losses.mnrl_backward,
                  {"anchors": rng.standard_normal((B, C)), "positives": rng.standard_normal((B + extra, C))})
    assume_not_saturated(case)
    assert_grads_ok(case, rng)


@FAST
@given(B=SIZES, C=st.sampled_from([2, 3, 7, 16]), scale=st.sampled_from([1.0, 20.0]), ties=st.booleans(),
       seed=SEEDS)
def test_cosent(B, C, scale, ties, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=B).astype(float) if ties else rng.uniform(0.0, 5.0, size=B)
    case = OpCase(lambda a, b: losses.cosent_forward(a, b, labels, scale=scale), losses.cosent_backward,
                  {"a": rng.standard_normal((B, C)), "b": rng.standard_normal((B, C))})
    assume(len(set(labels)) > 1)  # one label: no pair, loss 0 exactly (checked in test_losses)
    assume_not_saturated(case)
    assert_grads_ok(case, rng)


@FAST
@given(B=SIZES, C=st.sampled_from([4, 9, 16]), n_dims=st.integers(1, 3), loss=st.sampled_from(["mnrl", "cosent",
       "cosine"]), seed=SEEDS)
def test_matryoshka(B, C, n_dims, loss, seed):
    rng = np.random.default_rng(seed)
    # at least 2: a 1-D vector normalises to +-1, a constant, so its cosine has no gradient to check
    dims = sorted(rng.choice(np.arange(2, C + 1), size=n_dims, replace=False).tolist(), reverse=True)
    weights = rng.uniform(0.2, 2.0, size=n_dims)
    labels = rng.uniform(0.0, 1.0, size=B)
    inner = {"mnrl": (losses.mnrl_forward, losses.mnrl_backward, {}),
             "cosent": (losses.cosent_forward, losses.cosent_backward, {"labels": labels}),
             "cosine": (losses.cosine_mse_forward, losses.cosine_mse_backward, {"labels": labels})}[loss]
    case = OpCase(lambda a, b: losses.matryoshka_forward(inner[0], [a, b], dims, weights, **inner[2]),
                  partial(losses.matryoshka_backward, inner[1]),
                  {"a": rng.standard_normal((B, C)), "b": rng.standard_normal((B, C))})
    assume_not_saturated(case)
    assert_grads_ok(case, rng)


@FAST
@given(B=SIZES, C=st.sampled_from([2, 3, 7, 16]), seed=SEEDS)
def test_cosine_mse(B, C, seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(-1.0, 1.0, size=B)
    case = OpCase(lambda a, b: losses.cosine_mse_forward(a, b, labels), losses.cosine_mse_backward,
                  {"a": rng.standard_normal((B, C)), "b": rng.standard_normal((B, C))})
    assert_grads_ok(case, rng)


# ------------------------------------------------------------------------------- the gradcheck tool itself


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("seed", [0, 1])
def test_registry_passes(name, seed):
    rows = check_op(name, seed)
    assert rows and all(r["ok"] for r in rows), rows
    # a measured error, not a trivially zero one: the check compares two nonzero gradients
    assert all(r["max_rel_error"] > 0.0 for r in rows if name != "add")


@pytest.mark.parametrize("name", list(OPS))
def test_registry_catches_a_small_error(name):
    """A backward off by 1e-4 of its own scale in one element fails: the threshold is not trivially met."""
    rng = np.random.default_rng(0)
    case = OPS[name](rng)

    def perturbed(dout, cache):
        grads = [np.array(g, dtype=np.float64) for g in case.backward(dout, cache)]
        g = grads[-1]
        g.reshape(-1)[np.argmax(np.abs(g))] *= 1.0 + 1e-4
        return grads

    rows = check(OpCase(case.forward, perturbed, case.inputs), rng)
    assert not rows[-1]["ok"] and rows[-1]["max_rel_error"] > 10 * THRESHOLD, rows[-1]
    assert all(r["ok"] for r in rows[:-1])


def test_encoder_gradcheck_passes():
    rows = check_encoder(seed=1)
    assert len(rows) > 30 and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]


def test_encoder_gradcheck_passes_with_dropout():
    rows = check_encoder(seed=2, dropout=True)
    assert len(rows) > 30 and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
