"""`npminilm fit` end to end in a fresh process: a folder that loads, one-line errors, nothing half-written."""

import numpy as np

from npminilm import SentenceEncoder
from tests.cli.test_embed import assert_one_line_error, run_cli
from tests.helpers import toy_pairs, write_random_folder


def write_csv(path, examples):
    path.write_text("".join(f"{a},{b},{s * 5:g}\n" for a, b, s in zip(*examples.columns, examples.scores)))
    return path


def test_fit_writes_a_folder_and_reports_the_dev_score(tmp_path, model_dir):
    base = write_random_folder(tmp_path / "base", model_dir)
    rng = np.random.default_rng(0)
    train = write_csv(tmp_path / "train.csv", toy_pairs(rng, 24))
    dev = write_csv(tmp_path / "dev.csv", toy_pairs(rng, 16))
    out = tmp_path / "out"
    r = run_cli("fit", "--model", str(base), "--train", str(train), "--dev", str(dev), "--loss", "cosine",
                "--matryoshka", "24,12", "--max-steps", "3", "--batch-size", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out} after 3 steps; dev spearman_cosine ")
    assert SentenceEncoder(out).encode("a red cat").shape == (24,)
    assert (out / "checkpoints" / "last" / "trainer_state.json").is_file() and (out / "best").is_dir()


def test_a_bad_row_is_one_line_and_writes_nothing(tmp_path, model_dir):
    base = write_random_folder(tmp_path / "base", model_dir)
    bad = tmp_path / "bad.csv"
    bad.write_text("a b,c d,1\ne f,g h\n")
    r = run_cli("fit", "--model", str(base), "--train", str(bad), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and "bad.csv:2:" in r.stderr
    assert_one_line_error(r.stderr)
    assert not (tmp_path / "out").exists()


def test_usage_errors(tmp_path):
    for argv in (["fit", "--train", "x.csv"], ["fit", "--train", "x.csv", "--out", "o", "--loss", "triplet"],
                 ["fit", "--train", "x.csv", "--out", "o", "--epochs", "0"]):
        r = run_cli(*argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert_one_line_error(r.stderr)
