"""The app in a real uvicorn server on a thread, with a fault put into its encoder: a bug is a 500 whose body
holds no traceback and no detail of the bug, and the log holds the traceback."""

import json
import logging
import threading
import urllib.error
import urllib.request

import pytest
import uvicorn

from npminilm import SentenceEncoder
from npminilm.serve.app import create_app
from npminilm.serve.config import ServeConfig
from npminilm.serve.server import bind


class BrokenEncoder(SentenceEncoder):
    def encode_ids(self, input_ids, normalize_embeddings=None, skip=0):
        raise RuntimeError("secret detail at /srv/weights/model.safetensors")


@pytest.fixture
def broken_server(model_dir):
    sock = bind("127.0.0.1", 0)
    app = create_app(BrokenEncoder(model_dir), ServeConfig(), "broken")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)
    sock.close()


def test_internal_error_is_500_without_traceback(broken_server, caplog):
    request = urllib.request.Request(broken_server + "/v1/embeddings", data=json.dumps({"input": "x"}).encode(),
                                     method="POST")
    with caplog.at_level(logging.ERROR, logger="npminilm.serve"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
    body = err.value.read().decode()
    assert err.value.code == 500
    assert json.loads(body) == {"error": {"message": "internal server error", "type": "server_error",
                                          "param": None, "code": None}}
    assert "secret" not in body and "Traceback" not in body
    logged = [r for r in caplog.records if r.name == "npminilm.serve"]
    assert logged and "secret detail" in str(logged[0].exc_info[1]), caplog.text
    with urllib.request.urlopen(broken_server + "/health", timeout=30) as r:  # and it goes on serving
        assert r.status == 200
