"""The decoder against transformers' GPT2LMHeadModel loaded from our export: logits, and the gradient of every
parameter through torch autograd (float64 and float32); AdamW and clipping against torch.optim."""

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from npminilm.decoder.checkpoint import save_checkpoint
from npminilm.decoder.config import GPTConfig
from npminilm.decoder.export import export_hf, hf_state_dict
from npminilm.decoder.model import gpt_backward, gpt_forward, init_params
from npminilm.decoder.tokenizers import CharTokenizer
from npminilm.nn.losses import cross_entropy_backward, cross_entropy_forward
from npminilm.nn.optim import AdamW, clip_grad_norm
from tests.helpers import assert_close, assert_model_gradients, rel_error

# (dtype, max relative gradient error per tensor, max abs logit difference), the bars
BARS = [("float64", 1e-9, 1e-12), ("float32", 1e-4, 1e-4)]
TORCH = {"float64": torch.float64, "float32": torch.float32}
CONFIGS = [GPTConfig(vocab_size=37, block_size=16, n_embd=24, n_layer=2, n_head=3),
           GPTConfig(vocab_size=65, block_size=23, n_embd=32, n_layer=3, n_head=4)]


@pytest.fixture(scope="module", params=range(len(CONFIGS)), ids=lambda i: f"config{i}")
def exported(request, tmp_path_factory):
    """A trained-looking random model (float32 values) exported through `npminilm lm export`'s code path."""
    config = CONFIGS[request.param]
    rng = np.random.default_rng(request.param)
    params = {k: (v + rng.standard_normal(v.shape) * 0.2).astype(np.float32)
              for k, v in init_params(config, seed=request.param).items()}
    folder = tmp_path_factory.mktemp("gpt")
    tok = CharTokenizer([chr(65 + i) for i in range(config.vocab_size)])
    save_checkpoint(folder / "ckpt", params, config, tok)
    export_hf(folder / "ckpt", folder / "hf")
    return config, params, folder / "hf"


def hf_model(folder, dtype):
    model = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager")
    return model.to(TORCH[dtype]).eval()


@pytest.mark.parametrize("dtype, bar, logit_bar", BARS)
def test_logits_and_gradients_match_torch(exported, dtype, bar, logit_bar):
    config, params, folder = exported
    model = hf_model(folder, dtype)
    assert model.config.activation_function == "gelu"
    rng = np.random.default_rng(1)
    ps = {k: v.astype(dtype) for k, v in params.items()}
    idx = rng.integers(0, config.vocab_size, (3, config.block_size))
    targets = rng.integers(0, config.vocab_size, (3, config.block_size))
    logits, cache = gpt_forward(ps, idx, config)
    loss, ce_cache = cross_entropy_forward(logits, targets)
    grads = gpt_backward(cross_entropy_backward(np.asarray(1.0, dtype), ce_cache)[0], cache)

    ref_logits = model(torch.from_numpy(idx)).logits
    ref_loss = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, config.vocab_size),
                                                 torch.from_numpy(targets).reshape(-1))
    ref_loss.backward()
    assert_close(logits, ref_logits.detach().numpy(), atol=logit_bar, name=f"logits {dtype}")
    assert abs(float(loss) - ref_loss.item()) < logit_bar
    assert_model_gradients(hf_state_dict(grads, config), model, bar, dtype)
    assert all(grads[k].dtype == np.dtype(dtype) for k in grads)


def test_fake_loss_gradients_float64(exported):
    # L = sum(logits * dlogits): every logit's gradient path, not only cross-entropy's, in float64
    config, params, folder = exported
    model = hf_model(folder, "float64")
    rng = np.random.default_rng(2)
    ps = {k: v.astype(np.float64) for k, v in params.items()}
    idx = rng.integers(0, config.vocab_size, (2, config.block_size - 3))  # T shorter than the block
    logits, cache = gpt_forward(ps, idx, config)
    dlogits = rng.standard_normal(logits.shape)
    grads = hf_state_dict(gpt_backward(dlogits, cache), config)
    (model(torch.from_numpy(idx)).logits * torch.from_numpy(dlogits)).sum().backward()
    for name, p in model.named_parameters():
        assert rel_error(grads[name], p.grad.numpy()) <= 1e-9, name


def test_adamw_and_clipping_match_torch():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((5, 3)), "b": rng.standard_normal(5)}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = AdamW(params, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8)
    topt = torch.optim.AdamW([{"params": [tparams["w"]], "weight_decay": 0.1},
                              {"params": [tparams["b"]], "weight_decay": 0.0}], betas=(0.9, 0.99), eps=1e-8)
    for step in range(6):
        grads = {k: rng.standard_normal(v.shape) * 3 for k, v in params.items()}
        for k, g in grads.items():
            tparams[k].grad = torch.tensor(g)
        norm = clip_grad_norm(grads, 1.0)
        tnorm = torch.nn.utils.clip_grad_norm_(list(tparams.values()), 1.0)
        assert abs(norm - tnorm.item()) < 1e-12
        lr = 1e-2 * (step + 1)
        for group in topt.param_groups:
            group["lr"] = lr
        opt.step(params, grads, lr)
        topt.step()
        for k in params:
            assert_close(params[k], tparams[k].detach().numpy(), atol=1e-14, name=k)
