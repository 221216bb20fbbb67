"""What sentence-transformers users reach for past encode: prompts (and pooling that leaves them out), truncate_dim,
quantized precisions and similarity functions, on random-weight folders shaped like the model families people
run, built here with transformers. Each is compared with sentence-transformers on the same folder."""

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import quantize_embeddings as st_quantize

from npminilm import SentenceEncoder, util
from tests.encoder.test_folder_oracle import build_folder
from tests.helpers import assert_close

BGE_QUERY = "Represent this sentence for searching relevant passages: "
TEXTS = ["A man is playing a guitar.", "what is the capital of France?", "Short",
         "The quick brown fox jumps over the lazy dog near the river bank " * 30, "Ünïcödé and 東京 🙂"]

# name: (layers, pooling, normalize, max positions, max_seq_length, prompts, default prompt, include_prompt,
#        similarity_fn_name) -- the shapes of the real models, random weights
FAMILIES = {
    "bge-small-en-v1.5": (12, "cls", True, 512, 512, {"query": BGE_QUERY, "document": ""}, None, True, "cosine"),
    "e5-small-v2": (12, "mean", True, 512, 512, {"query": "query: ", "passage": "passage: "}, None, True, None),
    "gte-small": (12, "mean", False, 512, 512, {}, None, True, None),
    "paraphrase-MiniLM-L3-v2": (3, "mean", False, 512, 128, {}, None, True, None),
    "all-MiniLM-L12-v2": (12, "mean", True, 512, 128, {}, None, True, "dot"),
    "instruction-style": (3, "mean", True, 512, 32, {"query": "Instruct: find the answer\nQuery: ",
                                                     "corpus": "passage: "}, "query", False, "euclidean"),
}


def make_family(path, model_dir, name, seed):
    layers, mode, normalize, positions, max_len, prompts, default, include_prompt, similarity = FAMILIES[name]
    folder = build_folder(path, model_dir, layers, [mode], normalize, prefix=False, pooler=False, seed=seed,
                          hidden=384, heads=12, intermediate=1536, max_positions=positions, max_seq_length=max_len)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "include_prompt": include_prompt}))
    config = {"prompts": prompts, "default_prompt_name": default}
    if similarity is not None:
        config["similarity_fn_name"] = similarity
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory, model_dir):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    folder = make_family(tmp_path_factory.mktemp("family") / request.param, model_dir, request.param, seed)
    return request.param, seed, SentenceEncoder(folder), SentenceTransformer(str(folder), device="cpu")


def test_encode_and_prompts_match(family):
    name, seed, ours, ref = family
    assert ours.prompts == ref.prompts and ours.default_prompt_name == ref.default_prompt_name
    assert ours.similarity_fn_name == ref.similarity_fn_name
    for kwargs in ({}, {"prompt": "Query: "}, *({"prompt_name": p} for p in ours.prompts)):
        assert_near(ours.encode(TEXTS, batch_size=2, **kwargs), ref.encode(TEXTS, batch_size=2, **kwargs),
                    f"{name} {kwargs} seed {seed}")
    for method in ("encode_query", "encode_document"):
        assert_near(getattr(ours, method)(TEXTS), getattr(ref, method)(TEXTS), f"{name} {method} seed {seed}")


def assert_near(actual, expected, name):
    """Within 1e-5 of the embeddings' scale (1 when normalised; unnormalised mean pooling reaches ~4 here)."""
    assert_close(actual, expected, 1e-5 * max(1.0, np.abs(expected).max()), name=name)


@pytest.mark.parametrize("normalize", [False, True])
def test_truncate_dim_matches(family, normalize):
    name, seed, ours, ref = family
    dim = int(np.random.default_rng(seed).integers(1, 384))
    kwargs = {"truncate_dim": dim, "normalize_embeddings": True} if normalize else {"truncate_dim": dim}
    got = ours.encode(TEXTS, **kwargs)
    assert got.shape == (len(TEXTS), dim)
    assert_near(got, ref.encode(TEXTS, **kwargs), f"{name} {kwargs} seed {seed}")
    ours.truncate_dim = dim  # on the encoder, as SentenceTransformer(truncate_dim=...) has it
    try:
        assert_near(ours.encode_query(TEXTS[:2]), ref.encode_query(TEXTS[:2], truncate_dim=dim),
                    f"{name} encoder truncate_dim {dim}")
    finally:
        ours.truncate_dim = None


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision_is_sentence_transformers_quantization(family, precision):
    """encode(precision=...) is exactly sentence-transformers' quantize_embeddings of our float embeddings, ranges
    from the call's own embeddings as there. Against sentence-transformers' own encode(precision=...) a value
    moves by a bucket (or a bit flips) where the two engines' floats (1e-7 to 1e-5 apart, unnormalised) straddle
    an edge: a coarse check, under 5% (1.2% seen for gte-small's unnormalised 12-layer outputs), leaving out each
    dimension's max, which lands on 255 up to rounding (254.99999 -> 254 in one engine)."""
    name, _, ours, ref = family
    got = ours.encode(TEXTS, precision=precision)
    np.testing.assert_array_equal(got, st_quantize(ours.encode(TEXTS), precision), err_msg=f"{name} {precision}")
    expected = ref.encode(TEXTS, precision=precision)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if precision.endswith("binary"):
        off = np.unpackbits(got.view(np.uint8) ^ expected.view(np.uint8)).mean()
    else:
        floats = ours.encode(TEXTS)
        off = (got != expected)[floats < floats.max(axis=0)].mean()
    assert off < 0.05, f"{name} {precision}: {off:.2%} of the values differ from sentence-transformers'"


@pytest.mark.parametrize("fn", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_functions_match(family, fn):
    name, _, ours, ref = family
    a, b = ours.encode(TEXTS), ours.encode(TEXTS[::-1])
    previous = ours.similarity_fn_name
    ours.similarity_fn_name, ref.similarity_fn_name = fn, fn
    try:
        sim, pairwise = ours.similarity(a, b), ours.similarity_pairwise(a, b)
    finally:
        ours.similarity_fn_name = previous
    expected = ref.similarity(a, b).numpy()
    assert sim.shape == expected.shape == (len(TEXTS), len(TEXTS))
    scale = max(1.0, np.abs(expected).max())
    assert_close(sim, expected, 2e-5 * scale, name=f"{name} similarity {fn}")
    expected = ref.similarity_pairwise(a, b).numpy()
    assert pairwise.shape == expected.shape == (len(TEXTS),)
    assert_close(pairwise, expected, 2e-5 * scale, name=f"{name} similarity_pairwise {fn}")


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("calibrate", ["self", "calibration", "ranges"])
def test_quantize_embeddings_equals_sentence_transformers(precision, calibrate):
    rng = np.random.default_rng()
    x = (rng.standard_normal((int(rng.integers(2, 40)), int(rng.integers(1, 70)))) * 0.1).astype(np.float32)
    calibration = (rng.standard_normal((50, x.shape[1])) * 0.1).astype(np.float32)
    kwargs = {"self": {}, "calibration": {"calibration_embeddings": calibration},
              "ranges": {"ranges": np.vstack([calibration.min(0), calibration.max(0)])}}[calibrate]
    got, expected = util.quantize_embeddings(x, precision, **kwargs), st_quantize(x, precision, **kwargs)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
