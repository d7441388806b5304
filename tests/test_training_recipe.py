"""The recipe `fcnseg train` takes when the user chose none on a CPU, and the warning for a big net from scratch there."""

import logging

import pytest
import torch

from fcnseg.cli import build_parser, main
from fcnseg.commands import train as train_command
from fcnseg.config import resolve_run_config
from fcnseg.models.complexity import complexity
from fcnseg.training import recipe


def overrides(*flags):
    argv = ["train", *flags]
    return train_command.overrides_from_args(build_parser(argv).parse_args(argv))


def resolved(*flags, config_file=None, resumed=False):
    chosen, _ = train_command.with_cpu_default(overrides(*flags), config_file, resumed)
    return resolve_run_config(config_file, chosen)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr("fcnseg.precision.select_device", lambda device="auto", local_rank=0: torch.device("cpu"))


@pytest.fixture
def a_gpu(monkeypatch):
    monkeypatch.setattr("fcnseg.precision.select_device", lambda device="auto", local_rank=0: torch.device("cuda:0"))


def test_the_default_on_a_cpu_without_weights_is_small_cpu_on_a_budget_said_in_one_line(no_gpu, tmp_path, monkeypatch,
                                                                                        caplog):
    taken = {}

    class Taken(Exception):
        pass

    def stand_in(config, **kw):  # the settings the command would train with, and the lines it would log
        taken["config"], taken["notes"] = config, kw.get("notes", [])
        raise Taken

    monkeypatch.setattr("fcnseg.training.trainer.train", stand_in)
    caplog.set_level(logging.INFO, logger="fcnseg")
    with pytest.raises(Taken):
        main(["train", "--dataset", "folder", "--data-root", str(tmp_path), "--no-progress"])
    config = taken["config"]
    assert config.preset == "small-cpu" and config.model.backbone == "small" and config.model.batch_norm
    assert config.train.time_budget == recipe.CPU_DEFAULT_BUDGET and config.train.optimizer == "adamw"
    assert config.train.val_every_seconds == 600 / 5  # at least 5 validations over the budget
    lines = [line for line in taken["notes"] if "small-cpu" in line]
    assert len(lines) == 1
    assert "no GPU" in lines[0] and "10m of training" in lines[0] and "--preset paper-cvpr" in lines[0]


def test_the_recipe_line_goes_into_train_log_as_well_as_the_console(no_gpu, tmp_path, caplog):
    out = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="fcnseg")
    torch.set_num_threads(1)
    tiny = ["data.synthetic_train_images=2", "data.synthetic_val_images=1", "data.synthetic_size=32",
            "data.crop_size=32", "data.num_workers=0", "train.num_panels=0", "train.precision=fp32"]
    code = main(["train", "--dataset", "synthetic", "--max-iter", "1", "--out", str(out), "--no-progress",
                 *(item for pair in (("--set", t) for t in tiny) for item in pair)])
    assert code == 0
    logged = [r.getMessage() for r in caplog.records if "small-cpu preset" in r.getMessage()]
    assert len(logged) == 1 and "for 1 update," in logged[0]
    assert logged[0] in (out / "train.log").read_text()


def test_the_users_own_flags_win_over_the_chosen_preset(no_gpu):
    config = resolved("--dataset", "synthetic", "--lr", "0.01", "--time-budget", "3m", "--arch", "fcn32s")
    assert config.preset == "small-cpu" and config.train.lr == 0.01 and config.model.arch == "fcn32s"
    assert config.train.time_budget == "3m" and config.train.val_every_seconds == 180 / 5
    counted = resolved("--dataset", "synthetic", "--max-iter", "7", "--val-every", "2")
    assert counted.preset == "small-cpu" and counted.train.time_budget == "" and counted.train.max_iter == 7
    assert counted.train.val_every == 2 and counted.train.val_every_time == ""
    padded = resolved("--dataset", "synthetic", "--pad", "50")  # the pad of the paper geometry, not "same"
    assert padded.preset == "small-cpu" and padded.model.pad == 50 and padded.model.padding == "paper"


