"""The decoder and its training pieces without torch: finite-difference gradients on a tiny config, causality,
dropout, AdamW / clipping / schedule arithmetic."""

import math

import numpy as np
import pytest

from npminilm.decoder.config import GPTConfig
from npminilm.decoder.export import hf_state_dict
from npminilm.decoder.model import gpt_backward, gpt_forward, init_params, is_decayed, param_shapes
from npminilm.nn import ops
from npminilm.nn.gradcheck import THRESHOLD, OpCase, check, max_rel_error, numerical_grad
from npminilm.nn.losses import cross_entropy_backward, cross_entropy_forward
from npminilm.nn.optim import AdamW, clip_grad_norm, lr_at
from tests.helpers import assert_close

TINY = GPTConfig(vocab_size=11, block_size=7, n_embd=8, n_layer=2, n_head=2)


def perturbed_params(config, seed=1, dtype=np.float64):
    """Random weights well away from the init (unit gains and zero biases would hide mistakes)."""
    rng = np.random.default_rng(seed)
    params = init_params(config, seed=seed, dtype=dtype)
    return {k: (v + rng.standard_normal(v.shape) * 0.3).astype(dtype) for k, v in params.items()}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_decoder_gradients_match_finite_differences(dropout):
    config = GPTConfig(**{**TINY.to_dict(), "dropout": dropout})
    params = perturbed_params(config)
    rng = np.random.default_rng(5)
    idx, targets = rng.integers(0, 11, (2, 6)), rng.integers(0, 11, (2, 6))  # T = 6 < block 7: wpe[6] unused

    def loss(ps):  # same dropout masks on every call: the rng restarts from one seed
        logits, cache = gpt_forward(ps, idx, config, rng=np.random.default_rng(7) if dropout else None)
        value, ce_cache = cross_entropy_forward(logits, targets)
        return value, cache, ce_cache

    _, cache, ce_cache = loss(params)
    grads = gpt_backward(cross_entropy_backward(1.0, ce_cache)[0], cache)
    assert list(grads) == list(param_shapes(config))
    for name, p in params.items():
        num = numerical_grad(lambda x, name=name: loss({**params, name: x})[0], p)
        err = max_rel_error(num, grads[name])
        assert err < THRESHOLD, f"{name}: max relative error {err:.2e}"
    assert np.all(grads["wpe.weight"][6] == 0)


def test_causality():
    # logits at position t depend on tokens 0..t only: changing the tokens after t changes nothing before.
    config = GPTConfig(vocab_size=13, block_size=9, n_embd=12, n_layer=2, n_head=3)
    params = perturbed_params(config, dtype=np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 13, (2, 9))
    logits, _ = gpt_forward(params, idx, config)
    for t in range(9):
        changed = idx.copy()
        changed[:, t + 1:] = rng.integers(0, 13, (2, 8 - t))
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 13  # surely different
        other, _ = gpt_forward(params, changed, config)
        assert_close(other[:, :t + 1], logits[:, :t + 1], atol=0.0, name=f"logits up to {t}")
        if t < 8:
            assert np.abs(other[:, t + 1:] - logits[:, t + 1:]).max() > 1e-6
    # and a prefix alone gives the same logits as the prefix inside the longer sequence
    assert_close(gpt_forward(params, idx[:, :4], config)[0], logits[:, :4], atol=1e-12, name="prefix")


def test_gradient_of_a_later_loss_never_reaches_earlier_logits_inputs():
    # d logits[:, t] / d (token at s > t) is zero: the embedding rows used only after t get no gradient from t.
    config = GPTConfig(vocab_size=13, block_size=6, n_embd=8, n_layer=1, n_head=2)
    params = perturbed_params(config)
    idx = np.array([[0, 1, 2, 3, 4, 5]])
    logits, cache = gpt_forward(params, idx, config)
    dlogits = np.zeros_like(logits)
    dlogits[:, :3] = np.random.default_rng(0).standard_normal((1, 3, 13))
    grads = gpt_backward(dlogits, cache)
    assert np.all(grads["wpe.weight"][3:] == 0)


