"""The streaming corpus command on .txt and .jsonl inputs into .npy (NumPy alone): equal to encode, resumable
after a real kill, every bad row named by file and line or skipped and counted, nothing half-written."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npminilm.corpus.job import embed_corpus
from npminilm.errors import DataError, InvalidArgumentError
from tests.cli.test_embed import assert_one_line_error, run_cli
from tests.helpers import assert_close


def corpus_lines(n, seed):
    rng = np.random.default_rng(seed)
    words = ["cat", "sits", "on", "the", "mat", "Ünïcödé", "東京", "quickly", "river", "model", "embeds", "text"]
    return [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(n)]


def test_txt_to_npy_equals_encode(encoder, tmp_path):
    lines = corpus_lines(257, int(np.random.SeedSequence().entropy % 2**31))
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = embed_corpus(encoder, tmp_path / "c.txt", tmp_path / "out.npy", chunk_size=50)
    assert counts == {"rows": 257, "skipped": 0}
    assert_close(np.load(tmp_path / "out.npy"), encoder.encode(lines), 1e-6, name="corpus vs encode")
    assert not (tmp_path / "out.npy.parts").exists()


def test_jsonl_bad_rows_stop_or_are_skipped(encoder, tmp_path):
    rows = [json.dumps({"text": "fine"}), json.dumps({"body": "x"}), json.dumps({"text": 5}), "{not json",
            json.dumps(["a"]), json.dumps({"text": "also fine"})]
    path = tmp_path / "c.jsonl"
    path.write_bytes(("\n".join(rows) + "\n").encode() + b'{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: no column 'text'"):
        embed_corpus(encoder, path, tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists()
    (tmp_path / "out.npy.parts").rename(tmp_path / "old.parts")  # the stopped run's parts stay for --resume
    counts = embed_corpus(encoder, path, tmp_path / "out.npy", on_error="skip", chunk_size=1)
    assert counts == {"rows": 2, "skipped": 5}
    assert_close(np.load(tmp_path / "out.npy"), encoder.encode(["fine", "also fine"]), 1e-6, name="skipped rows")


@pytest.mark.parametrize("line, words", [(b"\xff\xfe bad\n", r"c\.txt:2: not UTF-8"), (b"ok\n", None)])
def test_txt_utf8(encoder, tmp_path, line, words):
    (tmp_path / "c.txt").write_bytes(b"first\n" + line)
    if words is None:
        assert embed_corpus(encoder, tmp_path / "c.txt", tmp_path / "o.npy")["rows"] == 2
        return
    with pytest.raises(DataError, match=words):
        embed_corpus(encoder, tmp_path / "c.txt", tmp_path / "o.npy")


def test_leftover_parts_need_resume_and_the_same_settings(encoder, tmp_path):
    (tmp_path / "c.txt").write_text("a\nb\nc\n")
    (tmp_path / "o.npy.parts").mkdir()
    with pytest.raises(InvalidArgumentError, match="pass --resume"):
        embed_corpus(encoder, tmp_path / "c.txt", tmp_path / "o.npy")
    with pytest.raises(InvalidArgumentError, match="another input, model or settings"):
        embed_corpus(encoder, tmp_path / "c.txt", tmp_path / "o.npy", resume=True)
    with pytest.raises(InvalidArgumentError, match="must end in one of"):
        embed_corpus(encoder, tmp_path / "c.txt", tmp_path / "o.csv")


def test_killed_run_resumes_to_the_same_result(tmp_path, model_dir):
    """A real SIGKILL in the middle of the job; --resume finishes it, encoding only the chunks left, and the
    result equals an uninterrupted run's."""
    lines = corpus_lines(3000, int(np.random.SeedSequence().entropy % 2**31))
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["-m", str(model_dir), "encode", "--input", str(tmp_path / "c.txt"), "--chunk-size", "200"]
    subprocess_args = [sys.executable, "-m", "npminilm", *args, "--output", str(tmp_path / "resumed.npy")]
    proc = subprocess.Popen(subprocess_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "resumed.npy.parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("part-*.json")))
    assert 3 <= done < 15, f"the run was not killed mid-job ({done} of 15 chunks done)"
    assert not (tmp_path / "resumed.npy").exists()
    resumed = run_cli(*args, "--output", str(tmp_path / "resumed.npy"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole = run_cli(*args, "--output", str(tmp_path / "whole.npy"))
    assert whole.returncode == 0, whole.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "whole.npy"))
    assert not parts.exists()


def test_cli_errors_are_one_line(tmp_path, model_dir):
    (tmp_path / "c.txt").write_bytes(b"ok\n\xff\n")
    for args, status, words in [(["--input", str(tmp_path / "c.txt")], 2, "--input needs --output"),
                                (["x", "--input", str(tmp_path / "c.txt"), "-o", "o.npy"], 2, "not both"),
                                (["--input", str(tmp_path / "c.txt"), "-o", str(tmp_path / "o.npy")], 1,
                                 "c.txt:2: not UTF-8"),
                                (["--input", str(tmp_path / "none.txt"), "-o", str(tmp_path / "o.npy")], 1,
                                 "No such file")]:
        run = run_cli("-m", str(model_dir), "encode", *args)
        assert run.returncode == status and words in run.stderr, (args, run.stderr)
        assert_one_line_error(run.stderr)
    ok = run_cli("-m", str(model_dir), "encode", "--input", str(tmp_path / "c.txt"), "-o", str(tmp_path / "s.npy"),
                 "--on-error", "skip", "--resume")
    assert ok.returncode == 0 and "1 texts embedded" in ok.stderr and "1 bad rows skipped" in ok.stderr


def test_normalize_option_reaches_the_job(encoder, tmp_path):
    lines = corpus_lines(40, int(np.random.SeedSequence().entropy % 2**31))
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    embed_corpus(encoder, tmp_path / "c.txt", tmp_path / "raw.npy", chunk_size=16, normalize_embeddings=False)
    raw = np.load(tmp_path / "raw.npy")
    assert_close(raw, encoder.encode(lines, normalize_embeddings=False), 1e-6, name="unnormalised corpus")
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).max() > 1e-2  # all-MiniLM-L6-v2's raw vectors are not unit
    result = run_cli("encode", "--input", str(tmp_path / "c.txt"), "--output", str(tmp_path / "cli.npy"),
                     "--no-normalize")
    assert result.returncode == 0, result.stderr
    assert_close(np.load(tmp_path / "cli.npy"), raw, 1e-6, name="--no-normalize")
