"""Training loop: parameter groups, schedules, a tiny run's outputs, staged initialisation, divergence, CLI re-run."""

import math

import pytest
import torch
import yaml

from fcnseg.weights.checkpoint import load_checkpoint, load_model
from fcnseg.cli import main
from fcnseg.config import ModelConfig, TrainConfig, resolve_run_config
from fcnseg.errors import CheckpointError
from fcnseg.models import build_model
from fcnseg.training.optim import build_optimizer, lr_factor, parameter_groups
from fcnseg.training.trainer import TrainingDiverged, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(tmp_path, name="run", **train_overrides):
    """A run small enough for a test: the small FCN-8s on 8 in-memory 48 px synthetic images, 40 px crops."""
    settings = {
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6, "dropout": 0.1},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 8, "synthetic_val_images": 2,
                 "synthetic_size": 48, "crop_size": 40, "num_workers": 0, "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(tmp_path / name), "optimizer": "adamw", "lr": 2e-3, "batch_size": 2, "iter_size": 1,
                  "max_iter": 4, "val_every": 2, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
                  "num_panels": 2, **train_overrides},
    }
    return resolve_run_config(overrides=settings)


def test_frozen_upsampling_is_not_optimised_and_biases_get_their_multipliers():
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3, learn_upsampling=False))
    config = TrainConfig(lr=0.1, weight_decay=0.01, bias_lr_mult=2.0, bias_decay_mult=0.0)
    groups = {g["name"]: g for g in parameter_groups(model, config)}
    optimised = {id(p) for g in groups.values() for p in g["params"]}
    assert id(model.upscore2.weight) not in optimised and id(model.upscore8.weight) not in optimised
    assert id(model.score_fr.weight) in optimised
    assert all(p.dim() == 1 for p in groups["biases"]["params"])
    assert (groups["weights"]["lr"], groups["weights"]["weight_decay"]) == (0.1, 0.01)
    assert (groups["biases"]["lr"], groups["biases"]["weight_decay"]) == (0.2, 0.0)
    learned = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3, learn_upsampling=True))
    optimiser = build_optimizer(learned, config)
    assert any(p is learned.upscore2.weight for g in optimiser.param_groups for p in g["params"])


def test_batch_norm_scales_learn_without_decay_and_their_shifts_as_biases():
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3, batch_norm=True))
    groups = {g["name"]: g for g in parameter_groups(model, TrainConfig(lr=0.1, weight_decay=0.01, bias_lr_mult=2.0))}
    scales = {id(p) for p in groups["norm scales"]["params"]}
    assert id(model.backbone.bn3_2.weight) in scales and id(model.backbone.conv3_2.weight) not in scales
    assert (groups["norm scales"]["lr"], groups["norm scales"]["weight_decay"]) == (0.1, 0.0)
    assert any(p is model.backbone.bn3_2.bias for p in groups["biases"]["params"])
    counted = sum(p.numel() for g in groups.values() for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_schedules():
    poly = TrainConfig(lr_policy="poly", max_iter=100, lr_power=0.9)
    assert lr_factor(poly, 0) == 1.0 and lr_factor(poly, 50) == pytest.approx(0.5**0.9) and lr_factor(poly, 100) == 0.0
    step = TrainConfig(lr_policy="step", lr_step=10, lr_gamma=0.1)
    assert [lr_factor(step, i) for i in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.1, 0.01])
    assert lr_factor(TrainConfig(lr_policy="fixed"), 12345) == 1.0
    warm = TrainConfig(lr_policy="fixed", warmup_iter=4)
    assert [lr_factor(warm, i) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_tiny_run_writes_every_output(tmp_path):
    config = tiny(tmp_path)
    result = train(config, progress=False)
    out = result.out_dir
    assert result.iteration == 4 and len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)
    assert [r["iteration"] for r in result.history] == [2, 4]
    for name in ("config.yaml", "train.log", "losses.csv", "metrics.csv", "metrics.json", "metrics.txt",
                 "curves.png", "panels.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"iteration", "train_loss", "mean_iu", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iu"} <= set(header)
    assert "mean IU" in (out / "metrics.txt").read_text()
    # the checkpoint rebuilds its own model and carries the resolved config (weights_only load)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["run_config"] == config.to_dict() and ckpt["train_state"]["iteration"] == 4
    loaded = load_model(out / "checkpoints" / "last.pt")
    assert loaded.config == config.model and loaded.class_names[1] == "disc"
    # the written config re-resolves to the same run
    assert resolve_run_config(out / "config.yaml") == config


def test_training_learns_a_small_set(tmp_path):
    config = tiny(tmp_path, max_iter=25, val_every=0, checkpoint_every=0, lr=3e-3)
    config.data.synthetic_train_images = 2
    config.data.mirror = False
    result = train(config, progress=False)
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.75 * first, result.losses


