"""`npminilm trace`: what the encoder does to one sentence, stage by stage, read from the forward's caches."""

from dataclasses import dataclass

import numpy as np

from ..nn.ops import l2_normalize_forward
from .bert import bert_forward
from .pooling import pool_forward


@dataclass
class Stage:
    name: str
    value: np.ndarray            # this sentence's tensor: (T, C), (T, I), (NH, T, T) or (dim,)
    hf_diff: float | None = None  # max |ours - HF| when a reference was run


def trace(encoder, text):
    """Run one text through `encoder`, returning (tokens, stages). The stages are the tensors the single
    forward pass keeps under their names for its backward (no second implementation), in the order they are
    computed."""
    features = encoder.tokenize([text])
    ids = features["input_ids"]
    out, cache = bert_forward(encoder.params, encoder.bert_config, ids, features["attention_mask"],
                              features["token_type_ids"], output_hidden_states=True, keep_cache=True)
    hidden = [h[0] for h in out["hidden_states"]]
    embeddings = cache.embeddings.stages
    stages = [
        Stage("embeddings.word", embeddings["word"][0]),
        Stage("embeddings.position", embeddings["position"][0]),
        Stage("embeddings.token_type", embeddings["token_type"][0]),
        Stage("embeddings.sum", embeddings["sum"][0]),
        Stage("embeddings.LayerNorm", hidden[0]),
    ]
    for i, layer in enumerate(cache.layers):
        stages += [Stage(f"layer.{i}.{name}", value[0]) for name, value in layer.stages.items()]  # sentence 0
        stages.append(Stage(f"layer.{i}.output.LayerNorm", hidden[i + 1]))
    pooled, _ = pool_forward(out["last_hidden_state"], features["attention_mask"], encoder.pooling_modes)
    stages.append(Stage("pooling." + "+".join(encoder.pooling_modes), pooled[0]))
    if encoder.normalize:
        stages.append(Stage("normalize", l2_normalize_forward(pooled)[0][0]))
    tokens = encoder.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return tokens, stages


def attach_hf_diffs(stages, reference):
    """Fill each stage's hf_diff from {stage name: HF array}; returns the largest difference."""
    worst = 0.0
    for stage in stages:
        if stage.name in reference:
            ref = np.asarray(reference[stage.name], dtype=np.float64)
            stage.hf_diff = float(np.abs(stage.value.astype(np.float64) - ref).max())
            worst = max(worst, stage.hf_diff)
    return worst


def format_trace(tokens, stages, max_heads_tokens=12):
    """A human-readable report: tokens, then one line per stage, with each head's strongest link per token."""
    lines = ["tokens: " + " ".join(tokens), "",
             f"{'stage':<32} {'shape':<14} {'mean':>10} {'std':>10} {'max|x|':>10} {'max|ours-HF|':>13} "
             f"{'scaled':>9}"]
    for s in stages:
        v = s.value.astype(np.float64)
        diff = scaled = ""
        if s.hf_diff is not None:  # scaled: the difference over max(1, max|x|), in float32 ulps' terms
            diff, scaled = f"{s.hf_diff:.2e}", f"{s.hf_diff / max(1.0, np.abs(v).max()):.1e}"
        lines.append(f"{s.name:<32} {str(s.value.shape):<14} {v.mean():>10.4f} {v.std():>10.4f} "
                     f"{np.abs(v).max():>10.4f} {diff:>13} {scaled:>9}")
        if s.name.endswith("attention.probs") and len(tokens) <= max_heads_tokens:
            for h, pattern in enumerate(s.value):
                links = " ".join(f"{tokens[q]}→{tokens[k]}" for q, k in enumerate(pattern.argmax(axis=-1)))
                lines.append(f"    head {h:>2}: {links}")
    final = stages[-1].value
    lines += ["", f"{stages[-1].name}: ({final.shape[0]},) [" + ", ".join(f"{x:.6f}" for x in final[:6]) + ", ...]"]
    return "\n".join(lines)


def trace_json(text, tokens, stages, layer):
    """A JSON-ready dict: per-stage statistics and HF differences, the final vector, one layer's attention."""
    return {
        "text": text,
        "tokens": tokens,
        "stages": [{"name": s.name, "shape": list(s.value.shape), "mean": float(s.value.mean()),
                    "std": float(s.value.std()), "max_abs": float(np.abs(s.value).max()), "max_abs_diff_hf": s.hf_diff}
                   for s in stages],
        "attention_layer": layer,
        "attention": next(s.value for s in stages if s.name == f"layer.{layer}.attention.probs").tolist(),
        "embedding": stages[-1].value.tolist(),
    }


def plot_attention(tokens, stages, layer, path):
    """Draw every head of one layer as a heatmap grid into `path` (needs matplotlib)."""
    import matplotlib  # optional: the caller turns ImportError into a one-line message

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = next(s.value for s in stages if s.name == f"layer.{layer}.attention.probs")
    NH = probs.shape[0]
    cols = min(4, NH)
    rows = -(-NH // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for h, ax in enumerate(axes.flat):
        ax.axis("off")
        if h >= NH:
            continue
        ax.imshow(probs[h], vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"layer {layer} head {h}", fontsize=8)
        if len(tokens) <= 24:
            ax.axis("on")
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
