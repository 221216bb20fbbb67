"""Every op's forward and backward against torch autograd, in float64 and float32, over random shapes and masks.

Both engines run the same inputs in the same dtype, and float32 is also measured against torch in float64 on those
inputs (`compare`); the loss is L = sum(out * dout) for one random dout. Losses
are compared with sentence-transformers' formulas written in torch (MultipleNegativesRankingLoss,
CosineSimilarityLoss), and with its own loss classes (symmetric MNRL, CoSENTLoss, MatryoshkaLoss's sum).
"""

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from npminilm.nn import losses, ops
from tests.helpers import assert_close, make_mask, pool_op, rel_error

# (dtype, tolerance): atol = tolerance * max|torch| for each tensor (a max relative error), rtol = tolerance
TOLERANCES = [(np.float64, 1e-9), (np.float32, 1e-4)]
TORCH = {np.float64: torch.float64, np.float32: torch.float32}

SIZES = st.sampled_from([1, 2, 3, 5, 7, 11])
LENGTHS = st.sampled_from([1, 2, 3, 5, 7, 9, 17, 33])
MASKS = st.sampled_from(["random", "right", "left", "one", "full", "empty_row"])


# ------------------------------------------------------------- cases: (numpy fwd, numpy bwd, torch fn, inputs)


def case_linear(data, rng):
    lead = data.draw(st.lists(SIZES, min_size=1, max_size=2))
    n_in, n_out = data.draw(SIZES), data.draw(SIZES)
    inputs = {"x": rng.standard_normal((*lead, n_in)), "weight": rng.standard_normal((n_out, n_in)),
              "bias": rng.standard_normal(n_out)}
    return ops.linear_forward, ops.linear_backward, F.linear, inputs


def case_embedding(data, rng):
    V, C, B, T = data.draw(SIZES), data.draw(SIZES), data.draw(SIZES), data.draw(LENGTHS)
    ids = rng.integers(0, V, size=(B, T))
    return (lambda w: ops.embedding_forward(ids, w), ops.embedding_backward,
            lambda w: F.embedding(torch.from_numpy(ids), w), {"weight": rng.standard_normal((V, C))})


def case_layernorm(data, rng):
    lead = data.draw(st.lists(SIZES, min_size=1, max_size=2))
    C, eps = data.draw(st.sampled_from([3, 7, 13, 32, 384])), data.draw(st.sampled_from([1e-12, 1e-5]))
    inputs = {"x": rng.standard_normal((*lead, C)) * 2.0 + 0.5, "weight": rng.standard_normal(C),
              "bias": rng.standard_normal(C)}
    return (lambda x, w, b: ops.layernorm_forward(x, w, b, eps), ops.layernorm_backward,
            lambda x, w, b: F.layer_norm(x, (C,), w, b, eps), inputs)


def case_gelu(data, rng):
    x = rng.standard_normal(data.draw(st.lists(SIZES, min_size=1, max_size=3))) * 3.0
    x.reshape(-1)[0] = rng.uniform(-2.0, 2.0)  # an O(1) gradient: the far tails are compared against it
    forward = partial(ops.gelu_forward, save_derivative=data.draw(st.booleans()))
    return forward, ops.gelu_backward, lambda t: F.gelu(t, approximate="none"), {"x": x}


def case_softmax(data, rng):
    shape = data.draw(st.lists(SIZES, min_size=1, max_size=3))
    axis = -1 - data.draw(st.integers(0, 2)) % len(shape)
    return (lambda x: ops.softmax_forward(x, axis=axis), ops.softmax_backward, lambda t: F.softmax(t, dim=axis),
            {"x": rng.standard_normal(shape) * 3.0})


