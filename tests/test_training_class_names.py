"""Classes by name in training: an --init-from checkpoint's classes checked against the data set's, score rows
permuted exactly by a class map, and the class count taken from the data set where nobody set it."""

import logging

import pytest
import torch
import yaml

from fcnseg.cli import main
from fcnseg.config import ModelConfig, resolve_run_config
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.data.synthetic import STYLE_CLASSES, make_synthetic
from fcnseg.errors import ConfigError
from fcnseg.models import build_model
from fcnseg.training.initialization import fit_classes, initialize_model
from fcnseg.training.trainer import train
from fcnseg.weights.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NAMES = ["a", "b", "c"]


def random_checkpoint(path, names=NAMES, arch="fcn8s"):
    """A small net whose score layers and learned upsampling are random, so that every class row differs."""
    torch.manual_seed(2)
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=len(names), learn_upsampling=True))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith(("score", "upscore")):
                tensor.normal_(std=0.1)
    save_checkpoint(path, model, model.config, list(names), IMAGENET_RGB)
    return model.eval()


def started(path, num_classes=3):
    config = resolve_run_config(overrides={
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": num_classes, "learn_upsampling": True},
        "data": {"dataset": "synthetic"}, "train": {"init_from": str(path)}})
    return initialize_model(config)


def test_init_from_a_checkpoint_of_other_class_order_is_refused_with_both_lists(tmp_path):
    random_checkpoint(tmp_path / "a.pt")
    with pytest.raises(ConfigError) as caught:
        fit_classes(started(tmp_path / "a.pt"), ["a", "c", "b"], "data/classes.txt")
    message = str(caught.value)
    assert f"the --init-from checkpoint {tmp_path / 'a.pt'} and data/classes.txt have the same 3 class names" in message
    assert any(line.split() == ["1", "b", "c", "<-", "differs"] for line in message.splitlines())
    assert "--class-map" in message and "--ignore-class-names" in message
    with pytest.raises(ConfigError, match="name their classes differently"):
        fit_classes(started(tmp_path / "a.pt"), ["a", "b", "d"], "data/classes.txt")


def test_a_class_map_permutes_the_score_layers_so_each_name_scores_as_before(tmp_path):
    original = random_checkpoint(tmp_path / "a.pt")
    data = ["c", "a", "b"]
    initialized = started(tmp_path / "a.pt")
    mapping = fit_classes(initialized, data, "data/classes.txt", class_map={"c": "c"})
    assert mapping.data_to_model == (2, 0, 1)
    image = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        before, after = original(image), initialized.model.eval()(image)
    for i, name in enumerate(data):
        torch.testing.assert_close(after[:, i], before[:, NAMES.index(name)], rtol=0, atol=1e-6)


def test_a_data_class_the_checkpoint_lacks_starts_fresh_and_the_others_keep_their_rows(tmp_path):
    original = random_checkpoint(tmp_path / "a.pt")
    initialized = started(tmp_path / "a.pt", num_classes=4)
    fresh = build_model(initialized.model.config)
    fit_classes(initialized, ["b", "new", "a", "c"], "data/classes.txt", class_map={"new": None})
    model = initialized.model
    assert torch.equal(model.score_fr.weight[1], fresh.score_fr.weight[1])  # zero, as the paper starts it
    assert torch.equal(model.score_fr.weight[[0, 2, 3]], original.score_fr.weight[[1, 0, 2]])
    assert torch.equal(model.upscore8.weight[1], fresh.upscore8.weight[1])  # bilinear
    assert torch.equal(model.upscore8.weight[0, 2], original.upscore8.weight[1, 0])


def test_ignore_class_names_copies_by_index_with_a_warning(tmp_path, caplog):
    original = random_checkpoint(tmp_path / "a.pt")
    initialized = started(tmp_path / "a.pt")
    with caplog.at_level(logging.WARNING):
        fit_classes(initialized, ["x", "y", "z"], "data/classes.txt", ignore_names=True)
    assert "--ignore-class-names" in caplog.text
    assert torch.equal(initialized.model.score_fr.weight, original.score_fr.weight)


