"""Language-model checkpoints: safetensors parameters and optimizer state, JSON configs, the tokenizer.

A checkpoint folder holds
    config.json          {"format": "npminilm-lm", "model": GPTConfig, "train": TrainConfig}
    tokenizer.json       the char or BPE tokenizer
    model.safetensors    float32 parameters, our names and [out, in] linear layout
    optimizer.safetensors  AdamW moments ("m.<name>", "v.<name>")
    train_state.json     step, AdamW step, the training rng's state, eval history
Each file is written to a temporary name and renamed, train_state.json last, so an interrupted save leaves the
previous train_state.json pointing at a complete step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError, NpMiniLMError
from ..io.tensors import load_tensors, save_tensors, write_json
from .config import GPTConfig
from .model import check_params
from .tokenizers import tokenizer_from_dict

FORMAT = "npminilm-lm"


def save_checkpoint(out_dir, params, model_config: GPTConfig, tokenizer, train_config: dict | None = None,
                    optimizer=None, state: dict | None = None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"format": FORMAT, "model": model_config.to_dict(), "train": train_config})
    write_json(out / "tokenizer.json", tokenizer.to_dict())
    save_tensors(out / "model.safetensors", {k: v.astype(np.float32) for k, v in params.items()})
    if optimizer is not None:
        save_tensors(out / "optimizer.safetensors", optimizer.state_tensors())
    if state is not None:
        write_json(out / "train_state.json", {**state, "adamw_step": optimizer.t if optimizer else 0})


def load_checkpoint(path, dtype=np.float32, with_training_state=False):
    """-> (params, GPTConfig, tokenizer, train_config dict, optimizer tensors or None, state dict or None)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such checkpoint folder")
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tok = tokenizer_from_dict(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{folder}: not a language-model checkpoint ({Path(exc.filename).name} missing)") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{folder}: broken JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelLoadError(f"{folder}/config.json: not an npminilm language-model config")
    config = GPTConfig.from_dict(meta["model"])
    params = load_tensors(folder / "model.safetensors", dtype)
    try:
        check_params(params, config, where=str(folder / "model.safetensors"))
    except NpMiniLMError as exc:
        raise ModelLoadError(str(exc)) from None
    if tok.vocab_size > config.vocab_size:
        raise ModelLoadError(f"{folder}: tokenizer has {tok.vocab_size} ids, model only {config.vocab_size}")
    opt, state = None, None
    if with_training_state:
        try:
            state = json.loads((folder / "train_state.json").read_text(encoding="utf-8"))
            opt = load_tensors(folder / "optimizer.safetensors", dtype)
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{folder}: cannot resume, {Path(exc.filename).name} is missing") from None
    return params, config, tok, meta.get("train") or {}, opt, state
