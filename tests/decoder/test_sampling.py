"""Sampling: top-k / top-p filters on hand-made distributions, greedy, seeds, context cropping, bad arguments."""

import numpy as np
import pytest

from npminilm.decoder.config import GPTConfig
from npminilm.decoder.model import init_params
from npminilm.decoder.sampling import filter_logits, generate, next_token

LOGP = np.log([0.5, 0.05, 0.3, 0.15])  # ranked: 0 (.5), 2 (.3), 3 (.15), 1 (.05)


def kept(logits):
    return sorted(np.nonzero(np.isfinite(logits))[0].tolist())


@pytest.mark.parametrize("top_k, top_p, expected", [
    (None, None, [0, 1, 2, 3]), (1, None, [0]), (2, None, [0, 2]), (10, None, [0, 1, 2, 3]),
    (None, 0.5, [0]), (None, 0.6, [0, 2]), (None, 0.79, [0, 2]), (None, 0.81, [0, 2, 3]), (None, 1.0, [0, 1, 2, 3]),
    (None, 0.01, [0]), (3, 0.99, [0, 2, 3]), (2, 0.99, [0, 2]),
])  # fmt: skip
def test_filters(top_k, top_p, expected):
    assert kept(filter_logits(LOGP, top_k, top_p)) == expected


def test_next_token():
    rng = np.random.default_rng(0)
    assert next_token(LOGP, rng, temperature=0) == 0
    draws = [next_token(LOGP, rng, temperature=1.0) for _ in range(4000)]
    assert abs(np.mean(np.array(draws) == 2) - 0.3) < 0.03
    assert set(next_token(LOGP, rng, 1.0, top_k=2) for _ in range(200)) == {0, 2}
    cold = [next_token(LOGP, rng, temperature=0.05) for _ in range(200)]
    assert np.mean(np.array(cold) == 0) > 0.99


def test_generate_seeded_and_cropped():
    config = GPTConfig(vocab_size=9, block_size=5, n_embd=8, n_layer=1, n_head=2)
    params = init_params(config, seed=0)
    params["wte.weight"] *= 50  # a peaked model, so seeds visibly matter less than the distribution
    seen = []
    a = generate(params, config, [1, 2, 3, 4, 5, 6], 12, temperature=1.0, seed=4, on_token=seen.append)
    assert len(a) == 12 and a == seen and all(0 <= t < 9 for t in a)  # the 6-token prompt exceeds the block
    assert generate(params, config, [1, 2], 12, seed=4) == generate(params, config, [1, 2], 12, seed=4)
    greedy = generate(params, config, [1], 6, temperature=0)
    assert greedy == generate(params, config, [1], 6, temperature=0, seed=99)
    assert len(generate(params, config, [], 3, seed=0)) == 3
    for bad in [{"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}]:
        with pytest.raises(ValueError):
            generate(params, config, [1], 2, **bad)
