"""Run settings: defaults < preset < file < flags, strict keys, and a resolved config that re-runs as is."""

import pytest
import yaml

from fcnseg.cli import build_parser
from fcnseg.commands.train import overrides_from_args
from fcnseg.config import PRESETS, RunConfig, TrainConfig, resolve_run_config
from fcnseg.errors import ConfigError


def test_defaults_are_the_cvpr_recipe():
    t = TrainConfig()
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay) == ("sgd", 1e-4, 0.9, 5e-4)
    assert t.batch_size * t.iter_size == 20 and t.normalize_loss
    assert (t.bias_lr_mult, t.bias_decay_mult, t.lr_policy) == (2.0, 0.0, "fixed")
    cvpr = resolve_run_config(overrides={"preset": "paper-cvpr", "data": {"root": "voc"}})
    assert cvpr.train == TrainConfig()


def test_heavy_preset_is_the_reference_solver():
    c = resolve_run_config(overrides={"preset": "paper-heavy", "data": {"root": "voc"}})
    t = c.train
    assert (t.lr, t.momentum, t.batch_size, t.iter_size, t.normalize_loss) == (1e-10, 0.99, 1, 1, False)
    assert c.model.learn_upsampling is False and c.model.pad == 100


def test_precedence_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"preset": "small-cpu", "train": {"lr": 0.5, "batch_size": 3},
                                    "data": {"dataset": "synthetic"}}))
    c = resolve_run_config(path, overrides={"train": {"batch_size": 7}})
    assert c.train.optimizer == PRESETS["small-cpu"]["train"]["optimizer"]  # from the preset
    assert c.train.lr == 0.5  # the file beats the preset
    assert c.train.batch_size == 7  # the flags beat the file
    assert c.train.iter_size == 1  # the preset beats the defaults
    assert c.preset == "small-cpu"


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.learning_rate"):
        resolve_run_config(path)
    path.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*trian"):
        resolve_run_config(path)


def test_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="lr_policy"):
        resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"lr_policy": "cosine"}})
    with pytest.raises(ConfigError, match="needs a root"):
        resolve_run_config(overrides={"data": {"dataset": "voc"}})
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_run_config(overrides={"preset": "fast"})
    with pytest.raises(ConfigError, match="channels_last 'yes' is not true, false or auto"):
        resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"channels_last": "yes"}})


@pytest.mark.parametrize("value", ["auto", "channels_last", "contiguous"])
def test_layout_takes_one_of_the_three_words(value):
    config = resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"layout": value}})
    assert config.train.layout == value
    with pytest.raises(ConfigError, match="layout 'nhwc' is not one of auto, channels_last, contiguous"):
        resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"layout": "nhwc"}})


def test_cli_flags_become_overrides_and_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 0.1\n  max_iter: 9\ndata:\n  dataset: synthetic\n")
    argv = ["train", "--config", str(path), "--lr", "0.01", "--no-learn-upsampling", "--set", "train.bias_lr_mult=1",
            "--out", str(tmp_path / "out")]
    args = build_parser(argv).parse_args(argv)
    overrides = overrides_from_args(args)
    assert overrides["train"]["lr"] == 0.01 and overrides["model"]["learn_upsampling"] is False
    c = resolve_run_config(args.config, overrides)
    assert (c.train.lr, c.train.max_iter, c.train.bias_lr_mult) == (0.01, 9, 1.0)
    assert c.train.out_dir == str(tmp_path / "out")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    c = resolve_run_config(overrides={"preset": "small-cpu", "data": {"dataset": "synthetic"}, "train": {"lr": 3e-3}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(c.to_dict()))
    assert resolve_run_config(path) == c
    assert RunConfig.from_dict(c.to_dict(), "dict") == c
