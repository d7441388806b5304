"""Nothing lost: a resumed run repeats the uninterrupted run's losses, and a SIGKILL mid-checkpoint leaves the previous one."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from fcnseg.weights.checkpoint import load_checkpoint
from fcnseg.config import resolve_run_config
from fcnseg.files import TEMP_GLOB
from fcnseg.training.trainer import Trainer, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def settings(out_dir, **train_overrides):
    """Deterministic tiny run with every source of randomness on: shuffling, mirror, scale, crop, dropout."""
    return {
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6, "dropout": 0.5},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 5, "synthetic_val_images": 1,
                 "synthetic_size": 48, "crop_size": 40, "scale_min": 0.8, "scale_max": 1.2, "num_workers": 0,
                 "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(out_dir), "optimizer": "adamw", "lr": 1e-3, "lr_policy": "poly", "batch_size": 2, "iter_size": 2,
                  "max_iter": 6, "val_every": 0, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
                  "num_panels": 0, "deterministic": True, "seed": 5, **train_overrides},
    }


def test_resume_repeats_the_uninterrupted_losses(tmp_path, monkeypatch):
    whole = train(resolve_run_config(overrides=settings(tmp_path / "whole")), progress=False)

    # crash (not a clean stop) in update 5: the last checkpoint is the one of update 4
    real_step = Trainer.step

    def crashing_step(self):
        if self.state.iteration == 4:
            raise RuntimeError("simulated crash")
        return real_step(self)

    config = resolve_run_config(overrides=settings(tmp_path / "cut"))
    monkeypatch.setattr(Trainer, "step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, progress=False)
    monkeypatch.setattr(Trainer, "step", real_step)
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["train_state"]["iteration"] == 4

    resumed = train(config, resume=last, progress=False)
    assert resumed.iteration == 6
    assert resumed.losses == whole.losses  # exactly, every update
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["state_dict"]
    b = load_checkpoint(last)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_through_the_cli_uses_the_stored_settings(tmp_path):
    from fcnseg.cli import main

    config = resolve_run_config(overrides=settings(tmp_path / "run", max_iter=2))
    train(config, progress=False)
    # --max-iter extends the run; everything else comes from the checkpoint
    assert main(["train", "--resume", str(tmp_path / "run"), "--max-iter", "3", "--no-progress"]) == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["train_state"]["iteration"] == 3 and state["run_config"]["train"]["max_iter"] == 3
    assert state["run_config"]["data"] == config.to_dict()["data"]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    import fcnseg.weights.checkpoint
    from fcnseg.config import resolve_run_config
    from fcnseg.training.trainer import train
    torch.set_num_threads(1)
    real_save = torch.save
    calls = {"n": 0}

    def slow_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        real_save(obj, f, *args, **kwargs)
        if calls["n"] == 2:  # the second checkpoint: half-written when the parent kills us
            f.flush()
            print("WRITING", flush=True)
            time.sleep(120)

    torch.save = slow_save
    train(resolve_run_config(overrides=SETTINGS), progress=False)
    """
)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.replace("SETTINGS", repr(settings(out))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and "WRITING" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "WRITING" in line, "the child never reached its second checkpoint"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt_dir = out / "checkpoints"
    partial = list(ckpt_dir.glob(".last.*.tmp*"))
    assert partial, "the kill should have left a half-written temp file"
    last = ckpt_dir / "last.pt"
    assert load_checkpoint(last)["train_state"]["iteration"] == 2  # the previous, complete checkpoint

    config = resolve_run_config(overrides=settings(out))
    resumed = train(config, resume=last, progress=False)
    assert resumed.iteration == 6 and not list(ckpt_dir.glob(TEMP_GLOB))
    whole = train(resolve_run_config(overrides=settings(tmp_path / "whole")), progress=False)
    assert resumed.losses == whole.losses
