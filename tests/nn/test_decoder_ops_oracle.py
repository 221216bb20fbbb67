"""The modern decoder's ops against transformers' Llama modules and torch autograd: forward values and every
input's gradient, float64 within 1e-9 and float32 within 1e-4 (relative to each tensor's scale).

Llama's RMSNorm, rotary tables and eager softmax compute in float32 whatever the input's dtype, so in float64 the
reference is the same formula in torch float64 (HF's repeat_kv and apply_rotary_pos_emb, torch's SDPA)."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as llama

from npminilm.nn import decoder_ops
from tests.helpers import assert_close

TOLERANCES = {np.float64: 1e-9, np.float32: 1e-4}


def check(ours, theirs, name, dtype):
    for a, b, what in zip(ours, theirs, name):
        b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
        assert_close(a, b, TOLERANCES[dtype] * max(1.0, float(np.abs(b).max())), name=f"{what} {np.dtype(dtype).name}")


def leaf(x):
    return torch.tensor(x, requires_grad=True)


def config(dtype, **kw):
    return LlamaConfig(hidden_size=kw.get("hidden", 24), intermediate_size=kw.get("inter", 40),
                       num_attention_heads=kw.get("heads", 4), num_key_value_heads=kw.get("kv_heads", 2),
                       rms_norm_eps=1e-6, rope_theta=kw.get("theta", 10000.0), hidden_act="silu", mlp_bias=False,
                       attention_bias=False, torch_dtype=torch.float64 if dtype == np.float64 else torch.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rmsnorm(dtype):
    rng = np.random.default_rng()
    x, w, dy = (rng.standard_normal(s).astype(dtype) for s in ((3, 9, 24), (24,), (3, 9, 24)))
    y, cache = decoder_ops.rmsnorm_forward(x, w, 1e-6)
    tx, tw = leaf(x), leaf(w)
    if dtype == np.float32:
        module = llama.LlamaRMSNorm(24, eps=1e-6)
        with torch.no_grad():
            module.weight.copy_(tw)
        ty = module(tx)
    else:
        ty = tx * torch.rsqrt(tx.pow(2).mean(-1, keepdim=True) + 1e-6) * tw
    (ty * torch.from_numpy(dy)).sum().backward()
    dw = module.weight.grad if dtype == np.float32 else tw.grad
    check([y, *decoder_ops.rmsnorm_backward(dy, cache)], [ty, tx.grad, dw], ["y", "dx", "dw"], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rope_equals_llama_rotary_embedding(dtype, theta):
    rng = np.random.default_rng()
    B, NH, T, hs = 2, 4, 11, 8
    positions = np.sort(rng.choice(200, T, replace=False))  # not 0..T-1: a KV cache's later positions too
    q, dy = (rng.standard_normal((B, NH, T, hs)).astype(dtype) for _ in range(2))
    cos, sin = decoder_ops.rope_tables(positions, hs, theta, dtype)
    y, cache = decoder_ops.rope_forward(q, cos, sin)
    rotary = llama.LlamaRotaryEmbedding(config(dtype, hidden=NH * hs, heads=NH, theta=theta))
    tq = leaf(q)
    hf_cos, hf_sin = rotary(tq, torch.from_numpy(positions)[None])  # computed in float32 by HF
    scale = max(1.0, float(positions.max()))  # float32 angles up to ~200 rad: ~1e-5 absolute
    assert_close(cos, hf_cos[0].numpy(), 2e-7 * scale, name="cos")
    assert_close(sin, hf_sin[0].numpy(), 2e-7 * scale, name="sin")
    tcos, tsin = (hf_cos, hf_sin) if dtype == np.float32 else (torch.from_numpy(cos)[None], torch.from_numpy(sin)[None])
    ty, _ = llama.apply_rotary_pos_emb(tq, tq.detach().clone(), tcos, tsin)
    (ty * torch.from_numpy(dy)).sum().backward()
    if dtype == np.float32:  # the same tables on both sides, so that only the rotation is compared
        cache = (tcos[0].numpy(), tsin[0].numpy())
        y, _ = decoder_ops.rope_forward(q, *cache)
    check([y, *decoder_ops.rope_backward(dy, cache)], [ty, tq.grad], ["y", "dq"], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_swiglu_equals_llama_mlp(dtype):
    rng = np.random.default_rng()
    mlp = llama.LlamaMLP(config(dtype)).to(torch.float64 if dtype == np.float64 else torch.float32)
    x, dy = (rng.standard_normal((3, 5, 24)).astype(dtype) for _ in range(2))
    weights = [m.weight.detach().numpy().copy() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
    y, cache = decoder_ops.swiglu_forward(x, *weights)
    tx = leaf(x)
    ty = mlp(tx)
    (ty * torch.from_numpy(dy)).sum().backward()
    check([y, *decoder_ops.swiglu_backward(dy, cache)],
          [ty, tx.grad, mlp.gate_proj.weight.grad, mlp.up_proj.weight.grad, mlp.down_proj.weight.grad],
          ["y", "dx", "dw_gate", "dw_up", "dw_down"], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (6, 1), (4, 4)])
def test_gqa_equals_llama_eager_attention(dtype, heads, kv_heads):
    """Causal attention of `heads` query heads over `kv_heads` key/value heads, as Llama's eager path does it."""
    rng = np.random.default_rng()
    B, T, hs = 2, 9, 5
    q, k, v, dy = (rng.standard_normal((B, T, n * hs)).astype(dtype) for n in (heads, kv_heads, kv_heads, heads))
    y, cache = decoder_ops.gqa_attention_forward(q, k, v, heads, kv_heads, causal=True)

    class Module(torch.nn.Module):
        num_key_value_groups = heads // kv_heads

    tq, tk, tv = leaf(q), leaf(k), leaf(v)
    split = lambda t, n: t.view(B, T, n, hs).transpose(1, 2)  # noqa: E731  (B, T, n hs) -> (B, n, T, hs)
    if dtype == np.float32:
        causal = torch.full((T, T), torch.finfo(tq.dtype).min, dtype=tq.dtype).triu(1)[None, None]
        ty, _ = llama.eager_attention_forward(Module().eval(), split(tq, heads), split(tk, kv_heads),
                                              split(tv, kv_heads), causal, scaling=hs**-0.5)
    else:
        groups = heads // kv_heads
        ty = torch.nn.functional.scaled_dot_product_attention(
            split(tq, heads), llama.repeat_kv(split(tk, kv_heads), groups), llama.repeat_kv(split(tv, kv_heads), groups),
            is_causal=True).transpose(1, 2)
    ty = ty.reshape(B, T, heads * hs)
    (ty * torch.from_numpy(dy)).sum().backward()
    check([y, *decoder_ops.gqa_attention_backward(dy, cache)], [ty, tq.grad, tk.grad, tv.grad],
          ["y", "dq", "dk", "dv"], dtype)