def _case_attention(causal):
    def case(data, rng):
        B, T = data.draw(st.sampled_from([1, 2, 3])), data.draw(LENGTHS)
        NH, hs = data.draw(st.sampled_from([1, 2, 3])), data.draw(st.sampled_from([1, 4, 5]))
        kind = data.draw(st.one_of(st.none(), MASKS))
        mask = None if kind is None else make_mask(kind, B, T, rng)
        allowed = torch.ones(B, 1, T, T, dtype=torch.bool)
        if mask is not None:
            allowed = allowed & torch.from_numpy(mask != 0)[:, None, None, :]
        if causal:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()

        def heads(t):  # (B, T, C) -> (B, NH, T, hs)
            return t.reshape(B, T, NH, hs).transpose(1, 2)

        def reference(q, k, v):
            if allowed.any(-1).all():  # every query sees a key: torch's own fused attention applies
                y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=allowed)
            else:  # a fully masked row is NaN in SDPA; HF's formula (lowest finite score) gives uniform weights
                s = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(hs)
                s = s.masked_fill(~allowed, torch.finfo(s.dtype).min)
                y = F.softmax(s, dim=-1) @ heads(v)
            return y.transpose(1, 2).reshape(B, T, NH * hs)

        inputs = {n: rng.standard_normal((B, T, NH * hs)) for n in ("q", "k", "v")}
        return (lambda q, k, v: ops.attention_forward(q, k, v, NH, mask, causal=causal), ops.attention_backward,
                reference, inputs)

    return case


def case_add(data, rng):
    shape = data.draw(st.lists(SIZES, min_size=1, max_size=3))
    return ops.add_forward, ops.add_backward, torch.add, {"a": rng.standard_normal(shape),
                                                          "b": rng.standard_normal(shape)}


def _case_pool(pool):
    def case(data, rng):
        B, T, C = data.draw(SIZES), data.draw(LENGTHS), data.draw(SIZES)
        mask = make_mask(data.draw(MASKS), B, T, rng, allow_empty=pool != "max")
        m = torch.from_numpy(mask)[:, :, None]

        def reference(h):  # sentence-transformers' Pooling, written out
            mf = m.to(h.dtype)
            if pool in ("mean", "mean_sqrt_len"):
                count = torch.clamp(mf.sum(1), min=1e-9)
                return (h * mf).sum(1) / (count.sqrt() if pool == "mean_sqrt_len" else count)
            if pool == "max":
                return h.masked_fill(m == 0, -1e9).max(dim=1).values
            return h[torch.arange(B), (m[:, :, 0] != 0).int().argmax(dim=1)]

        forward, backward = pool_op(pool, mask)
        return forward, backward, reference, {"h": rng.standard_normal((B, T, C))}

    return case


def case_l2_normalize(data, rng):
    # C >= 2: a length-1 row normalises to +-1 whatever x is; dx = 0 exactly and torch gives noise of size 1/|x|
    C = data.draw(st.sampled_from([2, 3, 7, 384]))
    x = rng.standard_normal((*data.draw(st.lists(SIZES, max_size=2)), C))
    x *= data.draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return ops.l2_normalize_forward, ops.l2_normalize_backward, lambda t: F.normalize(t, dim=-1), {"x": x}


def case_tanh(data, rng):
    x = rng.standard_normal(data.draw(st.lists(SIZES, min_size=1, max_size=3))) * 2.0
    x.reshape(-1)[0] = rng.uniform(-1.5, 1.5)  # as in case_gelu: tanh' = 1 - tanh^2 keeps few float32 digits far out
    return ops.tanh_forward, ops.tanh_backward, torch.tanh, {"x": x}


def case_cross_entropy(data, rng):
    lead = data.draw(st.lists(SIZES, min_size=1, max_size=2))
    V = data.draw(st.sampled_from([1, 2, 7, 13, 50, 1023]))
    targets = rng.integers(0, V, size=lead)
    targets[rng.random(lead) < data.draw(st.floats(0.0, 0.9))] = -100
    targets.reshape(-1)[0] = 0
    t = torch.from_numpy(targets.reshape(-1))
    return (lambda x: losses.cross_entropy_forward(x, targets), losses.cross_entropy_backward,
            lambda x: F.cross_entropy(x.reshape(-1, V), t, ignore_index=-100),
            {"logits": rng.standard_normal((*lead, V)) * 3.0})