@pytest.mark.parametrize("flags", [
    ("--classifier-weights", "vgg16.pth"),
    ("--init-from", "runs/32s/checkpoints/best.pt"),
    ("--backbone", "vgg16"),
    ("--backbone", "alexnet", "--arch", "fcn32s"),
    ("--preset", "paper-cvpr"),
    ("--set", "train.init_streams_from={color: a.pt, hha: b.pt}"),
])
def test_starting_weights_an_explicit_backbone_or_preset_keep_the_users_recipe(no_gpu, flags):
    config = resolved("--dataset", "synthetic", *flags)
    assert config.preset in ("", "paper-cvpr") and config.model.backbone in ("vgg16", "alexnet")
    assert config.train.time_budget == "" and config.train.iter_size == 20


def test_a_config_file_a_resumed_run_or_a_gpu_keep_the_defaults(no_gpu, a_gpu, tmp_path):
    assert recipe.cpu_default_recipe(overrides("--dataset", "synthetic"), None, False, on_gpu=True) is None
    given = overrides("--dataset", "synthetic")
    assert recipe.cpu_default_recipe(given, tmp_path / "my.yaml", False, on_gpu=False) is None
    assert recipe.cpu_default_recipe(given, None, True, on_gpu=False) is None
    assert resolved("--dataset", "synthetic").preset == ""  # a_gpu: select_device says cuda


def test_vgg16_from_scratch_on_a_cpu_is_warned_with_the_time_per_update():
    config = resolve_run_config(overrides={"data": {"dataset": "synthetic"}})  # the paper's VGG16 FCN-8s, no weights
    warning = recipe.slow_start_warning(config, "cpu", (375, 500), gflops_per_second=1000.0)
    expected = 3 * complexity(config.model, (375, 500)).gflops * 20 / 1000.0  # forward + backward, 20 images
    assert warning is not None and "VGG16 FCN from scratch on a CPU" in warning
    assert f"at least {expected:.1f} s per update" in warning and "--classifier-weights" in warning
    assert f"{expected * 100000 / 86400:.0f} days for the 100000 updates" in warning


def test_no_warning_with_weights_on_a_gpu_or_for_the_small_net():
    paper = {"data": {"dataset": "synthetic"}}
    weights = resolve_run_config(overrides={**paper, "train": {"classifier_weights": "vgg16.pth"}})
    small = resolve_run_config(overrides={**paper, "preset": "small-cpu"})
    assert recipe.slow_start_warning(weights, "cpu", (64, 64), gflops_per_second=1.0) is None
    assert recipe.slow_start_warning(resolve_run_config(overrides=paper), "cuda", (64, 64), 1.0) is None
    assert recipe.slow_start_warning(small, "cpu", (64, 64), gflops_per_second=1.0) is None


def test_a_run_from_scratch_logs_the_warning_with_the_measured_rate(tmp_path, monkeypatch, caplog):
    from fcnseg.training.trainer import train

    monkeypatch.setattr(recipe, "matmul_gflops", lambda: 2.0)  # a slow CPU, faked
    torch.set_num_threads(1)
    config = resolve_run_config(overrides={
        "model": {"arch": "fcn32s", "backbone": "alexnet", "num_classes": 6},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 1, "synthetic_val_images": 1,
                 "synthetic_size": 32, "crop_size": 32, "num_workers": 0},
        "train": {"out_dir": str(tmp_path / "run"), "max_iter": 1, "iter_size": 1, "val_every": 0, "num_panels": 0,
                  "precision": "fp32"},
    })
    caplog.set_level(logging.INFO, logger="fcnseg")

    class Placed(Exception):
        pass

    def stop_before_training(*args, **kwargs):  # the warning comes before the model is placed: no update needed
        raise Placed

    monkeypatch.setattr("fcnseg.training.trainer.place_model", stop_before_training)
    with pytest.raises(Placed):
        train(config, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "from scratch" in r.getMessage()]
    seconds = 3 * complexity(config.model, (32, 32)).gflops / 2.0
    assert len(warnings) == 1 and "AlexNet FCN" in warnings[0] and "2 GFLOP/s measured here" in warnings[0]
    assert f"at least {seconds:.1f} s per update" in warnings[0]


def test_the_matmul_rate_is_a_positive_number():
    assert recipe.matmul_gflops(size=64, repeats=2) > 0
