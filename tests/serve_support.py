"""What the serve tests share (an importable helper module, not a test file): a small model, test images, a live server.

The model is a small FCN-8s whose score layers carry seeded random weights, so that its label maps
hold several classes (a freshly built FCN, with zero-initialised score layers, predicts background
everywhere).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fcnseg.weights.checkpoint import save_checkpoint
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.models.fcn import build_model

CLASS_NAMES = ["background", "sky", "road", "tree", "car", "person"]


def save_small_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write a 6-class small FCN-8s (pad 100) whose predictions vary over an image; returns ``path``."""
    torch.manual_seed(seed)
    config = ModelConfig(arch="fcn8s", backbone="small", num_classes=len(CLASS_NAMES), pad=100)
    model = build_model(config)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(model, name)
            layer.weight.normal_(0.0, 0.2)
            layer.bias.zero_()
        model.score_fr.bias[0] = 0.3  # background wins where the other scores are weak
    save_checkpoint(path, model, config, CLASS_NAMES, IMAGENET_RGB)
    return path


def sample_image(height: int = 48, width: int = 64, seed: int = 1) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` picture with smooth gradients and a few solid blocks, seeded."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 0 * x], axis=2)
    for _ in range(4):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yields its base URL, stops it after."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


REPO = Path(__file__).resolve().parents[1]


def serve_then_signal(checkpoint: Path, signum: int, timeout: float = 90.0) -> tuple[int, str]:
    """Start ``fcnseg serve CHECKPOINT`` in a process, wait until ``/healthz`` answers, send ``signum``.

    Returns the process's exit code and everything it printed (stdout and stderr together).
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "fcnseg", "serve", str(checkpoint), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.load(r)["status"] == "ok"
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        server.send_signal(signum)
        output, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return server.returncode, output