def test_staged_init_copies_the_coarser_net_and_zeroes_new_score_layers(tmp_path):
    coarse = tiny(tmp_path, "32s", max_iter=2, val_every=0)
    coarse.model.arch = "fcn32s"
    train(coarse, progress=False)
    trained = load_checkpoint(tmp_path / "32s" / "checkpoints" / "last.pt")["state_dict"]
    assert trained["score_fr.weight"].abs().sum() > 0
    fine = tiny(tmp_path, "16s", max_iter=1, val_every=0, lr=0.0, init_from=str(tmp_path / "32s/checkpoints/last.pt"))
    fine.model.arch = "fcn16s"
    fine.train.weight_decay = 0.0
    train(fine, progress=False)
    state = load_checkpoint(tmp_path / "16s" / "checkpoints" / "last.pt")["state_dict"]
    for key in ("backbone.conv1_1.weight", "backbone.fc7.weight", "score_fr.weight", "score_fr.bias"):
        torch.testing.assert_close(state[key], trained[key])
    assert torch.all(state["score_pool4.weight"] == 0) and torch.all(state["score_pool4.bias"] == 0)


def test_staged_init_carries_batch_norm_statistics_and_refuses_a_trunk_that_does_not_fit(tmp_path):
    coarse = tiny(tmp_path, "32s", max_iter=2, val_every=0)
    coarse.model.arch, coarse.model.batch_norm = "fcn32s", True
    train(coarse, progress=False)
    source = tmp_path / "32s" / "checkpoints" / "last.pt"
    trained = load_checkpoint(source)["state_dict"]
    fine = tiny(tmp_path, "16s", max_iter=1, val_every=0, lr=0.0, init_from=str(source), freeze_batch_norm="off")
    fine.model.arch, fine.model.batch_norm = "fcn16s", True
    model = train(fine, progress=False)
    state = load_checkpoint(model.last_checkpoint)["state_dict"]
    # lr 0 leaves the weights; the one update's batch moves the running statistics by momentum 0.1 only
    torch.testing.assert_close(state["backbone.conv2_1.weight"], trained["backbone.conv2_1.weight"])
    assert state["backbone.bn2_1.num_batches_tracked"] == trained["backbone.bn2_1.num_batches_tracked"] + 1
    # by default a batch of 2 keeps the trained statistics (train.freeze_batch_norm auto)
    kept = tiny(tmp_path, "16s-kept", max_iter=1, val_every=0, lr=0.0, init_from=str(source))
    kept.model.arch, kept.model.batch_norm = "fcn16s", True
    state = load_checkpoint(train(kept, progress=False).last_checkpoint)["state_dict"]
    for key in ("backbone.bn2_1.running_mean", "backbone.bn2_1.running_var", "backbone.bn2_1.num_batches_tracked"):
        assert torch.equal(state[key], trained[key]), key
    plain = tiny(tmp_path, "16s-plain", max_iter=1, val_every=0, init_from=str(source))
    plain.model.arch = "fcn16s"
    with pytest.raises(CheckpointError, match=r"batch_norm True\) does not fit this small trunk \(batch_norm False"):
        train(plain, progress=False)


def test_nan_loss_stops_with_iteration_and_last_good_checkpoint(tmp_path, monkeypatch):
    import fcnseg.training.trainer as trainer_module

    real = trainer_module.build_loss
    calls = {"n": 0}

    def poisoned_loss(*args, **kwargs):
        loss = real(*args, **kwargs)

        def poisoned(logits, mask):
            calls["n"] += 1
            value = loss(logits, mask)
            return value * math.nan if calls["n"] == 3 else value

        return poisoned

    monkeypatch.setattr(trainer_module, "build_loss", poisoned_loss)
    config = tiny(tmp_path, max_iter=6, val_every=0, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"nan at iteration 3 .*last\.pt \(iteration 2\)"):
        train(config, progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["train_state"]["iteration"] == 2


def test_cli_train_then_rerun_from_written_config(tmp_path, capsys):
    config = tiny(tmp_path, "first", max_iter=2, val_every=0, seed=3)
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    assert "mean IU" in capsys.readouterr().out
    assert main(["train", "--config", str(tmp_path / "first" / "config.yaml"), "--out", str(tmp_path / "again"),
                 "--no-progress"]) == 0
    first = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")["train_state"]["losses"]
    again = load_checkpoint(tmp_path / "again" / "checkpoints" / "last.pt")["train_state"]["losses"]
    torch.testing.assert_close(first, again)


def test_tensorboard_events_hold_the_logged_losses_and_validation_metrics(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    result = train(tiny(tmp_path), progress=False)
    events = event_accumulator.EventAccumulator(str(result.out_dir / "tensorboard"))
    events.Reload()
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert loss == pytest.approx({i + 1: v for i, v in enumerate(result.losses)}, rel=1e-6)  # log_every 1
    mean_iu = {e.step: e.value for e in events.Scalars("val/mean_iu")}
    assert mean_iu == pytest.approx({r["iteration"]: r["mean_iu"] for r in result.history}, rel=1e-6)
