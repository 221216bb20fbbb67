"""The fine-tuned model as a sentence-transformers folder: the base folder's files (configs, tokenizer, modules,
pooling) with the new weights and a model card, built beside the target and renamed into place."""

import datetime
import os
import shutil
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write, replace_dir
from ..io.tensors import save_tensors

SKIPPED = {"model.safetensors", "pytorch_model.bin", "README.md", ".gitattributes", "tf_model.h5", "flax_model.msgpack",
           "rust_model.ot", "model.onnx", "onnx", "openvino"}  # weights in other formats would be the old model's


def write_model_folder(model, out, card, extra=None, merge=False):
    """Write `model` (its base `folder` and `transformer_path`, its `params`) as a sentence-transformers folder at
    `out`, with `card` (markdown) as README.md and whatever `extra(folder)` adds. Built in a sibling temporary
    folder, then renamed over `out`; with `merge`, its files are renamed into `out` one by one instead, keeping
    what else `out` holds (the run's checkpoints and best model): each file is whole at every moment."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = out.with_name(f".{out.name}.building")
    if building.exists():
        shutil.rmtree(building)
    base = Path(model.folder)
    shutil.copytree(base, building, ignore=lambda d, names: [n for n in names if n in SKIPPED])
    transformer = building / Path(model.transformer_path).relative_to(base)
    save_tensors(transformer / "model.safetensors", {k: np.asarray(v, np.float32) for k, v in model.params.items()})
    atomic_write(building / "README.md", lambda f: f.write(card))
    if extra is not None:
        extra(building)
    if not merge:
        replace_dir(building, out)
        return
    for path in sorted(building.rglob("*")):
        if path.is_file():
            target = out / path.relative_to(building)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    shutil.rmtree(building)


def model_card(base_name, config, data, history, version):
    """A short model card: the base model, data, loss, hyperparameters, and the dev scores."""
    rows = "\n".join(f"| {h['step']} | {h['epoch']:.2f} | {h['loss']:.4f} | "
                     + (f"{h['metric']} {h['score']:.4f}" if "score" in h else "") + " |" for h in history)
    settings = "\n".join(f"- `{k}`: {v}" for k, v in config.items())
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
base_model: {base_name}
tags: [sentence-transformers, sentence-similarity, npminilm]
---

# Fine-tuned from {base_name}

Trained with npminilm {version} (NumPy only, no torch) on {datetime.date.today().isoformat()}. Load it with
`sentence_transformers.SentenceTransformer(path)` or `npminilm.SentenceEncoder(path)`.

## Data

{data}

## Training

{settings}

## Evaluations

| step | epoch | training loss | dev |
|---|---|---|---|
{rows}
"""