def test_another_class_count_without_a_map_starts_the_score_layers_fresh_as_before(tmp_path):
    random_checkpoint(tmp_path / "a.pt")
    initialized = started(tmp_path / "a.pt", num_classes=5)
    assert fit_classes(initialized, list("vwxyz"), "data/classes.txt") is None
    assert not initialized.model.score_fr.weight.any()


def tiny_settings(tmp_path, **train):
    return {
        "model": {"arch": "fcn32s", "backbone": "small", "dropout": 0.1},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 2, "synthetic_val_images": 1,
                 "synthetic_size": 32, "crop_size": 0, "num_workers": 0, "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(tmp_path / "run"), "optimizer": "adamw", "lr": 1e-3, "batch_size": 1, "iter_size": 1,
                  "max_iter": 1, "val_every": 0, "checkpoint_every": 0, "precision": "fp32", "num_panels": 0, **train},
    }


def test_train_refuses_an_init_from_checkpoint_whose_classes_are_in_another_order_and_leaves_no_folder(tmp_path):
    shapes = list(STYLE_CLASSES["shapes"])
    random_checkpoint(tmp_path / "a.pt", names=shapes[::-1], arch="fcn32s")
    config = resolve_run_config(overrides=tiny_settings(tmp_path, init_from=str(tmp_path / "a.pt")))
    assert config.model.num_classes == 21 and config.num_classes_from_data
    with pytest.raises(ConfigError, match="the same 6 class names in another order"):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_only_a_class_count_someone_set_counts_as_set(tmp_path):
    synthetic = {"data": {"dataset": "synthetic"}}
    assert resolve_run_config(overrides=synthetic).num_classes_from_data
    assert resolve_run_config(overrides={**synthetic, "preset": "small-cpu"}).num_classes_from_data
    assert not resolve_run_config(overrides={**synthetic, "model": {"num_classes": 6}}).num_classes_from_data
    (tmp_path / "c.yaml").write_text("model: {heads: [[semantic, 3]], num_classes: 3}\n")
    assert not resolve_run_config(tmp_path / "c.yaml", synthetic).num_classes_from_data
    assert "num_classes_from_data" not in resolve_run_config(overrides=synthetic).to_dict()


def test_train_takes_the_class_count_from_the_data_sets_class_file(tmp_path, caplog):
    make_synthetic(tmp_path / "syn", num_train=2, num_val=1, size=(40, 40), image_format="png")
    argv = ["train", "--preset", "small-cpu", "--data-root", str(tmp_path / "syn"), "--max-iter", "1",
            "--batch-size", "1", "--crop-size", "32", "--val-every", "0", "--workers", "0", "--precision", "fp32",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["model"]["num_classes"] == 6
    assert f"model.num_classes 6, from the class file {tmp_path / 'syn' / 'classes.txt'}" in (
        tmp_path / "run" / "train.log").read_text()


def test_a_class_count_the_user_set_that_differs_from_the_data_set_is_still_an_error(tmp_path, capsys):
    make_synthetic(tmp_path / "syn", num_train=2, num_val=1, size=(40, 40), image_format="png")
    argv = ["train", "--preset", "small-cpu", "--data-root", str(tmp_path / "syn"), "--num-classes", "21",
            "--max-iter", "1", "--workers", "0", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    assert "model.num_classes is 21" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_that_takes_its_class_count_from_the_data_trains_as_one_that_gave_it(tmp_path):
    settings = tiny_settings(tmp_path)
    settings["train"].update(max_iter=2, deterministic=True)
    taken = train(resolve_run_config(overrides=settings), progress=False)
    settings["model"]["num_classes"] = 6
    settings["train"]["out_dir"] = str(tmp_path / "given")
    given = train(resolve_run_config(overrides=settings), progress=False)
    assert taken.config.model.num_classes == 6
    assert taken.losses == given.losses
