"""The run state a checkpoint stores: where a resume reads from and writes to, and what it gets back."""

import math
import random

import numpy as np
import pytest
import torch

from fcnseg.weights.checkpoint import save_checkpoint
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models import build_model
from fcnseg.training.sampling import rng_state
from fcnseg.training.state import (
    RunState,
    read_resume,
    restore_run_state,
    run_folder,
    train_state_dict,
)


def test_run_folder_of_a_checkpoint_is_the_folder_above_checkpoints(tmp_path):
    assert run_folder(tmp_path / "run" / "checkpoints" / "last.pt") == (tmp_path / "run").resolve()
    assert run_folder(tmp_path / "loose" / "last.pt") == (tmp_path / "loose").resolve()


def test_a_folder_without_last_pt_is_refused_with_its_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty: a folder without checkpoints/last\.pt"):
        read_resume(tmp_path / "empty")


def test_pending_losses_start_after_the_last_validation():
    state = RunState()
    for loss in (3.0, 2.0, 1.0):
        state.record(loss, 0.1)
    assert state.pending_losses() == [3.0, 2.0, 1.0]
    state.validated_at = 2
    assert state.iteration == 3 and state.pending_losses() == [1.0]


def small_model():
    return build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=3))


def write_last(path, state, optimizer, scaler, with_state=True):
    extra = {"train_state": train_state_dict(state, optimizer, scaler, [rng_state()], 1)} if with_state else {}
    save_checkpoint(path, small_model(), ModelConfig(arch="fcn32s", backbone="small", num_classes=3),
                    ["a", "b", "c"], IMAGENET_RGB, extra)


def test_a_stored_state_comes_back_with_the_random_states(tmp_path):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = RunState(iteration=7, epoch=2, batch_in_epoch=1, losses=[1.5, 1.25], lrs=[0.1, 0.1],
                     history=[{"iteration": 5, "mean_iu": 0.5}], best_mean_iu=0.5, validated_at=5)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    write_last(path, state, optimizer, scaler)  # its random states: those just after seeding 11
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    expected = (torch.rand(3), np.random.rand(3), random.random())

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    resume = read_resume(tmp_path / "run")
    assert resume.path == path and resume.run_dir == (tmp_path / "run").resolve()
    back = restore_run_state(resume, optimizer, scaler, world_size=1, rank=0, seed=0)
    assert (back.iteration, back.epoch, back.batch_in_epoch, back.validated_at) == (7, 2, 1, 5)
    assert back.losses == [1.5, 1.25] and back.history == state.history and back.best_mean_iu == 0.5
    assert back.last_checkpoint_iteration == 7
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    resume.release()
    assert resume.checkpoint is None


def test_a_checkpoint_without_validated_at_takes_the_last_validation(tmp_path):
    model = small_model()
    optimizer, scaler = torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cpu", enabled=False)
    state = RunState(iteration=6, losses=[1.0] * 6, lrs=[0.1] * 6, history=[{"iteration": 4}], validated_at=4)
    path = tmp_path / "last.pt"
    write_last(path, state, optimizer, scaler)
    resume = read_resume(path)
    del resume.checkpoint["train_state"]["validated_at"]  # as written before it was stored
    assert restore_run_state(resume, optimizer, scaler, 1, 0, 0).validated_at == 4


def test_a_checkpoint_without_a_training_state_is_refused(tmp_path):
    model = small_model()
    write_last(tmp_path / "best.pt", RunState(), torch.optim.SGD(model.parameters(), lr=0.1),
               torch.amp.GradScaler("cpu", enabled=False), with_state=False)
    with pytest.raises(CheckpointError, match=r"best\.pt: holds no training state"):
        read_resume(tmp_path / "best.pt")
    assert math.isinf(RunState().best_mean_iu)
