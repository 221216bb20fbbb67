"""One verbose comparison helper for every test: max difference and the first offending indices."""

import numpy as np

from npminilm.nn import ops


def assert_close(actual, expected, atol, rtol=0.0, name="array"):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
    diff = np.abs(actual - expected)
    bad = diff > atol + rtol * np.abs(expected)
    if bad.any():
        idx = np.argwhere(bad)[:5]
        rows = ", ".join(f"{tuple(i)}: {actual[tuple(i)]:.9g} vs {expected[tuple(i)]:.9g}" for i in idx)
        raise AssertionError(f"{name}: {bad.sum()} of {bad.size} elements off (max abs diff {diff.max():.3g}, "
                             f"atol {atol}, rtol {rtol}); first: {rows}")


def rel_error(a, b):
    """max |a - b| / max(|b|), the whole-tensor relative error used for gradient comparisons."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def assert_model_gradients(ours, model, bar, label):
    """Our gradients (keyed by the transformers model's names) against `model`'s .grad after a backward: the
    same tensors, each within `bar` relative; prints the worst."""
    ref = {n: p.grad.numpy() for n, p in model.named_parameters()}
    assert sorted(ours) == sorted(ref), "both engines must give gradients for the same tensors"
    errors = {name: rel_error(g, ref[name]) for name, g in ours.items()}
    worst = max(errors, key=errors.get)
    print(f"\n{label}: worst relative gradient error {errors[worst]:.2e} ({worst})")
    assert errors[worst] <= bar, f"{worst}: {errors[worst]:.2e} > {bar}"


POOLING_KEYS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
                "mean": "pooling_mode_mean_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens"}


def write_sentence_transformers_configs(path, hidden, pooling, normalize, modules=True, max_seq_length=64):
    """sentence_bert_config.json, and (with `modules`) modules.json and 1_Pooling/config.json, legacy style."""
    import json

    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                "do_lower_case": False}))
    if not modules:
        return
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": hidden, **{k: m in pooling for m, k in POOLING_KEYS.items()}}))
    mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        mods.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (path / "modules.json").write_text(json.dumps(mods))


def write_random_folder(path, model_dir, layers=2, hidden=24, heads=4, inter=40, prefix=False, seed=0,
                        modules=True, pooling=("mean",), normalize=True):
    """A small random-weight BERT folder written with NumPy alone (no torch), using the default model's vocab."""
    import json
    import shutil

    from safetensors.numpy import save_file

    from npminilm.encoder.config import BertConfig
    from npminilm.encoder.weights import bert_param_shapes

    rng = np.random.default_rng(seed)
    raw = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522, "hidden_size": hidden,
           "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": inter,
           "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    shapes = bert_param_shapes(BertConfig.from_dict(raw))
    tensors = {("bert." if prefix else "") + k: (rng.standard_normal(s) * 0.1).astype(np.float32)
               for k, s in shapes.items()}
    tensors[("bert." if prefix else "") + "embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(raw))
    save_file(tensors, str(path / "model.safetensors"))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, path / name)
    write_sentence_transformers_configs(path, hidden, pooling, normalize, modules=modules)
    return path


def make_mask(kind, B, T, rng, allow_empty=True):
    """(B, T) int mask of one padding pattern; 'empty_row' gives row 0 no real token (when allowed)."""
    lengths = rng.integers(1, T + 1, size=B)
    pos = np.arange(T)[None, :]
    if kind in ("random", "empty_row"):
        mask = rng.integers(0, 2, size=(B, T))
        mask[np.arange(B), rng.integers(0, T, size=B)] = 1
        if kind == "empty_row":
            mask[0] = 0 if allow_empty else np.eye(T)[T - 1]
    elif kind == "right":
        mask = pos < lengths[:, None]
    elif kind == "left":
        mask = pos >= T - lengths[:, None]
    elif kind == "one":  # all padding but one token, anywhere in the row
        mask = pos == rng.integers(0, T, size=B)[:, None]
    else:
        mask = np.ones((B, T))
    return np.asarray(mask, dtype=np.int64)


def pool_op(pool, mask):
    """(forward of h, backward) of one sentence-transformers pooling mode over a fixed mask."""
    return {
        "mean": (lambda h: ops.mean_pool_forward(h, mask), ops.mean_pool_backward),
        "mean_sqrt_len": (lambda h: ops.mean_pool_forward(h, mask, sqrt_len=True), ops.mean_pool_backward),
        "cls": (lambda h: ops.cls_pool_forward(h, mask), ops.cls_pool_backward),
        "max": (lambda h: ops.max_pool_forward(h, mask), ops.max_pool_backward),
    }[pool]


WORDS = "red green blue cat dog bird runs sleeps eats big small old new fast slow".split()


def toy_pairs(rng, n):
    """Fine-tuning data (`finetune.data.Examples`): scored pairs, a sentence and a shuffled copy scoring 1 and
    two unrelated sentences 0."""
    first, second, scores = [], [], []
    for _ in range(n):
        a = " ".join(rng.choice(WORDS, 5))
        if rng.random() < 0.5:
            b, s = " ".join(rng.permutation(a.split())), 1.0
        else:
            b, s = " ".join(rng.choice(WORDS, 5)), 0.0
        first.append(a)
        second.append(b)
        scores.append(s)
    from npminilm.finetune.data import Examples

    return Examples([first, second], np.array(scores))
