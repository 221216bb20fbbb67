"""Whole-encoder backward against torch autograd through sentence-transformers, any padding pattern."""

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from npminilm import SentenceEncoder
from tests.helpers import rel_error
from tests.encoder.test_folder_oracle import build_folder

# (dtype, max relative error per tensor: max|ours - torch| / max|torch|), the bars
BARS = [("float64", 1e-9), ("float32", 1e-4)]
TORCH = {"float64": torch.float64, "float32": torch.float32}
TEXTS = ["A girl is styling her hair.", "", "Open-source LLMs rock.", "x",
         "a much longer sentence, with punctuation; and quite a few more tokens than the others in this batch"]


def torch_grads(folder, dtype, features, d_emb):
    model = SentenceTransformer(str(folder), device="cpu").to(TORCH[dtype]).eval()
    out = model({k: torch.from_numpy(v) for k, v in features.items()})["sentence_embedding"]
    (out * torch.from_numpy(d_emb)).sum().backward()
    return out.detach().numpy(), {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}


def compare(enc, folder, dtype, bar, texts, rng):
    features = enc.tokenize(texts)
    emb, cache = enc.forward_train(features)
    d_emb = rng.standard_normal(emb.shape).astype(dtype)
    grads = enc.backward(d_emb, cache)
    ref_emb, ref = torch_grads(folder, dtype, features, d_emb)
    assert np.abs(emb - ref_emb).max() < (1e-12 if dtype == "float64" else 1e-5)
    matched = {name: next(n for n in ref if n.endswith("." + name)) for name in grads}
    assert sorted(matched.values()) == sorted(ref), "both engines must give gradients for the same tensors"
    scale = max(np.abs(g).max() for g in ref.values())
    worst = 0.0
    for name, g in grads.items():
        r = ref[matched[name]]
        assert g.shape == r.shape and g.dtype == np.dtype(dtype), name
        if name.endswith("attention.self.key.bias"):
            # softmax ignores a per-row constant and q . b_k is one: the exact gradient is zero, both engines
            # return rounding noise, so check that it is noise relative to the whole gradient's scale
            assert max(np.abs(g).max(), np.abs(r).max()) <= bar * scale, name
            continue
        err = rel_error(g, r)
        worst = max(worst, err)
        assert err <= bar, f"{name}: relative error {err:.3g} > {bar}"
    print(f"{dtype}: worst relative gradient error {worst:.3g} over {len(grads)} tensors")


@pytest.mark.parametrize("dtype,bar", BARS)
def test_real_weights_backward_matches_autograd(model_dir, dtype, bar):
    rng = np.random.default_rng()
    texts = [TEXTS[i] for i in rng.permutation(len(TEXTS))]
    compare(SentenceEncoder(model_dir, dtype=dtype), model_dir, dtype, bar, texts, rng)


@pytest.mark.parametrize("dtype,bar", BARS)
@pytest.mark.parametrize("modes,normalize", [(["mean"], True), (["cls"], False), (["max"], True),
                                             (["cls", "max", "mean", "mean_sqrt_len_tokens"], True)])
def test_random_config_backward_matches_autograd(tmp_path, model_dir, dtype, bar, modes, normalize):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    folder = build_folder(tmp_path / "m", model_dir, 3, modes, normalize, False, True, seed)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 30, size=int(rng.integers(1, 7)))  # all-padding-but-CLS/SEP rows included
    texts = [" ".join(rng.choice(["cat", "dog", "the", "sat", "running", ",", "über"], n)) for n in lengths]
    compare(SentenceEncoder(folder, dtype=dtype), folder, dtype, bar, texts, rng)
