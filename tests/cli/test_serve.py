"""`npminilm serve` without the serve extra: one line naming the extra, exit status 2 (runs in the core env)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("missing", ["starlette", "uvicorn", "prometheus_client"])
def test_serve_without_the_extra_is_one_line(missing):
    code = (f"import sys; sys.modules[{missing!r}] = None; from npminilm.cli import main; "
            "sys.exit(main(['serve', '--port', '0']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and missing in run.stderr and "npminilm[serve]" in run.stderr, run.stderr
