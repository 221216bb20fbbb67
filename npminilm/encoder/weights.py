"""BERT parameters: the expected HF names and shapes for a config, and loading them checked from safetensors."""

import numpy as np

from ..errors import ModelLoadError
from ..io.safetensors_reader import load_tensor, read_header

POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")


def bert_param_shapes(config, with_pooler=True):
    """{HF parameter name (without the `bert.` prefix): shape} for a BertConfig."""
    C, I = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, C),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, C),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, C),
        "embeddings.LayerNorm.weight": (C,),
        "embeddings.LayerNorm.bias": (C,),
    }
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes[p + f"attention.self.{name}.weight"] = (C, C)
            shapes[p + f"attention.self.{name}.bias"] = (C,)
        shapes[p + "attention.output.dense.weight"] = (C, C)
        shapes[p + "attention.output.dense.bias"] = (C,)
        shapes[p + "attention.output.LayerNorm.weight"] = (C,)
        shapes[p + "attention.output.LayerNorm.bias"] = (C,)
        shapes[p + "intermediate.dense.weight"] = (I, C)
        shapes[p + "intermediate.dense.bias"] = (I,)
        shapes[p + "output.dense.weight"] = (C, I)
        shapes[p + "output.dense.bias"] = (C,)
        shapes[p + "output.LayerNorm.weight"] = (C,)
        shapes[p + "output.LayerNorm.bias"] = (C,)
    if with_pooler:
        shapes["pooler.dense.weight"] = (C, C)
        shapes["pooler.dense.bias"] = (C,)
    return shapes


def canonical_name(key):
    """The one place checkpoint names are normalised: drop the `bert.` prefix, old LayerNorm gamma/beta names."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    if key.endswith(".gamma"):
        key = key[: -len("gamma")] + "weight"
    elif key.endswith(".beta"):
        key = key[: -len("beta")] + "bias"
    return key


def load_bert_params(path, config, dtype=np.float32):
    """Load and check every BERT tensor from a safetensors file, keyed by HF name (prefix stripped).

    Integer tensors (such as `embeddings.position_ids`) and heads outside BertModel are ignored. The pooler is
    loaded when both its tensors are present. Shapes are checked from the header, before anything is read.
    """
    infos = float_tensors(path)
    with_pooler = all(k in infos for k in POOLER_KEYS)
    return load_checked(path, infos, bert_param_shapes(config, with_pooler=with_pooler), dtype)


def float_tensors(path):
    """{canonical name: TensorInfo} of the file's float tensors (the first of two names that normalise alike)."""
    infos = {}
    for key, info in read_header(path).items():
        if info.is_float:
            infos.setdefault(canonical_name(key), info)
    return infos


def load_checked(path, infos, shapes, dtype):
    """{name: array} for each {name: shape}, every shape checked from the header before anything is read."""
    for name, shape in shapes.items():
        info = infos.get(name)
        if info is None:
            raise ModelLoadError(f"{path}: missing tensor {name!r} (config expects shape {shape})")
        if info.shape != shape:
            raise ModelLoadError(f"{path}: tensor {info.name!r} has shape {info.shape}, config expects {shape}")
    return {name: load_tensor(path, infos[name], np.dtype(dtype)) for name in shapes}