def case_mnrl(data, rng):
    B, extra, C = data.draw(SIZES), data.draw(st.sampled_from([0, 1, 4])), data.draw(st.sampled_from([2, 7, 32]))
    scale = data.draw(st.sampled_from([1.0, 20.0]))

    def reference(a, p):  # MultipleNegativesRankingLoss: cross_entropy(cos_sim(a, p) * scale, arange(B))
        scores = F.normalize(a, p=2, dim=1) @ F.normalize(p, p=2, dim=1).T * scale
        return F.cross_entropy(scores, torch.arange(B))

    inputs = {"anchors": rng.standard_normal((B, C)), "positives": rng.standard_normal((B + extra, C))}
    assume(float(losses.mnrl_forward(*inputs.values(), scale=scale)[0]) > 1e-2)  # not saturated: as mnrl_symmetric
    return (lambda a, p: losses.mnrl_forward(a, p, scale=scale), losses.mnrl_backward, reference, inputs)


def case_cosine_mse(data, rng):
    B, C = data.draw(SIZES), data.draw(st.sampled_from([2, 7, 32]))
    labels = rng.uniform(-1.0, 1.0, size=B)

    def reference(a, b):  # CosineSimilarityLoss: MSELoss()(cosine_similarity(a, b), labels)
        return F.mse_loss(torch.cosine_similarity(a, b), torch.from_numpy(labels).to(a.dtype))

    return (lambda a, b: losses.cosine_mse_forward(a, b, labels), losses.cosine_mse_backward, reference,
            {"a": rng.standard_normal((B, C)), "b": rng.standard_normal((B, C))})


def case_mnrl_symmetric(data, rng):
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    B, negatives, C = data.draw(SIZES), data.draw(st.sampled_from([0, 1])), data.draw(st.sampled_from([2, 7, 32]))
    scale = data.draw(st.sampled_from([1.0, 20.0]))
    loss = MultipleNegativesRankingLoss(None, scale=scale, directions=("query_to_doc", "doc_to_query"),
                                        partition_mode="per_direction")  # = MultipleNegativesSymmetricRankingLoss

    def reference(a, p):  # sentence-transformers takes the hard negatives as a column of B per anchor
        return loss.compute_loss_from_embeddings([a, *torch.split(p, B)], None)

    inputs = {"anchors": rng.standard_normal((B, C)), "positives": rng.standard_normal((B * (1 + negatives), C))}
    # a saturated softmax (a loss of 1e-4 or less) has no float32 digits left to compare: draw another
    assume(float(losses.mnrl_forward(*inputs.values(), scale=scale, symmetric=True)[0]) > 1e-2)
    return (lambda a, p: losses.mnrl_forward(a, p, scale=scale, symmetric=True), losses.mnrl_backward, reference,
            inputs)


def _cosent_reference(scale, labels):
    from sentence_transformers.losses import CoSENTLoss

    loss = CoSENTLoss(None, scale=scale)
    return lambda a, b: loss.compute_loss_from_embeddings([a, b], torch.from_numpy(labels).to(a.dtype))


def case_cosent(data, rng):
    B, C = data.draw(SIZES), data.draw(st.sampled_from([2, 7, 32]))
    scale = data.draw(st.sampled_from([1.0, 20.0]))
    labels = rng.integers(0, 3, size=B).astype(float) if data.draw(st.booleans()) else rng.uniform(0, 5, size=B)
    inputs = {"a": rng.standard_normal((B, C)), "b": rng.standard_normal((B, C))}
    assume(float(losses.cosent_forward(*inputs.values(), labels, scale=scale)[0]) > 1e-2)  # not saturated
    return (lambda a, b: losses.cosent_forward(a, b, labels, scale=scale), losses.cosent_backward,
            _cosent_reference(scale, labels), inputs)


def case_matryoshka(data, rng):
    B, C = data.draw(SIZES), data.draw(st.sampled_from([8, 32]))
    # at least 2 (as test_ops.test_matryoshka): a 1-D vector's cosine is +-1, so its gradient is rounding noise,
    # which in float32 outweighed a small true gradient in 0.6% of draws
    dims = sorted({C, *data.draw(st.lists(st.integers(2, C - 1), min_size=1, max_size=3))}, reverse=True)
    weights = rng.uniform(0.2, 2.0, size=len(dims))
    labels = rng.uniform(0, 1, size=B)
    inner = _cosent_reference(20.0, labels)

    def reference(a, b):  # MatryoshkaLoss: the wrapped loss on each truncation, weighted and summed
        return sum(w * inner(a[:, :d], b[:, :d]) for d, w in zip(dims, weights))

    def forward(a, b):
        return losses.matryoshka_forward(losses.cosent_forward, [a, b], dims, weights, labels=labels)

    inputs = {"a": rng.standard_normal((B, C)), "b": rng.standard_normal((B, C))}
    assume(float(forward(*inputs.values())[0]) > 1e-2)  # not saturated
    return forward, partial(losses.matryoshka_backward, losses.cosent_backward), reference, inputs


