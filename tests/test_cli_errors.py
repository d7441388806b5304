"""A data folder that is missing or is a file: one line naming the path, exit 1, no traceback, from every command."""

import pytest
import torch

from fcnseg.cli import main
from fcnseg.data import build_dataset, detect_kind
from fcnseg.errors import DataError

KINDS = ["auto", "voc", "sbd", "folder", "synthetic"]


def assert_one_line_naming(capsys, path, reason):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert str(path) in lines[0] and reason in lines[0], lines[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a data set\n")
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_build_dataset_on_a_missing_folder_names_it(tmp_path, kind):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(DataError) as info:
        build_dataset(kind, missing, "train")
    assert info.value.path == str(missing) and info.value.reason == "no such folder"


@pytest.mark.parametrize("kind", KINDS)
def test_build_dataset_on_a_file_says_it_is_not_a_folder(a_file, kind):
    with pytest.raises(DataError) as info:
        build_dataset(kind, a_file, "train")
    assert info.value.path == str(a_file) and info.value.reason == "not a folder"


def test_detect_kind_on_a_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="no such folder") as info:
        detect_kind(tmp_path / "absent")
    assert info.value.path == str(tmp_path / "absent")


def test_a_missing_sbd_or_voc_companion_root_is_named(tmp_path):
    for sub in ("voc/JPEGImages", "voc/ImageSets/Segmentation", "sbd/img", "sbd/cls"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "voc/ImageSets/Segmentation/val.txt").write_text("a\n")
    with pytest.raises(DataError, match="no such folder") as info:
        build_dataset("voc", tmp_path / "voc", "seg11valid", sbd_root=tmp_path / "no-sbd")
    assert info.value.path == str(tmp_path / "no-sbd")
    with pytest.raises(DataError, match="no such folder") as info:
        build_dataset("sbd", tmp_path / "sbd", "train_noval", voc_root=tmp_path / "no-voc")
    assert info.value.path == str(tmp_path / "no-voc")


@pytest.mark.parametrize("kind", ["auto", "voc", "sbd", "folder"])
def test_check_data_on_a_missing_folder_prints_one_line_naming_it(tmp_path, capsys, kind):
    missing = tmp_path / "no" / "such" / "dir"
    assert main(["check-data", str(missing), "--kind", kind]) == 1
    assert_one_line_naming(capsys, missing, "no such folder")


@pytest.mark.parametrize("kind", ["auto", "voc", "sbd", "folder"])
def test_check_data_on_a_file_prints_one_line_saying_it_is_not_a_folder(a_file, capsys, kind):
    assert main(["check-data", str(a_file), "--kind", kind]) == 1
    assert_one_line_naming(capsys, a_file, "not a folder")


@pytest.fixture
def small_checkpoint(tmp_path):
    from fcnseg.weights.checkpoint import save_checkpoint
    from fcnseg.data import PAPER_BGR, SyntheticDataset
    from fcnseg.models import ModelConfig, build_model

    config = ModelConfig(arch="fcn32s", backbone="small", num_classes=6)
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(config), config, list(SyntheticDataset().class_names), PAPER_BGR)
    return path


@pytest.mark.parametrize("kind", ["auto", "voc", "folder", "synthetic"])
def test_eval_on_a_missing_data_folder_prints_one_line_naming_it(tmp_path, capsys, small_checkpoint, kind):
    missing = tmp_path / "no" / "such" / "dir"
    argv = ["eval", str(small_checkpoint), "--data", str(missing), "--kind", kind, "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "eval.json")]) == 1
    assert_one_line_naming(capsys, missing, "no such folder")
    assert not (tmp_path / "eval.json").exists()


def test_eval_on_a_file_as_data_prints_one_line(tmp_path, capsys, small_checkpoint, a_file):
    assert main(["eval", str(small_checkpoint), "--data", str(a_file), "--no-progress"]) == 1
    assert_one_line_naming(capsys, a_file, "not a folder")


@pytest.mark.parametrize("which", ["--pred-dir", "--gt-dir"])
def test_eval_of_folders_with_a_missing_folder_prints_one_line_naming_it(tmp_path, capsys, which):
    (tmp_path / "present").mkdir()
    missing = tmp_path / "absent"
    other = "--gt-dir" if which == "--pred-dir" else "--pred-dir"
    assert main(["eval", which, str(missing), other, str(tmp_path / "present"), "--no-progress"]) == 1
    assert_one_line_naming(capsys, missing, "no such folder")


def test_train_on_a_missing_data_root_prints_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "dir"
    argv = ["train", "--preset", "small-cpu", "--dataset", "auto", "--data-root", str(missing)]
    assert main(argv + ["--out", str(tmp_path / "run"), "--max-iter", "1", "--no-progress"]) == 1
    assert_one_line_naming(capsys, missing, "no such folder")
