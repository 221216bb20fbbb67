"""Gradient checks: every op's backward against float64 central finite differences.

The fake-loss trick turns any op into a scalar: L = sum(out * dout) with a random dout, so dL/dx is exactly what
`backward(dout, cache)` returns. Each input tensor x is then compared with the numerical gradient

    num[i] = (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),   eps = 1e-6, in float64

using one number per tensor, the max relative error

    err = max_i |num[i] - ana[i]| / max(max_i |num[i]|, max_i |ana[i]|, 1e-12).

Why 1e-6 passes a correct backward and fails a wrong one: with O(1) inputs and gradients, the truncation error of
central differences is about eps^2 = 1e-12 and the rounding error about 1e-16 * |L| / eps = 1e-10 * |L|, so a right
backward measures 1e-11..1e-8. A wrong one (a missing term, a factor off, a transposed index) is off by a
fraction of the gradient itself, 1e-3 and up. Inputs are drawn away from kinks (ties in max, zero norms), and the
denominator takes the larger of both sides so an all-zero analytic gradient cannot pass against a nonzero one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from . import decoder_ops, losses, ops

EPS = 1e-6
THRESHOLD = 1e-6


def numerical_grad(f, x, eps=EPS):
    """Central-difference gradient of the scalar f at x, in float64. f is called with arrays shaped like x."""
    x = np.array(x, dtype=np.float64)  # a private copy: f sees it perturbed one entry at a time
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        orig = x[i]
        x[i] = orig + eps
        fp = float(f(x))
        x[i] = orig - eps
        fm = float(f(x))
        x[i] = orig
        grad[i] = (fp - fm) / (2.0 * eps)
    return grad


def max_rel_error(num, ana):
    num, ana = np.asarray(num, np.float64), np.asarray(ana, np.float64)
    if num.size == 0:
        return 0.0
    return float(np.abs(num - ana).max() / max(np.abs(num).max(), np.abs(ana).max(), 1e-12))


@dataclass
class OpCase:
    """One op on concrete inputs: forward(*inputs) -> (out, cache); backward(dout, cache) -> one grad per input."""

    forward: Callable
    backward: Callable
    inputs: dict  # name -> float64 array, in the forward's argument order


def check(case: OpCase, rng=None, threshold=THRESHOLD, eps=EPS) -> list[dict]:
    """Compare case.backward with finite differences of L = sum(forward(*inputs)[0] * dout), per input tensor."""
    rng = np.random.default_rng(0) if rng is None else rng
    names = list(case.inputs)
    xs = [np.asarray(case.inputs[n], dtype=np.float64) for n in names]
    out, cache = case.forward(*xs)
    dout = rng.standard_normal(np.shape(out))
    grads = case.backward(dout, cache)
    if len(grads) != len(xs):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(xs)} inputs ({', '.join(names)})")
    rows = []
    for j, name in enumerate(names):

        def loss(xj, j=j):
            args = list(xs)
            args[j] = xj
            return np.sum(case.forward(*args)[0] * dout)

        num = numerical_grad(loss, xs[j], eps)
        ana = np.asarray(grads[j], np.float64)
        if ana.shape != num.shape:
            raise ValueError(f"gradient of {name} has shape {ana.shape}, the input has {num.shape}")
        err = max_rel_error(num, ana)
        rows.append({"tensor": name, "shape": tuple(num.shape), "max_rel_error": err, "ok": err <= threshold})
    return rows


# ----------------------------------------------------------------------------------------------- registry
# Each maker builds small float64 inputs with awkward shapes (1, primes, sizes off any block) from an rng.


def _normal(rng, *shape):
    return rng.standard_normal(shape)


def padding_mask(rng, B, T):
    """Right padding with random lengths, row 0 all-padding-but-one (the lone real token)."""
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = 1
    return (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)


def _linear(rng):
    return OpCase(ops.linear_forward, ops.linear_backward,
                  {"x": _normal(rng, 2, 7, 5), "weight": _normal(rng, 11, 5), "bias": _normal(rng, 11)})


def _embedding(rng):
    ids = rng.integers(0, 13, size=(3, 7))
    ids[0, :3] = 4  # repeated ids: the scatter-add must accumulate
    return OpCase(lambda w: ops.embedding_forward(ids, w), ops.embedding_backward, {"weight": _normal(rng, 13, 5)})


def _layernorm(rng):
    return OpCase(lambda x, w, b: ops.layernorm_forward(x, w, b, 1e-12), ops.layernorm_backward,
                  {"x": _normal(rng, 3, 5, 7) * 2.0 + 0.5, "weight": _normal(rng, 7), "bias": _normal(rng, 7)})


def _gelu(rng):
    x = _normal(rng, 3, 7, 5) * 2.0
    x[0, 0, :3] = [0.0, 5.5, -6.5]  # the middle and both tails
    return OpCase(ops.gelu_forward, ops.gelu_backward, {"x": x})


def _softmax(rng):
    return OpCase(ops.softmax_forward, ops.softmax_backward, {"x": _normal(rng, 3, 5, 11) * 3.0})


def _attention(causal):
    def make(rng):
        B, T, C, NH = 3, 7, 12, 3  # hs = 4
        mask = padding_mask(rng, B, T)
        return OpCase(lambda q, k, v: ops.attention_forward(q, k, v, NH, mask, causal=causal), ops.attention_backward,
                      {"q": _normal(rng, B, T, C), "k": _normal(rng, B, T, C), "v": _normal(rng, B, T, C)})

    return make


def _add(rng):
    return OpCase(ops.add_forward, ops.add_backward, {"a": _normal(rng, 3, 7, 5), "b": _normal(rng, 3, 7, 5)})


def _mean_pool(sqrt_len):
    def make(rng):
        mask = padding_mask(rng, 3, 7)
        return OpCase(lambda h: ops.mean_pool_forward(h, mask, sqrt_len=sqrt_len), ops.mean_pool_backward,
                      {"h": _normal(rng, 3, 7, 5)})

    return make


def _cls_pool(rng):
    mask = padding_mask(rng, 3, 7)
    mask[1] = mask[1][::-1]  # a left-padded row: its first real token is not at position 0
    return OpCase(lambda h: ops.cls_pool_forward(h, mask), ops.cls_pool_backward, {"h": _normal(rng, 3, 7, 5)})


def _max_pool(rng):
    mask = padding_mask(rng, 3, 7)
    return OpCase(lambda h: ops.max_pool_forward(h, mask), ops.max_pool_backward, {"h": _normal(rng, 3, 7, 5)})


def _l2_normalize(rng):
    return OpCase(ops.l2_normalize_forward, ops.l2_normalize_backward, {"x": _normal(rng, 3, 7, 5)})


def _tanh(rng):
    return OpCase(ops.tanh_forward, ops.tanh_backward, {"x": _normal(rng, 3, 7, 5) * 2.0})


def _cross_entropy(rng):
    targets = rng.integers(0, 11, size=(2, 5))
    targets[0, 1] = targets[1, 4] = -100  # ignored rows count neither in the sum nor in the mean
    return OpCase(lambda x: losses.cross_entropy_forward(x, targets), losses.cross_entropy_backward,
                  {"logits": _normal(rng, 2, 5, 11) * 2.0})


def _mnrl(rng):
    return OpCase(lambda a, p: losses.mnrl_forward(a, p, scale=20.0), losses.mnrl_backward,
                  {"anchors": _normal(rng, 3, 7), "positives": _normal(rng, 5, 7)})  # 2 extra hard negatives


def _cosine_mse(rng):
    labels = rng.uniform(-1.0, 1.0, size=5)
    return OpCase(lambda a, b: losses.cosine_mse_forward(a, b, labels), losses.cosine_mse_backward,
                  {"a": _normal(rng, 5, 7), "b": _normal(rng, 5, 7)})


def _mnrl_symmetric(rng):
    return OpCase(lambda a, p: losses.mnrl_forward(a, p, scale=20.0, symmetric=True), losses.mnrl_backward,
                  {"anchors": _normal(rng, 4, 7), "positives": _normal(rng, 6, 7)})


def _cosent(rng):
    labels = rng.uniform(0.0, 1.0, size=6)
    labels[1] = labels[4]  # a tie: neither order of that pair is penalised
    return OpCase(lambda a, b: losses.cosent_forward(a, b, labels, scale=20.0), losses.cosent_backward,
                  {"a": _normal(rng, 6, 7), "b": _normal(rng, 6, 7)})


def _matryoshka(rng):
    labels = rng.uniform(0.0, 1.0, size=5)

    def forward(a, b):
        return losses.matryoshka_forward(losses.cosent_forward, [a, b], dims=(8, 4, 2), weights=(1.0, 0.5, 2.0),
                                         labels=labels)

    return OpCase(forward, partial(losses.matryoshka_backward, losses.cosent_backward),
                  {"a": _normal(rng, 5, 8), "b": _normal(rng, 5, 8)})


def _bce_with_logits(rng):
    labels = rng.uniform(0.0, 1.0, size=(6, 2))
    return OpCase(lambda z: losses.bce_with_logits_forward(z, labels), losses.bce_with_logits_backward,
                  {"logits": _normal(rng, 6, 2) * 3.0})


def _rmsnorm(rng):
    return OpCase(lambda x, w: decoder_ops.rmsnorm_forward(x, w, 1e-6), decoder_ops.rmsnorm_backward,
                  {"x": _normal(rng, 3, 7, 5), "weight": _normal(rng, 5)})


def _rope(rng):
    cos, sin = decoder_ops.rope_tables(np.arange(7) + 3, 6, theta=500.0)
    return OpCase(lambda x: decoder_ops.rope_forward(x, cos, sin), decoder_ops.rope_backward,
                  {"x": _normal(rng, 2, 3, 7, 6)})


def _swiglu(rng):
    return OpCase(decoder_ops.swiglu_forward, decoder_ops.swiglu_backward,
                  {"x": _normal(rng, 3, 4, 5), "w_gate": _normal(rng, 7, 5), "w_up": _normal(rng, 7, 5),
                   "w_down": _normal(rng, 5, 7)})


def _gqa(rng):
    B, T, NH, NKV, hs = 2, 6, 4, 2, 3
    mask = padding_mask(rng, B, T)
    return OpCase(lambda q, k, v: decoder_ops.gqa_attention_forward(q, k, v, NH, NKV, causal=True, mask=mask),
                  decoder_ops.gqa_attention_backward,
                  {"q": _normal(rng, B, T, NH * hs), "k": _normal(rng, B, T, NKV * hs), "v": _normal(rng, B, T, NKV * hs)})


def _moe(top_k, normalize=True):
    def case(rng):
        E, I, C = 4, 6, 5
        return OpCase(lambda x, wr, wg, wu, wd: decoder_ops.moe_forward(x, wr, wg, wu, wd, top_k, normalize),
                      decoder_ops.moe_backward,
                      {"x": _normal(rng, 3, 4, C), "w_router": _normal(rng, E, C), "w_gate": _normal(rng, E, I, C),
                       "w_up": _normal(rng, E, I, C), "w_down": _normal(rng, E, C, I)})

    return case


def _load_balancing(rng):
    probs = [np.exp(_normal(rng, 9, 4)) for _ in range(2)]  # two layers of 9 tokens, 4 experts, top-2 choices
    probs = [p / p.sum(axis=-1, keepdims=True) for p in probs]
    tops = [np.argsort(-p, axis=-1)[:, :2] for p in probs]
    return OpCase(lambda p0, p1: decoder_ops.load_balancing_forward([p0, p1], tops, 4),
                  decoder_ops.load_balancing_backward, {"probs_0": probs[0], "probs_1": probs[1]})


def _causal_conv1d(rng):
    return OpCase(decoder_ops.causal_conv1d_forward, decoder_ops.causal_conv1d_backward,
                  {"x": _normal(rng, 2, 7, 5), "weight": _normal(rng, 5, 4), "bias": _normal(rng, 5)})


def _selective_scan(rng):
    B, T, D, N = 2, 6, 3, 4
    return OpCase(decoder_ops.selective_scan_forward, decoder_ops.selective_scan_backward,
                  {"u": _normal(rng, B, T, D), "dt": _normal(rng, B, T, D), "A": -np.exp(_normal(rng, D, N) * 0.5),
                   "B": _normal(rng, B, T, N), "C": _normal(rng, B, T, N), "D": _normal(rng, D),
                   "z": _normal(rng, B, T, D), "dt_bias": _normal(rng, D) * 0.5})


OPS = {
    "linear": _linear,
    "embedding": _embedding,
    "layernorm": _layernorm,
    "gelu": _gelu,
    "softmax": _softmax,
    "attention": _attention(causal=False),
    "attention_causal": _attention(causal=True),
    "add": _add,
    "mean_pool": _mean_pool(sqrt_len=False),
    "mean_sqrt_len_pool": _mean_pool(sqrt_len=True),
    "cls_pool": _cls_pool,
    "max_pool": _max_pool,
    "l2_normalize": _l2_normalize,
    "tanh": _tanh,
    "cross_entropy": _cross_entropy,
    "mnrl": _mnrl,
    "mnrl_symmetric": _mnrl_symmetric,
    "cosine_mse": _cosine_mse,
    "cosent": _cosent,
    "matryoshka_cosent": _matryoshka,
    "bce_with_logits": _bce_with_logits,
    "rmsnorm": _rmsnorm,
    "rope": _rope,
    "swiglu": _swiglu,
    "gqa_attention": _gqa,
    "moe_top1": _moe(1, normalize=False),
    "moe_top2": _moe(2),
    "load_balancing": _load_balancing,
    "causal_conv1d": _causal_conv1d,
    "selective_scan": _selective_scan,
}


def check_op(name, seed=0, threshold=THRESHOLD) -> list[dict]:
    """Gradient-check the registered op `name` on random inputs from `seed`: one row per input tensor."""
    if name not in OPS:
        raise KeyError(f"unknown op {name!r} (known: {', '.join(OPS)})")
    rng = np.random.default_rng(seed)
    return [{"op": name, **row} for row in check(OPS[name](rng), rng, threshold)]


# ------------------------------------------------------------------------------------------------ report


def format_table(rows) -> str:
    """A plain-text table: op, tensor, shape, max relative error, ok/FAIL; one row per checked tensor."""
    head = ("op", "tensor", "shape", "max rel error", "")
    body = [(str(r.get("op", "")), str(r["tensor"]), "x".join(map(str, r.get("shape", ()))) or "scalar",
             f"{r['max_rel_error']:.2e}" if math.isfinite(r["max_rel_error"]) else str(r["max_rel_error"]),
             "ok" if r["ok"] else "FAIL") for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'>' if i == 3 else '<'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head).rstrip(), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*line).rstrip() for line in body]
    return "\n".join(lines)
