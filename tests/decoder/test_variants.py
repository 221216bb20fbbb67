"""The decoder with modern components (RMSNorm, RoPE, SwiGLU, grouped-query attention), without torch: every
parameter's gradient against finite differences in float64, causality, the config's checks, the KV cache's
logits against the full forward, and sampling with and without the cache."""

import numpy as np
import pytest

from npminilm.decoder.config import GPTConfig
from npminilm.decoder.kv_cache import KVCache
from npminilm.decoder.model import gpt_backward, gpt_forward, param_shapes
from npminilm.decoder.sampling import generate
from npminilm.errors import InvalidArgumentError
from npminilm.nn.gradcheck import THRESHOLD, max_rel_error, numerical_grad
from npminilm.nn.losses import cross_entropy_backward, cross_entropy_forward
from tests.decoder.test_model import perturbed_params
from tests.helpers import assert_close

LLAMA = dict(norm="rmsnorm", pos="rope", ffn="swiglu")
VARIANTS = {  # name: config overrides on a tiny decoder (C = 8)
    "gpt2": {},
    "llama-gqa": {**LLAMA, "n_head": 4, "n_kv_head": 2},
    "llama-mqa": {**LLAMA, "n_kv_head": 1},
    "rope-layernorm-gelu": {"pos": "rope", "rope_theta": 500.0},
    "rmsnorm-learned-swiglu-gqa": {"norm": "rmsnorm", "ffn": "swiglu", "n_head": 4, "n_kv_head": 2, "n_inner": 12},
    "mixtral-top2": {**LLAMA, "moe_experts": 3, "moe_top_k": 2, "bias": False, "n_inner": 6, "moe_aux_coef": 0.3},
    "moe-top1-gqa-biased": {**LLAMA, "moe_experts": 4, "moe_top_k": 1, "n_head": 4, "n_kv_head": 2, "n_inner": 6,
                            "moe_aux_coef": 0.5},  # top-1 renormalised: the router learns from this loss alone
    "gelu-no-bias": {"bias": False},
    "mamba": {"mixer": "mamba", "pos": "none", "norm": "rmsnorm", "bias": False, "mamba_d_state": 3,
              "mamba_d_conv": 3},
    "mamba-biased-layernorm": {"mixer": "mamba", "pos": "none", "mamba_expand": 1, "mamba_dt_rank": 2},
}


def tiny(name, **extra):
    base = dict(vocab_size=11, block_size=7, n_embd=8, n_layer=2, n_head=2)
    return GPTConfig(**{**base, **VARIANTS[name], **extra})


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "gpt2"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_variant_gradients_match_finite_differences(name, dropout):
    config = tiny(name, dropout=dropout)
    params = perturbed_params(config)
    rng = np.random.default_rng()
    for key in [k for k in params if k.endswith("dt_proj.bias")]:  # Mamba's init steps by ~0.01: gradients
        params[key] = rng.standard_normal(params[key].shape) * 0.5  # through A that small drown in FD rounding
    idx, targets = rng.integers(0, 11, (2, 6)), rng.integers(0, 11, (2, 6))
    seed = int(rng.integers(2**31))

    def loss(ps):  # the same dropout masks on every call; a mixture of experts adds its load-balancing loss
        logits, cache = gpt_forward(ps, idx, config, rng=np.random.default_rng(seed) if dropout else None)
        value, ce_cache = cross_entropy_forward(logits, targets)
        return value + config.moe_aux_coef * cache["aux_loss"], cache, ce_cache

    _, cache, ce_cache = loss(params)
    grads = gpt_backward(cross_entropy_backward(1.0, ce_cache)[0], cache, daux=config.moe_aux_coef)
    assert (cache["aux_loss"] > 0) == bool(config.moe_experts)
    assert list(grads) == list(param_shapes(config))
    # Mamba's mixer tensors get gradients ~1e-4 of the loss, where finite differences' rounding (~1e-10) is a
    # few 1e-6 of them: 1e-5 there (its float64 autograd comparison, in test_modern_oracle.py, is 1e-10)
    threshold = 1e-5 if config.mixer == "mamba" else THRESHOLD
    for key, p in params.items():
        num = numerical_grad(lambda x, key=key: loss({**params, key: x})[0], p)
        err = max_rel_error(num, grads[key])
        assert err < threshold, f"{name} {key}: max relative error {err:.2e}"


def test_variant_shapes():
    config = tiny("llama-gqa")
    shapes = param_shapes(config)
    assert "wpe.weight" not in shapes and "h.0.ln_1.bias" not in shapes
    assert shapes["h.0.attn.c_attn.weight"] == (8 + 2 * 2 * 2, 8)  # C + 2 NKV hs
    assert shapes["h.1.mlp.gate_proj.weight"] == (24, 8)  # 8C/3 to a multiple of 8
    assert GPTConfig(vocab_size=5, n_embd=128, ffn="swiglu").n_inner == 344


