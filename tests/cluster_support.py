"""A tiny model and folder of tiny images shared by the torchrun and Ray prediction tests, and output comparisons."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.palette import read_mask_png
from fcnseg.data.synthetic import generate_sample
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import save_checkpoint

CLASSES = ["background", "disc", "square", "triangle"]


def write_checkpoint(path: Path) -> Path:
    """A small FCN-8s ("same" padding, so a 48-px image is a 48-px forward) with random score layers."""
    torch.manual_seed(3)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=len(CLASSES), padding="same"))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, name).weight, std=0.05)
    save_checkpoint(path, model.eval(), model.config, CLASSES, PAPER_BGR)
    return path


def write_images(root: Path, count: int, size: tuple[int, int] = (40, 56), corrupt: bool = False) -> list[str]:
    """``count`` synthetic images under ``root`` (every third in ``sub/``); returns their names, sorted."""
    names = []
    for i in range(count):
        name = f"sub/img{i:03d}.png" if i % 3 == 2 else f"img{i:03d}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(generate_sample(1, "val", i, size=size).image).save(root / name)
        names.append(name)
    if corrupt:
        (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return sorted(names)


def label_maps(out: Path) -> dict[str, np.ndarray]:
    """``{relative name: label map}`` of every ``*_labels.png`` under ``out``."""
    return {str(p.relative_to(out)): read_mask_png(p) for p in sorted(out.rglob("*_labels.png"))}


def assert_same_label_maps(got: Path, expected: Path) -> None:
    a, b = label_maps(got), label_maps(expected)
    assert sorted(a) == sorted(b)
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def wait_for(condition, timeout: float, every: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(every)
    return False


def kill_group(process) -> None:
    """SIGKILL a subprocess started with ``start_new_session=True`` and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def env_without_torchrun() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env
