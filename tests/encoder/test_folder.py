"""Model folders and safetensors files that lie: every one is a ModelLoadError naming the file and tensor."""

import json
import struct

import numpy as np
import pytest

from npminilm import SentenceEncoder
from npminilm.errors import ModelLoadError, ModelNotFoundError
from npminilm.io.safetensors_reader import read_header
from tests.helpers import write_random_folder


@pytest.fixture
def folder(tmp_path, model_dir):
    return write_random_folder(tmp_path / "tiny", model_dir, seed=int(np.random.SeedSequence().entropy % 2**31))


def rewrite_header(path, edit):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_tiny_folder_loads_with_and_without_prefix(tmp_path, model_dir):
    a = SentenceEncoder(write_random_folder(tmp_path / "a", model_dir, prefix=False, seed=3))
    b = SentenceEncoder(write_random_folder(tmp_path / "b", model_dir, prefix=True, seed=3))
    assert "embeddings.position_ids" not in a.params
    assert set(a.params) == set(b.params)
    np.testing.assert_array_equal(a.encode(["same weights"]), b.encode(["same weights"]))


def test_truncated_file(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="model.safetensors.*truncated"):
        SentenceEncoder(folder)


def test_header_claims_more_bytes_than_file(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    with pytest.raises(ModelLoadError, match="header claims"):
        SentenceEncoder(folder)


def test_tensor_offsets_past_end_fail_before_allocation(folder):
    path = folder / "model.safetensors"
    key = "embeddings.word_embeddings.weight"

    def grow(h):  # claim a 30522 x 10^6 matrix: ~122 GB, far more than the file
        h[key]["shape"] = [30522, 10**6]
        h[key]["data_offsets"][1] = h[key]["data_offsets"][0] + 30522 * 10**6 * 4

    rewrite_header(path, grow)
    with pytest.raises(ModelLoadError, match=key):
        read_header(path)


def test_shape_mismatch_names_tensor(folder):
    path = folder / "model.safetensors"
    key = "encoder.layer.1.intermediate.dense.bias"

    def reshape(h):  # same byte count, wrong shape
        h[key]["shape"] = [h[key]["shape"][0] // 2, 2]

    rewrite_header(path, reshape)
    with pytest.raises(ModelLoadError, match=key.replace(".", r"\.") + ".*shape"):
        SentenceEncoder(folder)


def test_missing_tensor_names_tensor(folder):
    path = folder / "model.safetensors"
    rewrite_header(path, lambda h: h.pop("encoder.layer.0.attention.self.key.weight"))
    with pytest.raises(ModelLoadError, match=r"missing tensor 'encoder\.layer\.0\.attention\.self\.key\.weight'"):
        SentenceEncoder(folder)


def test_inconsistent_byte_count(folder):
    path = folder / "model.safetensors"
    rewrite_header(path, lambda h: h["embeddings.LayerNorm.bias"]["data_offsets"].__setitem__(1, 
                   h["embeddings.LayerNorm.bias"]["data_offsets"][1] - 4))
    with pytest.raises(ModelLoadError, match="embeddings.LayerNorm.bias"):
        read_header(path)


def test_garbage_and_empty_files(folder):
    path = folder / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a safetensors"):
        SentenceEncoder(folder)
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(ModelLoadError, match="JSON"):
        SentenceEncoder(folder)


def test_pickle_only_folder_is_refused(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        SentenceEncoder(folder)


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(hidden_size=25), "divisible"),
    (lambda c: c.update(num_hidden_layers=0), "num_hidden_layers"),
    (lambda c: c.update(hidden_act="relu"), "hidden_act"),
    (lambda c: c.update(model_type="gpt2"), "model_type"),
])
def test_bad_config(folder, edit, match):
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=match):
        SentenceEncoder(folder)


def test_config_more_layers_than_weights(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"encoder\.layer\.2\."):
        SentenceEncoder(folder)


def test_broken_json_files(folder):
    (folder / "modules.json").write_text("[{")
    with pytest.raises(ModelLoadError, match="modules.json"):
        SentenceEncoder(folder)


def test_unsupported_module_pipeline(folder):
    mods = json.loads((folder / "modules.json").read_text())
    mods.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(ModelLoadError, match="Dense"):
        SentenceEncoder(folder)


def test_unknown_name_is_model_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("NPMINILM_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError):
        SentenceEncoder("no-such-model-anywhere")
