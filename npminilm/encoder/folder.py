"""Reading a sentence-transformers / HF BERT model folder: config.json, modules.json, pooling and length settings,
and config_sentence_transformers.json (prompts, the default prompt, the similarity function)."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelLoadError
from .config import BertConfig

# sentence-transformers concatenates pooled vectors in this order, whatever order the config lists them in.
POOLING_ORDER = ("cls", "max", "mean", "mean_sqrt_len_tokens")
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
}
UNSUPPORTED_POOLING_KEYS = {"pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")


@dataclass
class ModelFolder:
    path: Path                  # the sentence-transformers folder (holds modules.json)
    transformer_path: Path      # the HF folder (config.json, model.safetensors, vocab) — usually the same
    config: BertConfig
    raw_config: dict
    pooling_modes: list = field(default_factory=lambda: ["mean"])
    normalize: bool = False
    max_seq_length: int = 512
    do_lower_case: bool = False
    include_prompt: bool = True  # the Pooling module's: False pools over the text's tokens only, not the prompt's
    prompts: dict = field(default_factory=dict)  # name -> prompt text, from config_sentence_transformers.json
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None

    @property
    def weights_path(self):
        return self.transformer_path / "model.safetensors"


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: unreadable JSON ({e})") from None


def read_model_folder(path):
    """Read every config of a model folder. Weights and vocab are checked by their own loaders."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a folder")
    transformer_path, pooling_path, normalize = path, None, False
    if (path / "modules.json").exists():
        transformer_path, pooling_path, normalize = _read_modules(path)

    raw_config = read_json(transformer_path / "config.json")
    if not isinstance(raw_config, dict):
        raise ModelLoadError(f"{transformer_path / 'config.json'}: not a JSON object")
    config = BertConfig.from_dict(raw_config, where=str(transformer_path / "config.json"))
    if not (transformer_path / "model.safetensors").exists():
        hint = " (pickled pytorch_model.bin is never loaded; convert it to safetensors)" \
            if (transformer_path / "pytorch_model.bin").exists() else ""
        raise ModelLoadError(f"{transformer_path / 'model.safetensors'}: missing{hint}")

    pooling_modes, include_prompt = ["mean"], True
    if pooling_path is not None:
        pooling_modes, include_prompt = _read_pooling(pooling_path / "config.json", config.hidden_size)
    # Without modules.json sentence-transformers builds a bare Transformer module, which never reads
    # sentence_bert_config.json: the limit then comes from the tokenizer config and the position table.
    max_seq_length, do_lower_case = _read_sentence_bert_config(transformer_path, config,
                                                               use_file=pooling_path is not None)
    prompts, default_prompt_name, similarity_fn_name = _read_st_config(path / "config_sentence_transformers.json")
    return ModelFolder(path, transformer_path, config, raw_config, pooling_modes, normalize,
                       max_seq_length, do_lower_case, include_prompt, prompts, default_prompt_name,
                       similarity_fn_name)


def _read_st_config(config_path):
    """(prompts, default_prompt_name, similarity_fn_name) of config_sentence_transformers.json, if there is one."""
    if not config_path.exists():
        return {}, None, None
    cfg = read_json(config_path)
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{config_path}: not a JSON object")
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ModelLoadError(f"{config_path}: prompts must map names to strings")
    default = cfg.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelLoadError(f"{config_path}: default_prompt_name {default!r} is not among the prompts "
                             f"{sorted(prompts)}")
    similarity = cfg.get("similarity_fn_name")
    if similarity is not None and similarity not in SIMILARITY_FN_NAMES:
        raise ModelLoadError(f"{config_path}: similarity_fn_name must be one of {SIMILARITY_FN_NAMES}, "
                             f"got {similarity!r}")
    return dict(prompts), default, similarity


def _read_modules(path):
    modules = read_json(path / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelLoadError(f"{path / 'modules.json'}: expected a list of module objects")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]) or len(kinds) > 3:
        raise ModelLoadError(f"{path / 'modules.json'}: unsupported module pipeline {kinds}; "
                             "expected Transformer -> Pooling -> optional Normalize")
    transformer_path = (path / modules[0].get("path", "")).resolve()
    pooling_path = (path / modules[1].get("path", "")).resolve()
    for p in (transformer_path, pooling_path):
        if not p.is_relative_to(path.resolve()):
            raise ModelLoadError(f"{path / 'modules.json'}: module path {p} leaves the model folder")
    return transformer_path, pooling_path, len(kinds) == 3


def _read_pooling(config_path, hidden_size):
    cfg = read_json(config_path)
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{config_path}: not a JSON object")
    dim = cfg.get("word_embedding_dimension", cfg.get("embedding_dimension", hidden_size))
    if dim != hidden_size:
        raise ModelLoadError(f"{config_path}: embedding dimension {dim} does not match hidden_size {hidden_size}")
    if "pooling_mode" in cfg and isinstance(cfg["pooling_mode"], (str, list)):
        requested = cfg["pooling_mode"] if isinstance(cfg["pooling_mode"], list) else [cfg["pooling_mode"]]
        requested = ["mean_sqrt_len_tokens" if m == "mean_sqrt_len" else m for m in requested]
    else:
        requested = [mode for key, mode in {**LEGACY_POOLING_KEYS, **UNSUPPORTED_POOLING_KEYS}.items()
                     if cfg.get(key)]
    unknown = [m for m in requested if m not in POOLING_ORDER]
    if unknown:
        raise ModelLoadError(f"{config_path}: unsupported pooling mode(s) {unknown}")
    if not requested:
        raise ModelLoadError(f"{config_path}: no pooling mode enabled")
    include_prompt = cfg.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise ModelLoadError(f"{config_path}: include_prompt must be true or false, got {include_prompt!r}")
    if "pooling_mode" in cfg:
        return list(dict.fromkeys(requested)), include_prompt
    return [m for m in POOLING_ORDER if m in requested], include_prompt


def tokenizer_max_length(path, config):
    """tokenizer_config.json's model_max_length (ignored when absent or a 1e30-style "no limit"), at most the
    position table."""
    tok_cfg = path / "tokenizer_config.json"
    model_max = read_json(tok_cfg).get("model_max_length") if tok_cfg.exists() else None
    limit = model_max if isinstance(model_max, int) and model_max < 10**6 else config.max_position_embeddings
    return min(limit, config.max_position_embeddings)


def _read_sentence_bert_config(transformer_path, config, use_file=True):
    cfg = {}
    if use_file and (transformer_path / "sentence_bert_config.json").exists():
        cfg = read_json(transformer_path / "sentence_bert_config.json")
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"{transformer_path / 'sentence_bert_config.json'}: not a JSON object")
    max_len = cfg.get("max_seq_length")
    if max_len is None:
        max_len = tokenizer_max_length(transformer_path, config)
    if type(max_len) is not int or max_len < 2:
        raise ModelLoadError(f"{transformer_path / 'sentence_bert_config.json'}: bad max_seq_length {max_len!r}")
    return max_len, bool(cfg.get("do_lower_case", False))
