"""`npminilm serve` started for real, as a user starts it: a subprocess on 127.0.0.1 with a free port (--port 0),
its log in a file; the address is read from its first log line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ADDRESS = re.compile(r"on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    def __init__(self, model_dir, *args, env=None, log_dir):
        self.log_path = Path(log_dir) / f"serve-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "npminilm", "serve", "--model", str(model_dir), "--port", "0", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.url = self._wait_for_address()

    def _wait_for_address(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = ADDRESS.search(self.log())
            if found:
                url = found.group(1)
                while time.monotonic() < deadline:  # bound; now wait until it answers
                    try:
                        with urllib.request.urlopen(url + "/health", timeout=5) as r:
                            if r.status == 200:
                                return url
                    except (urllib.error.URLError, ConnectionError):
                        time.sleep(0.05)
            if self.proc.poll() is not None:
                raise RuntimeError(f"npminilm serve exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"npminilm serve did not start:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace")

    def post(self, path, body, headers=None, raw=None):
        """(status, headers, parsed JSON body) of a POST; `raw` bytes are sent as they are."""
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        return _call(request)

    def get(self, path, headers=None):
        return _call(urllib.request.Request(self.url + path, headers=headers or {}))

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _call(request):
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            status, headers, body = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, dict(e.headers), e.read()
    ctype = headers.get("content-type", headers.get("Content-Type", ""))
    return status, headers, json.loads(body) if ctype.startswith("application/json") else body.decode()
