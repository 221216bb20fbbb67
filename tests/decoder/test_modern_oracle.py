"""The Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) and its mixture-of-experts variant
against transformers' LlamaForCausalLM and MixtralForCausalLM loaded from our export: logits, and the gradient of
every parameter through torch autograd (with Mixtral's load-balancing loss), in float64 and float32; greedy
decoding with our KV cache against transformers' generate; what export refuses."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, MambaForCausalLM, MixtralForCausalLM
from transformers.models.mamba.modeling_mamba import MambaMixer

from npminilm.decoder.checkpoint import save_checkpoint
from npminilm.decoder.config import GPTConfig
from npminilm.decoder.export import export_hf, hf_state_dict
from npminilm.decoder.kv_cache import KVCache
from npminilm.decoder.model import gpt_backward, gpt_forward, init_params
from npminilm.decoder.tokenizers import CharTokenizer
from npminilm.errors import InvalidArgumentError
from npminilm.nn.losses import cross_entropy_backward, cross_entropy_forward
from tests.helpers import assert_close, assert_model_gradients, rel_error

# (dtype, max relative gradient error per tensor, max abs logit difference). float32: the bars. float64:
# LlamaRMSNorm normalises in float32 and LlamaRotaryEmbedding computes cos and sin in float32 whatever the
# model's dtype, so a float64 LlamaForCausalLM is float32-exact only; our float64 is checked to 1e-9 against
# finite differences (test_variants.py) and each op against torch's float64 formulas (nn/test_decoder_ops_oracle.py).
BARS = [("float64", 1e-4, 1e-5), ("float32", 1e-4, 1e-5)]
TORCH = {"float64": torch.float64, "float32": torch.float32}
LLAMA = dict(norm="rmsnorm", pos="rope", ffn="swiglu")
CONFIGS = [GPTConfig(vocab_size=37, block_size=16, n_embd=24, n_layer=2, n_head=4, n_kv_head=2, **LLAMA),
           GPTConfig(vocab_size=65, block_size=23, n_embd=32, n_layer=3, n_head=4, n_kv_head=1, rope_theta=500.0,
                     layer_norm_epsilon=1e-6, **LLAMA),
           GPTConfig(vocab_size=29, block_size=12, n_embd=16, n_layer=2, n_head=2, n_inner=40, **LLAMA),
           GPTConfig(vocab_size=31, block_size=14, n_embd=24, n_layer=2, n_head=4, n_kv_head=2, n_inner=16,
                     bias=False, moe_experts=4, moe_top_k=2, moe_aux_coef=0.05, **LLAMA),
           GPTConfig(vocab_size=23, block_size=10, n_embd=16, n_layer=2, n_head=2, n_inner=12, bias=False,
                     moe_experts=3, moe_top_k=1, **LLAMA),
           GPTConfig(vocab_size=27, block_size=12, n_embd=16, n_layer=2, mixer="mamba", pos="none", norm="rmsnorm",
                     bias=False, mamba_d_state=4, mamba_d_conv=3),
           GPTConfig(vocab_size=19, block_size=9, n_embd=12, n_layer=3, mixer="mamba", pos="none", norm="rmsnorm",
                     mamba_expand=1, mamba_dt_rank=3, layer_norm_epsilon=1e-6)]


@pytest.fixture(autouse=True)
def mamba_with_autograd(monkeypatch):
    """transformers runs MambaMixer.forward under torch.no_grad(); its undecorated function lets autograd in."""
    monkeypatch.setattr(MambaMixer, "forward", MambaMixer.forward.__wrapped__)


@pytest.fixture(scope="module", params=range(len(CONFIGS)), ids=lambda i: f"config{i}")
def exported(request, tmp_path_factory):
    """A random model far from its init (float32 values) exported through `npminilm lm export`'s code path."""
    config = CONFIGS[request.param]
    rng = np.random.default_rng()
    params = {k: (v + rng.standard_normal(v.shape) * 0.2).astype(np.float32)
              for k, v in init_params(config, seed=request.param).items()}
    for key in [k for k in params if k.endswith("dt_proj.bias")]:  # Mamba: steps of ~0.5, not its init's 0.01
        params[key] = (rng.standard_normal(params[key].shape) * 0.5).astype(np.float32)
    folder = tmp_path_factory.mktemp("llama")
    save_checkpoint(folder / "ckpt", params, config, CharTokenizer([chr(65 + i) for i in range(config.vocab_size)]))
    export_hf(folder / "ckpt", folder / "hf")
    return config, params, folder / "hf"