@pytest.mark.parametrize("name", list(VARIANTS))
def test_causality(name):
    config = tiny(name, block_size=9)
    params = perturbed_params(config)
    rng = np.random.default_rng()
    idx = rng.integers(0, 11, (2, 9))
    logits, _ = gpt_forward(params, idx, config)
    for t in range(8):
        changed = idx.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1 + rng.integers(0, 9, (2, 8 - t))) % 11
        other, _ = gpt_forward(params, changed, config)
        if config.moe_experts:  # an expert's GEMM runs over the rows routed to it: equal up to rounding
            assert_close(other[:, :t + 1], logits[:, :t + 1], 1e-12, name=f"{name} before {t + 1}")
        else:
            assert np.array_equal(other[:, :t + 1], logits[:, :t + 1])
        assert not np.allclose(other[:, t + 1:], logits[:, t + 1:])


def test_config_refuses_what_cannot_work():
    with pytest.raises(InvalidArgumentError, match="needs ffn='swiglu'"):
        GPTConfig(vocab_size=5, moe_experts=4)
    with pytest.raises(InvalidArgumentError, match=r"moe_top_k must be in \[1, 4\]"):
        GPTConfig(vocab_size=5, ffn="swiglu", moe_experts=4, moe_top_k=5)
    with pytest.raises(InvalidArgumentError, match="n_kv_head 3 must divide n_head 4"):
        GPTConfig(vocab_size=5, n_embd=8, n_head=4, n_kv_head=3)
    with pytest.raises(InvalidArgumentError, match="norm must be one of"):
        GPTConfig(vocab_size=5, norm="batchnorm")
    with pytest.raises(InvalidArgumentError, match="even head size"):
        GPTConfig(vocab_size=5, n_embd=6, n_head=2, pos="rope")
    assert GPTConfig.from_dict(GPTConfig(vocab_size=5, **LLAMA).to_dict()) == GPTConfig(vocab_size=5, **LLAMA)


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("float64", 1e-12)])
def test_kv_cache_logits_equal_the_full_forward(name, dtype, atol):
    """Prefill some tokens, then feed the rest one or two at a time: each position's logits equal the full
    forward's over the whole sequence."""
    config = tiny(name, block_size=12)
    params = {k: v.astype(dtype) for k, v in perturbed_params(config).items()}
    rng = np.random.default_rng()
    idx = rng.integers(0, 11, (3, 12))
    full, _ = gpt_forward(params, idx, config)
    cache = KVCache(config, batch=3, dtype=np.dtype(dtype))
    prefill = int(rng.integers(1, 6))
    pieces = [idx[:, :prefill]]
    t = prefill
    while t < 12:
        step = min(12 - t, int(rng.integers(1, 3)))
        pieces.append(idx[:, t:t + step])
        t += step
    start = 0
    for piece in pieces:
        logits, _ = gpt_forward(params, piece, config, kv_cache=cache)
        assert logits.dtype == np.dtype(dtype)
        assert_close(logits, full[:, start:start + piece.shape[1]], atol, name=f"{name} at {start}")
        start += piece.shape[1]
    assert cache.length == 12
    with pytest.raises(InvalidArgumentError, match="exceeds the block size"):
        gpt_forward(params, idx[:, :1], config, kv_cache=cache)


def reference_generate(params, config, prompt, n):
    """Greedy decoding by full forwards over the window the cache holds: the prompt's last block_size tokens,
    growing a token a step; when the cache is full (block_size tokens before the newest), the last
    block_size // 2 tokens."""
    ids = list(prompt)
    start = max(0, len(ids) - config.block_size)
    for step in range(n):
        if step and len(ids) - 1 - start == config.block_size:
            start = len(ids) - max(1, config.block_size // 2)
        logits, _ = gpt_forward(params, np.asarray([ids[start:]]), config)
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(prompt):]


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "mamba"])
def test_sampling_with_the_cache(name):
    config = tiny(name, block_size=8)
    params = perturbed_params(config, dtype=np.float64)
    rng = np.random.default_rng()
    # a prompt within half the block, one longer than half (all of it prefills the cache), one past the block
    for length in (int(rng.integers(1, 5)), int(rng.integers(5, 8)), int(rng.integers(8, 13))):
        prompt = rng.integers(0, 11, length).tolist()
        inside = max(1, 8 - len(prompt))  # new tokens that fit in the window: both ways see the same context
        cached = generate(params, config, prompt, inside, temperature=0, use_cache=True)
        assert cached == generate(params, config, prompt, inside, temperature=0, use_cache=False), length
        long = generate(params, config, prompt, 30, temperature=0, use_cache=True)
        assert long[:inside] == cached and long == reference_generate(params, config, prompt, 30), length
        seed = int(rng.integers(2**31))
        drawn = generate(params, config, prompt, inside, temperature=1.0, top_k=5, seed=seed)
        assert drawn == generate(params, config, prompt, inside, temperature=1.0, top_k=5, seed=seed,
                                 use_cache=False), length
