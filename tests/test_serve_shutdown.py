"""`fcnseg serve` ends on SIGTERM as on Ctrl-C, and a client hanging up mid-upload is one log line, not a traceback."""

from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="fcnseg serve needs the serve extra: pip install 'fcnseg[serve]'")
pytest.importorskip("python_multipart", reason="fcnseg serve needs the serve extra: pip install 'fcnseg[serve]'")

from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.serve.app import create_app  # noqa: E402
from serve_support import live_server, save_small_checkpoint, serve_then_signal  # noqa: E402



@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_small_checkpoint(tmp_path_factory.mktemp("serve") / "model.pt")


def test_sigterm_stops_the_server_with_exit_0_and_says_stopped(checkpoint):
    # it died with 143 and no "stopped", where docs/serve.md promises exit 0
    returncode, output = serve_then_signal(checkpoint, signal.SIGTERM)
    assert returncode == 0, output
    assert "Traceback" not in output
    assert output.rstrip().splitlines()[-1].endswith("stopped"), output


def test_a_client_hanging_up_mid_upload_is_one_log_line_with_the_bytes_that_arrived(checkpoint, caplog):
    predictor = Predictor.from_checkpoint(checkpoint, precision="fp32")
    with caplog.at_level(logging.INFO), live_server(create_app(predictor)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                      b"X-Filename: photo.png\r\nContent-Length: 50000\r\n\r\n" + b"x" * 3000)
            time.sleep(0.3)  # let the server read what arrived
        deadline = time.monotonic() + 10
        while "hung up" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records), caplog.text
    [line] = [r.getMessage() for r in caplog.records if "hung up" in r.getMessage()]
    assert "127.0.0.1:" in line and "POST /api/predict (photo.png)" in line and "3,000 of 50,000 bytes" in line