def hf_model(folder, dtype, config):
    # Mixtral's experts as its eager loop: the grouped-GEMM path has no float64
    extra = {"experts_implementation": "eager"} if config.moe_experts else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager", **extra)
    assert isinstance(model, (LlamaForCausalLM, MixtralForCausalLM, MambaForCausalLM))
    return model.to(TORCH[dtype]).eval()


def hf_loss(model, config, idx, targets):
    """transformers' logits and training loss: cross-entropy, plus Mixtral's router_aux_loss_coef * aux_loss."""
    out = model(torch.from_numpy(idx), output_router_logits=bool(config.moe_experts))
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, config.vocab_size),
                                             torch.from_numpy(targets).reshape(-1))
    if config.moe_experts:
        assert isinstance(model, MixtralForCausalLM) and model.config.router_aux_loss_coef == config.moe_aux_coef
        loss = loss + config.moe_aux_coef * out.aux_loss
    return out.logits, loss


@pytest.mark.parametrize("dtype, bar, logit_bar", BARS)
def test_logits_and_gradients_match_torch(exported, dtype, bar, logit_bar):
    config, params, folder = exported
    model = hf_model(folder, dtype, config)
    if config.mixer == "attention":
        assert model.config.num_key_value_heads == config.n_kv_head
    rng = np.random.default_rng()
    ps = {k: v.astype(dtype) for k, v in params.items()}
    idx = rng.integers(0, config.vocab_size, (3, config.block_size))
    targets = rng.integers(0, config.vocab_size, (3, config.block_size))
    logits, cache = gpt_forward(ps, idx, config)
    loss, ce_cache = cross_entropy_forward(logits, targets)
    loss = loss + config.moe_aux_coef * cache["aux_loss"] if config.moe_experts else loss
    grads = gpt_backward(cross_entropy_backward(np.asarray(1.0, dtype), ce_cache)[0], cache,
                         daux=config.moe_aux_coef if config.moe_experts else 0.0)

    ref_logits, ref_loss = hf_loss(model, config, idx, targets)
    ref_loss.backward()
    assert_close(logits, ref_logits.detach().numpy(), atol=logit_bar, name=f"logits {dtype}")
    assert abs(float(loss) - ref_loss.item()) < max(logit_bar, 1e-6)
    assert_model_gradients(hf_state_dict(grads, config), model, bar, dtype)


def test_fake_loss_gradients_on_a_short_sequence(exported):
    # L = sum(logits * dlogits): every logit's gradient path, at T shorter than the block (float64 torch, whose
    # RMSNorm and RoPE run in float32: see BARS)
    config, params, folder = exported
    model = hf_model(folder, "float64", config)
    rng = np.random.default_rng()
    ps = {k: v.astype(np.float64) for k, v in params.items()}
    idx = rng.integers(0, config.vocab_size, (2, config.block_size - 3))
    logits, cache = gpt_forward(ps, idx, config)
    dlogits = rng.standard_normal(logits.shape)
    grads = hf_state_dict(gpt_backward(dlogits, cache), config)
    (model(torch.from_numpy(idx)).logits * torch.from_numpy(dlogits)).sum().backward()
    for name, p in model.named_parameters():  # top-1 routing renormalised: the router's gradient is 0, which
        ref = p.grad.numpy()                   # transformers' float32 router gives as rounding, ~1e-8
        assert rel_error(grads[name], ref) <= 1e-4 or np.abs(grads[name] - ref).max() <= 1e-6, name


def test_incremental_logits_equal_transformers_generate(exported):
    """transformers' greedy generate with its cache (DynamicCache; Mamba's recurrent state) gives a token path
    and each step's logits; our cache (keys and values; Mamba's convolution and scan states) fed the same path
    gives the same logits, within float32 rounding (transformers' float64 models normalise, rotate and scan in
    float32)."""
    config, params, folder = exported
    model = hf_model(folder, "float64", config)
    rng = np.random.default_rng()
    prompt = rng.integers(0, config.vocab_size, 3).tolist()
    n = config.block_size - 3
    ids = torch.tensor([prompt])  # every token real: generate would take the pad id's tokens for padding
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, use_cache=True, pad_token_id=0, output_logits=True,
                         return_dict_in_generate=True)
    path = ref.sequences[0].tolist()
    ref_logits = torch.stack(ref.logits)[:, 0].numpy()  # (n, V): the logits each new token was chosen from
    ps = {k: v.astype(np.float64) for k, v in params.items()}
    cache = KVCache(config, dtype=np.float64)
    ours = [gpt_forward(ps, np.asarray([prompt]), config, kv_cache=cache)[0][0, -1]]
    for t in range(1, n):
        ours.append(gpt_forward(ps, np.asarray([[path[2 + t]]]), config, kv_cache=cache)[0][0, -1])
    assert_close(np.stack(ours), ref_logits, 1e-5, name="incremental logits")


