"""`npminilm trace` against transformers: every stage of the encoder, in float32 and float64."""

import numpy as np
import pytest

from npminilm import SentenceEncoder, cli
from npminilm.encoder.hf_reference import hf_stages
from npminilm.encoder.trace import attach_hf_diffs, trace
from tests.encoder.test_sentence_encoder_oracle import stsb_sentences

EXAMPLE = "Open-source LLMs rock."


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_stage_matches_hf(model_dir, data_dir, dtype):
    enc = SentenceEncoder(model_dir, dtype=dtype)
    for text in [EXAMPLE, ""] + stsb_sentences(data_dir, 2, seed=None):
        tokens, stages = trace(enc, text)
        reference = hf_stages(enc.transformer_path, enc.tokenize([text]), enc.pooling_modes, enc.normalize, dtype)
        assert {s.name for s in stages} <= set(reference), "HF side must cover every stage"
        attach_hf_diffs(stages, reference)
        for s in stages:
            scale = max(1.0, float(np.abs(reference[s.name]).max()))
            if dtype == "float64":
                assert s.hf_diff <= 1e-10, (text, s.name, s.hf_diff)
                continue
            # Inside a block, pre-LayerNorm values reach |x| ~ 30 (FFN) to ~200 (residual sums), where a float32
            # ulp is 2e-6 to 1.5e-5: two float32 engines can differ by a few ulps there, so judge by scale.
            assert s.hf_diff <= 1e-5 * scale, (text, s.name, s.hf_diff, scale)
            if s.name.startswith(("embeddings.", "pooling.", "normalize")) or s.name.endswith("probs"):
                assert s.hf_diff <= 1e-5, (text, s.name, s.hf_diff)
            elif s.name.endswith("LayerNorm"):  # |x| up to ~30 with MiniLM's learned weights: within ~16 ulps
                assert s.hf_diff <= 2e-6 * scale, (text, s.name, s.hf_diff, scale)


def test_cli_reports_hf_difference_and_draws_plot(capsys, tmp_path):
    assert cli.main(["trace", EXAMPLE, "--plot", str(tmp_path / "heads.png"), "--layer", "0"]) == 0
    out = capsys.readouterr().out
    assert "largest difference to HF (float32)" in out
    png = (tmp_path / "heads.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
