"""Resuming: the run goes on where it was pointed, reads its checkpoint once, keeps its validation windows, sweeps leftovers."""

import json
import shutil

import numpy as np
import pytest
import torch

from fcnseg.weights.checkpoint import load_checkpoint
from fcnseg.cli import main
from fcnseg.config import resolve_run_config
from fcnseg.training.trainer import Trainer, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def settings(out_dir, **train_overrides):
    """A deterministic tiny run: the small FCN-8s on 4 in-memory 40 px images, dropout and augmentation on."""
    return {
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6, "dropout": 0.5},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 4, "synthetic_val_images": 1,
                 "synthetic_size": 40, "crop_size": 32, "num_workers": 0, "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(out_dir), "optimizer": "adamw", "lr": 1e-3, "batch_size": 2, "iter_size": 1,
                  "max_iter": 2, "val_every": 0, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
                  "num_panels": 0, "deterministic": True, "seed": 3, **train_overrides},
    }


def run(out_dir, **train_overrides):
    return train(resolve_run_config(overrides=settings(out_dir, **train_overrides)), progress=False)


def snapshot(folder):
    """Every file below ``folder`` with its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("how", ["copied, resumed by folder", "moved, resumed by checkpoint file"])
def test_resume_of_a_copied_or_moved_run_writes_where_it_was_pointed(tmp_path, how):
    original, other = tmp_path / "original", tmp_path / "elsewhere"
    run(original)
    if how.startswith("copied"):
        shutil.copytree(original, other)
        before = snapshot(original)
        target = other
    else:
        shutil.move(original, other)
        target = other / "checkpoints" / "last.pt"
    assert main(["train", "--resume", str(target), "--max-iter", "3", "--no-progress"]) == 0
    resumed = load_checkpoint(other / "checkpoints" / "last.pt")
    assert resumed["train_state"]["iteration"] == 3
    assert resumed["run_config"]["train"]["out_dir"] == str(other.resolve())
    assert "out_dir: " + str(other.resolve()) in (other / "config.yaml").read_text()
    assert "resumed from" in (other / "train.log").read_text()
    if how.startswith("copied"):
        assert snapshot(original) == before  # not a byte of the original run changed
    else:
        assert not original.exists()  # nothing recreated where the run used to be


def test_a_resume_reads_its_checkpoint_once(tmp_path, monkeypatch):
    run(tmp_path / "run")
    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    # The temperature fitted at the end re-reads the finished files to add itself; the resume is what is counted here.
    monkeypatch.setattr(Trainer, "calibrate", lambda self: None)
    assert main(["train", "--resume", str(tmp_path / "run"), "--max-iter", "3", "--no-progress"]) == 0
    assert [r for r in reads if r.endswith("last.pt")] == [str(tmp_path / "run" / "checkpoints" / "last.pt")]


def test_train_loss_after_a_resume_averages_since_the_previous_validation(tmp_path, monkeypatch):
    """Validations at 3 and 6; a crash in update 5 resumes from the checkpoint of update 4."""
    overrides = {"max_iter": 6, "val_every": 3, "checkpoint_every": 2}
    whole = run(tmp_path / "whole", **overrides)
    real_step = Trainer.step

    def crashing_step(self):
        if self.state.iteration == 4:
            raise RuntimeError("simulated crash")
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "cut", **overrides)
    monkeypatch.setattr(Trainer, "step", real_step)
    config = resolve_run_config(overrides=settings(tmp_path / "cut", **overrides))
    resumed = train(config, resume=tmp_path / "cut" / "checkpoints" / "last.pt", progress=False)
    assert resumed.losses == whole.losses

    # the window of the validation at update 6 is updates 4, 5 and 6: one before the resume, two after
    written = json.loads((tmp_path / "cut" / "metrics.json").read_text())["validations"]
    assert [r["iteration"] for r in written] == [3, 6]
    assert written[1]["train_loss"] == pytest.approx(np.mean(whole.losses[3:6]), rel=1e-12)
    assert written[1]["train_loss"] != pytest.approx(np.mean(whole.losses[4:6]), rel=1e-6)
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())["validations"]
    assert [r["train_loss"] for r in written] == [r["train_loss"] for r in expected]
    csv_rows = [line.split(",") for line in (tmp_path / "cut" / "metrics.csv").read_text().splitlines()]
    assert csv_rows == [line.split(",") for line in (tmp_path / "whole" / "metrics.csv").read_text().splitlines()]


def plant_temp_files(out):
    """What a SIGKILL during a report, panel or checkpoint write leaves (files.atomic_write's temp names)."""
    planted = [out / ".metrics.k3j2h1.tmp.json", out / ".curves.a8b7c6.tmp.png",
               out / "panels" / ".iter_0000002.x1y2z3.tmp.png", out / "checkpoints" / ".last.q9w8e7.tmp.pt"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    keep = [out / "notes.txt", out / "my-data" / ".kept.a1.tmp.json"]  # not ours, or not a folder we write
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    return planted, keep


@pytest.mark.parametrize("start", ["fresh", "resume"])
def test_start_and_resume_sweep_temp_files_from_the_run_folder(tmp_path, start):
    out = tmp_path / "run"
    if start == "resume":
        run(out)
    planted, keep = plant_temp_files(out)
    if start == "resume":
        train(resolve_run_config(overrides=settings(out, max_iter=3)), resume=out / "checkpoints" / "last.pt", progress=False)
    else:
        run(out)
    assert [p for p in planted if p.exists()] == []
    assert all(p.read_text() == "mine" for p in keep)
