"""The transformers export: the class with the same architecture, its tensor names and layout, its config.json.

    layernorm + learned positions + GELU + NKV = NH, biases  ->  GPT2LMHeadModel (Conv1D weights [in, out])
    rmsnorm + rope + swiglu (any NKV)                        ->  LlamaForCausalLM (c_attn split into q_proj,
                                                                 k_proj, v_proj; attention_bias = bias)
    the same with moe_experts, no biases                     ->  MixtralForCausalLM (the experts' gate and up
                                                                 stacked into gate_up_proj)
    mixer mamba + rmsnorm                                    ->  MambaForCausalLM (MambaMixer's own names)
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
    """"gpt2", "llama", "mixtral" or "mamba": the transformers architecture with the function of `config`'s."""
    if config.mixer == "mamba":
        if config.norm == "rmsnorm":
            return "mamba"
        raise InvalidArgumentError("export: MambaForCausalLM normalises with RMSNorm (norm='rmsnorm')")
    parts = (config.norm, config.pos, config.ffn)
    if parts == ("layernorm", "learned", "gelu") and config.n_kv_head == config.n_head and config.bias:
        return "gpt2"
    if parts == ("rmsnorm", "rope", "swiglu") and not config.moe_experts:
        return "llama"
    if parts == ("rmsnorm", "rope", "swiglu") and not config.bias:
        return "mixtral"
    if config.moe_experts or not config.bias:
        raise InvalidArgumentError("export: Mixtral has no attention biases (train a mixture of experts with bias "
                                   "off, --no-bias) and GPT-2 has them all")
    raise InvalidArgumentError(f"no transformers class has norm={config.norm}, pos={config.pos}, ffn={config.ffn}"
                               f"{'' if config.n_kv_head == config.n_head else ', grouped-query attention'}: "
                               "export takes GPT-2's components or Llama's (rmsnorm, rope, swiglu)")


def hf_state_dict(params, config: GPTConfig) -> dict[str, np.ndarray]:
    """The tensors of the transformers model (`architecture`), from ours (or from our gradients)."""
    arch = architecture(config)
    if arch == "mamba":
        return _mamba_state_dict(params, config)
    if arch in ("llama", "mixtral"):
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
        w, b = params[ours + "attn.c_attn.weight"], params.get(ours + "attn.c_attn.bias")
        for proj, rows in (("q_proj", slice(0, C)), ("k_proj", slice(C, C + KV)), ("v_proj", slice(C + KV, None))):
            out[f"{hf}self_attn.{proj}.weight"] = w[rows]
            if b is not None:
                out[f"{hf}self_attn.{proj}.bias"] = b[rows]
        out[hf + "self_attn.o_proj.weight"] = params[ours + "attn.c_proj.weight"]
        if config.bias:
            out[hf + "self_attn.o_proj.bias"] = params[ours + "attn.c_proj.bias"]
        out[hf + "input_layernorm.weight"] = params[ours + "ln_1.weight"]
        out[hf + "post_attention_layernorm.weight"] = params[ours + "ln_2.weight"]
        if config.moe_experts:  # MixtralSparseMoeBlock: the router "gate", the experts' weights stacked
            out[hf + "mlp.gate.weight"] = params[ours + "mlp.gate.weight"]
            out[hf + "mlp.experts.gate_up_proj"] = np.concatenate(
                [params[ours + "mlp.experts.gate_proj.weight"], params[ours + "mlp.experts.up_proj.weight"]], axis=1)
            out[hf + "mlp.experts.down_proj"] = params[ours + "mlp.experts.down_proj.weight"]
        else:
            out.update({hf + f"mlp.{m}.weight": params[ours + f"mlp.{m}.weight"]
                        for m in ("gate_proj", "up_proj", "down_proj")})
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _mamba_state_dict(params, config):
    out = {"backbone.embeddings.weight": params["wte.weight"], "backbone.norm_f.weight": params["ln_f.weight"]}
    for i in range(config.n_layer):
        for name, value in params.items():
            prefix = f"h.{i}."
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            hf = f"backbone.layers.{i}." + ("norm.weight" if rest == "ln_1.weight" else rest)
            out[hf] = value[:, None, :] if rest == "mixer.conv1d.weight" else value  # Conv1d's (D, 1, K)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def hf_config(config: GPTConfig) -> dict:
    """config.json for the transformers class with the same function as ours (tied head, no dropout at export)."""
    arch = architecture(config)
    if arch == "mamba":
        return {
            "model_type": "mamba", "architectures": ["MambaForCausalLM"], "vocab_size": config.vocab_size,
            "hidden_size": config.n_embd, "num_hidden_layers": config.n_layer, "state_size": config.mamba_d_state,
            "conv_kernel": config.mamba_d_conv, "expand": config.mamba_expand,
            "intermediate_size": config.mamba_inner, "time_step_rank": config.dt_rank,
            "layer_norm_epsilon": config.layer_norm_epsilon, "use_bias": config.bias, "use_conv_bias": True,
            "hidden_act": "silu", "residual_in_fp32": True, "tie_word_embeddings": True, "use_mambapy": False,
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "torch_dtype": "float32",
        }  # fmt: skip
    if arch == "gpt2":
        return {
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
            "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.n_inner,
            "activation_function": "gelu", "layer_norm_epsilon": config.layer_norm_epsilon,
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
            "tie_word_embeddings": True, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "bos_token_id": None, "eos_token_id": None, "torch_dtype": "float32",
        }  # fmt: skip
    llama = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd, "intermediate_size": config.n_inner, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_size, "max_position_embeddings": config.block_size, "hidden_act": "silu",
        "rms_norm_eps": config.layer_norm_epsilon, "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": config.bias, "mlp_bias": False, "attention_dropout": config.dropout,
        "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "torch_dtype": "float32",
    }  # fmt: skip
    if arch == "llama":
        return llama
    del llama["attention_bias"], llama["mlp_bias"]
    return {**llama, "model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
            "num_local_experts": config.moe_experts, "num_experts_per_tok": config.moe_top_k,
            "router_aux_loss_coef": config.moe_aux_coef, "router_jitter_noise": 0.0, "output_router_logits": False,
            "sliding_window": None}


def export_hf(checkpoint_dir, out_dir) -> Path:
    """Write a folder that transformers' AutoModelForCausalLM.from_pretrained loads as GPT2LMHeadModel,
    LlamaForCausalLM, MixtralForCausalLM or MambaForCausalLM: config.json + model.safetensors (the head tied to the token embedding), plus our
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