def torch_mamba_mixer(a, w, config):
    """MambaMixer's computation in torch float64 (transformers' own casts the scan to float32)."""
    D, N, R, K = config.mamba_inner, config.mamba_d_state, config.dt_rank, config.mamba_d_conv
    T = a.shape[1]
    xz = a @ w["in_proj.weight"].T + (w["in_proj.bias"] if "in_proj.bias" in w else 0)
    x, z = xz[..., :D], xz[..., D:]
    xc = torch.nn.functional.conv1d(x.transpose(1, 2), w["conv1d.weight"][:, None, :], w["conv1d.bias"],
                                    padding=K - 1, groups=D)[..., :T].transpose(1, 2)
    u = torch.nn.functional.silu(xc)
    dbc = u @ w["x_proj.weight"].T
    delta = torch.nn.functional.softplus(dbc[..., :R] @ w["dt_proj.weight"].T + w["dt_proj.bias"])
    A, Bm, Cm = -torch.exp(w["A_log"]), dbc[..., R:R + N], dbc[..., R + N:]
    state, ys = torch.zeros(a.shape[0], D, N, dtype=a.dtype), []
    for t in range(T):
        state = torch.exp(delta[:, t, :, None] * A) * state + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None, :]
        ys.append((state * Cm[:, t, None, :]).sum(-1))
    y = (torch.stack(ys, 1) + u * w["D"]) * torch.nn.functional.silu(z)
    return y @ w["out_proj.weight"].T + (w["out_proj.bias"] if "out_proj.bias" in w else 0)


@pytest.mark.parametrize("bias", [False, True])
def test_mamba_mixer_float64_equals_torch_autograd(bias):
    from npminilm.decoder.mamba import mamba_backward, mamba_forward, mamba_shapes

    config = GPTConfig(vocab_size=5, n_embd=12, mixer="mamba", pos="none", norm="rmsnorm", bias=bias,
                       mamba_d_state=5, mamba_d_conv=3, mamba_dt_rank=2)
    rng = np.random.default_rng()
    w = {k: rng.standard_normal(s) * 0.5 for k, s in mamba_shapes("", config).items()}
    a, dout = rng.standard_normal((2, 9, 12)), rng.standard_normal((2, 9, 12))
    out, cache = mamba_forward(a, w, config)
    da, grads = mamba_backward(dout, cache, config)
    tw = {k: torch.tensor(v, requires_grad=True) for k, v in w.items()}
    ta = torch.tensor(a, requires_grad=True)
    ref = torch_mamba_mixer(ta, tw, config)
    (ref * torch.from_numpy(dout)).sum().backward()
    # relative to the output's scale, as the gradients are: a draw's largest |y| is ~400 typically and up to 2e4.
    # In two runs of 600 draws the largest differences were 1.1e-8 and 1.5e-11, at most 5.0e-12 of the largest
    # |y|; an absolute bar of 1e-10 failed 4 and 0 of the draws
    assert rel_error(out, ref.detach().numpy()) <= 1e-10
    assert rel_error(da, ta.grad.numpy()) <= 1e-10
    for k in w:
        assert rel_error(grads[k], tw[k].grad.numpy()) <= 1e-10, k


def test_export_refuses_mixtures_transformers_lacks(tmp_path):
    config = GPTConfig(vocab_size=7, n_embd=8, n_head=2, pos="rope")  # rope with LayerNorm and GELU
    with pytest.raises(InvalidArgumentError, match="no transformers class has norm=layernorm, pos=rope"):
        hf_state_dict(init_params(config), config)
    save_checkpoint(tmp_path / "ckpt", init_params(config), config, CharTokenizer(list("abcdefg")))
    with pytest.raises(InvalidArgumentError, match="no transformers class"):
        export_hf(tmp_path / "ckpt", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    biased_moe = GPTConfig(vocab_size=7, n_embd=8, n_head=2, moe_experts=2, **LLAMA)  # Mixtral has no biases
    with pytest.raises(InvalidArgumentError, match="Mixtral has no attention biases"):
        hf_state_dict(init_params(biased_moe), biased_moe)
