"""train.time_budget: the poly schedule over training time, a stop at the budget, and a resume that spends the rest."""

import pytest

from fcnseg.weights.checkpoint import load_checkpoint
from fcnseg.config import TrainConfig, parse_duration, resolve_run_config
from fcnseg.errors import ConfigError
from fcnseg.training.optim import lr_factor
from fcnseg.training.trainer import Trainer, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class FakeClock:
    """Advances ``tick`` seconds at every reading: an update (read before and after) takes ``tick``."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def settings(out_dir, **train):
    return {
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6, "padding": "same", "batch_norm": True},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 5, "synthetic_val_images": 1,
                 "synthetic_size": 40, "crop_size": 32, "scale_min": 0.8, "scale_max": 1.2, "num_workers": 0,
                 "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(out_dir), "optimizer": "adamw", "lr": 1e-3, "lr_policy": "poly", "lr_power": 0.9,
                  "batch_size": 2, "iter_size": 1, "max_iter": 3, "time_budget": "10s", "val_every": 0,
                  "checkpoint_every": 2, "log_every": 1, "precision": "fp32", "num_panels": 0,
                  "deterministic": True, "seed": 1, **train},
    }


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("5m", 300), ("1.5h", 5400), ("300", 300), (" 2M ", 120)])
def test_durations_read_seconds_minutes_and_hours(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 min", "-3m", "0s", "m", "fast", "infh"])
def test_a_bad_duration_is_a_config_error_naming_the_key(text):
    with pytest.raises(ConfigError, match="time_budget: expected a positive duration.*90s, 5m or 1.5h"):
        resolve_run_config(overrides=settings("x", time_budget=text))


def test_no_budget_is_no_budget():
    assert parse_duration("") is None and TrainConfig().time_budget_seconds is None


def test_poly_over_time_falls_monotonically_from_one_to_zero():
    config = TrainConfig(lr_policy="poly", lr_power=0.9, max_iter=10)
    factors = [lr_factor(config, iteration=0, progress=p / 100) for p in range(101)]
    assert factors[0] == 1.0 and factors[-1] == 0.0
    assert all(a > b for a, b in zip(factors, factors[1:]))
    # the update count plays no part on a budget
    assert lr_factor(config, iteration=7, progress=0.5) == pytest.approx(0.5**0.9)


def test_a_budget_run_stops_when_spent_with_the_poly_schedule_over_time(tmp_path):
    config = resolve_run_config(overrides=settings(tmp_path / "run"))
    result = train(config, progress=False, clock=FakeClock(tick=2.0))  # every update takes 2 s
    assert result.iteration == 5  # 10 s / 2 s, whatever max_iter (3) says
    expected = [1e-3 * (1 - 2 * k / 10) ** 0.9 for k in range(5)]  # the time spent before each update
    assert result.losses and len(result.losses) == 5
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["train_state"]
    assert saved["lrs"].tolist() == pytest.approx(expected)
    assert saved["train_seconds"] == pytest.approx(10.0) and saved["iteration"] == 5
    assert result.final_metrics is not None and result.final_metrics["iteration"] == 5  # validated at the end


def test_resume_spends_the_rest_of_the_budget_with_the_same_updates(tmp_path, monkeypatch):
    whole = train(resolve_run_config(overrides=settings(tmp_path / "whole")), progress=False, clock=FakeClock(2.0))

    real_step = Trainer.step

    def crashing_step(self):
        if self.state.iteration == 3:
            raise RuntimeError("simulated crash")
        return real_step(self)

    config = resolve_run_config(overrides=settings(tmp_path / "cut"))
    monkeypatch.setattr(Trainer, "step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, progress=False, clock=FakeClock(2.0))
    monkeypatch.setattr(Trainer, "step", real_step)
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    saved = load_checkpoint(last)["train_state"]
    assert saved["iteration"] == 2 and saved["train_seconds"] == pytest.approx(4.0)

    resumed = train(config, resume=last, progress=False, clock=FakeClock(2.0))
    assert resumed.iteration == 5  # 6 s were left: three more updates
    assert resumed.losses == whole.losses
    both = [load_checkpoint(p / "checkpoints" / "last.pt")["train_state"] for p in (tmp_path / "whole", tmp_path / "cut")]
    assert both[0]["lrs"].tolist() == both[1]["lrs"].tolist()
    assert both[1]["train_seconds"] == pytest.approx(10.0)


def test_the_cli_takes_a_time_budget(tmp_path):
    from fcnseg.commands.train import overrides_from_args
    from fcnseg.cli import build_parser

    argv = ["train", "--time-budget", "5m"]
    args = build_parser(argv).parse_args(argv)
    assert overrides_from_args(args)["train"]["time_budget"] == "5m"


def test_validations_also_follow_the_training_time(tmp_path):
    config = resolve_run_config(overrides=settings(tmp_path / "run", val_every_time="4s"))
    result = train(config, progress=False, clock=FakeClock(tick=2.0))  # 5 updates of 2 s
    # every 4 s of training (updates 2 and 4), and at the end (update 5)
    assert [record["iteration"] for record in result.history] == [2, 4, 5]
    assert not result.reached_target and result.train_seconds == pytest.approx(10.0)


def test_a_target_reached_in_a_row_ends_the_run_early(tmp_path, monkeypatch):
    import fcnseg.training.trainer as trainer

    scores = iter([0.95, 0.5, 0.95, 0.95, 0.95])  # the second validation breaks the first streak
    real_validate = trainer.validate

    def faked(*args, **kwargs):
        return {**real_validate(*args, **kwargs), "mean_iu": next(scores)}

    monkeypatch.setattr(trainer, "validate", faked)
    config = resolve_run_config(overrides=settings(tmp_path / "run", time_budget="", max_iter=8, val_every=1,
                                                   target_mean_iu=0.9, target_validations=2))
    result = train(config, progress=False)
    assert result.reached_target and result.iteration == 4  # validations 3 and 4 reached 0.9 in a row
    assert [r["mean_iu"] for r in result.history] == [0.95, 0.5, 0.95, 0.95]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["train_state"]["iteration"] == 4


@pytest.mark.parametrize("key,value,message", [("val_every_time", "soon", "val_every_time: expected a positive"),
                                               ("target_mean_iu", 90.0, "target_mean_iu is a fraction"),
                                               ("target_validations", 0, "target_validations must be >= 1")])
def test_bad_validation_timing_or_target_is_a_config_error(key, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_run_config(overrides=settings("x", **{key: value}))
