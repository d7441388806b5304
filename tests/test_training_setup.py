"""A run that fails on its settings, weights or data says so in one line and leaves no run folder behind."""

import pytest

from fcnseg.cli import main
from fcnseg.config import resolve_run_config
from fcnseg.data import make_synthetic
from fcnseg.errors import CheckpointError, ConfigError, DataError
from fcnseg.training.trainer import train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(out_dir, data=None, **train_overrides):
    data = {"dataset": "synthetic", "root": "", "synthetic_train_images": 2, "synthetic_val_images": 1,
            "synthetic_size": 40, "num_workers": 0, **(data or {})}
    return resolve_run_config(overrides={
        "model": {"arch": "fcn32s", "backbone": "small", "num_classes": 6},
        "data": data,
        "train": {"out_dir": str(out_dir), "optimizer": "adamw", "lr": 1e-3, "batch_size": 1, "iter_size": 1,
                  "max_iter": 1, "val_every": 0, "checkpoint_every": 0, "precision": "fp32", "num_panels": 0,
                  **train_overrides},
    })


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, num_train=2, num_val=1, seed=0, style="shapes")
    return root


def test_cli_unknown_split_is_one_line_and_leaves_no_run_folder(tmp_path, capsys, synthetic_root):
    out = tmp_path / "runs" / "bad-split"
    code = main(["train", "--dataset", "voc", "--data-root", str(synthetic_root), "--train-split", "no_such_split",
                 "--num-classes", "6", "--backbone", "small", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("fcnseg train: error:")]
    assert len(errors) == 1 and "no_such_split.txt does not exist" in errors[0] and "Traceback" not in err
    assert not out.exists() and not out.parent.exists()


def test_wrong_number_of_classes_leaves_no_run_folder(tmp_path):
    config = tiny(tmp_path / "run")
    config.model.num_classes = 4
    with pytest.raises(ConfigError, match="model.num_classes is 4 but the data set has 6 classes"):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_missing_data_root_leaves_no_run_folder(tmp_path):
    config = tiny(tmp_path / "run", data={"dataset": "auto", "root": str(tmp_path / "no" / "such" / "dir")})
    # detect_kind() in the data layer lets a FileNotFoundError out for a missing root (the data
    # layer's to fix); this test is about the run folder.
    with pytest.raises((DataError, FileNotFoundError)):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_coarser_net_that_does_not_fit_leaves_no_run_folder(tmp_path):
    train(tiny(tmp_path / "32s", max_iter=1, checkpoint_every=1), progress=False)
    finer = tiny(tmp_path / "16s", init_from=str(tmp_path / "32s" / "checkpoints" / "last.pt"))
    finer.model.arch, finer.model.batch_norm = "fcn16s", True
    with pytest.raises(CheckpointError, match="does not fit this small trunk"):
        train(finer, progress=False)
    assert not (tmp_path / "16s").exists()


def test_resuming_a_best_checkpoint_is_refused_before_anything_is_written(tmp_path, capsys):
    train(tiny(tmp_path / "run", val_every=1), progress=False)
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    assert main(["train", "--resume", str(best), "--out", str(tmp_path / "fork"), "--no-progress"]) == 1
    assert "holds no training state" in capsys.readouterr().err
    assert not (tmp_path / "fork").exists()


def test_train_log_holds_the_setup_logged_before_the_folder_existed(tmp_path):
    train(tiny(tmp_path / "32s", checkpoint_every=1), progress=False)
    finer = tiny(tmp_path / "16s", init_from=str(tmp_path / "32s" / "checkpoints" / "last.pt"))
    finer.model.arch = "fcn16s"
    train(finer, progress=False)
    log = (tmp_path / "16s" / "train.log").read_text()
    assert "new layers keep their zero/bilinear init: score_pool4.weight, score_pool4.bias" in log
    assert log.index("initialised") < log.index("training fcn16s")
