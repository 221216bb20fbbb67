"""`npminilm trace` without an oracle: stages come from the one forward pass and agree with encode/forward."""

import json
import sys

import numpy as np
import pytest

from npminilm import cli
from npminilm.encoder.trace import trace
from tests.helpers import assert_close

EXAMPLE = "Open-source LLMs rock."


def test_example_tokens_and_stages(encoder):
    tokens, stages = trace(encoder, EXAMPLE)
    assert tokens == ["[CLS]", "open", "-", "source", "ll", "##ms", "rock", ".", "[SEP]"]
    names = [s.name for s in stages]
    assert names[:5] == ["embeddings.word", "embeddings.position", "embeddings.token_type", "embeddings.sum",
                         "embeddings.LayerNorm"]
    assert names[-2:] == ["pooling.mean", "normalize"]
    assert len(names) == 5 + 6 * 11 + 2
    by_name = {s.name: s.value for s in stages}
    T = len(tokens)
    assert by_name["layer.3.attention.query"].shape == (T, 384)
    assert by_name["layer.3.ffn.gelu"].shape == (T, 1536)
    assert by_name["layer.3.attention.probs"].shape == (12, T, T)


def test_stages_agree_with_the_engine(encoder):
    text = "A man is playing a guitar on the stage, loudly."
    tokens, stages = trace(encoder, text)
    by_name = {s.name: s.value for s in stages}
    f = encoder.tokenize([text])
    hidden = encoder.forward(**f, output_hidden_states=True)["hidden_states"]
    for i in range(6):
        np.testing.assert_array_equal(by_name[f"layer.{i}.output.LayerNorm"], hidden[i + 1][0])
        probs = by_name[f"layer.{i}.attention.probs"]
        assert_close(probs.sum(axis=-1), np.ones(probs.shape[:2]), 1e-6, name=f"layer {i} attention rows")
    parts = by_name["embeddings.word"] + by_name["embeddings.position"] + by_name["embeddings.token_type"]
    assert_close(parts, by_name["embeddings.sum"], 1e-6, name="embedding parts add up")
    assert_close(by_name["normalize"], encoder.encode(text), 1e-6, name="final vector = encode()")


def test_cli_json_without_hf(capsys):
    assert cli.main(["trace", EXAMPLE, "--json", "--no-hf", "--layer", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"][4:6] == ["ll", "##ms"]
    assert np.asarray(out["attention"]).shape == (12, 9, 9) and out["attention_layer"] == 1
    assert len(out["embedding"]) == 384
    assert all(s["max_abs_diff_hf"] is None for s in out["stages"])


def test_cli_text_shows_heads(capsys):
    assert cli.main(["trace", EXAMPLE, "--no-hf"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tokens: [CLS] open - source ll ##ms rock . [SEP]")
    assert out.count("head 11:") == 6 and "layer.5.output.LayerNorm" in out


def test_cli_plot_without_matplotlib_is_one_clear_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert cli.main(["trace", EXAMPLE, "--no-hf", "--plot", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0]
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("layer", ["6", "-1"])
def test_cli_bad_layer_is_usage_error(capsys, layer):
    assert cli.main(["trace", EXAMPLE, "--no-hf", "--layer", layer]) == 2
    assert "--layer" in capsys.readouterr().err