def moe_reference(x, wr, wg, wu, wd, top_k, normalize=True):
    """Mixtral's routing in torch, dense: every expert on every token, weighted by its (renormalised) top-k
    router probability, zero where not chosen (float64-exact, where MixtralTopKRouter's softmax is float32)."""
    probs = torch.softmax(x @ wr.T, dim=-1)  # (N, E)
    top_p, top = torch.topk(probs, top_k, dim=-1)
    weights = top_p / top_p.sum(-1, keepdim=True) if normalize else top_p
    gates = torch.zeros_like(probs).scatter(-1, top, weights)  # (N, E)
    y = torch.zeros_like(x)
    for e in range(wr.shape[0]):
        h = torch.nn.functional.silu(x @ wg[e].T) * (x @ wu[e].T)
        y = y + gates[:, e:e + 1] * (h @ wd[e].T)
    return y, probs, top


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_equals_mixtral_sparse_moe_block(dtype, top_k):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    rng = np.random.default_rng()
    B, T, C, I, E = 2, 7, 12, 20, 4
    x, dy = (rng.standard_normal((B, T, C)).astype(dtype) for _ in range(2))
    wr = rng.standard_normal((E, C)).astype(dtype)
    wg, wu = (rng.standard_normal((E, I, C)).astype(dtype) * 0.3 for _ in range(2))
    wd = rng.standard_normal((E, C, I)).astype(dtype) * 0.3
    y, cache = decoder_ops.moe_forward(x, wr, wg, wu, wd, top_k)
    grads = decoder_ops.moe_backward(dy, cache)
    tx = leaf(x)
    if dtype == np.float32:
        block = MixtralSparseMoeBlock(MixtralConfig(hidden_size=C, intermediate_size=I, num_local_experts=E,
                                                    num_experts_per_tok=top_k, router_jitter_noise=0.0))
        with torch.no_grad():
            block.gate.weight.copy_(torch.from_numpy(wr))
            block.experts.gate_up_proj.copy_(torch.from_numpy(np.concatenate([wg, wu], axis=1)))
            block.experts.down_proj.copy_(torch.from_numpy(wd))
        ty = block(tx)
        (ty * torch.from_numpy(dy)).sum().backward()
        dgate_up = block.experts.gate_up_proj.grad.numpy()
        ref = [ty, tx.grad, block.gate.weight.grad, dgate_up[:, :I], dgate_up[:, I:], block.experts.down_proj.grad]
    else:
        tw = [leaf(w) for w in (wr, wg, wu, wd)]
        ty, _, _ = moe_reference(tx.reshape(-1, C), *tw, top_k)
        (ty.reshape(B, T, C) * torch.from_numpy(dy)).sum().backward()
        ref = [ty.reshape(B, T, C), tx.grad, *(w.grad for w in tw)]
    check([y, *grads], ref, ["y", "dx", "dw_router", "dw_gate", "dw_up", "dw_down"], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_load_balancing_loss_equals_mixtral(dtype):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    rng = np.random.default_rng()
    E, k = 6, 2
    logits = [rng.standard_normal((n, E)).astype(dtype) * 2 for n in (14, 9, 21)]  # three layers' routers
    probs = [decoder_ops.softmax_forward(z)[0] for z in logits]
    tops = [np.argsort(-p, axis=-1, kind="stable")[:, :k] for p in probs]
    loss, cache = decoder_ops.load_balancing_forward(probs, tops, E)
    dlogits = [p * (d - np.sum(d * p, axis=-1, keepdims=True))  # softmax's backward
               for p, d in zip(probs, decoder_ops.load_balancing_backward(np.asarray(1.0, dtype), cache))]
    tz = [leaf(z) for z in logits]
    if dtype == np.float32:
        ref = load_balancing_loss_func(tuple(tz), E, k)
    else:  # the same formula in float64 (transformers sums the probabilities in float32)
        tp = [torch.softmax(z, dim=-1) for z in tz]
        counts = sum(torch.nn.functional.one_hot(torch.topk(p, k, dim=-1)[1], E).sum(dim=(0, 1)) for p in tp).double()
        rows = sum(p.shape[0] for p in tp)
        ref = E * torch.sum(counts / rows * sum(p.sum(0) for p in tp) / rows)
    ref.backward()
    check([np.asarray(loss), *dlogits], [ref, *(z.grad for z in tz)], ["loss", "dz0", "dz1", "dz2"], dtype)


def scan_reference(u, dt, A, B, C, D, z, dt_bias):
    """The selective scan in torch float64, step by step (transformers' mamba_selective_scan casts B and u to
    float32)."""
    delta = torch.nn.functional.softplus(dt + dt_bias)  # (B, T, D)
    state = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[1]):
        state = torch.exp(delta[:, t, :, None] * A) * state + (delta[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        ys.append((state * C[:, t, None, :]).sum(-1))
    return (torch.stack(ys, 1) + u * D) * torch.nn.functional.silu(z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_selective_scan_equals_transformers_mamba(dtype):
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    rng = np.random.default_rng()
    Bt, T, D, N = 2, 9, 6, 4
    u, dt, z, dy = (rng.standard_normal((Bt, T, D)).astype(dtype) for _ in range(4))
    A = -np.exp(rng.standard_normal((D, N)) * 0.5).astype(dtype)
    Bm, Cm = (rng.standard_normal((Bt, T, N)).astype(dtype) for _ in range(2))
    Dskip, dt_bias = rng.standard_normal(D).astype(dtype), (rng.standard_normal(D) * 0.5).astype(dtype)
    inputs = [u, dt, A, Bm, Cm, Dskip, z, dt_bias]
    y, cache = decoder_ops.selective_scan_forward(*inputs)
    grads = decoder_ops.selective_scan_backward(dy, cache)
    t = [leaf(x) for x in inputs]
    if dtype == np.float32:  # transformers' layout: (B, D, T) sequences, (B, N, T) for B and C
        ty = mamba_selective_scan(t[0].transpose(1, 2), t[1].transpose(1, 2), t[2], t[3].transpose(1, 2),
                                  t[4].transpose(1, 2), D=t[5], z=t[6].transpose(1, 2), delta_bias=t[7],
                                  delta_softplus=True).transpose(1, 2)
    else:
        ty = scan_reference(*t)
    (ty * torch.from_numpy(dy)).sum().backward()
    check([y, *grads], [ty, *(x.grad for x in t)], ["y", "du", "ddt", "dA", "dB", "dC", "dD", "dz", "ddt_bias"],
          dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_causal_conv1d_equals_transformers_mamba(dtype):
    from transformers.models.mamba.modeling_mamba import causal_conv1d_fn

    rng = np.random.default_rng()
    x, dy = (rng.standard_normal((2, 11, 6)).astype(dtype) for _ in range(2))
    w, b = rng.standard_normal((6, 4)).astype(dtype), rng.standard_normal(6).astype(dtype)
    y, cache = decoder_ops.causal_conv1d_forward(x, w, b)
    tx, tw, tb = leaf(x), leaf(w), leaf(b)
    ty = causal_conv1d_fn(tx.transpose(1, 2), tw, tb).transpose(1, 2)  # Conv1d over (B, D, T), no activation
    (ty * torch.from_numpy(dy)).sum().backward()
    check([y, *decoder_ops.causal_conv1d_backward(dy, cache)], [ty, tx.grad, tw.grad, tb.grad],
          ["y", "dx", "dw", "db"], dtype)