CASES = {
    "linear": case_linear,
    "embedding": case_embedding,
    "layernorm": case_layernorm,
    "gelu": case_gelu,
    "softmax": case_softmax,
    "attention": _case_attention(causal=False),
    "attention_causal": _case_attention(causal=True),
    "add": case_add,
    "mean_pool": _case_pool("mean"),
    "mean_sqrt_len_pool": _case_pool("mean_sqrt_len"),
    "cls_pool": _case_pool("cls"),
    "max_pool": _case_pool("max"),
    "l2_normalize": case_l2_normalize,
    "tanh": case_tanh,
    "cross_entropy": case_cross_entropy,
    "mnrl": case_mnrl,
    "mnrl_symmetric": case_mnrl_symmetric,
    "cosine_mse": case_cosine_mse,
    "cosent": case_cosent,
    "matryoshka_cosent": case_matryoshka,
}


def compare(name, data, seed, dtype):
    """Run one case in both engines; returns {tensor: max relative error} after asserting the tolerance.

    float64 is compared with torch's float64. float32 is compared with torch run in float64 on the same float32
    inputs, the exact answer to float32's rounding. It must be within the tolerance or within twice torch float32's
    own error, whichever is larger: where a gradient is a small difference of large terms (a cosine's gradient
    nearly along its vector, tanh' = 1 - tanh^2 far out), float32 has fewer digits than the tolerance in either
    engine."""
    rng = np.random.default_rng(seed)
    forward, backward, reference, inputs = CASES[name](data, rng)
    xs = {n: np.asarray(x, dtype) for n, x in inputs.items()}
    out, cache = forward(*xs.values())
    dout = rng.standard_normal(np.shape(out)).astype(dtype)
    grads = backward(dout, cache)

    def torch_run(x_dtype):  # [out, d input for each input] from torch, inputs and dout cast to x_dtype
        ts = {n: torch.from_numpy(x.astype(x_dtype)).requires_grad_() for n, x in xs.items()}
        ref = reference(*ts.values())
        (ref * torch.from_numpy(np.asarray(dout, x_dtype))).sum().backward()
        return [ref.detach().numpy()] + [t.grad.numpy() for t in ts.values()]

    theirs_all = torch_run(dtype)
    exact_all = torch_run(np.float64) if dtype == np.float32 else theirs_all
    tol = dict(TOLERANCES)[dtype]
    errors = {}
    names = ["out"] + [f"d{n}" for n in xs]
    case_scale = max(float(np.abs(exact).max(initial=0.0)) for exact in exact_all)
    for tensor, ours, theirs, exact in zip(names, [out, *grads], theirs_all, exact_all):
        assert np.asarray(ours).dtype == dtype, f"{name} {tensor}: {np.asarray(ours).dtype} out of {dtype}"
        scale = float(np.abs(exact).max(initial=0.0))
        torch_error = float(np.abs(theirs - exact).max(initial=0.0))
        if scale <= 64 * np.finfo(dtype).eps * case_scale:
            # the exact value is 0 (a query that sees one key gives dq = 0, a length-1 vector has dx = 0): torch
            # returns rounding noise, so ours must be noise too, measured against the case's largest tensor
            assert float(np.abs(ours).max(initial=0.0)) <= max(tol * case_scale, 2 * torch_error), f"{name} {tensor}"
            errors[tensor] = 0.0
            continue
        assert_close(ours, exact, atol=max(tol * scale, 2 * torch_error), rtol=tol,
                     name=f"{name} {tensor} ({np.dtype(dtype)})")
        errors[tensor] = rel_error(ours, exact)
    return errors


@pytest.mark.parametrize("dtype", [d for d, _ in TOLERANCES], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=25)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_matches_torch_autograd(name, dtype, data, seed):
    compare(name, data, seed, dtype)
