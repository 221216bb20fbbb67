"""The transformers GPT-2 export: GPT-2's tensor names and Conv1D [in, out] layout, and its config.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write
from ..io.tensors import write_json
from .checkpoint import load_checkpoint
from .config import GPTConfig
from .model import param_shapes


def hf_state_dict(params, config: GPTConfig) -> dict[str, np.ndarray]:
    """The tensors of a transformers GPT2LMHeadModel: `transformer.` prefix, Conv1D weights [in, out]."""
    out = {}
    for name in param_shapes(config):
        value = params[name]
        if name.startswith("h.") and ".c_" in name and name.endswith(".weight"):
            value = value.T  # our linear [out, in] -> HF Conv1D [in, out]
        out["transformer." + name] = np.ascontiguousarray(value)
    return out


def hf_config(config: GPTConfig) -> dict:
    """config.json for transformers' GPT2LMHeadModel with the same function as ours (exact-erf GELU, tied head)."""
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": 4 * config.n_embd,
        "activation_function": "gelu", "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "tie_word_embeddings": True, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "bos_token_id": None, "eos_token_id": None, "torch_dtype": "float32",
    }  # fmt: skip


def export_hf(checkpoint_dir, out_dir) -> Path:
    """Write a folder that transformers.GPT2LMHeadModel.from_pretrained loads: config.json + model.safetensors
    (GPT-2 names, Conv1D [in, out] weights, head tied to wte), plus our tokenizer.json for reference."""
    params, config, tok, _, _, _ = load_checkpoint(checkpoint_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", hf_config(config))
    from safetensors.numpy import save

    data = save(hf_state_dict(params, config), metadata={"format": "pt"})
    atomic_write(out / "model.safetensors", lambda f: f.write(data), binary=True)
    write_json(out / "npminilm_tokenizer.json", tok.to_dict())
    return out
