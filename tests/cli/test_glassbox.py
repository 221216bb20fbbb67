"""`npminilm gradcheck`: the table, exit 0 when every check passes, 1 when one fails, 2 for an unknown op."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from npminilm import cli
from npminilm.nn import gradcheck, ops

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *args):
    status = cli.main(["gradcheck", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_one_op_prints_its_tensors(capsys):
    status, out, err = run(capsys, "--op", "linear")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["op", "tensor", "shape", "max", "rel", "error"]
    assert [line.split()[1] for line in lines[2:5]] == ["x", "weight", "bias"]
    assert all(line.endswith("ok") for line in lines[2:5])
    assert lines[-1] == "3 of 3 tensors within tolerance"


def test_repeated_op_and_seed(capsys):
    status, out, _ = run(capsys, "--op", "softmax", "--op", "mnrl", "--op", "softmax", "--seed", "7")
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()[2:-1]] == ["softmax", "mnrl", "mnrl"]


def test_every_op_and_the_encoder_by_default(capsys):
    status, out, _ = run(capsys)
    assert status == 0, out
    checked = {line.split()[0] for line in out.splitlines()[2:-1]}
    assert checked == set(gradcheck.OPS) | {"encoder"}
    assert "FAIL" not in out


def test_a_wrong_backward_fails_with_status_1(capsys, monkeypatch):
    def broken(rng):
        # tanh' written as 1 - tanh: right at 0, wrong everywhere else
        return gradcheck.OpCase(ops.tanh_forward, lambda dout, cache: (dout * (1.0 - cache[0]),),
                                {"x": rng.standard_normal((3, 5))})

    monkeypatch.setitem(gradcheck.OPS, "tanh", broken)
    status, out, _ = run(capsys, "--op", "tanh", "--op", "gelu")
    assert status == 1
    assert "FAIL" in out.splitlines()[2] and out.splitlines()[3].endswith("ok")
    assert out.splitlines()[-1] == "1 of 2 tensors within tolerance, 1 FAILED"


def test_unknown_op_is_a_one_line_usage_error():
    env_path = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "npminilm", "gradcheck", "--op", "softmaks"], capture_output=True,
                          text=True, cwd=env_path, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("npminilm: error: argument --op: unknown op 'softmaks'"), lines


def test_check_op_rows_and_table():
    rows = gradcheck.check_op("attention", seed=1)
    assert [r["tensor"] for r in rows] == ["q", "k", "v"]
    assert all(r["ok"] and 0.0 < r["max_rel_error"] < gradcheck.THRESHOLD for r in rows)
    table = gradcheck.format_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert np.isfinite([r["max_rel_error"] for r in rows]).all()
