"""The transformers export: the class with the same architecture, its tensor names and layout, its config.json.

    layernorm + learned positions + GELU + NKV = NH  ->  GPT2LMHeadModel (Conv1D weights [in, out])
    rmsnorm + rope + swiglu (any NKV)                ->  LlamaForCausalLM (attention_bias: c_attn split into
                                                         q_proj, k_proj, v_proj with their biases)
Other mixtures have no transformers class and are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError
from ..io.atomic import atomic_write
from ..io.tensors import write_json
from .checkpoint import load_checkpoint
from .config import GPTConfig
from .model import param_shapes


def architecture(config: GPTConfig) -> str:
    """"gpt2" or "llama": the transformers architecture with the same function as `config`'s decoder."""
    parts = (config.norm, config.pos, config.ffn)
    if parts == ("layernorm", "learned", "gelu") and config.n_kv_head == config.n_head:
        return "gpt2"
    if parts == ("rmsnorm", "rope", "swiglu"):
        return "llama"
    raise InvalidArgumentError(f"no transformers class has norm={config.norm}, pos={config.pos}, ffn={config.ffn}"
                               f"{'' if config.n_kv_head == config.n_head else ', grouped-query attention'}: "
                               "export takes GPT-2's components or Llama's (rmsnorm, rope, swiglu)")


def hf_state_dict(params, config: GPTConfig) -> dict[str, np.ndarray]:
    """The tensors of the transformers model (`architecture`), from ours (or from our gradients)."""
    if architecture(config) == "llama":
        return _llama_state_dict(params, config)
    out = {}
    for name in param_shapes(config):
        value = params[name]
        if name.startswith("h.") and ".c_" in name and name.endswith(".weight"):
            value = value.T  # our linear [out, in] -> HF Conv1D [in, out]
        out["transformer." + name] = np.ascontiguousarray(value)
    return out


def _llama_state_dict(params, config):
    C, KV = config.n_embd, config.kv_size
    out = {"model.embed_tokens.weight": params["wte.weight"], "model.norm.weight": params["ln_f.weight"]}
    for i in range(config.n_layer):
        ours, hf = f"h.{i}.", f"model.layers.{i}."
        w, b = params[ours + "attn.c_attn.weight"], params[ours + "attn.c_attn.bias"]
        for proj, rows in (("q_proj", slice(0, C)), ("k_proj", slice(C, C + KV)), ("v_proj", slice(C + KV, None))):
            out[f"{hf}self_attn.{proj}.weight"], out[f"{hf}self_attn.{proj}.bias"] = w[rows], b[rows]
        out.update({
            hf + "self_attn.o_proj.weight": params[ours + "attn.c_proj.weight"],
            hf + "self_attn.o_proj.bias": params[ours + "attn.c_proj.bias"],
            hf + "input_layernorm.weight": params[ours + "ln_1.weight"],
            hf + "post_attention_layernorm.weight": params[ours + "ln_2.weight"],
            **{hf + f"mlp.{m}.weight": params[ours + f"mlp.{m}.weight"] for m in ("gate_proj", "up_proj", "down_proj")},
        })  # fmt: skip
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def hf_config(config: GPTConfig) -> dict:
    """config.json for the transformers class with the same function as ours (tied head, no dropout at export)."""
    if architecture(config) == "llama":
        return {
            "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": config.vocab_size,
            "hidden_size": config.n_embd, "intermediate_size": config.n_inner, "num_hidden_layers": config.n_layer,
            "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
            "head_dim": config.head_size, "max_position_embeddings": config.block_size, "hidden_act": "silu",
            "rms_norm_eps": config.layer_norm_epsilon, "rope_theta": config.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
            "attention_bias": True, "mlp_bias": False, "attention_dropout": config.dropout,
            "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
            "torch_dtype": "float32",
        }  # fmt: skip
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.n_inner,
        "activation_function": "gelu", "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "tie_word_embeddings": True, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "bos_token_id": None, "eos_token_id": None, "torch_dtype": "float32",
    }  # fmt: skip


def export_hf(checkpoint_dir, out_dir) -> Path:
    """Write a folder that transformers' AutoModelForCausalLM.from_pretrained loads as GPT2LMHeadModel or
    LlamaForCausalLM: config.json + model.safetensors (the head tied to the token embedding), plus our
    tokenizer.json for reference."""
    params, config, tok, _, _, _ = load_checkpoint(checkpoint_dir)
    state = hf_state_dict(params, config)  # refuses an architecture transformers lacks, before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", hf_config(config))
    from safetensors.numpy import save

    data = save(state, metadata={"format": "pt"})
    atomic_write(out / "model.safetensors", lambda f: f.write(data), binary=True)
    write_json(out / "npminilm_tokenizer.json", tok.to_dict())
    return out