def test_dropout_op():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 5))
    rows = check(OpCase(lambda a: ops.dropout_forward(a, 0.4, np.random.default_rng(1)), ops.dropout_backward,
                        {"x": x}))
    assert all(r["ok"] for r in rows), rows
    y, cache = ops.dropout_forward(np.ones((200, 500), np.float32), 0.25, np.random.default_rng(0))
    assert y.dtype == np.float32 and abs((y == 0).mean() - 0.25) < 0.01 and abs(y.mean() - 1.0) < 0.01
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    same, none = ops.dropout_forward(x, 0.5, None)
    assert same is x and none is None and ops.dropout_backward(x, None)[0] is x
    with pytest.raises(ValueError):
        ops.dropout_forward(x, 1.0, rng)


def test_dropout_changes_training_forward_only():
    config = GPTConfig(**{**TINY.to_dict(), "dropout": 0.5})
    params = init_params(config, seed=0)
    idx = np.zeros((1, 5), dtype=np.int64)
    a, _ = gpt_forward(params, idx, config)
    b, _ = gpt_forward(params, idx, config)
    c, _ = gpt_forward(params, idx, config, rng=np.random.default_rng(0))
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_params_and_export_layout():
    params = init_params(TINY, seed=0)
    assert all(v.dtype == np.float32 for v in params.values())
    assert params["h.0.attn.c_attn.weight"].shape == (24, 8)  # ours: [out, in]
    hf = hf_state_dict(params, TINY)
    assert hf["transformer.h.0.attn.c_attn.weight"].shape == (8, 24)  # HF Conv1D: [in, out]
    assert hf["transformer.h.1.mlp.c_proj.weight"].shape == (32, 8)
    assert np.array_equal(hf["transformer.wte.weight"], params["wte.weight"])
    assert [k for k in params if not is_decayed(k)] == [k for k in params if k.endswith("bias") or "ln_" in k]
    assert abs(params["h.0.attn.c_proj.weight"].std() - 0.02 / math.sqrt(4)) < 0.004
    with pytest.raises(ValueError, match="block size"):
        gpt_forward(params, np.zeros((1, 8), np.int64), TINY)
    with pytest.raises(ValueError, match="multiple"):
        GPTConfig(vocab_size=5, n_embd=10, n_head=4)


def test_adamw_by_hand():
    # one step from zero moments: m^ = g, v^ = g^2, so p <- p (1 - lr wd) - lr g / (|g| + eps)
    params = {"w": np.array([[1.0, -2.0]]), "b": np.array([0.5])}
    grads = {"w": np.array([[0.1, -3.0]]), "b": np.array([2.0])}
    opt = AdamW(params, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8)
    opt.step(params, grads, lr=0.01)
    assert_close(params["w"], np.array([[1.0, -2.0]]) * (1 - 0.001) - 0.01 * np.sign([[0.1, -3.0]]), atol=1e-9)
    assert_close(params["b"], [0.5 - 0.01], atol=1e-9)  # no decay on a 1-d tensor
    opt.step(params, {k: np.zeros_like(v) for k, v in grads.items()}, lr=0.01)  # a zero gradient still moves p
    m, v = 0.9 * 0.1 * 2.0, 0.99 * 0.01 * 4.0  # for b after two steps (step 1 left it at 0.49 up to eps)
    expected_b = 0.49 - 0.01 * (m / (1 - 0.81)) / (math.sqrt(v / (1 - 0.99**2)) + 1e-8)
    assert_close(params["b"], [expected_b], atol=1e-9)


def test_clip_and_schedule():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == 5.0
    assert_close(np.concatenate([grads["a"], grads["b"].ravel()]), [0.6, 0.8], atol=1e-6)
    small = {"a": np.array([0.3])}
    clip_grad_norm(small, 1.0)
    assert small["a"][0] == 0.3
    assert lr_at(0, 1.0, 10, 110, 0.1) == 0.1 and lr_at(9, 1.0, 10, 110, 0.1) == 1.0
    assert lr_at(10, 1.0, 10, 110, 0.1) == 1.0 and lr_at(60, 1.0, 10, 110, 0.1) == pytest.approx(0.55)
    assert lr_at(110, 1.0, 10, 110, 0.1) == 0.1 and lr_at(500, 1.0, 10, 110, 0.1) == 0.1
    lrs = [lr_at(s, 1.0, 10, 110, 0.1) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
