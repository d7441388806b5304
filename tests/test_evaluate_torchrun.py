"""`fcnseg eval` under torchrun: two gloo processes each score half the images and rank 0 writes the same scores as one process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import torch

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data import SyntheticDataset
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import save_checkpoint
from tests.cluster_support import env_without_torchrun

pytestmark = pytest.mark.usefixtures("one_thread")


def write_checkpoint(path):
    """A small FCN-8s over the synthetic set's classes, score layers random so that predictions vary."""
    classes = list(SyntheticDataset().class_names)
    torch.manual_seed(5)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=len(classes), padding="same"))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, name).weight, std=0.05)
    save_checkpoint(path, model.eval(), model.config, classes, PAPER_BGR)
    return path


def eval_args(checkpoint, out, *extra):
    return ["eval", str(checkpoint), "--kind", "synthetic", "--split", "val", "--limit", "7", "--precision", "fp32",
            "--workers", "0", "--no-progress", "--out", str(out), *extra]


def test_two_processes_score_exactly_what_one_process_scores(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "model.pt")
    assert main(eval_args(checkpoint, tmp_path / "one.json")) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fcnseg",
               *eval_args(checkpoint, tmp_path / "two.json", "--save-predictions", str(tmp_path / "pred"))]
    done = subprocess.run(command, env=env_without_torchrun(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("results written to") == 1 and "(2 processes)" in done.stdout
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["num_images"] == one["num_images"] == 7
    assert two["confusion"] == one["confusion"] and two["mean_iu"] == one["mean_iu"]
    assert len(list((tmp_path / "pred").glob("*.png"))) == 7  # each process wrote its own share


def test_folder_scoring_under_torchrun_is_refused_with_the_remedy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    code = main(["eval", "--pred-dir", str(tmp_path / "p"), "--gt-dir", str(tmp_path / "g"), "--num-classes", "3"])
    assert code != 0 and "start it without torchrun" in capsys.readouterr().err
