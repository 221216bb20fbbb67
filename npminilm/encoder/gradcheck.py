"""The whole encoder's gradient check: `bert_backward` against float64 finite differences on a tiny random BERT,
with the machinery and the report of `npminilm.nn.gradcheck`."""

import numpy as np

from ..nn.gradcheck import EPS, THRESHOLD, max_rel_error, padding_mask
from .bert import bert_backward, bert_forward
from .config import BertConfig
from .weights import bert_param_shapes


def check_encoder(seed=0, samples=64, threshold=THRESHOLD, eps=EPS, dropout=False) -> list[dict]:
    """`bert_backward` against finite differences on a tiny random BERT (2 layers, C 16, NH 4, I 24, V 50, 16
    positions), with padding, the pooler and L = sum(last_hidden * d1) + sum(pooler * d2). dropout: training
    mode at rate 0.3 everywhere, every forward pass drawing the same masks (a generator seeded alike).

    Each parameter is checked on `samples` of its entries (half where the analytic gradient is largest, half at
    random), to keep the cost to a few thousand forward passes. The key biases' exact gradient is zero (softmax
    ignores the per-row constant q . b_k); their error is measured against the largest gradient in the model.
    """
    rate = 0.3 if dropout else 0.0
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=24, max_position_embeddings=16, type_vocab_size=2, layer_norm_eps=1e-12,
                        hidden_dropout_prob=rate, attention_probs_dropout_prob=rate)

    def masks():
        return np.random.default_rng([seed, 1]) if dropout else None

    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape) * (0.3 if name.endswith("weight") and len(shape) == 2 else 0.5)
              for name, shape in bert_param_shapes(config).items()}
    for name in params:
        if name.endswith("LayerNorm.weight"):
            params[name] = 1.0 + params[name]
    B, T = 3, 7
    ids = rng.integers(0, config.vocab_size, size=(B, T))
    mask = padding_mask(rng, B, T)
    types = rng.integers(0, config.type_vocab_size, size=(B, T))
    out, cache = bert_forward(params, config, ids, mask, types, keep_cache=True, rng=masks())
    d_hidden = rng.standard_normal(out["last_hidden_state"].shape)
    d_pooler = rng.standard_normal(out["pooler_output"].shape)
    grads = bert_backward(d_hidden, cache, config, d_pooler=d_pooler)

    def loss():
        o, _ = bert_forward(params, config, ids, mask, types, rng=masks())
        return float(np.sum(o["last_hidden_state"] * d_hidden) + np.sum(o["pooler_output"] * d_pooler))

    nums, anas = {}, {}
    for name, p in params.items():
        ana = np.asarray(grads.get(name, np.zeros_like(p)), np.float64)
        flat = np.abs(ana).reshape(-1)
        k = min(samples, flat.size)
        top = np.argsort(flat)[::-1][: k // 2]
        rest = np.setdiff1d(np.arange(flat.size), top)
        picked = np.concatenate([top, rng.choice(rest, size=min(k - top.size, rest.size), replace=False)])
        num = np.empty(picked.size)
        flat_p = p.reshape(-1)  # a view: perturbing it perturbs params[name]
        for j, i in enumerate(picked):
            orig = flat_p[i]
            flat_p[i] = orig + eps
            fp = loss()
            flat_p[i] = orig - eps
            fm = loss()
            flat_p[i] = orig
            num[j] = (fp - fm) / (2.0 * eps)
        nums[name], anas[name] = num, ana.reshape(-1)[picked]
    scale = max(max(np.abs(a).max(), np.abs(n).max()) for a, n in zip(anas.values(), nums.values()))
    rows = []
    for name in params:
        num, ana = nums[name], anas[name]
        if name.endswith("attention.self.key.bias"):
            err = float(np.abs(num - ana).max() / scale)
        else:
            err = max_rel_error(num, ana)
        rows.append({"op": "encoder", "tensor": name, "shape": params[name].shape, "max_rel_error": err,
                     "ok": bool(err <= threshold and (name in grads))})
    return rows
