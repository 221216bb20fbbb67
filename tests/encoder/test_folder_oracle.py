"""Random-weight BERT folders, built here with transformers, against sentence-transformers and BertModel."""

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from transformers import BertConfig, BertModel

from npminilm import SentenceEncoder
from tests.helpers import assert_close, write_sentence_transformers_configs

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TEXTS = ["A man is playing a guitar.", "", "Short", "The quick brown fox jumps over the lazy dog " * 9,
         "Ünïcödé, punctuation!? and 東京 🙂", "two\nlines"]


def build_folder(path, model_dir, layers, modes, normalize, prefix, pooler, seed, modules=True, hidden=48, heads=12,
                 intermediate=80, max_positions=96, max_seq_length=64):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=max_positions, type_vocab_size=2)
    model = BertModel(config, add_pooling_layer=pooler)
    with torch.no_grad():  # default init leaves LayerNorm at ones/zeros and biases at zero: randomise them all
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.08) + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
    path.mkdir()
    config.save_pretrained(path)
    state = {("bert." if prefix else "") + k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    for name in TOKENIZER_FILES:
        shutil.copy(model_dir / name, path / name)
    write_sentence_transformers_configs(path, hidden, modes or (), normalize, modules=modules,
                                        max_seq_length=max_seq_length)
    return path


CASES = [  # layers, pooling modes, normalize, `bert.` prefix, pooler weights
    (3, ["cls"], True, True, True),
    (6, ["max"], False, False, False),
    (12, ["mean"], True, True, False),
    (3, ["cls", "max", "mean", "mean_sqrt_len_tokens"], False, False, True),
    (3, ["mean_sqrt_len_tokens"], True, True, True),
]


@pytest.mark.parametrize("layers,modes,normalize,prefix,pooler", CASES)
def test_random_folder_matches_sentence_transformers(tmp_path, model_dir, layers, modes, normalize, prefix, pooler):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    folder = build_folder(tmp_path / "m", model_dir, layers, modes, normalize, prefix, pooler, seed)
    ours = SentenceEncoder(folder)
    ref = SentenceTransformer(str(folder), device="cpu")
    assert ours.pooling_modes == modes and ours.normalize == normalize
    assert ours.dim == 48 * len(modes)
    expected = ref.encode(TEXTS, batch_size=4)  # unnormalised max pooling reaches |x| ~ 40 (a float32 ulp: 4e-6)
    assert_close(ours.encode(TEXTS, batch_size=4), expected, 1e-5 * max(1.0, np.abs(expected).max()),
                 name=f"seed {seed}")


def test_folder_without_modules_json_uses_mean_pooling(tmp_path, model_dir):
    folder = build_folder(tmp_path / "m", model_dir, 3, None, False, False, True, seed=1234, modules=False)
    ours = SentenceEncoder(folder)
    ref = SentenceTransformer(str(folder), device="cpu")
    assert ours.pooling_modes == ["mean"] and not ours.normalize
    assert_close(ours.encode(TEXTS), ref.encode(TEXTS), 1e-5, name="no modules.json")


@pytest.mark.parametrize("prefix", [True, False])
def test_random_folder_hidden_states_float64(tmp_path, model_dir, prefix):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    folder = build_folder(tmp_path / "m", model_dir, 3, ["mean"], True, prefix, True, seed)
    ours = SentenceEncoder(folder, dtype="float64")
    hf = BertModel.from_pretrained(str(folder), torch_dtype=torch.float64).eval()
    f = ours.tokenize(TEXTS)
    out = ours.forward(**f, output_hidden_states=True)
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in f.items()}, output_hidden_states=True)
    real = f["attention_mask"].astype(bool)
    for i, (a, b) in enumerate(zip(out["hidden_states"], ref.hidden_states)):
        assert_close(a[real], b.numpy()[real], 1e-10, name=f"seed {seed} hidden_states[{i}]")
    assert_close(out["pooler_output"], ref.pooler_output.numpy(), 1e-10, name="pooler_output")
